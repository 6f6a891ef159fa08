/* The AMQP 0-9-1 front-end: handshake, channels, heartbeats,
 * connection/channel errors, and an in-memory broker spread over the
 * workers (exchanges direct/fanout/topic, queues, consume/get/ack/qos,
 * confirms, tx).
 *
 * Across workers: every worker keeps a replica of the routing table
 * (exchanges, bindings, the queue directory saying where each queue
 * lives), changed only through the control thread's sequencer
 * (control/ctl_amqp.h), so all replicas apply the same changes in the
 * same order and a declare-ok/bind-ok leaves once every worker routes with
 * the change. A queue (its messages and consumers) lives on the worker of
 * the connection that declared it. Publishes are routed on the publisher's
 * worker; copies for queues elsewhere travel to the queue's worker in one
 * batch per destination and loop iteration, and come back as confirm
 * acceptances. A consumer on another worker is a proxy on the queue's
 * worker and a stub on its channel's worker: deliveries travel as batches
 * (windowed, with credit returned once written to the socket), settlements
 * travel home in batches. */

#include "amqp_internal.h"

/* ---- sending -------------------------------------------------------------- */

void amqp_doom(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        if (!ac->doomed)
                SL_INFO("amqp: %s: output full, closing (%llu bytes pending)", c->peer_str,
                        (unsigned long long)sl_conn_tx_pending(c));
        ac->doomed = true;
}

bool amqp_conn_usable(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        return c->state == SL_CONN_OPEN && !ac->doomed;
}

/* Sends one method frame. Control replies are small; when the output queue
 * is at its cap the client is not reading: drop it. */
int amqp_send_method(struct sl_conn *c, uint16_t ch, const struct amqp_method *m)
{
        uint8_t buf[AMQP_CTL_BUF];
        int n = amqp_method_frame_encode(ch, m, buf, sizeof(buf));
        SL_ASSERT(n > 0);
        if (!amqp_conn_usable(c) || sl_conn_send(c, buf, (size_t)n) != 0) {
                amqp_doom(c);
                return -ENOBUFS;
        }
        return 0;
}

int amqp_send_simple(struct sl_conn *c, uint16_t ch, uint32_t key)
{
        struct amqp_method m;
        amqp_method_init(&m, key);
        return amqp_send_method(c, ch, &m);
}

/* Hard error: connection.close with code and text, then wait for close-ok;
 * or, when last (nothing more can be parsed), close right after sending. */
static long conn_error_ex(struct sl_conn *c, uint16_t code, const char *text, uint32_t cause,
                          bool last)
{
        struct amqp_conn *ac = c->proto_state;
        if (ac->phase == AMQP_PH_CLOSING)
                return 0;
        SL_INFO("amqp: %s: connection error %u %s", c->peer_str, code, text);
        sl_counter_add(&aw_of(c->w)->conn_errors, 1);
        struct amqp_method m;
        amqp_method_init(&m, AMQP_CONNECTION_CLOSE);
        char t[256];
        snprintf(t, sizeof(t), "%s - %s", amqp_reply_name(code) ? amqp_reply_name(code) : "ERROR",
                 text);
        m.args[AMQP_CONNECTION_CLOSE_REPLY_CODE].u = code;
        m.args[AMQP_CONNECTION_CLOSE_REPLY_TEXT].b = amqp_cstr(t);
        m.args[AMQP_CONNECTION_CLOSE_CLASS_ID].u = cause >> 16;
        m.args[AMQP_CONNECTION_CLOSE_METHOD_ID].u = cause & 0xffff;
        uint8_t buf[512];
        int n = amqp_method_frame_encode(0, &m, buf, sizeof(buf));
        SL_ASSERT(n > 0);
        if (last || ac->phase < AMQP_PH_TUNE_OK) {
                /* Before tune there is nothing to negotiate: say it and go. */
                sl_conn_send_last(c, buf, (size_t)n, SL_CLOSE_PROTOCOL);
                return -1;
        }
        if (sl_conn_send(c, buf, (size_t)n) != 0) {
                amqp_doom(c);
                return -1;
        }
        ac->phase = AMQP_PH_CLOSING;
        ac->phase_since_ms = c->w->now_ms;
        return 0;
}

long amqp_conn_error(struct sl_conn *c, uint16_t code, const char *text, uint32_t cause)
{
        return conn_error_ex(c, code, text, cause, false);
}

/* Soft error: channel.close; the channel discards input until close-ok. */
long amqp_chan_error(struct sl_conn *c, struct amqp_channel *ch, uint16_t code, const char *text,
                     uint32_t cause)
{
        SL_INFO("amqp: %s: channel %u error %u %s", c->peer_str, ch->id, code, text);
        sl_counter_add(&aw_of(c->w)->chan_errors, 1);
        struct amqp_method m;
        amqp_method_init(&m, AMQP_CHANNEL_CLOSE);
        char t[256];
        snprintf(t, sizeof(t), "%s - %s", amqp_reply_name(code) ? amqp_reply_name(code) : "ERROR",
                 text);
        m.args[AMQP_CHANNEL_CLOSE_REPLY_CODE].u = code;
        m.args[AMQP_CHANNEL_CLOSE_REPLY_TEXT].b = amqp_cstr(t);
        m.args[AMQP_CHANNEL_CLOSE_CLASS_ID].u = cause >> 16;
        m.args[AMQP_CHANNEL_CLOSE_METHOD_ID].u = cause & 0xffff;
        /* Release what the channel holds now; the number stays taken until
         * close-ok. */
        uint16_t id = ch->id;
        struct amqp_conn *ac = c->proto_state;
        amqp_chan_free(c, ch);
        struct amqp_channel *nch = calloc(1, sizeof(*nch));
        if (!nch)
                return amqp_conn_error(c, 541, "out of memory", cause);
        nch->id = id;
        nch->closing = true;
        ac->chans[id] = nch;
        return amqp_send_method(c, id, &m) ? -1 : 0;
}

/* ---- connection methods --------------------------------------------------- */

static int send_start(struct sl_conn *c)
{
        uint8_t tbuf[1024];
        struct amqp_table_writer tw;
        amqp_table_writer_init(&tw, tbuf, sizeof(tbuf));
        amqp_table_put_str(&tw, "product", amqp_cstr("sluice"));
        amqp_table_put_str(&tw, "version", amqp_cstr("0.1"));
        amqp_table_put_str(&tw, "platform", amqp_cstr("C"));
        amqp_table_put_str(&tw, "copyright", amqp_cstr("sluice authors"));
        amqp_table_put_str(&tw, "information", amqp_cstr("https://sluice.invalid/"));
        amqp_table_put_str(&tw, "cluster_name", amqp_cstr(c->w->cfg->name));
        amqp_table_begin(&tw, "capabilities", 'F');
        static const char *const caps[] = {
            "publisher_confirms",     "exchange_exchange_bindings", "basic.nack",
            "consumer_cancel_notify", "connection.blocked",         "authentication_failure_close",
            "per_consumer_qos",
        };
        for (size_t i = 0; i < SL_ARRAY_LEN(caps); i++)
                amqp_table_put_bool(&tw, caps[i], true);
        amqp_table_end(&tw);
        struct amqp_bytes props;
        int rc = amqp_table_writer_finish(&tw, &props);
        SL_ASSERT(rc == 0);
        struct amqp_method m;
        amqp_method_init(&m, AMQP_CONNECTION_START);
        m.args[AMQP_CONNECTION_START_VERSION_MAJOR].u = 0;
        m.args[AMQP_CONNECTION_START_VERSION_MINOR].u = 9;
        m.args[AMQP_CONNECTION_START_SERVER_PROPERTIES].b = props;
        m.args[AMQP_CONNECTION_START_MECHANISMS].b = amqp_cstr("PLAIN");
        m.args[AMQP_CONNECTION_START_LOCALES].b = amqp_cstr("en_US");
        return amqp_send_method(c, 0, &m);
}

static bool peer_is_loopback(const struct sl_conn *c)
{
        if (c->peer.ss_family == AF_INET) {
                const struct sockaddr_in *a = (const void *)&c->peer;
                return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
        }
        if (c->peer.ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const void *)&c->peer;
                if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
                        return true;
                return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
        }
        return false;
}

static long on_start_ok(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_method *m)
{
        struct amqp_bytes mech = m->args[AMQP_CONNECTION_START_OK_MECHANISM].b;
        struct amqp_bytes resp = m->args[AMQP_CONNECTION_START_OK_RESPONSE].b;
        static const char guest[] = "\0guest\0guest";
        if (mech.len != 5 || memcmp(mech.ptr, "PLAIN", 5) != 0) {
                ac->phase = AMQP_PH_TUNE_OK; /* so the close is sent as a method */
                return amqp_conn_error(c, 403, "only the PLAIN mechanism is supported", m->key);
        }
        bool ok = resp.len == sizeof(guest) - 1 && memcmp(resp.ptr, guest, resp.len) == 0;
        if (!ok || !peer_is_loopback(c)) {
                ac->phase = AMQP_PH_TUNE_OK;
                return amqp_conn_error(
                    c, 403,
                    ok ? "user 'guest' can only connect via localhost"
                       : "Login was refused using authentication mechanism PLAIN",
                    m->key);
        }
        struct amqp_field caps, f;
        if (amqp_table_find(m->args[AMQP_CONNECTION_START_OK_CLIENT_PROPERTIES].b, "capabilities",
                            &caps) == 1 &&
            caps.tag == 'F') {
                if (amqp_table_find(caps.v.b, "consumer_cancel_notify", &f) == 1 && f.tag == 't')
                        ac->cancel_notify = f.v.u != 0;
                if (amqp_table_find(caps.v.b, "connection.blocked", &f) == 1 && f.tag == 't')
                        ac->blocked_cap = f.v.u != 0;
        }
        struct amqp_method t;
        amqp_method_init(&t, AMQP_CONNECTION_TUNE);
        t.args[AMQP_CONNECTION_TUNE_CHANNEL_MAX].u = AMQP_CHANNEL_MAX;
        t.args[AMQP_CONNECTION_TUNE_FRAME_MAX].u = AMQP_SERVER_FRAME_MAX;
        t.args[AMQP_CONNECTION_TUNE_HEARTBEAT].u = AMQP_HEARTBEAT_S;
        ac->phase = AMQP_PH_TUNE_OK;
        return amqp_send_method(c, 0, &t);
}

static long on_tune_ok(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_method *m)
{
        uint64_t chmax = m->args[AMQP_CONNECTION_TUNE_OK_CHANNEL_MAX].u;
        uint64_t fmax = m->args[AMQP_CONNECTION_TUNE_OK_FRAME_MAX].u;
        uint64_t hb = m->args[AMQP_CONNECTION_TUNE_OK_HEARTBEAT].u;
        if (chmax > AMQP_CHANNEL_MAX)
                return amqp_conn_error(c, 530, "channel_max above the server's", m->key);
        if (fmax == 0 || fmax > AMQP_SERVER_FRAME_MAX || fmax < AMQP_FRAME_MAX_MIN)
                return amqp_conn_error(c, 530, "frame_max out of range", m->key);
        ac->channel_max = chmax ? (uint16_t)chmax : AMQP_CHANNEL_MAX;
        ac->frame_max = (uint32_t)fmax;
        ac->heartbeat = (uint16_t)hb;
        ac->last_tx_hb_ms = c->w->now_ms;
        /* Method and header frames are not cut by clients: accept up to our
         * own maximum; body frames larger than agreed are still refused by
         * the room check of the assembly buffer. */
        amqp_parser_set_frame_max(&ac->parser, AMQP_SERVER_FRAME_MAX);
        ac->phase = AMQP_PH_OPEN;
        return 0;
}

static long on_open(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_method *m)
{
        struct amqp_bytes vh = m->args[AMQP_CONNECTION_OPEN_VIRTUAL_HOST].b;
        if (!(vh.len == 1 && vh.ptr[0] == '/'))
                return amqp_conn_error(c, 530, "access to vhost refused (only \"/\" exists)",
                                       m->key);
        ac->phase = AMQP_PH_RUNNING;
        return amqp_send_simple(c, 0, AMQP_CONNECTION_OPEN_OK);
}

static long dispatch_method(struct sl_conn *c, struct amqp_conn *ac, uint16_t chan,
                            const struct amqp_method *m)
{
        struct amqp_channel *ch = ac->chans && chan <= ac->channel_max ? ac->chans[chan] : NULL;
        if (m->key == AMQP_CHANNEL_OPEN) {
                if (chan > ac->channel_max)
                        return amqp_conn_error(c, 504, "channel number above channel_max", m->key);
                if (ch)
                        return amqp_conn_error(c, 504, "second 'channel.open' seen", m->key);
                if (!ac->chans) {
                        ac->chans = calloc((size_t)ac->channel_max + 1, sizeof(*ac->chans));
                        if (!ac->chans)
                                return amqp_conn_error(c, 541, "out of memory", m->key);
                }
                ch = calloc(1, sizeof(*ch));
                if (!ch)
                        return amqp_conn_error(c, 541, "out of memory", m->key);
                ch->id = chan;
                ch->epoch = ++aw_of(c->w)->epoch_seq;
                ac->chans[chan] = ch;
                sl_counter_add(&aw_of(c->w)->channels, 1);
                return amqp_send_simple(c, chan, AMQP_CHANNEL_OPEN_OK);
        }
        if (!ch)
                return amqp_conn_error(c, 504, "expected 'channel.open'", m->key);
        if (ch->closing) {
                /* after our channel.close only close / close-ok matter */
                if (m->key == AMQP_CHANNEL_CLOSE_OK) {
                        ac->chans[chan] = NULL;
                        free(ch);
                } else if (m->key == AMQP_CHANNEL_CLOSE) {
                        ac->chans[chan] = NULL;
                        free(ch);
                        return amqp_send_simple(c, chan, AMQP_CHANNEL_CLOSE_OK);
                }
                return 0;
        }
        if (ch->publishing)
                return amqp_conn_error(c, 505, "expected content header/body, got a method",
                                       m->key);
        switch (m->key) {
        case AMQP_CHANNEL_CLOSE:
                amqp_chan_free(c, ch);
                return amqp_send_simple(c, chan, AMQP_CHANNEL_CLOSE_OK);
        case AMQP_CHANNEL_CLOSE_OK:
                return 0; /* not expected; ignore */
        case AMQP_CHANNEL_FLOW: {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_CHANNEL_FLOW_OK);
                r.args[0].u = m->args[0].u;
                return amqp_send_method(c, chan, &r);
        }
        case AMQP_ACCESS_REQUEST: {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_ACCESS_REQUEST_OK);
                r.args[0].u = 1;
                return amqp_send_method(c, chan, &r);
        }
        case AMQP_EXCHANGE_DECLARE:
                return amqp_on_exchange_declare(c, ch, m);
        case AMQP_QUEUE_DECLARE:
                return amqp_on_queue_declare(c, ch, m);
        case AMQP_QUEUE_BIND:
                return amqp_on_queue_bind(c, ch, m);
        case AMQP_QUEUE_UNBIND:
                return amqp_on_queue_bind(c, ch, m);
        case AMQP_QUEUE_PURGE:
                return amqp_on_queue_purge(c, ch, m);
        case AMQP_QUEUE_DELETE:
                return amqp_on_queue_delete(c, ch, m);
        case AMQP_EXCHANGE_DELETE:
                return amqp_on_exchange_delete(c, ch, m);
        case AMQP_EXCHANGE_BIND:
        case AMQP_EXCHANGE_UNBIND:
                return amqp_on_exchange_bind(c, ch, m);
        case AMQP_BASIC_QOS:
                if (m->args[AMQP_BASIC_QOS_GLOBAL].u)
                        ch->gprefetch = (uint16_t)m->args[AMQP_BASIC_QOS_PREFETCH_COUNT].u;
                else
                        ch->prefetch = (uint16_t)m->args[AMQP_BASIC_QOS_PREFETCH_COUNT].u;
                return amqp_send_simple(c, chan, AMQP_BASIC_QOS_OK);
        case AMQP_BASIC_RECOVER:
        case AMQP_BASIC_RECOVER_ASYNC: {
                /* requeue=0 (redeliver to the same consumer) is not
                 * supported by RabbitMQ either; both requeue. */
                struct amqp_msg *un = ch->unacked_head;
                ch->unacked_head = ch->unacked_tail = NULL;
                ch->nunacked = 0;
                struct amqp_worker *aw = aw_of(c->w);
                amqp_requeue_list(aw, un);
                if (ch->gprefetch)
                        amqp_stubs_writable(aw, c, ch);
                if (m->key == AMQP_BASIC_RECOVER &&
                    amqp_send_simple(c, chan, AMQP_BASIC_RECOVER_OK))
                        return -1;
                /* the requeued ones' queues (marked) deliver again */
                amqp_dispatch_marked(aw);
                return 0;
        }
        case AMQP_BASIC_PUBLISH:
                return amqp_on_publish(c, ch, m);
        case AMQP_BASIC_CONSUME:
                return amqp_on_consume(c, ch, m);
        case AMQP_BASIC_CANCEL:
                return amqp_on_cancel(c, ch, m);
        case AMQP_BASIC_GET:
                return amqp_on_get(c, ch, m);
        case AMQP_BASIC_ACK:
        case AMQP_BASIC_REJECT:
        case AMQP_BASIC_NACK:
                if (ch->tx)
                        return amqp_tx_hold_settle(c, ch, m);
                break;
        default:
                break;
        }
        switch (m->key) {
        case AMQP_BASIC_ACK:
                return amqp_settle(c, ch, m, m->args[AMQP_BASIC_ACK_DELIVERY_TAG].u,
                                   m->args[AMQP_BASIC_ACK_MULTIPLE].u, false);
        case AMQP_BASIC_REJECT:
                return amqp_settle(c, ch, m, m->args[AMQP_BASIC_REJECT_DELIVERY_TAG].u, false,
                                   m->args[AMQP_BASIC_REJECT_REQUEUE].u);
        case AMQP_BASIC_NACK:
                return amqp_settle(c, ch, m, m->args[AMQP_BASIC_NACK_DELIVERY_TAG].u,
                                   m->args[AMQP_BASIC_NACK_MULTIPLE].u,
                                   m->args[AMQP_BASIC_NACK_REQUEUE].u);
        case AMQP_TX_SELECT:
                if (ch->confirm)
                        return amqp_chan_error(c, ch, 406, "cannot switch from confirm to tx mode",
                                               m->key);
                ch->tx = true;
                return amqp_send_simple(c, chan, AMQP_TX_SELECT_OK);
        case AMQP_TX_COMMIT:
        case AMQP_TX_ROLLBACK:
                if (!ch->tx)
                        return amqp_chan_error(c, ch, 406, "channel is not transactional", m->key);
                return m->key == AMQP_TX_COMMIT ? amqp_tx_commit(c, ch) : amqp_tx_rollback(c, ch);
        case AMQP_CONFIRM_SELECT:
                if (ch->tx)
                        return amqp_chan_error(c, ch, 406, "cannot switch from tx to confirm mode",
                                               m->key);
                ch->confirm = true;
                if (m->args[AMQP_CONFIRM_SELECT_NOWAIT].u)
                        return 0;
                return amqp_send_simple(c, chan, AMQP_CONFIRM_SELECT_OK);
        default:
                break;
        }
        if (!(m->desc->chassis & AMQP_CHASSIS_SERVER))
                return amqp_conn_error(c, 503, "method not sent by clients", m->key);
        char t[96];
        snprintf(t, sizeof(t), "%s not implemented yet", m->desc->name);
        return amqp_conn_error(c, 540, t, m->key);
}

static long on_method(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_frame *f)
{
        struct amqp_method m;
        int rc = amqp_method_decode(f->payload, f->size, &m);
        if (ac->phase == AMQP_PH_CLOSING) {
                if (rc == 0 && f->channel == 0 &&
                    (m.key == AMQP_CONNECTION_CLOSE_OK || m.key == AMQP_CONNECTION_CLOSE)) {
                        if (m.key == AMQP_CONNECTION_CLOSE)
                                amqp_send_simple(c, 0, AMQP_CONNECTION_CLOSE_OK);
                        sl_conn_close(c, SL_CLOSE_PROTOCOL);
                        return -1;
                }
                return 0;
        }
        if (rc < 0)
                return amqp_conn_error(c, (uint16_t)-rc, "malformed method frame", 0);
        uint16_t cls = (uint16_t)(m.key >> 16);
        if (ac->phase != AMQP_PH_RUNNING) {
                uint32_t want = ac->phase == AMQP_PH_START_OK  ? AMQP_CONNECTION_START_OK
                                : ac->phase == AMQP_PH_TUNE_OK ? AMQP_CONNECTION_TUNE_OK
                                                               : AMQP_CONNECTION_OPEN;
                if (m.key == AMQP_CONNECTION_CLOSE && ac->phase >= AMQP_PH_TUNE_OK) {
                        sl_conn_close(c, SL_CLOSE_PEER);
                        return -1;
                }
                if (f->channel != 0 || m.key != want)
                        return amqp_conn_error(c, 505, "unexpected method during the handshake",
                                               m.key);
                if (m.key == AMQP_CONNECTION_START_OK)
                        return on_start_ok(c, ac, &m);
                if (m.key == AMQP_CONNECTION_TUNE_OK)
                        return on_tune_ok(c, ac, &m);
                return on_open(c, ac, &m);
        }
        if (f->channel == 0) {
                if (cls != AMQP_CLASS_CONNECTION)
                        return amqp_conn_error(c, 504, "channel 0 carries only connection methods",
                                               m.key);
                if (m.key == AMQP_CONNECTION_CLOSE) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_CONNECTION_CLOSE_OK);
                        uint8_t buf[64];
                        int n = amqp_method_frame_encode(0, &r, buf, sizeof(buf));
                        sl_conn_send_last(c, buf, (size_t)n, SL_CLOSE_PEER);
                        return -1;
                }
                if (m.key == AMQP_CONNECTION_CLOSE_OK) {
                        sl_conn_close(c, SL_CLOSE_PEER);
                        return -1;
                }
                if (m.desc->chassis & AMQP_CHASSIS_SERVER)
                        return amqp_conn_error(c, 540, "connection method not implemented", m.key);
                return amqp_conn_error(c, 503, "unexpected connection method", m.key);
        }
        if (cls == AMQP_CLASS_CONNECTION)
                return amqp_conn_error(c, 503, "connection methods belong on channel 0", m.key);
        return dispatch_method(c, ac, f->channel, &m);
}

static long on_frame(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_frame *f)
{
        switch (f->type) {
        case AMQP_FRAME_METHOD:
                return on_method(c, ac, f);
        case AMQP_FRAME_HEARTBEAT:
                if (f->channel != 0)
                        return amqp_conn_error(c, 501, "heartbeat on a non-zero channel", 0);
                return 0;
        case AMQP_FRAME_HEADER:
        case AMQP_FRAME_BODY:
                break;
        default:
                return amqp_conn_error(c, 501, "unknown frame type", 0);
        }
        if (ac->phase == AMQP_PH_CLOSING)
                return 0;
        if (ac->phase != AMQP_PH_RUNNING || f->channel == 0)
                return amqp_conn_error(c, 505, "content frame outside a channel", 0);
        struct amqp_channel *ch =
            ac->chans && f->channel <= ac->channel_max ? ac->chans[f->channel] : NULL;
        if (!ch)
                return amqp_conn_error(c, 504, "content frame on a channel not open", 0);
        if (ch->closing)
                return 0;
        if (!ch->publishing)
                return amqp_conn_error(c, 505, "content frame without basic.publish", 0);
        if (f->type == AMQP_FRAME_HEADER) {
                if (!ch->want_header)
                        return amqp_conn_error(c, 505, "second content header", AMQP_BASIC_PUBLISH);
                return amqp_on_header(c, ch, f);
        }
        if (ch->want_header)
                return amqp_conn_error(c, 505, "body frame before the content header",
                                       AMQP_BASIC_PUBLISH);
        return amqp_on_body(c, ch, f);
}

/* ---- resource alarms ------------------------------------------------------
 *
 * The control thread raises an alarm when the messages held over all
 * workers pass the memory threshold or the data directory's free space
 * falls below the disk threshold. As in RabbitMQ, a connection is blocked
 * when it publishes while an alarm is on: it is told with
 * connection.blocked (if it negotiated the capability) and no longer read
 * until every alarm has cleared; consumers keep being served, which is
 * what clears a memory alarm. */

static const char *alarm_reason(uint8_t alarm)
{
        return alarm & CTL_AMQP_ALARM_MEMORY ? "low on memory" : "low on disk";
}

/* Stops reading c (after the frame being handled). */
long amqp_conn_block(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        struct amqp_worker *aw = aw_of(c->w);
        if (ac->blocked)
                return 0;
        ac->blocked = true;
        ac->blocked_prev = NULL;
        ac->blocked_next = aw->blocked;
        if (aw->blocked)
                ((struct amqp_conn *)aw->blocked->proto_state)->blocked_prev = c;
        aw->blocked = c;
        sl_conn_rx_pause(c);
        if (!ac->blocked_cap)
                return 0;
        struct amqp_method m;
        amqp_method_init(&m, AMQP_CONNECTION_BLOCKED);
        m.args[AMQP_CONNECTION_BLOCKED_REASON].b = amqp_cstr(alarm_reason(aw->alarm));
        return amqp_send_method(c, 0, &m) ? -1 : 0;
}

void amqp_blocked_unlink(struct amqp_worker *aw, struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        if (ac->blocked_prev)
                ((struct amqp_conn *)ac->blocked_prev->proto_state)->blocked_next =
                    ac->blocked_next;
        else
                aw->blocked = ac->blocked_next;
        if (ac->blocked_next)
                ((struct amqp_conn *)ac->blocked_next->proto_state)->blocked_prev =
                    ac->blocked_prev;
        ac->blocked_prev = ac->blocked_next = NULL;
        ac->blocked = false;
}

/* The control thread's verdict (bits of CTL_AMQP_ALARM_*): on clearing,
 * every blocked connection is told and read again. */
void amqp_alarm_set(struct amqp_worker *aw, uint8_t alarm)
{
        aw->alarm = alarm;
        atomic_store_explicit(&aw->alarm_pub, alarm, memory_order_relaxed);
        if (alarm)
                return;
        while (aw->blocked) {
                struct sl_conn *c = aw->blocked;
                struct amqp_conn *ac = c->proto_state;
                amqp_blocked_unlink(aw, c);
                ac->last_rx_ms = c->w->now_ms; /* its heartbeats were not read */
                if (ac->blocked_cap && amqp_conn_usable(c) &&
                    amqp_send_simple(c, 0, AMQP_CONNECTION_UNBLOCKED) != 0)
                        amqp_doom(c);
                if (!ac->waiting && !ac->doomed)
                        sl_conn_rx_resume(c);
        }
}

/* ---- runtime callbacks ----------------------------------------------------- */

static int amqp_open(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        amqp_parser_init(&ac->parser, AMQP_FRAME_MIN_SIZE, true);
        ac->phase = AMQP_PH_HEADER;
        ac->frame_max = AMQP_FRAME_MIN_SIZE;
        ac->last_rx_ms = ac->phase_since_ms = c->w->now_ms;
        return 0;
}

static long amqp_recv(struct sl_conn *c, const uint8_t *p, size_t n)
{
        struct amqp_conn *ac = c->proto_state;
        size_t off = 0;
        if (ac->doomed)
                return -1;
        if (ac->waiting || ac->blocked || !aw_of(c->w)->ready)
                return 0; /* offered again on the next iteration */
        ac->last_rx_ms = c->w->now_ms;
        while (off < n && c->state == SL_CONN_OPEN && !ac->doomed) {
                size_t used = 0;
                struct amqp_frame f;
                int rc = amqp_parser_feed(&ac->parser, p + off, n - off, &used, &f);
                off += used;
                if (rc == AMQP_PARSE_AGAIN)
                        break;
                if (rc == AMQP_PARSE_NEED_BUFFER) {
                        if (!ac->abuf) {
                                ac->abuf_cap = AMQP_SERVER_FRAME_MAX;
                                ac->abuf = malloc(ac->abuf_cap);
                                if (!ac->abuf) {
                                        amqp_conn_error(c, 541, "out of memory", 0);
                                        return -1;
                                }
                        }
                        int src = amqp_parser_set_buffer(&ac->parser, ac->abuf, ac->abuf_cap);
                        SL_ASSERT(src == 0);
                        continue;
                }
                if (rc == AMQP_PARSE_BAD_PROTOCOL) {
                        sl_conn_send_last(c, AMQP_PROTOCOL_HEADER, AMQP_PROTOCOL_HEADER_LEN,
                                          SL_CLOSE_PROTOCOL);
                        return -1;
                }
                if (rc < 0) {
                        if (ac->phase < AMQP_PH_START_OK) {
                                sl_conn_close(c, SL_CLOSE_PROTOCOL);
                                return -1;
                        }
                        /* The stream is lost (the parser is sticky): say
                         * why and close without waiting for close-ok. */
                        if (ac->phase == AMQP_PH_CLOSING)
                                sl_conn_close(c, SL_CLOSE_PROTOCOL);
                        else
                                conn_error_ex(c, (uint16_t)-rc, ac->parser.err_text, 0, true);
                        return -1;
                }
                if (rc == AMQP_PARSE_PROTOCOL) {
                        ac->phase = AMQP_PH_START_OK;
                        if (send_start(c))
                                return -1;
                        continue;
                }
                SL_ASSERT(rc == AMQP_PARSE_FRAME);
                if (ac->phase == AMQP_PH_CLOSING && f.type != AMQP_FRAME_METHOD)
                        continue;
                long r = on_frame(c, ac, &f);
                if (r < 0)
                        return -1;
                if (ac->block_after && !ac->waiting) {
                        ac->block_after = false;
                        if (aw_of(c->w)->alarm && amqp_conn_block(c) < 0)
                                return -1;
                }
                if (ac->waiting || ac->blocked) {
                        /* the rest is offered again once the answer came */
                        sl_conn_set_partial(c, false);
                        return ac->doomed ? -1 : (long)off;
                }
        }
        amqp_confirms_flush(aw_of(c->w));
        sl_conn_set_partial(c, ac->parser.state == AMQP_PS_PAYLOAD ||
                                   ac->parser.state == AMQP_PS_END ||
                                   (ac->parser.state == AMQP_PS_HEADER && ac->parser.hdr_len));
        /* Everything was parsed, or the connection is closing and the rest
         * does not matter. */
        return ac->doomed ? -1 : (long)n;
}

static void amqp_writable(struct sl_conn *c)
{
        struct amqp_worker *aw = aw_of(c->w);
        amqp_stubs_writable(aw, c, NULL);
        amqp_conn_room(aw, c);
}

static void amqp_tick(struct sl_conn *c, uint64_t now)
{
        struct amqp_conn *ac = c->proto_state;
        if (c->state != SL_CONN_OPEN)
                return;
        if (ac->doomed) {
                sl_conn_close(c, SL_CLOSE_SLOW_CONSUMER);
                return;
        }
        if (ac->phase < AMQP_PH_RUNNING && now - ac->phase_since_ms > AMQP_HANDSHAKE_MS) {
                SL_INFO("amqp: %s: handshake timeout", c->peer_str);
                sl_conn_close(c, SL_CLOSE_IDLE);
                return;
        }
        if (ac->phase == AMQP_PH_CLOSING && now - ac->phase_since_ms > AMQP_CLOSE_WAIT_MS) {
                sl_conn_close(c, SL_CLOSE_PROTOCOL);
                return;
        }
        if (ac->heartbeat && ac->phase >= AMQP_PH_OPEN) {
                uint64_t hb_ms = (uint64_t)ac->heartbeat * 1000;
                /* a blocked connection is not read: its heartbeats wait */
                if (!ac->blocked && now - ac->last_rx_ms > 2 * hb_ms) {
                        SL_INFO("amqp: %s: missed heartbeats, closing", c->peer_str);
                        sl_conn_close(c, SL_CLOSE_IDLE);
                        return;
                }
                if (now - ac->last_tx_hb_ms >= hb_ms / 2) {
                        static const uint8_t hb[8] = {8, 0, 0, 0, 0, 0, 0, AMQP_FRAME_END};
                        ac->last_tx_hb_ms = now;
                        sl_conn_send(c, hb, sizeof(hb));
                }
        }
}

static void amqp_closed(struct sl_conn *c, enum sl_close_reason why)
{
        (void)why;
        struct amqp_conn *ac = c->proto_state;
        if (ac->chans) {
                for (uint32_t i = 0; i <= ac->channel_max; i++)
                        if (ac->chans[i] && ac->chans[i]->closing) {
                                free(ac->chans[i]); /* a stub awaiting close-ok */
                                ac->chans[i] = NULL;
                        } else if (ac->chans[i]) {
                                amqp_chan_free(c, ac->chans[i]);
                        }
                free(ac->chans);
                ac->chans = NULL;
        }
        struct amqp_worker *aw = aw_of(c->w);
        for (struct amqp_queue **pp = &aw->queues; *pp;) {
                struct amqp_queue *q = *pp;
                if (q->owner == c)
                        amqp_queue_delete_announce(aw, q,
                                                   NULL); /* unlinks q: *pp is now the next */
                else
                        pp = &q->next;
        }
        if (ac->blocked)
                amqp_blocked_unlink(aw, c);
        amqp_conn_room_release(c);
        amqp_parser_take_buffer(&ac->parser);
        free(ac->abuf);
        ac->abuf = NULL;
}

static void amqp_refused(struct sl_conn *c, enum sl_close_reason why)
{
        (void)c;
        (void)why; /* AMQP has no words before the header: a bare close */
}

static int amqp_worker_init(struct sl_worker *w)
{
        struct amqp_worker *aw = calloc(1, sizeof(*aw));
        if (!aw)
                return -ENOMEM;
        aw->w = w;
        w->proto_ctx[CTL_PROTO_AMQP] = aw;
        int rc = sl_worker_add_poller(w, amqp_links_poll, aw);
        if (rc)
                return rc;
        static const struct {
                const char *name;
                uint8_t type;
        } builtin[] = {{"amq.direct", AMQP_EX_DIRECT},
                       {"amq.fanout", AMQP_EX_FANOUT},
                       {"amq.topic", AMQP_EX_TOPIC}};
        for (size_t i = 0; i < SL_ARRAY_LEN(builtin); i++) {
                struct amqp_exchange *e =
                    amqp_ex_add(aw, amqp_cstr(builtin[i].name), builtin[i].type);
                if (!e)
                        return -ENOMEM;
                e->durable = true;
        }
        return 0;
}

void amqp_worker_fini(struct sl_worker *w)
{
        struct amqp_worker *aw = aw_of(w);
        if (!aw)
                return;
        if (aw->owner) {
                /* acks recorded, every append finished (callbacks run) */
                amqp_dq_poll(aw);
                log_owner_drain(aw->owner);
                amqp_dq_spill_discard(aw);
        }
        while (aw->exchanges) {
                struct amqp_exchange *e = aw->exchanges;
                aw->exchanges = e->next;
                while (e->bindings) {
                        struct amqp_binding *b = e->bindings;
                        e->bindings = b->next;
                        free(b);
                }
                free(e);
        }
        while (aw->queues) {
                struct amqp_queue *q = aw->queues;
                aw->queues = q->next;
                struct amqp_msg *m;
                while ((m = amqp_queue_pop(q)))
                        amqp_msg_free(m);
                while (q->consumers) {
                        struct amqp_consumer *k = q->consumers;
                        q->consumers = k->next_in_queue;
                        free(k); /* proxies (connections are closed already) */
                }
                amqp_queue_free(q);
        }
        for (uint32_t i = 0; i < aw->ndelayed; i++)
                amqp_msg_free(aw->delayed[i].m);
        free(aw->delayed);
        free(aw->rel);
        if (aw->delayq) {
                struct amqp_msg *m;
                while ((m = amqp_queue_pop(aw->delayq)))
                        amqp_msg_free(m);
                amqp_queue_free(aw->delayq); /* its log is closed with the plogs */
        }
        while (aw->qrefs) {
                struct amqp_qref *r = aw->qrefs;
                aw->qrefs = r->next;
                free(r);
        }
        while (aw->stubs) {
                struct amqp_consumer *k = aw->stubs;
                amqp_stub_unlink(aw, k);
                free(k);
        }
        /* What is still on its way at shutdown: batches not sent. */
        for (uint16_t d = 0; d <= w->nworkers; d++) {
                struct amqp_link *l = &aw->link[d];
                struct amqp_msg *lists[3] = {l->fwd_head, l->dlv_head, l->stl_head};
                for (int i = 0; i < 3; i++)
                        for (struct amqp_msg *m = lists[i], *n; m; m = n) {
                                n = m->next;
                                amqp_msg_free(m);
                        }
                /* ring messages not sent: the batches they carry */
                for (uint32_t i = 0; i < l->out_n; i++) {
                        const struct sl_msg *o = &l->out[(l->out_head + i) % l->out_cap];
                        if (o->type == CTL_AMQP_MSG_ACCEPT) {
                                free(o->a.ptr[0]);
                        } else if (o->type == CTL_AMQP_MSG_FWD) {
                                struct amqp_fwd *f = o->a.ptr[0];
                                for (struct amqp_msg *m = f->msgs, *n; m; m = n) {
                                        n = m->next;
                                        amqp_msg_free(m);
                                }
                                free(f);
                        }
                }
                free(l->out);
        }
        while (aw->plogs) {
                struct amqp_plog *pl = aw->plogs;
                aw->plogs = pl->next;
                log_partition_close(pl->log);
                free(pl);
        }
        if (aw->owner)
                log_owner_destroy(aw->owner);
        if (aw->io)
                aw->io->ops->destroy(aw->io);
        free(aw->scratch);
        free(aw);
        w->proto_ctx[CTL_PROTO_AMQP] = NULL;
}

#define AMQP_LOAD(x) ((double)atomic_load_explicit(&aw->x, memory_order_relaxed))

static void amqp_metrics(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx)
{
        struct amqp_worker *aw = aw_of(w);
        if (!aw)
                return;
        emit(ctx, "sluice_amqp_messages_published_total", "counter",
             "Messages published by AMQP clients (complete content).", AMQP_LOAD(published));
        emit(ctx, "sluice_amqp_messages_delivered_total", "counter",
             "basic.deliver and basic.get-ok sent.", AMQP_LOAD(delivered));
        emit(ctx, "sluice_amqp_messages_settled_total", "counter",
             "Deliveries acked, or rejected/nacked without requeue.", AMQP_LOAD(acked));
        emit(ctx, "sluice_amqp_messages_unroutable_total", "counter",
             "Publishes that reached no queue.", AMQP_LOAD(unroutable));
        emit(ctx, "sluice_amqp_messages_returned_total", "counter",
             "Unroutable mandatory publishes answered with basic.return.", AMQP_LOAD(returned));
        emit(ctx, "sluice_amqp_queues", "gauge", "Queues on this worker.", AMQP_LOAD(queues_n));
        emit(ctx, "sluice_amqp_channels", "gauge", "Open channels.", AMQP_LOAD(channels));
        emit(ctx, "sluice_amqp_connection_errors_total", "counter",
             "connection.close sent for a hard error.", AMQP_LOAD(conn_errors));
        emit(ctx, "sluice_amqp_channel_errors_total", "counter",
             "channel.close sent for a soft error.", AMQP_LOAD(chan_errors));
        emit(ctx, "sluice_amqp_durable_log_trims_total", "counter",
             "Durable queue logs trimmed once everything in them was settled.",
             AMQP_LOAD(log_trims));
        emit(ctx, "sluice_amqp_held_bytes", "gauge",
             "Bytes of messages allocated minus freed on this worker, ready, unacked or in flight; "
             "the sum over workers is the memory alarm's measure.",
             AMQP_LOAD(held_bytes_pub));
        emit(ctx, "sluice_amqp_persist_split_total", "counter",
             "Persistent messages stored in several log records (over the 2 MiB batch limit).",
             AMQP_LOAD(persist_split));
        emit(ctx, "sluice_amqp_persist_spilled_total", "counter",
             "Queue log records that waited for room in the log (appended in order later).",
             AMQP_LOAD(persist_spilled));
}

const struct sl_proto_ops amqp_proto_ops = {
    .name = "amqp",
    .conn_state_bytes = sizeof(struct amqp_conn),
    .worker_init = amqp_worker_init,
    .worker_fini = amqp_worker_fini,
    .open = amqp_open,
    .recv = amqp_recv,
    .writable = amqp_writable,
    .tick = amqp_tick,
    .closed = amqp_closed,
    .refused = amqp_refused,
    .metrics = amqp_metrics,
    .msg = amqp_msg_in,
};
