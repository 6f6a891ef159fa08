/* The AMQP 0-9-1 front-end (first slice): handshake, channels, heartbeats,
 * connection/channel errors, and an in-memory transient broker per worker
 * (exchanges direct/fanout/topic, queues, consume/get/ack/qos, confirms).
 * A queue lives on the worker of the connection that declared it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_codec.h"
#include "amqp_frame.h"
#include "amqp_proto.h"
#include "sl_log.h"
#include "sl_worker.h"

#define AMQP_CHANNEL_MAX      2047
#define AMQP_SERVER_FRAME_MAX 131072
#define AMQP_FRAME_MAX_MIN    4096
#define AMQP_HEARTBEAT_S      60
#define AMQP_HANDSHAKE_MS     10000
#define AMQP_CLOSE_WAIT_MS    3000
#define AMQP_MSG_MAX          (16u << 20)
#define AMQP_CTL_BUF          2048

enum amqp_conn_phase {
        AMQP_PH_HEADER,
        AMQP_PH_START_OK,
        AMQP_PH_TUNE_OK,
        AMQP_PH_OPEN,
        AMQP_PH_RUNNING,
        AMQP_PH_CLOSING, /* we sent connection.close: wait for close-ok */
};

enum amqp_ex_type { AMQP_EX_DIRECT, AMQP_EX_FANOUT, AMQP_EX_TOPIC };

struct amqp_name {
        uint8_t len;
        char s[256];
};

/* One message: exchange, routing key, raw content-header payload, body, in
 * one allocation. While unacked it sits on its channel's unacked list. */
struct amqp_msg {
        struct amqp_msg *next;
        uint64_t body_len;
        uint64_t got;
        uint32_t hdr_len;
        uint8_t ex_len, rk_len;
        bool redelivered;
        bool mandatory;              /* while held by an open transaction */
        uint64_t dtag;               /* while unacked */
        struct amqp_queue *uq;       /* while unacked: where it came from */
        struct amqp_consumer *ucons; /* while unacked: NULL after cancel / basic.get */
        uint8_t data[];              /* ex, rk, header payload, body */
};

struct amqp_consumer {
        struct amqp_consumer *next_in_queue;
        struct amqp_consumer *next_in_chan;
        struct amqp_queue *q;
        struct sl_conn *c;
        struct amqp_channel *ch;
        struct amqp_name tag;
        bool no_ack;
        uint16_t prefetch;
        uint32_t unacked;
};

struct amqp_queue {
        struct amqp_queue *next;
        struct amqp_name name;
        struct amqp_msg *head, *tail;
        uint64_t count;
        struct amqp_consumer *consumers;
        uint32_t nconsumers;
        uint32_t unacked_refs; /* unacked messages pointing here */
        bool deleted;          /* unlinked; freed when unacked_refs drops to 0 */
        bool auto_delete;      /* deleted when its last consumer goes */
        bool durable;          /* as declared (kept for the equivalence check only) */
        bool exclusive_consumer;
        struct sl_conn *owner; /* exclusive queues: deleted when it closes */
};

/* To a queue (q) or, exchange-to-exchange, to another exchange (dst). */
struct amqp_binding {
        struct amqp_binding *next;
        struct amqp_queue *q;
        struct amqp_exchange *dst;
        struct amqp_name key;
};

#define AMQP_ROUTE_QUEUES_MAX    256 /* queues one publish reaches (more are dropped) */
#define AMQP_ROUTE_EXCHANGES_MAX 32  /* exchanges one publish passes through */

struct amqp_exchange {
        struct amqp_exchange *next;
        struct amqp_name name;
        uint8_t type;
        struct amqp_binding *bindings;
};

struct amqp_worker {
        struct amqp_exchange *exchanges;
        struct amqp_queue *queues;
        uint64_t gen_seq;
        /* written by the worker, read by the control thread (metrics) */
        _Atomic uint64_t published, delivered, acked, unroutable, returned;
        _Atomic uint64_t queues_n, messages_ready, channels, conn_errors, chan_errors;
};

struct amqp_channel {
        uint16_t id;
        bool closing; /* we sent channel.close */
        bool confirm;
        uint16_t prefetch;  /* for consumers created afterwards (per_consumer_qos) */
        uint16_t gprefetch; /* basic.qos global: shared by the channel's consumers */
        uint32_t nunacked;  /* length of the unacked list */
        uint64_t next_tag;
        uint64_t pub_seq;
        uint64_t ctag_seq;
        /* content being received: basic.publish seen (publishing), then the
         * message once its header gave the size */
        bool publishing;
        bool mandatory;
        bool want_header;
        struct amqp_name pub_ex, pub_rk;
        struct amqp_msg *pub;
        struct amqp_msg *unacked_head, *unacked_tail;
        struct amqp_consumer *consumers;
        /* tx.select: publishes and settlements held until tx.commit */
        bool tx;
        struct amqp_msg *txp_head, *txp_tail;
        struct amqp_txack *txa;
        uint32_t ntxa, txa_cap;
};

struct amqp_txack {
        uint32_t key; /* basic.ack / reject / nack */
        bool multiple, requeue;
        uint64_t tag;
};

struct amqp_conn {
        struct amqp_parser parser;
        uint8_t phase;
        uint8_t *abuf; /* parser assembly buffer, lent on demand */
        size_t abuf_cap;
        uint16_t channel_max;
        uint32_t frame_max;
        uint16_t heartbeat;
        bool cancel_notify; /* client capability consumer_cancel_notify */
        /* Output failed: closed from recv's return or the next tick, never
         * synchronously (the runtime may run closed() inside sl_conn_close,
         * which would free channels and queues under the caller's feet). */
        bool doomed;
        uint64_t last_rx_ms, last_tx_hb_ms, phase_since_ms;
        struct amqp_channel **chans; /* [channel_max + 1], allocated at the first channel.open */
};

static struct amqp_worker *aw_of(struct sl_worker *w)
{
        return w->proto_ctx[CTL_PROTO_AMQP];
}

static bool name_eq(const struct amqp_name *n, struct amqp_bytes b)
{
        return n->len == b.len && memcmp(n->s, b.ptr, b.len) == 0;
}

static void name_set(struct amqp_name *n, struct amqp_bytes b)
{
        n->len = (uint8_t)SL_MIN(b.len, 255u);
        memcpy(n->s, b.ptr, n->len);
        n->s[n->len] = 0;
}

static struct amqp_bytes name_view(const struct amqp_name *n)
{
        return (struct amqp_bytes){(const uint8_t *)n->s, n->len};
}

/* ---- sending -------------------------------------------------------------- */

static void doom(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        if (!ac->doomed)
                SL_INFO("amqp: %s: output full, closing (%llu bytes pending)", c->peer_str,
                        (unsigned long long)sl_conn_tx_pending(c));
        ac->doomed = true;
}

static bool conn_usable(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        return c->state == SL_CONN_OPEN && !ac->doomed;
}

/* Sends one method frame. Control replies are small; when the output queue
 * is at its cap the client is not reading: drop it. */
static int send_method(struct sl_conn *c, uint16_t ch, const struct amqp_method *m)
{
        uint8_t buf[AMQP_CTL_BUF];
        int n = amqp_method_frame_encode(ch, m, buf, sizeof(buf));
        SL_ASSERT(n > 0);
        if (!conn_usable(c) || sl_conn_send(c, buf, (size_t)n) != 0) {
                doom(c);
                return -ENOBUFS;
        }
        return 0;
}

static int send_simple(struct sl_conn *c, uint16_t ch, uint32_t key)
{
        struct amqp_method m;
        amqp_method_init(&m, key);
        return send_method(c, ch, &m);
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
                doom(c);
                return -1;
        }
        ac->phase = AMQP_PH_CLOSING;
        ac->phase_since_ms = c->w->now_ms;
        return 0;
}

static long conn_error(struct sl_conn *c, uint16_t code, const char *text, uint32_t cause)
{
        return conn_error_ex(c, code, text, cause, false);
}

static void chan_free(struct sl_conn *c, struct amqp_channel *ch);
static void queue_dispatch(struct amqp_worker *aw, struct amqp_queue *q);

/* Soft error: channel.close; the channel discards input until close-ok. */
static long chan_error(struct sl_conn *c, struct amqp_channel *ch, uint16_t code, const char *text,
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
        chan_free(c, ch);
        struct amqp_channel *nch = calloc(1, sizeof(*nch));
        if (!nch)
                return conn_error(c, 541, "out of memory", cause);
        nch->id = id;
        nch->closing = true;
        ac->chans[id] = nch;
        return send_method(c, id, &m) ? -1 : 0;
}

/* ---- broker: exchanges, queues, routing ---------------------------------- */

static struct amqp_exchange *ex_find(struct amqp_worker *aw, struct amqp_bytes name)
{
        for (struct amqp_exchange *e = aw->exchanges; e; e = e->next)
                if (name_eq(&e->name, name))
                        return e;
        return NULL;
}

static struct amqp_queue *queue_find(struct amqp_worker *aw, struct amqp_bytes name)
{
        for (struct amqp_queue *q = aw->queues; q; q = q->next)
                if (name_eq(&q->name, name))
                        return q;
        return NULL;
}

static struct amqp_exchange *ex_add(struct amqp_worker *aw, struct amqp_bytes name, uint8_t type)
{
        struct amqp_exchange *e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        name_set(&e->name, name);
        e->type = type;
        e->next = aw->exchanges;
        aw->exchanges = e;
        return e;
}

/* Topic match: words split by '.', '*' = one word, '#' = zero or more. */
static bool topic_match(const uint8_t *p, size_t pn, const uint8_t *k, size_t kn)
{
        if (pn == 0)
                return kn == 0;
        size_t pw = 0;
        while (pw < pn && p[pw] != '.')
                pw++;
        const uint8_t *prest = pw < pn ? p + pw + 1 : p + pn;
        size_t prn = pw < pn ? pn - pw - 1 : 0;
        bool plast = pw >= pn;
        if (pw == 1 && p[0] == '#') {
                if (plast)
                        return true;
                /* '#' eats zero words, or one word and tries again */
                if (topic_match(prest, prn, k, kn))
                        return true;
                size_t kw = 0;
                while (kw < kn && k[kw] != '.')
                        kw++;
                if (kw >= kn)
                        return false;
                return topic_match(p, pn, k + kw + 1, kn - kw - 1);
        }
        if (kn == 0)
                return false;
        size_t kw = 0;
        while (kw < kn && k[kw] != '.')
                kw++;
        bool klast = kw >= kn;
        if (!(pw == 1 && p[0] == '*') && (pw != kw || memcmp(p, k, pw) != 0))
                return false;
        if (plast || klast) {
                if (plast && klast)
                        return true;
                if (klast) /* pattern continues: only '#' words may match nothing */
                        return prn == 1 && prest[0] == '#';
                return false;
        }
        return topic_match(prest, prn, k + kw + 1, kn - kw - 1);
}

static void queue_push(struct amqp_queue *q, struct amqp_msg *m)
{
        m->next = NULL;
        if (q->tail)
                q->tail->next = m;
        else
                q->head = m;
        q->tail = m;
        q->count++;
}

static void queue_push_front(struct amqp_queue *q, struct amqp_msg *m)
{
        m->next = q->head;
        q->head = m;
        if (!q->tail)
                q->tail = m;
        q->count++;
}

static struct amqp_msg *queue_pop(struct amqp_queue *q)
{
        struct amqp_msg *m = q->head;
        if (!m)
                return NULL;
        q->head = m->next;
        if (!q->head)
                q->tail = NULL;
        q->count--;
        m->next = NULL;
        return m;
}

static size_t msg_size(const struct amqp_msg *m)
{
        return sizeof(*m) + m->ex_len + m->rk_len + m->hdr_len + m->body_len;
}

struct amqp_route {
        struct amqp_queue *q[AMQP_ROUTE_QUEUES_MAX];
        uint32_t nq;
        struct amqp_exchange *seen[AMQP_ROUTE_EXCHANGES_MAX];
        uint32_t nseen;
};

/* Collects the queues e routes rk to, following exchange-to-exchange
 * bindings; an exchange is visited once (cycles), a queue listed once. */
static void route_ex(struct amqp_route *r, struct amqp_exchange *e, struct amqp_bytes rk)
{
        for (uint32_t i = 0; i < r->nseen; i++)
                if (r->seen[i] == e)
                        return;
        if (r->nseen == AMQP_ROUTE_EXCHANGES_MAX)
                return;
        r->seen[r->nseen++] = e;
        for (struct amqp_binding *b = e->bindings; b; b = b->next) {
                bool hit = e->type == AMQP_EX_FANOUT ||
                           (e->type == AMQP_EX_DIRECT && name_eq(&b->key, rk)) ||
                           (e->type == AMQP_EX_TOPIC &&
                            topic_match((const uint8_t *)b->key.s, b->key.len, rk.ptr, rk.len));
                if (!hit)
                        continue;
                if (b->dst) {
                        route_ex(r, b->dst, rk);
                        continue;
                }
                bool dup = false;
                for (uint32_t i = 0; i < r->nq && !dup; i++)
                        dup = r->q[i] == b->q;
                if (!dup && r->nq < AMQP_ROUTE_QUEUES_MAX)
                        r->q[r->nq++] = b->q;
        }
}

/* Routes a complete message: the first matching queue takes m, further ones
 * a copy (allocated per extra queue). Returns the number of queues. */
static uint32_t route(struct amqp_worker *aw, struct amqp_msg *m)
{
        struct amqp_bytes ex = {m->data, m->ex_len};
        struct amqp_bytes rk = {m->data + m->ex_len, m->rk_len};
        static _Thread_local struct amqp_route r; /* 2.3 KiB: off the stack */
        r.nq = r.nseen = 0;
        if (ex.len == 0) {
                struct amqp_queue *q = queue_find(aw, rk);
                if (q)
                        r.q[r.nq++] = q;
        } else {
                struct amqp_exchange *e = ex_find(aw, ex);
                if (e)
                        route_ex(&r, e, rk);
        }
        uint32_t nt = r.nq;
        struct amqp_queue **targets = r.q;
        if (nt == 0)
                return 0; /* m stays the caller's (basic.return) */
        for (uint32_t i = 1; i < nt; i++) {
                struct amqp_msg *cp = malloc(msg_size(m));
                if (!cp)
                        break;
                memcpy(cp, m, msg_size(m));
                queue_push(targets[i], cp);
                queue_dispatch(aw, targets[i]);
        }
        queue_push(targets[0], m);
        queue_dispatch(aw, targets[0]);
        return nt;
}

/* ---- delivery ------------------------------------------------------------- */

/* Writes method frame + content header + body frames of m; all or nothing
 * as far as the room check goes. Returns 0, -EAGAIN (no room: try when
 * writable), -ENOBUFS (connection dropped). */
static int send_content(struct sl_conn *c, uint16_t chan, const struct amqp_method *meth,
                        const struct amqp_msg *m)
{
        struct amqp_conn *ac = c->proto_state;
        uint8_t buf[AMQP_CTL_BUF];
        int n = amqp_method_frame_encode(chan, meth, buf, sizeof(buf));
        SL_ASSERT(n > 0);
        uint32_t chunk = ac->frame_max - AMQP_FRAME_OVERHEAD;
        uint64_t nframes = (m->body_len + chunk - 1) / chunk;
        uint64_t need = (uint64_t)n + AMQP_FRAME_OVERHEAD + m->hdr_len +
                        nframes * AMQP_FRAME_OVERHEAD + m->body_len;
        if (!conn_usable(c))
                return -ENOBUFS;
        if (sl_conn_tx_room(c) < need) {
                sl_conn_want_writable(c);
                return -EAGAIN;
        }
        const uint8_t *hdr = m->data + m->ex_len + m->rk_len;
        const uint8_t *body = hdr + m->hdr_len;
        uint8_t end = AMQP_FRAME_END;
        uint8_t fh[7] = {
            AMQP_FRAME_HEADER,           (uint8_t)(chan >> 8),        (uint8_t)chan,
            (uint8_t)(m->hdr_len >> 24), (uint8_t)(m->hdr_len >> 16), (uint8_t)(m->hdr_len >> 8),
            (uint8_t)m->hdr_len};
        struct iovec iov[3] = {{buf, (size_t)n}, {fh, 7}, {(void *)hdr, m->hdr_len}};
        struct iovec iov_end = {&end, 1};
        struct iovec all[4] = {iov[0], iov[1], iov[2], iov_end};
        if (sl_conn_sendv(c, all, 4) != 0)
                goto fail;
        for (uint64_t off = 0; off < m->body_len; off += chunk) {
                uint32_t len = (uint32_t)SL_MIN((uint64_t)chunk, m->body_len - off);
                uint8_t bh[7] = {AMQP_FRAME_BODY,      (uint8_t)(chan >> 8), (uint8_t)chan,
                                 (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                                 (uint8_t)len};
                struct iovec bv[3] = {{bh, 7}, {(void *)(body + off), len}, {&end, 1}};
                if (sl_conn_sendv(c, bv, 3) != 0)
                        goto fail;
        }
        return 0;
fail:
        /* Half a message is on the wire: the stream cannot be repaired. */
        doom(c);
        return -ENOBUFS;
}

static void queue_unref(struct amqp_queue *q)
{
        SL_ASSERT(q->unacked_refs > 0);
        if (--q->unacked_refs == 0 && q->deleted)
                free(q);
}

static void unacked_add(struct amqp_channel *ch, struct amqp_msg *m)
{
        m->uq->unacked_refs++;
        ch->nunacked++;
        m->next = NULL;
        if (ch->unacked_tail)
                ch->unacked_tail->next = m;
        else
                ch->unacked_head = m;
        ch->unacked_tail = m;
}

/* Delivers from q to its consumers, round robin, while they have credit
 * and room. */
static void queue_dispatch(struct amqp_worker *aw, struct amqp_queue *q)
{
        (void)aw;
        while (q->head && q->consumers) {
                struct amqp_consumer *pick = NULL;
                /* round robin: the head of the list is next; rotate after use */
                struct amqp_consumer **pp = &q->consumers;
                for (; *pp; pp = &(*pp)->next_in_queue) {
                        struct amqp_consumer *k = *pp;
                        struct amqp_conn *ac = k->c->proto_state;
                        if (!conn_usable(k->c) || ac->phase != AMQP_PH_RUNNING)
                                continue;
                        if (!k->no_ack && k->prefetch && k->unacked >= k->prefetch)
                                continue;
                        if (!k->no_ack && k->ch->gprefetch && k->ch->nunacked >= k->ch->gprefetch)
                                continue;
                        pick = k;
                        break;
                }
                if (!pick)
                        return;
                struct amqp_msg *m = q->head;
                struct amqp_channel *ch = pick->ch;
                struct amqp_method meth;
                amqp_method_init(&meth, AMQP_BASIC_DELIVER);
                meth.args[AMQP_BASIC_DELIVER_CONSUMER_TAG].b = name_view(&pick->tag);
                meth.args[AMQP_BASIC_DELIVER_DELIVERY_TAG].u = ch->next_tag + 1;
                meth.args[AMQP_BASIC_DELIVER_REDELIVERED].u = m->redelivered;
                meth.args[AMQP_BASIC_DELIVER_EXCHANGE].b = (struct amqp_bytes){m->data, m->ex_len};
                meth.args[AMQP_BASIC_DELIVER_ROUTING_KEY].b =
                    (struct amqp_bytes){m->data + m->ex_len, m->rk_len};
                int rc = send_content(pick->c, ch->id, &meth, m);
                if (rc != 0)
                        return; /* resumed from writable() (or the conn is gone) */
                /* rotate: pick goes to the tail */
                *pp = pick->next_in_queue;
                pick->next_in_queue = NULL;
                struct amqp_consumer **tail = &q->consumers;
                while (*tail)
                        tail = &(*tail)->next_in_queue;
                *tail = pick;
                queue_pop(q);
                ch->next_tag++;
                sl_counter_add(&aw->delivered, 1);
                if (pick->no_ack) {
                        free(m);
                } else {
                        m->dtag = ch->next_tag;
                        m->uq = q;
                        m->ucons = pick;
                        pick->unacked++;
                        unacked_add(ch, m);
                }
        }
}

static uint64_t queue_delete(struct amqp_worker *aw, struct amqp_queue *q);

static void consumer_remove(struct amqp_consumer *k)
{
        struct amqp_worker *aw = aw_of(k->c->w);
        struct amqp_queue *q = k->q;
        for (struct amqp_consumer **pp = &q->consumers; *pp; pp = &(*pp)->next_in_queue)
                if (*pp == k) {
                        *pp = k->next_in_queue;
                        break;
                }
        q->nconsumers--;
        q->exclusive_consumer = false; /* it was the only one if set */
        for (struct amqp_consumer **pp = &k->ch->consumers; *pp; pp = &(*pp)->next_in_chan)
                if (*pp == k) {
                        *pp = k->next_in_chan;
                        break;
                }
        for (struct amqp_msg *m = k->ch->unacked_head; m; m = m->next)
                if (m->ucons == k)
                        m->ucons = NULL;
        free(k);
        /* auto-delete: the queue goes with its last consumer */
        if (q->auto_delete && !q->deleted && q->nconsumers == 0)
                queue_delete(aw, q);
}

/* Puts unacked messages back at the head of their queues, in order. */
static void requeue_list(struct amqp_msg *m)
{
        /* reverse, so pushing to the front keeps the original order */
        struct amqp_msg *rev = NULL;
        while (m) {
                struct amqp_msg *n = m->next;
                m->next = rev;
                rev = m;
                m = n;
        }
        while (rev) {
                struct amqp_msg *n = rev->next;
                rev->redelivered = true;
                if (rev->ucons)
                        rev->ucons->unacked--;
                struct amqp_queue *q = rev->uq;
                if (q->deleted)
                        free(rev);
                else
                        queue_push_front(q, rev);
                queue_unref(q);
                rev = n;
        }
}

static void chan_free(struct sl_conn *c, struct amqp_channel *ch)
{
        struct amqp_conn *ac = c->proto_state;
        struct amqp_worker *aw = aw_of(c->w);
        while (ch->consumers)
                consumer_remove(ch->consumers);
        struct amqp_msg *un = ch->unacked_head;
        ch->unacked_head = ch->unacked_tail = NULL;
        ch->nunacked = 0;
        requeue_list(un);
        free(ch->pub);
        while (ch->txp_head) {
                struct amqp_msg *m = ch->txp_head;
                ch->txp_head = m->next;
                free(m);
        }
        free(ch->txa);
        ac->chans[ch->id] = NULL;
        free(ch);
        sl_counter_add(&aw->channels, -1);
        for (struct amqp_queue *q = aw->queues; q; q = q->next)
                queue_dispatch(aw, q);
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
        return send_method(c, 0, &m);
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
                return conn_error(c, 403, "only the PLAIN mechanism is supported", m->key);
        }
        bool ok = resp.len == sizeof(guest) - 1 && memcmp(resp.ptr, guest, resp.len) == 0;
        if (!ok || !peer_is_loopback(c)) {
                ac->phase = AMQP_PH_TUNE_OK;
                return conn_error(c, 403,
                                  ok ? "user 'guest' can only connect via localhost"
                                     : "Login was refused using authentication mechanism PLAIN",
                                  m->key);
        }
        struct amqp_field caps, f;
        if (amqp_table_find(m->args[AMQP_CONNECTION_START_OK_CLIENT_PROPERTIES].b, "capabilities",
                            &caps) == 1 &&
            caps.tag == 'F' && amqp_table_find(caps.v.b, "consumer_cancel_notify", &f) == 1 &&
            f.tag == 't')
                ac->cancel_notify = f.v.u != 0;
        struct amqp_method t;
        amqp_method_init(&t, AMQP_CONNECTION_TUNE);
        t.args[AMQP_CONNECTION_TUNE_CHANNEL_MAX].u = AMQP_CHANNEL_MAX;
        t.args[AMQP_CONNECTION_TUNE_FRAME_MAX].u = AMQP_SERVER_FRAME_MAX;
        t.args[AMQP_CONNECTION_TUNE_HEARTBEAT].u = AMQP_HEARTBEAT_S;
        ac->phase = AMQP_PH_TUNE_OK;
        return send_method(c, 0, &t);
}

static long on_tune_ok(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_method *m)
{
        uint64_t chmax = m->args[AMQP_CONNECTION_TUNE_OK_CHANNEL_MAX].u;
        uint64_t fmax = m->args[AMQP_CONNECTION_TUNE_OK_FRAME_MAX].u;
        uint64_t hb = m->args[AMQP_CONNECTION_TUNE_OK_HEARTBEAT].u;
        if (chmax > AMQP_CHANNEL_MAX)
                return conn_error(c, 530, "channel_max above the server's", m->key);
        if (fmax == 0 || fmax > AMQP_SERVER_FRAME_MAX || fmax < AMQP_FRAME_MAX_MIN)
                return conn_error(c, 530, "frame_max out of range", m->key);
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
                return conn_error(c, 530, "access to vhost refused (only \"/\" exists)", m->key);
        ac->phase = AMQP_PH_RUNNING;
        return send_simple(c, 0, AMQP_CONNECTION_OPEN_OK);
}

/* ---- channel-level methods ------------------------------------------------- */

static struct amqp_msg *msg_new(struct amqp_bytes ex, struct amqp_bytes rk, uint64_t hdr_max,
                                uint64_t body_len)
{
        struct amqp_msg *m = malloc(sizeof(*m) + ex.len + rk.len + hdr_max + body_len);
        if (!m)
                return NULL;
        memset(m, 0, sizeof(*m));
        m->ex_len = (uint8_t)ex.len;
        m->rk_len = (uint8_t)rk.len;
        memcpy(m->data, ex.ptr, ex.len);
        memcpy(m->data + ex.len, rk.ptr, rk.len);
        m->body_len = body_len;
        return m;
}

static long on_exchange_declare(struct sl_conn *c, struct amqp_channel *ch,
                                const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_EXCHANGE_DECLARE_EXCHANGE].b;
        struct amqp_bytes type = m->args[AMQP_EXCHANGE_DECLARE_TYPE].b;
        bool passive = m->args[AMQP_EXCHANGE_DECLARE_PASSIVE].u;
        int t = -1;
        if (type.len == 6 && !memcmp(type.ptr, "direct", 6))
                t = AMQP_EX_DIRECT;
        else if (type.len == 6 && !memcmp(type.ptr, "fanout", 6))
                t = AMQP_EX_FANOUT;
        else if (type.len == 5 && !memcmp(type.ptr, "topic", 5))
                t = AMQP_EX_TOPIC;
        struct amqp_exchange *e = ex_find(aw, name);
        if (passive) {
                if (!e)
                        return chan_error(c, ch, 404, "no exchange", m->key);
        } else if (name.len == 0) {
                return chan_error(c, ch, 403, "the default exchange cannot be declared", m->key);
        } else if (t < 0) {
                return conn_error(c, 503, "invalid exchange type", m->key);
        } else if (e && e->type != t) {
                return chan_error(c, ch, 406, "inequivalent arg 'type'", m->key);
        } else if (!e) {
                if (name.len >= 4 && !memcmp(name.ptr, "amq.", 4))
                        return chan_error(c, ch, 403, "exchange names amq.* are reserved", m->key);
                if (!ex_add(aw, name, (uint8_t)t))
                        return conn_error(c, 541, "out of memory", m->key);
        }
        if (m->args[AMQP_EXCHANGE_DECLARE_NOWAIT].u)
                return 0;
        return send_simple(c, ch->id, AMQP_EXCHANGE_DECLARE_OK);
}

static long on_queue_declare(struct sl_conn *c, struct amqp_channel *ch,
                             const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_QUEUE_DECLARE_QUEUE].b;
        char gen[64];
        if (name.len == 0) {
                snprintf(gen, sizeof(gen), "amq.gen-%u-%llx", c->w->id,
                         (unsigned long long)++aw->gen_seq * 0x9e3779b97f4a7c15ull);
                name = amqp_cstr(gen);
        }
        struct amqp_queue *q = queue_find(aw, name);
        bool passive = m->args[AMQP_QUEUE_DECLARE_PASSIVE].u;
        bool durable = m->args[AMQP_QUEUE_DECLARE_DURABLE].u;
        bool exclusive = m->args[AMQP_QUEUE_DECLARE_EXCLUSIVE].u;
        bool auto_delete = m->args[AMQP_QUEUE_DECLARE_AUTO_DELETE].u;
        if (!q && !passive && name.ptr != (const uint8_t *)gen && name.len >= 4 &&
            !memcmp(name.ptr, "amq.", 4))
                return chan_error(c, ch, 403, "queue names amq.* are reserved", m->key);
        if (q && !passive && !(q->owner && q->owner != c)) {
                const char *what = q->durable != durable             ? "durable"
                                   : (q->owner != NULL) != exclusive ? "exclusive"
                                   : q->auto_delete != auto_delete   ? "auto_delete"
                                                                     : NULL;
                if (what) {
                        char t[320];
                        snprintf(t, sizeof(t), "inequivalent arg '%s' for queue '%s'", what,
                                 q->name.s);
                        return chan_error(c, ch, 406, t, m->key);
                }
        }
        if (!q) {
                if (passive)
                        return chan_error(c, ch, 404, "no queue", m->key);
                q = calloc(1, sizeof(*q));
                if (!q)
                        return conn_error(c, 541, "out of memory", m->key);
                name_set(&q->name, name);
                if (exclusive)
                        q->owner = c;
                q->auto_delete = auto_delete;
                q->durable = durable;
                q->next = aw->queues;
                aw->queues = q;
                sl_counter_add(&aw->queues_n, 1);
        } else if (q->owner && q->owner != c) {
                return chan_error(c, ch, 405, "queue is exclusive to another connection", m->key);
        }
        if (m->args[AMQP_QUEUE_DECLARE_NOWAIT].u)
                return 0;
        struct amqp_method r;
        amqp_method_init(&r, AMQP_QUEUE_DECLARE_OK);
        r.args[AMQP_QUEUE_DECLARE_OK_QUEUE].b = name_view(&q->name);
        r.args[AMQP_QUEUE_DECLARE_OK_MESSAGE_COUNT].u = (uint32_t)q->count;
        r.args[AMQP_QUEUE_DECLARE_OK_CONSUMER_COUNT].u = q->nconsumers;
        return send_method(c, ch->id, &r);
}

static long on_queue_bind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_queue *q = queue_find(aw, m->args[AMQP_QUEUE_BIND_QUEUE].b);
        if (!q)
                return chan_error(c, ch, 404, "no queue", m->key);
        struct amqp_bytes exn = m->args[AMQP_QUEUE_BIND_EXCHANGE].b;
        if (exn.len == 0)
                return chan_error(c, ch, 403, "operation not permitted on the default exchange",
                                  m->key);
        struct amqp_exchange *e = ex_find(aw, exn);
        if (!e)
                return chan_error(c, ch, 404, "no exchange", m->key);
        struct amqp_bytes key = m->args[AMQP_QUEUE_BIND_ROUTING_KEY].b;
        bool have = false;
        for (struct amqp_binding *b = e->bindings; b; b = b->next)
                have |= b->q == q && name_eq(&b->key, key);
        if (!have) {
                struct amqp_binding *b = calloc(1, sizeof(*b));
                if (!b)
                        return conn_error(c, 541, "out of memory", m->key);
                b->q = q;
                name_set(&b->key, key);
                b->next = e->bindings;
                e->bindings = b;
        }
        if (m->args[AMQP_QUEUE_BIND_NOWAIT].u)
                return 0;
        return send_simple(c, ch->id, AMQP_QUEUE_BIND_OK);
}

/* Unlinks q: bindings dropped, consumers cancelled (notified when the client
 * asked for it), ready messages freed. Unacked ones keep q alive until they
 * settle. Returns the number of ready messages dropped. */
static uint64_t queue_delete(struct amqp_worker *aw, struct amqp_queue *q)
{
        for (struct amqp_queue **pp = &aw->queues; *pp; pp = &(*pp)->next)
                if (*pp == q) {
                        *pp = q->next;
                        break;
                }
        q->deleted = true;
        sl_counter_add(&aw->queues_n, -1);
        for (struct amqp_exchange *e = aw->exchanges; e; e = e->next)
                for (struct amqp_binding **bp = &e->bindings; *bp;) {
                        struct amqp_binding *b = *bp;
                        if (b->q == q) {
                                *bp = b->next;
                                free(b);
                        } else {
                                bp = &b->next;
                        }
                }
        while (q->consumers) {
                struct amqp_consumer *k = q->consumers;
                struct amqp_conn *kc = k->c->proto_state;
                if (kc->cancel_notify && k->c->state == SL_CONN_OPEN && !k->ch->closing) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_CANCEL);
                        r.args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b = name_view(&k->tag);
                        r.args[AMQP_BASIC_CANCEL_NOWAIT].u = 1;
                        send_method(k->c, k->ch->id, &r);
                }
                consumer_remove(k);
        }
        uint64_t n = q->count;
        struct amqp_msg *m;
        while ((m = queue_pop(q)))
                free(m);
        if (!q->unacked_refs)
                free(q);
        return n;
}

/* Finds a queue for a channel method: 404 if missing, 405 if another
 * connection holds it exclusively. */
static struct amqp_queue *queue_lookup(struct sl_conn *c, struct amqp_channel *ch,
                                       struct amqp_bytes name, uint32_t key, long *err)
{
        struct amqp_queue *q = queue_find(aw_of(c->w), name);
        if (!q) {
                *err = chan_error(c, ch, 404, "no queue", key);
                return NULL;
        }
        if (q->owner && q->owner != c) {
                *err = chan_error(c, ch, 405, "queue is exclusive to another connection", key);
                return NULL;
        }
        return q;
}

static long on_queue_delete(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_bytes name = m->args[AMQP_QUEUE_DELETE_QUEUE].b;
        struct amqp_queue *q = queue_find(aw_of(c->w), name);
        uint64_t n = 0;
        /* A missing queue is deleted already: delete-ok, as RabbitMQ does. */
        if (q) {
                long err = 0;
                if (!queue_lookup(c, ch, name, m->key, &err))
                        return err;
                if (m->args[AMQP_QUEUE_DELETE_IF_UNUSED].u && q->nconsumers)
                        return chan_error(c, ch, 406, "queue in use", m->key);
                if (m->args[AMQP_QUEUE_DELETE_IF_EMPTY].u && q->count)
                        return chan_error(c, ch, 406, "queue not empty", m->key);
                n = queue_delete(aw_of(c->w), q);
        }
        if (m->args[AMQP_QUEUE_DELETE_NOWAIT].u)
                return 0;
        struct amqp_method r;
        amqp_method_init(&r, AMQP_QUEUE_DELETE_OK);
        r.args[AMQP_QUEUE_DELETE_OK_MESSAGE_COUNT].u = (uint32_t)n;
        return send_method(c, ch->id, &r);
}

static long on_queue_purge(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        long err = 0;
        struct amqp_queue *q = queue_lookup(c, ch, m->args[AMQP_QUEUE_PURGE_QUEUE].b, m->key, &err);
        if (!q)
                return err;
        uint64_t n = q->count;
        struct amqp_msg *x;
        while ((x = queue_pop(q)))
                free(x);
        if (m->args[AMQP_QUEUE_PURGE_NOWAIT].u)
                return 0;
        struct amqp_method r;
        amqp_method_init(&r, AMQP_QUEUE_PURGE_OK);
        r.args[AMQP_QUEUE_PURGE_OK_MESSAGE_COUNT].u = (uint32_t)n;
        return send_method(c, ch->id, &r);
}

static long on_queue_unbind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_queue *q =
            queue_lookup(c, ch, m->args[AMQP_QUEUE_UNBIND_QUEUE].b, m->key, &err);
        if (!q)
                return err;
        struct amqp_exchange *e = ex_find(aw, m->args[AMQP_QUEUE_UNBIND_EXCHANGE].b);
        if (!e)
                return chan_error(c, ch, 404, "no exchange", m->key);
        struct amqp_bytes key = m->args[AMQP_QUEUE_UNBIND_ROUTING_KEY].b;
        for (struct amqp_binding **bp = &e->bindings; *bp; bp = &(*bp)->next)
                if ((*bp)->q == q && name_eq(&(*bp)->key, key)) {
                        struct amqp_binding *b = *bp;
                        *bp = b->next;
                        free(b);
                        break;
                }
        return send_simple(c, ch->id, AMQP_QUEUE_UNBIND_OK);
}

/* exchange.bind / exchange.unbind: messages flow from source to
 * destination. */
static long on_exchange_bind(struct sl_conn *c, struct amqp_channel *ch,
                             const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        bool bind = m->key == AMQP_EXCHANGE_BIND;
        struct amqp_bytes dn = m->args[AMQP_EXCHANGE_BIND_DESTINATION].b;
        struct amqp_bytes sn = m->args[AMQP_EXCHANGE_BIND_SOURCE].b;
        struct amqp_bytes key = m->args[AMQP_EXCHANGE_BIND_ROUTING_KEY].b;
        if (dn.len == 0 || sn.len == 0)
                return chan_error(c, ch, 403, "operation not permitted on the default exchange",
                                  m->key);
        struct amqp_exchange *dst = ex_find(aw, dn), *src = ex_find(aw, sn);
        if (!dst || !src)
                return chan_error(c, ch, 404,
                                  !dst ? "no destination exchange" : "no source exchange", m->key);
        struct amqp_binding **bp = &src->bindings;
        while (*bp && !((*bp)->dst == dst && name_eq(&(*bp)->key, key)))
                bp = &(*bp)->next;
        if (bind && !*bp) {
                struct amqp_binding *b = calloc(1, sizeof(*b));
                if (!b)
                        return conn_error(c, 541, "out of memory", m->key);
                b->dst = dst;
                name_set(&b->key, key);
                b->next = src->bindings;
                src->bindings = b;
        } else if (!bind && *bp) {
                struct amqp_binding *b = *bp;
                *bp = b->next;
                free(b);
        }
        if (m->args[AMQP_EXCHANGE_BIND_NOWAIT].u)
                return 0;
        return send_simple(c, ch->id, bind ? AMQP_EXCHANGE_BIND_OK : AMQP_EXCHANGE_UNBIND_OK);
}

static long on_exchange_delete(struct sl_conn *c, struct amqp_channel *ch,
                               const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_EXCHANGE_DELETE_EXCHANGE].b;
        if (name.len == 0 || (name.len >= 4 && !memcmp(name.ptr, "amq.", 4)))
                return chan_error(c, ch, 403, "cannot delete a built-in exchange", m->key);
        struct amqp_exchange **pp = &aw->exchanges;
        while (*pp && !name_eq(&(*pp)->name, name))
                pp = &(*pp)->next;
        struct amqp_exchange *e = *pp;
        if (e) {
                if (m->args[AMQP_EXCHANGE_DELETE_IF_UNUSED].u && e->bindings)
                        return chan_error(c, ch, 406, "exchange in use", m->key);
                *pp = e->next;
                while (e->bindings) {
                        struct amqp_binding *b = e->bindings;
                        e->bindings = b->next;
                        free(b);
                }
                /* and the exchange-to-exchange bindings that lead to it */
                for (struct amqp_exchange *o = aw->exchanges; o; o = o->next)
                        for (struct amqp_binding **bp = &o->bindings; *bp;) {
                                struct amqp_binding *b = *bp;
                                if (b->dst == e) {
                                        *bp = b->next;
                                        free(b);
                                } else {
                                        bp = &b->next;
                                }
                        }
                free(e);
        }
        if (m->args[AMQP_EXCHANGE_DELETE_NOWAIT].u)
                return 0;
        return send_simple(c, ch->id, AMQP_EXCHANGE_DELETE_OK);
}

static long on_publish(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        if (m->args[AMQP_BASIC_PUBLISH_IMMEDIATE].u)
                return conn_error(c, 540, "immediate=true", m->key);
        struct amqp_bytes ex = m->args[AMQP_BASIC_PUBLISH_EXCHANGE].b;
        if (ex.len && !ex_find(aw, ex)) {
                char t[300];
                snprintf(t, sizeof(t), "no exchange '%.*s' in vhost '/'", (int)ex.len,
                         (const char *)ex.ptr);
                return chan_error(c, ch, 404, t, m->key);
        }
        /* The message is allocated once its header gives the body size. */
        name_set(&ch->pub_ex, ex);
        name_set(&ch->pub_rk, m->args[AMQP_BASIC_PUBLISH_ROUTING_KEY].b);
        ch->publishing = true;
        ch->mandatory = m->args[AMQP_BASIC_PUBLISH_MANDATORY].u;
        ch->want_header = true;
        return 0;
}

/* Routes a published message; basic.return when unroutable and mandatory. */
static long publish_route(struct sl_conn *c, struct amqp_channel *ch, struct amqp_msg *m,
                          bool mandatory)
{
        struct amqp_worker *aw = aw_of(c->w);
        if (route(aw, m) == 0) {
                sl_counter_add(&aw->unroutable, 1);
                if (mandatory) {
                        sl_counter_add(&aw->returned, 1);
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_RETURN);
                        r.args[AMQP_BASIC_RETURN_REPLY_CODE].u = 312;
                        r.args[AMQP_BASIC_RETURN_REPLY_TEXT].b = amqp_cstr("NO_ROUTE");
                        r.args[AMQP_BASIC_RETURN_EXCHANGE].b =
                            (struct amqp_bytes){m->data, m->ex_len};
                        r.args[AMQP_BASIC_RETURN_ROUTING_KEY].b =
                            (struct amqp_bytes){m->data + m->ex_len, m->rk_len};
                        /* no room: the return is dropped (output is full) */
                        int rc = send_content(c, ch->id, &r, m);
                        if (rc == -ENOBUFS) {
                                free(m);
                                return -1;
                        }
                }
                free(m);
        }
        return 0;
}

static long publish_done(struct sl_conn *c, struct amqp_channel *ch)
{
        struct amqp_msg *m = ch->pub;
        ch->pub = NULL;
        ch->publishing = false;
        sl_counter_add(&aw_of(c->w)->published, 1);
        if (ch->tx) {
                m->mandatory = ch->mandatory;
                m->next = NULL;
                if (ch->txp_tail)
                        ch->txp_tail->next = m;
                else
                        ch->txp_head = m;
                ch->txp_tail = m;
                return 0;
        }
        if (publish_route(c, ch, m, ch->mandatory))
                return -1;
        if (ch->confirm) {
                struct amqp_method a;
                amqp_method_init(&a, AMQP_BASIC_ACK);
                a.args[AMQP_BASIC_ACK_DELIVERY_TAG].u = ++ch->pub_seq;
                return send_method(c, ch->id, &a);
        }
        return 0;
}

static long on_header(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_frame *f)
{
        struct amqp_header h;
        int rc = amqp_header_decode(f->payload, f->size, &h);
        if (rc < 0)
                return conn_error(c, (uint16_t)-rc, "bad content header", AMQP_BASIC_PUBLISH);
        if (h.class_id != AMQP_CLASS_BASIC)
                return conn_error(c, 505, "content header for a class other than basic",
                                  AMQP_BASIC_PUBLISH);
        /* A delivery goes out whole or waits for room (send_content), so a
         * message must fit in a consumer's output cap with room to spare. */
        uint64_t max = SL_MIN((uint64_t)AMQP_MSG_MAX, c->w->limits.pending_response_bytes_max / 2);
        if (h.body_size > max) {
                char t[96];
                snprintf(t, sizeof(t), "message size %llu larger than max size %llu",
                         (unsigned long long)h.body_size, (unsigned long long)max);
                return chan_error(c, ch, 406, t, AMQP_BASIC_PUBLISH);
        }
        /* The one allocation per message (freed on ack or no-ack delivery). */
        struct amqp_msg *m =
            msg_new(name_view(&ch->pub_ex), name_view(&ch->pub_rk), f->size, h.body_size);
        ch->pub = m;
        if (!m)
                return conn_error(c, 541, "out of memory", AMQP_BASIC_PUBLISH);
        m->hdr_len = f->size;
        memcpy(m->data + m->ex_len + m->rk_len, f->payload, f->size);
        ch->want_header = false;
        if (m->body_len == 0)
                return publish_done(c, ch);
        return 0;
}

static long on_body(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_frame *f)
{
        struct amqp_conn *ac = c->proto_state;
        if ((uint64_t)f->size + AMQP_FRAME_OVERHEAD > ac->frame_max)
                return conn_error(c, 501, "body frame larger than the negotiated frame_max",
                                  AMQP_BASIC_PUBLISH);
        struct amqp_msg *m = ch->pub;
        if (m->got + f->size > m->body_len)
                return conn_error(c, 501, "body frames longer than body-size", AMQP_BASIC_PUBLISH);
        memcpy(m->data + m->ex_len + m->rk_len + m->hdr_len + m->got, f->payload, f->size);
        m->got += f->size;
        if (m->got == m->body_len)
                return publish_done(c, ch);
        return 0;
}

static long on_consume(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_queue *q =
            queue_lookup(c, ch, m->args[AMQP_BASIC_CONSUME_QUEUE].b, m->key, &err);
        if (!q)
                return err;
        struct amqp_bytes tag = m->args[AMQP_BASIC_CONSUME_CONSUMER_TAG].b;
        char gen[48];
        if (tag.len == 0) {
                snprintf(gen, sizeof(gen), "amq.ctag-%llu-%u-%llu", (unsigned long long)c->id,
                         ch->id, (unsigned long long)++ch->ctag_seq);
                tag = amqp_cstr(gen);
        }
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                if (name_eq(&k->tag, tag))
                        return conn_error(c, 530, "attempt to reuse consumer tag", m->key);
        bool exclusive = m->args[AMQP_BASIC_CONSUME_EXCLUSIVE].u;
        if (q->exclusive_consumer || (exclusive && q->nconsumers))
                return chan_error(c, ch, 403, "queue has an exclusive consumer or is in use",
                                  m->key);
        struct amqp_consumer *k = calloc(1, sizeof(*k));
        if (!k)
                return conn_error(c, 541, "out of memory", m->key);
        name_set(&k->tag, tag);
        k->q = q;
        k->c = c;
        k->ch = ch;
        k->no_ack = m->args[AMQP_BASIC_CONSUME_NO_ACK].u;
        q->exclusive_consumer = exclusive;
        k->prefetch = ch->prefetch;
        k->next_in_chan = ch->consumers;
        ch->consumers = k;
        struct amqp_consumer **tail = &q->consumers;
        while (*tail)
                tail = &(*tail)->next_in_queue;
        *tail = k;
        q->nconsumers++;
        if (!m->args[AMQP_BASIC_CONSUME_NOWAIT].u) {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_BASIC_CONSUME_OK);
                r.args[AMQP_BASIC_CONSUME_OK_CONSUMER_TAG].b = name_view(&k->tag);
                if (send_method(c, ch->id, &r))
                        return -1;
        }
        queue_dispatch(aw, q);
        return 0;
}

static long on_cancel(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_bytes tag = m->args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b;
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                if (name_eq(&k->tag, tag)) {
                        consumer_remove(k);
                        break;
                }
        if (m->args[AMQP_BASIC_CANCEL_NOWAIT].u)
                return 0;
        struct amqp_method r;
        amqp_method_init(&r, AMQP_BASIC_CANCEL_OK);
        r.args[AMQP_BASIC_CANCEL_OK_CONSUMER_TAG].b = tag;
        return send_method(c, ch->id, &r);
}

static long on_get(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        (void)aw;
        struct amqp_queue *q = queue_lookup(c, ch, m->args[AMQP_BASIC_GET_QUEUE].b, m->key, &err);
        if (!q)
                return err;
        struct amqp_msg *msg = q->head;
        if (!msg)
                return send_simple(c, ch->id, AMQP_BASIC_GET_EMPTY);
        struct amqp_method r;
        amqp_method_init(&r, AMQP_BASIC_GET_OK);
        r.args[AMQP_BASIC_GET_OK_DELIVERY_TAG].u = ch->next_tag + 1;
        r.args[AMQP_BASIC_GET_OK_REDELIVERED].u = msg->redelivered;
        r.args[AMQP_BASIC_GET_OK_EXCHANGE].b = (struct amqp_bytes){msg->data, msg->ex_len};
        r.args[AMQP_BASIC_GET_OK_ROUTING_KEY].b =
            (struct amqp_bytes){msg->data + msg->ex_len, msg->rk_len};
        r.args[AMQP_BASIC_GET_OK_MESSAGE_COUNT].u = (uint32_t)(q->count - 1);
        int rc = send_content(c, ch->id, &r, msg);
        if (rc == -EAGAIN) {
                doom(c);
                return -1;
        }
        if (rc)
                return -1;
        queue_pop(q);
        ch->next_tag++;
        sl_counter_add(&aw->delivered, 1);
        if (m->args[AMQP_BASIC_GET_NO_ACK].u) {
                free(msg);
        } else {
                msg->dtag = ch->next_tag;
                msg->uq = q;
                msg->ucons = NULL;
                unacked_add(ch, msg);
        }
        return 0;
}

/* basic.ack / reject / nack: settle tag (or everything up to it). */
static long settle(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m,
                   uint64_t tag, bool multiple, bool requeue)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_msg *req = NULL, **req_tail = &req;
        bool found = false;
        struct amqp_msg **pp = &ch->unacked_head, *prev = NULL;
        while (*pp) {
                struct amqp_msg *x = *pp;
                bool hit = multiple ? (tag == 0 || x->dtag <= tag) : x->dtag == tag;
                if (!hit) {
                        prev = x;
                        pp = &x->next;
                        continue;
                }
                found = true;
                ch->nunacked--;
                *pp = x->next;
                if (ch->unacked_tail == x)
                        ch->unacked_tail = prev;
                x->next = NULL;
                if (requeue) {
                        *req_tail = x;
                        req_tail = &x->next;
                } else {
                        if (x->ucons)
                                x->ucons->unacked--;
                        sl_counter_add(&aw->acked, 1);
                        struct amqp_queue *q = x->uq;
                        free(x);
                        queue_unref(q);
                }
                if (!multiple)
                        break;
        }
        if (!found && !(multiple && tag == 0)) {
                char t[64];
                snprintf(t, sizeof(t), "unknown delivery tag %llu", (unsigned long long)tag);
                return chan_error(c, ch, 406, t, m->key);
        }
        /* Credit came back to this channel's consumers; requeued messages
         * may go to anyone. Dispatch only those queues (the hot path of
         * every ack), or all when requeued messages came from many. */
        struct amqp_queue *touched[16];
        uint32_t nt = 0;
        bool all = false;
        for (struct amqp_msg *x = req; x; x = x->next) {
                bool seen = false;
                for (uint32_t i = 0; i < nt && !seen; i++)
                        seen = touched[i] == x->uq;
                if (!seen && !x->uq->deleted) {
                        if (nt == SL_ARRAY_LEN(touched))
                                all = true;
                        else
                                touched[nt++] = x->uq;
                }
        }
        requeue_list(req);
        if (all) {
                for (struct amqp_queue *q = aw->queues; q; q = q->next)
                        queue_dispatch(aw, q);
                return 0;
        }
        for (uint32_t i = 0; i < nt; i++)
                queue_dispatch(aw, touched[i]);
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                queue_dispatch(aw, k->q);
        return 0;
}

static long tx_hold_settle(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        if (ch->ntxa == ch->txa_cap) {
                uint32_t cap = ch->txa_cap ? ch->txa_cap * 2 : 16;
                struct amqp_txack *n = realloc(ch->txa, cap * sizeof(*n));
                if (!n)
                        return conn_error(c, 541, "out of memory", m->key);
                ch->txa = n;
                ch->txa_cap = cap;
        }
        struct amqp_txack *a = &ch->txa[ch->ntxa++];
        a->key = m->key;
        a->tag = m->args[0].u; /* delivery-tag is the first argument of all three */
        a->multiple = m->key != AMQP_BASIC_REJECT && m->args[1].u;
        a->requeue = m->key == AMQP_BASIC_REJECT ? m->args[AMQP_BASIC_REJECT_REQUEUE].u
                     : m->key == AMQP_BASIC_NACK ? m->args[AMQP_BASIC_NACK_REQUEUE].u
                                                 : false;
        return 0;
}

static long tx_commit(struct sl_conn *c, struct amqp_channel *ch)
{
        struct amqp_conn *ac = c->proto_state;
        uint16_t id = ch->id;
        struct amqp_msg *p = ch->txp_head;
        ch->txp_head = ch->txp_tail = NULL;
        struct amqp_txack *txa = ch->txa;
        uint32_t n = ch->ntxa;
        ch->txa = NULL;
        ch->ntxa = ch->txa_cap = 0;
        long rc = 0;
        while (p) {
                struct amqp_msg *next = p->next;
                if (rc == 0)
                        rc = publish_route(c, ch, p, p->mandatory);
                else
                        free(p);
                p = next;
        }
        for (uint32_t i = 0; i < n && rc == 0 && ac->chans[id] == ch; i++) {
                struct amqp_method fake = {.key = txa[i].key};
                rc = settle(c, ch, &fake, txa[i].tag, txa[i].multiple,
                            txa[i].key != AMQP_BASIC_ACK && txa[i].requeue);
        }
        free(txa);
        if (rc || ac->chans[id] != ch)
                return rc; /* the channel was closed by an error */
        return send_simple(c, id, AMQP_TX_COMMIT_OK);
}

static long tx_rollback(struct sl_conn *c, struct amqp_channel *ch)
{
        while (ch->txp_head) {
                struct amqp_msg *m = ch->txp_head;
                ch->txp_head = m->next;
                free(m);
        }
        ch->txp_tail = NULL;
        ch->ntxa = 0;
        return send_simple(c, ch->id, AMQP_TX_ROLLBACK_OK);
}

static long dispatch_method(struct sl_conn *c, struct amqp_conn *ac, uint16_t chan,
                            const struct amqp_method *m)
{
        struct amqp_channel *ch = ac->chans && chan <= ac->channel_max ? ac->chans[chan] : NULL;
        if (m->key == AMQP_CHANNEL_OPEN) {
                if (chan > ac->channel_max)
                        return conn_error(c, 504, "channel number above channel_max", m->key);
                if (ch)
                        return conn_error(c, 504, "second 'channel.open' seen", m->key);
                if (!ac->chans) {
                        ac->chans = calloc((size_t)ac->channel_max + 1, sizeof(*ac->chans));
                        if (!ac->chans)
                                return conn_error(c, 541, "out of memory", m->key);
                }
                ch = calloc(1, sizeof(*ch));
                if (!ch)
                        return conn_error(c, 541, "out of memory", m->key);
                ch->id = chan;
                ac->chans[chan] = ch;
                sl_counter_add(&aw_of(c->w)->channels, 1);
                return send_simple(c, chan, AMQP_CHANNEL_OPEN_OK);
        }
        if (!ch)
                return conn_error(c, 504, "expected 'channel.open'", m->key);
        if (ch->closing) {
                /* after our channel.close only close / close-ok matter */
                if (m->key == AMQP_CHANNEL_CLOSE_OK) {
                        ac->chans[chan] = NULL;
                        free(ch);
                } else if (m->key == AMQP_CHANNEL_CLOSE) {
                        ac->chans[chan] = NULL;
                        free(ch);
                        return send_simple(c, chan, AMQP_CHANNEL_CLOSE_OK);
                }
                return 0;
        }
        if (ch->publishing)
                return conn_error(c, 505, "expected content header/body, got a method", m->key);
        switch (m->key) {
        case AMQP_CHANNEL_CLOSE:
                chan_free(c, ch);
                return send_simple(c, chan, AMQP_CHANNEL_CLOSE_OK);
        case AMQP_CHANNEL_CLOSE_OK:
                return 0; /* not expected; ignore */
        case AMQP_CHANNEL_FLOW: {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_CHANNEL_FLOW_OK);
                r.args[0].u = m->args[0].u;
                return send_method(c, chan, &r);
        }
        case AMQP_ACCESS_REQUEST: {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_ACCESS_REQUEST_OK);
                r.args[0].u = 1;
                return send_method(c, chan, &r);
        }
        case AMQP_EXCHANGE_DECLARE:
                return on_exchange_declare(c, ch, m);
        case AMQP_QUEUE_DECLARE:
                return on_queue_declare(c, ch, m);
        case AMQP_QUEUE_BIND:
                return on_queue_bind(c, ch, m);
        case AMQP_QUEUE_UNBIND:
                return on_queue_unbind(c, ch, m);
        case AMQP_QUEUE_PURGE:
                return on_queue_purge(c, ch, m);
        case AMQP_QUEUE_DELETE:
                return on_queue_delete(c, ch, m);
        case AMQP_EXCHANGE_DELETE:
                return on_exchange_delete(c, ch, m);
        case AMQP_EXCHANGE_BIND:
        case AMQP_EXCHANGE_UNBIND:
                return on_exchange_bind(c, ch, m);
        case AMQP_BASIC_QOS:
                if (m->args[AMQP_BASIC_QOS_GLOBAL].u)
                        ch->gprefetch = (uint16_t)m->args[AMQP_BASIC_QOS_PREFETCH_COUNT].u;
                else
                        ch->prefetch = (uint16_t)m->args[AMQP_BASIC_QOS_PREFETCH_COUNT].u;
                return send_simple(c, chan, AMQP_BASIC_QOS_OK);
        case AMQP_BASIC_RECOVER:
        case AMQP_BASIC_RECOVER_ASYNC: {
                /* requeue=0 (redeliver to the same consumer) is not
                 * supported by RabbitMQ either; both requeue. */
                struct amqp_msg *un = ch->unacked_head;
                ch->unacked_head = ch->unacked_tail = NULL;
                ch->nunacked = 0;
                requeue_list(un);
                struct amqp_worker *aw = aw_of(c->w);
                if (m->key == AMQP_BASIC_RECOVER && send_simple(c, chan, AMQP_BASIC_RECOVER_OK))
                        return -1;
                for (struct amqp_queue *q = aw->queues; q; q = q->next)
                        queue_dispatch(aw, q);
                return 0;
        }
        case AMQP_BASIC_PUBLISH:
                return on_publish(c, ch, m);
        case AMQP_BASIC_CONSUME:
                return on_consume(c, ch, m);
        case AMQP_BASIC_CANCEL:
                return on_cancel(c, ch, m);
        case AMQP_BASIC_GET:
                return on_get(c, ch, m);
        case AMQP_BASIC_ACK:
        case AMQP_BASIC_REJECT:
        case AMQP_BASIC_NACK:
                if (ch->tx)
                        return tx_hold_settle(c, ch, m);
                break;
        default:
                break;
        }
        switch (m->key) {
        case AMQP_BASIC_ACK:
                return settle(c, ch, m, m->args[AMQP_BASIC_ACK_DELIVERY_TAG].u,
                              m->args[AMQP_BASIC_ACK_MULTIPLE].u, false);
        case AMQP_BASIC_REJECT:
                return settle(c, ch, m, m->args[AMQP_BASIC_REJECT_DELIVERY_TAG].u, false,
                              m->args[AMQP_BASIC_REJECT_REQUEUE].u);
        case AMQP_BASIC_NACK:
                return settle(c, ch, m, m->args[AMQP_BASIC_NACK_DELIVERY_TAG].u,
                              m->args[AMQP_BASIC_NACK_MULTIPLE].u,
                              m->args[AMQP_BASIC_NACK_REQUEUE].u);
        case AMQP_TX_SELECT:
                if (ch->confirm)
                        return chan_error(c, ch, 406, "cannot switch from confirm to tx mode",
                                          m->key);
                ch->tx = true;
                return send_simple(c, chan, AMQP_TX_SELECT_OK);
        case AMQP_TX_COMMIT:
        case AMQP_TX_ROLLBACK:
                if (!ch->tx)
                        return chan_error(c, ch, 406, "channel is not transactional", m->key);
                return m->key == AMQP_TX_COMMIT ? tx_commit(c, ch) : tx_rollback(c, ch);
        case AMQP_CONFIRM_SELECT:
                if (ch->tx)
                        return chan_error(c, ch, 406, "cannot switch from tx to confirm mode",
                                          m->key);
                ch->confirm = true;
                if (m->args[AMQP_CONFIRM_SELECT_NOWAIT].u)
                        return 0;
                return send_simple(c, chan, AMQP_CONFIRM_SELECT_OK);
        default:
                break;
        }
        if (!(m->desc->chassis & AMQP_CHASSIS_SERVER))
                return conn_error(c, 503, "method not sent by clients", m->key);
        char t[96];
        snprintf(t, sizeof(t), "%s not implemented yet", m->desc->name);
        return conn_error(c, 540, t, m->key);
}

static long on_method(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_frame *f)
{
        struct amqp_method m;
        int rc = amqp_method_decode(f->payload, f->size, &m);
        if (ac->phase == AMQP_PH_CLOSING) {
                if (rc == 0 && f->channel == 0 &&
                    (m.key == AMQP_CONNECTION_CLOSE_OK || m.key == AMQP_CONNECTION_CLOSE)) {
                        if (m.key == AMQP_CONNECTION_CLOSE)
                                send_simple(c, 0, AMQP_CONNECTION_CLOSE_OK);
                        sl_conn_close(c, SL_CLOSE_PROTOCOL);
                        return -1;
                }
                return 0;
        }
        if (rc < 0)
                return conn_error(c, (uint16_t)-rc, "malformed method frame", 0);
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
                        return conn_error(c, 505, "unexpected method during the handshake", m.key);
                if (m.key == AMQP_CONNECTION_START_OK)
                        return on_start_ok(c, ac, &m);
                if (m.key == AMQP_CONNECTION_TUNE_OK)
                        return on_tune_ok(c, ac, &m);
                return on_open(c, ac, &m);
        }
        if (f->channel == 0) {
                if (cls != AMQP_CLASS_CONNECTION)
                        return conn_error(c, 504, "channel 0 carries only connection methods",
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
                        return conn_error(c, 540, "connection method not implemented", m.key);
                return conn_error(c, 503, "unexpected connection method", m.key);
        }
        if (cls == AMQP_CLASS_CONNECTION)
                return conn_error(c, 503, "connection methods belong on channel 0", m.key);
        return dispatch_method(c, ac, f->channel, &m);
}

static long on_frame(struct sl_conn *c, struct amqp_conn *ac, const struct amqp_frame *f)
{
        switch (f->type) {
        case AMQP_FRAME_METHOD:
                return on_method(c, ac, f);
        case AMQP_FRAME_HEARTBEAT:
                if (f->channel != 0)
                        return conn_error(c, 501, "heartbeat on a non-zero channel", 0);
                return 0;
        case AMQP_FRAME_HEADER:
        case AMQP_FRAME_BODY:
                break;
        default:
                return conn_error(c, 501, "unknown frame type", 0);
        }
        if (ac->phase == AMQP_PH_CLOSING)
                return 0;
        if (ac->phase != AMQP_PH_RUNNING || f->channel == 0)
                return conn_error(c, 505, "content frame outside a channel", 0);
        struct amqp_channel *ch =
            ac->chans && f->channel <= ac->channel_max ? ac->chans[f->channel] : NULL;
        if (!ch)
                return conn_error(c, 504, "content frame on a channel not open", 0);
        if (ch->closing)
                return 0;
        if (!ch->publishing)
                return conn_error(c, 505, "content frame without basic.publish", 0);
        if (f->type == AMQP_FRAME_HEADER) {
                if (!ch->want_header)
                        return conn_error(c, 505, "second content header", AMQP_BASIC_PUBLISH);
                return on_header(c, ch, f);
        }
        if (ch->want_header)
                return conn_error(c, 505, "body frame before the content header",
                                  AMQP_BASIC_PUBLISH);
        return on_body(c, ch, f);
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
                                        conn_error(c, 541, "out of memory", 0);
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
        }
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
        for (struct amqp_queue *q = aw->queues; q; q = q->next)
                queue_dispatch(aw, q);
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
                if (now - ac->last_rx_ms > 2 * hb_ms) {
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
                                chan_free(c, ac->chans[i]);
                        }
                free(ac->chans);
                ac->chans = NULL;
        }
        struct amqp_worker *aw = aw_of(c->w);
        for (struct amqp_queue **pp = &aw->queues; *pp;) {
                struct amqp_queue *q = *pp;
                if (q->owner == c)
                        queue_delete(aw, q); /* unlinks q: *pp is now the next */
                else
                        pp = &q->next;
        }
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
        w->proto_ctx[CTL_PROTO_AMQP] = aw;
        if (!ex_add(aw, amqp_cstr("amq.direct"), AMQP_EX_DIRECT) ||
            !ex_add(aw, amqp_cstr("amq.fanout"), AMQP_EX_FANOUT) ||
            !ex_add(aw, amqp_cstr("amq.topic"), AMQP_EX_TOPIC))
                return -ENOMEM;
        return 0;
}

static void amqp_worker_fini(struct sl_worker *w)
{
        struct amqp_worker *aw = aw_of(w);
        if (!aw)
                return;
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
                while ((m = queue_pop(q)))
                        free(m);
                free(q);
        }
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
};
