/* The NATS front-end's connection side: INFO on connect, CONNECT and auth,
 * the parse loop over received bytes, SUB/UNSUB with the interest barrier,
 * PUB/HPUB handed to the router, MSG/HMSG formatting for subscribers,
 * server PINGs and stale/slow consumer handling. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nats_internal.h"
#include "nats_subject.h"
#include "sl_build.h"
#include "sl_log.h"

#define NATS_INFO_MAX 1024

static const char nats_ok[] = "+OK\r\n";
static const char nats_pong[] = "PONG\r\n";
static const char nats_ping[] = "PING\r\n";

/* Sends one of our own short replies. When no send buffer is free it is
 * kept (in order, after anything already owed) and reading pauses until
 * writable() gets it out: a reply is never silently lost. */
static void nats_reply(struct sl_conn *c, const void *p, size_t n)
{
        struct nats_conn *nc = c->proto_state;
        if (!nc->owed_len && sl_conn_send(c, p, n) == 0)
                return;
        if (nc->owed_len + n > sizeof(nc->owed)) {
                sl_conn_close(c, SL_CLOSE_SLOW_CONSUMER);
                return;
        }
        memcpy(nc->owed + nc->owed_len, p, n);
        nc->owed_len = (uint16_t)(nc->owed_len + n);
        sl_conn_want_writable(c);
        sl_conn_rx_pause(c);
}

static bool auth_required(const struct ctl_config *cfg)
{
        return cfg->nats_token[0] || cfg->nats_user_count;
}

/* Sends -ERR '<text>'; closes the connection when the protocol says so. */
static int send_err(struct sl_conn *c, int err)
{
        char line[256];
        int n = snprintf(line, sizeof(line), "-ERR '%s'\r\n", nats_err_text(err));
        if (nats_err_closes(err)) {
                sl_conn_send_last(c, line, (size_t)n, SL_CLOSE_PROTOCOL);
                return -1;
        }
        nats_reply(c, line, (size_t)n);
        return 0;
}

static void send_info(struct sl_conn *c)
{
        struct sl_worker *w = c->w;
        const struct ctl_config *cfg = w->cfg;
        const struct ctl_listener *l = &cfg->listeners[CTL_PROTO_NATS];
        const char *host = l->advertised_host[0] ? l->advertised_host : l->host;
        unsigned port = l->advertised_port ? l->advertised_port : sl_conn_local_port(c);
        char ip[64];
        snprintf(ip, sizeof(ip), "%s", c->peer_str);
        char *colon = strrchr(ip, ':');
        if (colon)
                *colon = 0;
        char info[NATS_INFO_MAX];
        /* version: clients gate features (headers, no responders) on the
         * nats-server version they see; sluice implements those of 2.10. */
        int n =
            snprintf(info, sizeof(info),
                     "INFO {\"server_id\":\"NSLUICE%08X%04X\",\"server_name\":\"%s\","
                     "\"version\":\"2.10.0\",\"proto\":1,\"go\":\"sluice-%s\",\"host\":\"%s\","
                     "\"port\":%u,\"headers\":true,\"max_payload\":%u,\"client_id\":%llu,"
                     "\"client_ip\":\"%s\"%s}\r\n",
                     (unsigned)getpid(), (unsigned)(w->rt->bound_ports[CTL_PROTO_NATS]), cfg->name,
                     SL_VERSION, host, port, w->limits.frame_bytes_max, (unsigned long long)c->id,
                     ip, auth_required(cfg) ? ",\"auth_required\":true" : "");
        nats_reply(c, info, (size_t)n);
}

static int nats_open(struct sl_conn *c)
{
        struct nats_conn *nc = c->proto_state;
        struct nats_parser_config pc = {
            .max_control_line = SL_MIN(c->w->limits.control_line_bytes_max, NATS_CONTROL_LINE_MAX),
            .max_payload = c->w->limits.frame_bytes_max,
        };
        nats_parser_init(&nc->parser, &pc);
        nc->echo = true;
        nc->last_ping_ms = c->w->now_ms;
        send_info(c);
        return 0;
}

static void nats_refused(struct sl_conn *c, enum sl_close_reason why)
{
        (void)why;
        char line[128];
        int n =
            snprintf(line, sizeof(line), "-ERR '%s'\r\n", nats_err_text(NATS_ERR_MAX_CONNECTIONS));
        sl_conn_send(c, line, (size_t)n);
}

/* ---- CONNECT -------------------------------------------------------------- */

static bool view_eq(struct nats_view v, const char *s)
{
        size_t n = strlen(s);
        return v.len == n && memcmp(v.ptr, s, n) == 0;
}

static int handle_connect(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        struct nats_connect cn;
        uint8_t buf[1024];
        int rc = nats_connect_parse(op->arg.ptr, op->arg.len, &cn, buf, sizeof(buf));
        if (rc != 0)
                return send_err(c, NATS_ERR_BAD_CONNECT);
        rc = nats_connect_validate(&cn);
        if (rc != 0)
                return send_err(c, rc);
        const struct ctl_config *cfg = c->w->cfg;
        if (auth_required(cfg)) {
                bool ok = false;
                if (cfg->nats_token[0])
                        ok = view_eq(cn.auth_token, cfg->nats_token);
                for (uint32_t i = 0; i < cfg->nats_user_count && !ok; i++)
                        ok = view_eq(cn.user, cfg->nats_users[i].name) &&
                             view_eq(cn.pass, cfg->nats_users[i].password);
                if (!ok) {
                        SL_INFO("nats: authorization violation from %s", c->peer_str);
                        return send_err(c, NATS_ERR_AUTH_VIOLATION);
                }
        }
        nc->connected = true;
        nc->verbose = cn.verbose;
        nc->pedantic = cn.pedantic;
        nc->echo = cn.echo;
        nc->headers = cn.headers;
        nc->no_responders = cn.no_responders;
        size_t nl = SL_MIN(cn.name.len, sizeof(nc->name) - 1);
        sl_copy(nc->name, cn.name.ptr, nl);
        nc->name_len = (uint8_t)nl;
        return 0;
}

/* ---- subscriptions -------------------------------------------------------- */

void nats_lsub_remove(struct sl_conn *c, struct nats_lsub *s, bool barrier);

void nats_lsub_remove(struct sl_conn *c, struct nats_lsub *s, bool barrier)
{
        struct nats_conn *nc = c->proto_state;
        struct nats_worker *nw = nats_worker_of(c->w);
        for (struct nats_lsub **pp = &nc->subs; *pp; pp = &(*pp)->next_of_conn)
                if (*pp == s) {
                        *pp = s->next_of_conn;
                        break;
                }
        nc->nsubs--;
        nats_sublist_remove(&nw->local, &s->entry);
        sl_counter_add(&nw->subscriptions, -1);
        nats_route_interest(nw, barrier ? c : NULL, s, -1, barrier);
        free(s->subject);
        free(s);
}

static int handle_sub(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        struct nats_worker *nw = nats_worker_of(c->w);
        if (!nats_subject_valid(op->subject.ptr, op->subject.len) ||
            (op->queue.len && !nats_queue_valid(op->queue.ptr, op->queue.len)) ||
            op->sid.len == 0 || op->sid.len > NATS_SID_MAX || op->subject.len > UINT16_MAX ||
            op->queue.len > UINT16_MAX)
                return send_err(c, NATS_ERR_INVALID_SUBJECT);
        uint32_t max = c->w->limits.subscriptions_max;
        if (max && nc->nsubs >= max)
                return send_err(c, NATS_ERR_MAX_SUBSCRIPTIONS);
        struct nats_lsub *s = calloc(1, sizeof(*s));
        uint8_t *key = malloc(op->subject.len + op->queue.len + 1);
        if (!s || !key) {
                free(s);
                free(key);
                return send_err(c, NATS_ERR_SLOW_CONSUMER); /* out of memory: shed load */
        }
        memcpy(key, op->subject.ptr, op->subject.len);
        sl_copy(key + op->subject.len, op->queue.ptr, op->queue.len);
        s->subject = key;
        s->subject_len = (uint16_t)op->subject.len;
        s->queue_len = (uint16_t)op->queue.len;
        s->conn = c;
        s->max_msgs = -1;
        s->sid_len = (uint8_t)op->sid.len;
        memcpy(s->sid, op->sid.ptr, op->sid.len);
        if (nats_sublist_insert(&nw->local, &s->entry, key, s->subject_len, key + s->subject_len,
                                s->queue_len) != 0) {
                free(key);
                free(s);
                return send_err(c, NATS_ERR_INVALID_SUBJECT);
        }
        s->next_of_conn = nc->subs;
        nc->subs = s;
        nc->nsubs++;
        sl_counter_add(&nw->subscriptions, 1);
        nats_route_interest(nw, c, s, +1, true);
        return 0;
}

static int handle_unsub(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        struct nats_lsub *s = nc->subs;
        for (; s; s = s->next_of_conn)
                if (s->sid_len == op->sid.len && memcmp(s->sid, op->sid.ptr, op->sid.len) == 0)
                        break;
        if (!s)
                return 0; /* unknown sid: nats-server ignores it */
        if (op->max_msgs > 0 && (uint64_t)op->max_msgs > s->delivered) {
                s->max_msgs = op->max_msgs;
                return 0;
        }
        nats_lsub_remove(c, s, true);
        return 0;
}

/* ---- barrier -------------------------------------------------------------- */

static void barrier_release(struct sl_conn *c, struct nats_conn *nc)
{
        for (; nc->oks_owed; nc->oks_owed--)
                nats_reply(c, nats_ok, sizeof(nats_ok) - 1);
        if (nc->ping_waiting) {
                nc->ping_waiting = false;
                nats_reply(c, nats_pong, sizeof(nats_pong) - 1);
        }
        sl_conn_rx_resume(c);
}

void nats_conn_barrier_ack(struct sl_conn *c)
{
        struct nats_conn *nc = c->proto_state;
        SL_ASSERT(nc->acks_outstanding > 0);
        if (--nc->acks_outstanding == 0)
                barrier_release(c, nc);
}

/* ---- delivery ------------------------------------------------------------- */

static uint32_t fmt_u32(char *p, uint32_t v)
{
        char tmp[10];
        uint32_t n = 0;
        do {
                tmp[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        for (uint32_t i = 0; i < n; i++)
                p[i] = tmp[n - 1 - i];
        return n;
}

static void slow_consumer(struct nats_worker *nw, struct sl_conn *c)
{
        sl_counter_add(&nw->slow_consumers, 1);
        SL_INFO("nats: slow consumer %s (%llu bytes pending), closing", c->peer_str,
                (unsigned long long)sl_conn_tx_pending(c));
        char line[64];
        int n =
            snprintf(line, sizeof(line), "-ERR '%s'\r\n", nats_err_text(NATS_ERR_SLOW_CONSUMER));
        sl_conn_send_last(c, line, (size_t)n, SL_CLOSE_SLOW_CONSUMER);
}

bool nats_deliver(struct nats_worker *nw, struct nats_lsub *s, const uint8_t *subject,
                  uint32_t subject_len, const uint8_t *reply, uint32_t reply_len,
                  const uint8_t *payload, uint32_t hdr_len, uint32_t total_len)
{
        struct sl_conn *c = s->conn;
        struct nats_conn *nc = c->proto_state;
        if (c->state != SL_CONN_OPEN)
                return false;
        /* A subscriber that did not ask for headers gets MSG with the payload
         * only. */
        bool hmsg = hdr_len && nc->headers;
        if (hdr_len && !hmsg) {
                payload += hdr_len;
                total_len -= hdr_len;
                hdr_len = 0;
        }
        size_t line_max = 5 + subject_len + 1 + s->sid_len + 1 + reply_len + 1 + 10 + 1 + 10 + 2;
        size_t need = line_max + total_len + 2;
        uint8_t *p = need <= nw->w->pool.bytes[SL_BUF_CHUNK] ? sl_conn_tx_reserve(c, need) : NULL;
        uint8_t line_buf[NATS_CONTROL_LINE_MAX * 2 + 64];
        uint8_t *at = p ? p : line_buf;
        if (!p && need <= nw->w->pool.bytes[SL_BUF_CHUNK]) {
                slow_consumer(nw, c);
                return false;
        }
        uint8_t *start = at;
        if (hmsg) {
                memcpy(at, "HMSG ", 5);
                at += 5;
        } else {
                memcpy(at, "MSG ", 4);
                at += 4;
        }
        memcpy(at, subject, subject_len);
        at += subject_len;
        *at++ = ' ';
        memcpy(at, s->sid, s->sid_len);
        at += s->sid_len;
        *at++ = ' ';
        if (reply_len) {
                memcpy(at, reply, reply_len);
                at += reply_len;
                *at++ = ' ';
        }
        if (hmsg) {
                at += fmt_u32((char *)at, hdr_len);
                *at++ = ' ';
        }
        at += fmt_u32((char *)at, total_len);
        *at++ = '\r';
        *at++ = '\n';
        size_t line_len = (size_t)(at - start);
        if (p) {
                sl_copy(at, payload, total_len);
                at[total_len] = '\r';
                at[total_len + 1] = '\n';
                sl_conn_tx_commit(c, line_len + total_len + 2);
        } else {
                struct iovec iov[3] = {
                    {start, line_len}, {(void *)payload, total_len}, {"\r\n", 2}};
                if (sl_conn_sendv(c, iov, 3) != 0) {
                        slow_consumer(nw, c);
                        return false;
                }
        }
        sl_counter_add(&nw->msgs_out, 1);
        sl_counter_add(&nw->bytes_out, total_len);
        return true;
}

/* No responders: a 503 status on the publisher's own subscription that
 * matches the reply subject. */
static void send_no_responders(struct nats_worker *nw, struct sl_conn *c, const struct nats_op *op)
{
        struct nats_sub *subs[64];
        struct nats_match_part parts[8];
        struct nats_match_group groups[8];
        struct nats_match m = {.subs = subs,
                               .subs_cap = 64,
                               .parts = parts,
                               .parts_cap = 8,
                               .groups = groups,
                               .groups_cap = 8};
        nats_sublist_match(&nw->local, op->reply.ptr, op->reply.len, &m);
        for (uint32_t i = 0; i < m.nsubs; i++) {
                struct nats_lsub *t = SL_CONTAINER_OF(m.subs[i], struct nats_lsub, entry);
                if (t->conn != c)
                        continue;
                char hdr[NATS_CONTROL_LINE_MAX + 64];
                int hn = snprintf(hdr, sizeof(hdr), "NATS/1.0 503\r\nNats-Subject: %.*s\r\n\r\n",
                                  (int)op->subject.len, (const char *)op->subject.ptr);
                nats_deliver(nw, t, op->reply.ptr, (uint32_t)op->reply.len, NULL, 0,
                             (const uint8_t *)hdr, (uint32_t)hn, (uint32_t)hn);
                return;
        }
}

static int handle_pub(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        struct nats_worker *nw = nats_worker_of(c->w);
        if (op->type == NATS_OP_HPUB && !nc->headers && nc->connected)
                return send_err(c, NATS_ERR_HEADERS_NOT_SUPPORTED);
        if (nc->pedantic && !nats_subject_valid_literal(op->subject.ptr, op->subject.len))
                return send_err(c, NATS_ERR_INVALID_PUB_SUBJECT);
        sl_counter_add(&nw->msgs_in, 1);
        sl_counter_add(&nw->bytes_in, op->total_len);
        /* nats-server acknowledges a verbose PUB before delivering it. */
        if (nc->verbose)
                nats_reply(c, nats_ok, sizeof(nats_ok) - 1);
        uint32_t reached = nats_route_publish(nw, c, op);
        if (reached == 0 && op->reply.len && nc->no_responders && nc->headers)
                send_no_responders(nw, c, op);
        return 0;
}

/* A PUB whose payload spans receives is assembled in a pool buffer. */
static int asm_start(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        struct sl_worker *w = c->w;
        enum sl_buf_class cls =
            op->total_len <= w->pool.bytes[SL_BUF_CHUNK] ? SL_BUF_CHUNK : SL_BUF_LARGE;
        struct sl_buf *b = sl_buf_alloc(&w->pool, cls);
        if (!b || b->cap < op->total_len) {
                if (b)
                        sl_buf_pool_give(&w->pool, b);
                return send_err(c, NATS_ERR_SLOW_CONSUMER);
        }
        sl_copy(b->data, op->payload.ptr, op->payload.len);
        nc->asm_buf = b;
        nc->asm_len = (uint32_t)op->payload.len;
        nc->asm_op = *op;
        return 0;
}

static int asm_more(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        struct sl_buf *b = nc->asm_buf;
        SL_ASSERT(b && nc->asm_len + op->payload.len <= nc->asm_op.total_len);
        sl_copy(b->data + nc->asm_len, op->payload.ptr, op->payload.len);
        nc->asm_len += (uint32_t)op->payload.len;
        if (!op->end)
                return 0;
        nc->asm_op.payload.ptr = b->data;
        nc->asm_op.payload.len = nc->asm_len;
        nc->asm_op.partial = false;
        int rc = handle_pub(c, nc, &nc->asm_op);
        sl_buf_pool_give(&c->w->pool, b);
        nc->asm_buf = NULL;
        return rc;
}

/* ---- the parse loop ------------------------------------------------------- */

/* Returns 0 to go on, 1 to stop reading for now (barrier), -1 to close. */
static int handle_op(struct sl_conn *c, struct nats_conn *nc, const struct nats_op *op)
{
        if (!nc->connected && op->type != NATS_OP_CONNECT && auth_required(c->w->cfg))
                return send_err(c, NATS_ERR_AUTH_VIOLATION);
        int rc = 0;
        switch (op->type) {
        case NATS_OP_CONNECT:
                rc = handle_connect(c, nc, op);
                if (rc == 0 && nc->verbose)
                        nats_reply(c, nats_ok, sizeof(nats_ok) - 1);
                return rc;
        case NATS_OP_PUB:
        case NATS_OP_HPUB:
                if (op->partial)
                        return asm_start(c, nc, op);
                return handle_pub(c, nc, op);
        case NATS_OP_PAYLOAD:
                return asm_more(c, nc, op);
        case NATS_OP_SUB:
        case NATS_OP_UNSUB:
                rc = op->type == NATS_OP_SUB ? handle_sub(c, nc, op) : handle_unsub(c, nc, op);
                if (rc < 0)
                        return rc;
                if (nc->verbose) {
                        if (nc->acks_outstanding) {
                                nc->oks_owed++;
                                return 1;
                        }
                        nats_reply(c, nats_ok, sizeof(nats_ok) - 1);
                }
                return 0;
        case NATS_OP_PING:
                if (nc->acks_outstanding) {
                        /* Clients' Flush relies on this PONG meaning every
                         * worker has applied their SUB/UNSUB. */
                        nc->ping_waiting = true;
                        return 1;
                }
                nats_reply(c, nats_pong, sizeof(nats_pong) - 1);
                return 0;
        case NATS_OP_PONG:
                nc->pings_outstanding = 0;
                return 0;
        case NATS_OP_INFO:
        case NATS_OP_OK:
                return 0;
        case NATS_OP_ERR:
                sl_conn_close(c, SL_CLOSE_PEER);
                return -1;
        default:
                return send_err(c, NATS_ERR_UNKNOWN_OP);
        }
}

static long nats_recv(struct sl_conn *c, const uint8_t *p, size_t n)
{
        struct nats_conn *nc = c->proto_state;
        struct nats_worker *nw = nats_worker_of(c->w);
        size_t used = 0;
        while (used < n) {
                if (nc->owed_len || (nc->acks_outstanding && (nc->ping_waiting || nc->oks_owed))) {

                        sl_conn_rx_pause(c);
                        break;
                }
                if (sl_unlikely(!nats_route_ready(nw)))
                        break; /* rings or pools full: the rest stays held */
                if (sl_conn_tx_room(c) < 4096) {
                        /* Our own replies (PONG, +OK, -ERR) need room: wait. */
                        sl_conn_want_writable(c);
                        sl_conn_rx_pause(c);
                        break;
                }
                size_t consumed = 0;
                struct nats_op op;
                int rc = nats_parse(&nc->parser, p + used, n - used, &consumed, &op);
                if (rc < 0) {
                        send_err(c, rc);
                        return -1;
                }
                used += consumed;
                if (rc == NATS_PARSE_AGAIN)
                        break;
                int h = handle_op(c, nc, &op);
                if (h < 0)
                        return -1;
                if (h > 0) {
                        sl_conn_rx_pause(c);
                        break;
                }
        }
        sl_conn_set_partial(c, nc->parser.state != 0);
        return (long)used;
}

static void nats_writable(struct sl_conn *c)
{
        struct nats_conn *nc = c->proto_state;
        if (nc->owed_len) {
                if (sl_conn_send(c, nc->owed, nc->owed_len) != 0) {
                        sl_conn_want_writable(c);
                        return;
                }
                nc->owed_len = 0;
        }
        if (!nc->acks_outstanding)
                sl_conn_rx_resume(c);
}

static void nats_tick(struct sl_conn *c, uint64_t now)
{
        struct nats_conn *nc = c->proto_state;
        const struct ctl_config *cfg = c->w->cfg;
        if (!nc->connected) {
                if (auth_required(cfg) && now - c->created_ms > cfg->nats_auth_timeout_ms)
                        send_err(c, NATS_ERR_AUTH_TIMEOUT);
                return;
        }
        if (!cfg->nats_ping_interval_ms || now - nc->last_ping_ms < cfg->nats_ping_interval_ms)
                return;
        /* Traffic from the client is proof of life too. */
        if (c->last_rx_ms > nc->last_ping_ms)
                nc->pings_outstanding = 0;
        if (nc->pings_outstanding >= cfg->nats_ping_max_outstanding) {
                send_err(c, NATS_ERR_STALE_CONNECTION);
                return;
        }
        nc->last_ping_ms = now;
        nc->pings_outstanding++;
        nats_reply(c, nats_ping, sizeof(nats_ping) - 1);
}

static void nats_deadline(struct sl_conn *c)
{
        struct nats_worker *nw = nats_worker_of(c->w);
        sl_counter_add(&nw->slow_consumers, 1);
}

static void nats_closed(struct sl_conn *c, enum sl_close_reason why)
{
        (void)why;
        struct nats_conn *nc = c->proto_state;
        while (nc->subs)
                nats_lsub_remove(c, nc->subs, false);
        if (nc->asm_buf) {
                sl_buf_pool_give(&c->w->pool, nc->asm_buf);
                nc->asm_buf = NULL;
        }
}

#define NATS_LOAD(x) ((double)atomic_load_explicit(&nw->x, memory_order_relaxed))

static void nats_metrics(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx)
{
        struct nats_worker *nw = nats_worker_of(w);
        if (!nw)
                return;
        emit(ctx, "sluice_nats_messages_received_total", "counter",
             "Messages published by clients.", NATS_LOAD(msgs_in));
        emit(ctx, "sluice_nats_messages_delivered_total", "counter",
             "Messages delivered to subscriptions.", NATS_LOAD(msgs_out));
        emit(ctx, "sluice_nats_payload_bytes_received_total", "counter", "Payload bytes published.",
             NATS_LOAD(bytes_in));
        emit(ctx, "sluice_nats_payload_bytes_delivered_total", "counter",
             "Payload bytes delivered.", NATS_LOAD(bytes_out));
        emit(ctx, "sluice_nats_forwarded_total", "counter",
             "Messages forwarded to another worker's subscribers.", NATS_LOAD(forwarded));
        emit(ctx, "sluice_nats_queue_bounced_total", "counter",
             "Queue-group messages passed on because the chosen worker had no member left.",
             NATS_LOAD(bounced));
        emit(ctx, "sluice_nats_dropped_total", "counter",
             "Messages dropped: queue group gone everywhere, or no buffer to forward.",
             NATS_LOAD(dropped_no_member));
        emit(ctx, "sluice_nats_slow_consumers_total", "counter",
             "Subscribers disconnected as slow consumers.", NATS_LOAD(slow_consumers));
        emit(ctx, "sluice_nats_subscriptions", "gauge", "Subscriptions of this worker's clients.",
             NATS_LOAD(subscriptions));
}

static int nats_worker_init(struct sl_worker *w)
{
        return nats_route_init(w);
}

const struct sl_proto_ops nats_proto_ops = {
    .name = "nats",
    .conn_state_bytes = sizeof(struct nats_conn),
    .worker_init = nats_worker_init,
    .worker_fini = nats_route_fini,
    .open = nats_open,
    .recv = nats_recv,
    .writable = nats_writable,
    .tick = nats_tick,
    .tick_deadline = nats_deadline,
    .closed = nats_closed,
    .refused = nats_refused,
    .msg = nats_route_msg,
    .metrics = nats_metrics,
};
