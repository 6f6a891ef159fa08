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
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "amqp_codec.h"
#include "amqp_frame.h"
#include "amqp_proto.h"
#include "ctl_amqp.h"
#include "log.h"
#include "log_crc32c.h"
#include "log_io.h"
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
/* Deliveries a proxy may have on their way to a remote consumer's worker
 * and not yet written to its socket: the hop's flow control. */
#define AMQP_REMOTE_WINDOW 256

enum amqp_conn_phase {
        AMQP_PH_HEADER,
        AMQP_PH_START_OK,
        AMQP_PH_TUNE_OK,
        AMQP_PH_OPEN,
        AMQP_PH_RUNNING,
        AMQP_PH_CLOSING, /* we sent connection.close: wait for close-ok */
};

enum amqp_ex_type { AMQP_EX_DIRECT, AMQP_EX_FANOUT, AMQP_EX_TOPIC, AMQP_EX_HEADERS };
#define AMQP_BIND_ARGS_MAX 512  /* binding arguments kept (headers exchanges match on them) */
#define AMQP_EX_DELAYED    0x80 /* in a change's ex_type: x-delayed-message of that type */

struct amqp_name {
        uint8_t len;
        char s[256];
};

/* Queue arguments (queue.declare x-*), checked as RabbitMQ does. */
enum amqp_overflow {
        AMQP_OVERFLOW_DROP_HEAD,
        AMQP_OVERFLOW_REJECT_PUBLISH,
        AMQP_OVERFLOW_REJECT_PUBLISH_DLX,
};

struct amqp_qargs {
        int64_t ttl_ms;     /* x-message-ttl, -1: none */
        int64_t max_len;    /* x-max-length, -1: none */
        int64_t max_bytes;  /* x-max-length-bytes (bodies), -1: none */
        int64_t max_prio;   /* x-max-priority, -1: not a priority queue */
        int64_t expires_ms; /* x-expires: deleted after this long unused, -1: never */
        uint8_t overflow;   /* x-overflow */
        bool dlx_set, dlrk_set;
        struct amqp_name dlx;  /* x-dead-letter-exchange */
        struct amqp_name dlrk; /* x-dead-letter-routing-key */
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
        bool persistent;             /* delivery-mode 2 */
        uint8_t priority;            /* priority property */
        int64_t ttl_ms;              /* expiration property, -1: none */
        uint64_t expires_ms;         /* in its queue: dropped (never delivered) after, 0: never */
        bool mandatory;              /* while held by an open transaction */
        int64_t loff;                /* offset in its durable queue's log, -1: none */
        uint64_t dtag;               /* while unacked */
        struct amqp_queue *uq;       /* while unacked: where it came from (home's) */
        struct amqp_consumer *ucons; /* while unacked: NULL after cancel / basic.get (home's) */
        /* Across workers. home: the worker of uq/ucons (only it touches
         * them). qid: the target queue while forwarded, the source queue
         * while delivered elsewhere. */
        uint16_t home;
        uint8_t op;   /* settlement while travelling home */
        bool tracked; /* home holds an unacked ref of uq for it */
        uint64_t qid;
        struct amqp_consumer *rstub; /* remote delivery: stub on the consumer's worker */
        /* publisher confirm of a forwarded copy (o_seq 0: none) */
        uint64_t o_conn, o_seq;
        uint32_t o_slot, o_gen, o_epoch;
        uint16_t o_chan;
        uint8_t data[]; /* ex, rk, header payload, body */
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
        /* A consumer whose channel and queue live on different workers is a
         * proxy on the queue's worker (c, ch NULL) and a stub on the
         * channel's (q NULL), each pointing at the other (peer). */
        bool proxy, stub;
        bool released;        /* proxy: the stub said goodbye (freed once nothing is out) */
        bool detached;        /* stub: cancelled here; waits for the proxy's goodbye */
        uint16_t rworker;     /* proxy: the stub's worker; stub: the queue's */
        uint32_t inflight;    /* proxy: sent and not yet written or returned */
        uint32_t window;      /* proxy: most inflight at once */
        uint32_t credit_owed; /* stub: written since the last credit message */
        uint64_t qid;         /* stub */
        struct amqp_consumer *peer;
        struct amqp_msg *pend_head, *pend_tail;       /* stub: waiting for output room */
        struct amqp_consumer *next_stub, **prev_stub; /* stub: the worker's list */
};

struct amqp_queue {
        struct amqp_queue *next;
        struct amqp_name name;
        uint64_t qid;
        struct amqp_qargs qa;
        uint64_t bytes;        /* bodies of the ready messages (x-max-length-bytes) */
        uint64_t last_used_ms; /* declare, get, consume (x-expires) */
        /* priority queue: the list is sorted by level, highest first;
         * ptail[k] is the last ready message of level k */
        struct amqp_msg **ptail;
        struct amqp_worker *aw;
        /* durable: the log, appends waiting for their ack (in order), and
         * offsets settled since the last ack record */
        struct log_partition *log;
        struct amqp_pend *pend;
        uint32_t pend_head, pend_n, pend_cap;
        uint64_t *acks;
        uint32_t nacks, acks_cap;
        bool ack_dirty;
        struct amqp_queue *next_dirty;
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

/* The routing table's entry for a queue (every worker has one per queue). */
struct amqp_qref {
        struct amqp_qref *next;
        struct amqp_name name;
        uint64_t qid; /* the sequence number of the change that created it */
        uint16_t worker;
        bool durable, exclusive, auto_delete;
        uint64_t owner_conn;  /* exclusive: the owning connection's id */
        struct amqp_queue *q; /* worker == self: the queue (NULL once deleted here) */
        struct amqp_qargs qa;
};

/* To a queue (q) or, exchange-to-exchange, to another exchange (dst). */
struct amqp_binding {
        struct amqp_binding *next;
        uint16_t args_len;
        uint8_t args[AMQP_BIND_ARGS_MAX]; /* the binding's arguments table */
        struct amqp_qref *q;
        struct amqp_exchange *dst;
        struct amqp_name key;
};

#define AMQP_ROUTE_QUEUES_MAX    256 /* queues one publish reaches (more are dropped) */
#define AMQP_ROUTE_EXCHANGES_MAX 32  /* exchanges one publish passes through */
#define AMQP_ROUTE_DEPTH_MAX     4   /* routes nested by dead-lettering */

struct amqp_exchange {
        struct amqp_exchange *next;
        struct amqp_name name;
        uint8_t type;
        bool durable;
        bool delayed; /* x-delayed-message: type is its x-delayed-type */
        struct amqp_binding *bindings;
};

/* What this worker has for another endpoint (worker or control): batches
 * filled during the loop iteration, then a FIFO of ring messages kept in
 * order (a batch is flushed before any other message to the same peer, so
 * a reply never overtakes deliveries sent before it). */
struct amqp_link {
        struct amqp_msg *fwd_head, *fwd_tail; /* publishes for its queues */
        struct amqp_msg *dlv_head, *dlv_tail; /* deliveries for its consumers */
        struct amqp_msg *stl_head, *stl_tail; /* settlements of its messages */
        struct sl_msg *out;
        uint32_t out_head, out_n, out_cap;
};

struct amqp_delayed {
        uint64_t due_ms, seq;
        struct amqp_msg *m;
};

struct amqp_worker {
        struct sl_worker *w;
        struct amqp_exchange *exchanges;
        struct amqp_queue *queues; /* the queues living here */
        struct amqp_qref *qrefs;   /* the routing table's queue directory */
        struct amqp_consumer *stubs;
        struct amqp_queue *qid_cache;
        uint64_t gen_seq;
        uint32_t epoch_seq;
        bool links_dirty;
        uint64_t next_expire_ms;
        /* x-delayed-message: messages held until due, a min-heap by (due,
         * seq), routed on this (the publisher's) worker when due */
        struct amqp_delayed *delayed;
        uint32_t ndelayed, delayed_cap;
        uint64_t delayed_seq;
        uint32_t delayed_exchanges; /* in the routing table (publishes skip the check at 0) */
        /* The durable objects stored in the metadata log are applied:
         * until then clients are not read (they would miss them). */
        bool ready;
        struct amqp_link link[CTL_WORKERS_MAX + 1];
        /* durable queues: storage on this worker's own io_uring */
        struct log_io *io;
        struct log_owner *owner;
        struct amqp_plog *plogs;
        uint8_t *scratch; /* one batch being built */
        struct amqp_queue *ack_dirty;
        /* written by the worker, read by the control thread (metrics) */
        _Atomic uint64_t published, delivered, acked, unroutable, returned;
        _Atomic uint64_t queues_n, messages_ready, channels, conn_errors, chan_errors;
        _Atomic uint64_t persist_too_large, log_trims;
};

struct amqp_confirm {
        uint64_t seq;
        uint32_t pending; /* queues on other workers that have not accepted it */
        bool nack;        /* a queue refused it: basic.nack */
};

struct amqp_channel {
        uint16_t id;
        uint32_t epoch; /* tells a reopened channel number from the old one */
        /* confirms waiting for other workers, in publish order */
        struct amqp_confirm *conf;
        uint32_t conf_head, conf_n, conf_cap;
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
        /* A method waits for another worker or the control thread: input is
         * paused so the channel's methods stay in order. */
        bool waiting;
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

static struct amqp_qref *qref_find(struct amqp_worker *aw, struct amqp_bytes name)
{
        for (struct amqp_qref *r = aw->qrefs; r; r = r->next)
                if (name_eq(&r->name, name))
                        return r;
        return NULL;
}

static struct amqp_qref *qref_by_qid(struct amqp_worker *aw, uint64_t qid)
{
        for (struct amqp_qref *r = aw->qrefs; r; r = r->next)
                if (r->qid == qid)
                        return r;
        return NULL;
}

/* A queue living here, by id (forwarded publishes name their queue so). */
static struct amqp_queue *queue_by_qid(struct amqp_worker *aw, uint64_t qid)
{
        if (aw->qid_cache && aw->qid_cache->qid == qid)
                return aw->qid_cache;
        for (struct amqp_queue *q = aw->queues; q; q = q->next)
                if (q->qid == qid)
                        return aw->qid_cache = q;
        return NULL;
}

static bool qref_local(struct amqp_worker *aw, const struct amqp_qref *r)
{
        return r->worker == aw->w->id;
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

static uint8_t msg_level(const struct amqp_queue *q, const struct amqp_msg *m)
{
        return m->priority > q->qa.max_prio ? (uint8_t)q->qa.max_prio : m->priority;
}

/* Into a priority queue: at the end of its level, or (front: requeued) at
 * its start. */
static void queue_insert_prio(struct amqp_queue *q, struct amqp_msg *m, bool front)
{
        uint8_t p = msg_level(q, m);
        struct amqp_msg *after = NULL;
        for (int k = front ? p + 1 : p; k <= q->qa.max_prio && !after; k++)
                after = q->ptail[k]; /* the last message of a level >= the one we need */
        if (!after) {
                m->next = q->head;
                q->head = m;
                if (!q->tail)
                        q->tail = m;
        } else {
                m->next = after->next;
                after->next = m;
                if (q->tail == after)
                        q->tail = m;
        }
        if (!front || !q->ptail[p])
                q->ptail[p] = m;
        q->bytes += m->body_len;
        q->count++;
}

static void queue_push(struct amqp_queue *q, struct amqp_msg *m)
{
        if (q->ptail) {
                queue_insert_prio(q, m, false);
                return;
        }
        q->bytes += m->body_len;
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
        if (q->ptail) {
                queue_insert_prio(q, m, true);
                return;
        }
        q->bytes += m->body_len;
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
        if (q->ptail && q->ptail[msg_level(q, m)] == m)
                q->ptail[msg_level(q, m)] = NULL; /* it was the last of its level */
        q->count--;
        q->bytes -= m->body_len;
        m->next = NULL;
        return m;
}

static size_t msg_size(const struct amqp_msg *m)
{
        return sizeof(*m) + m->ex_len + m->rk_len + m->hdr_len + m->body_len;
}

struct amqp_route {
        /* the message's headers table, decoded at the first headers
         * exchange only (off the path of every other publish) */
        const struct amqp_msg *m;
        bool headers_known;
        struct amqp_bytes headers;
        struct amqp_qref *q[AMQP_ROUTE_QUEUES_MAX];
        uint32_t nq;
        struct amqp_exchange *seen[AMQP_ROUTE_EXCHANGES_MAX];
        uint32_t nseen;
};

/* Collects the queues e routes rk to, following exchange-to-exchange
 * bindings; an exchange is visited once (cycles), a queue listed once. */
static bool field_int(const struct amqp_field *f, int64_t *v);
static bool field_is(const struct amqp_field *f, const char *name);
static bool bytes_is(struct amqp_bytes b, const char *s);

/* Header values compare by value: integers whatever their width, strings
 * and tables by bytes, void (a binding's 'V') by presence. */
static bool field_matches(const struct amqp_field *want, const struct amqp_field *have)
{
        int64_t x, y;
        if (want->tag == 'V')
                return true;
        if (field_int(want, &x) && field_int(have, &y))
                return x == y;
        if (want->tag != have->tag)
                return false;
        switch (want->tag) {
        case 'S':
        case 'x':
        case 'F':
        case 'A':
                return want->v.b.len == have->v.b.len &&
                       memcmp(want->v.b.ptr, have->v.b.ptr, want->v.b.len) == 0;
        case 'f':
                return want->v.f == have->v.f;
        case 'd':
                return want->v.d == have->v.d;
        case 'D':
                return want->v.dec.scale == have->v.dec.scale &&
                       want->v.dec.value == have->v.dec.value;
        default:
                return want->v.u == have->v.u;
        }
}

/* A headers exchange binding against the message's headers, with x-match
 * all (the default), any, all-with-x or any-with-x. */
static bool headers_match(struct amqp_bytes args, struct amqp_bytes headers)
{
        struct amqp_table_iter it;
        struct amqp_field f, mode;
        bool any = false, with_x = false;
        if (amqp_table_find(args, "x-match", &mode) == 1 && mode.tag == 'S') {
                any = bytes_is(mode.v.b, "any") || bytes_is(mode.v.b, "any-with-x");
                with_x = bytes_is(mode.v.b, "all-with-x") || bytes_is(mode.v.b, "any-with-x");
        }
        uint32_t n = 0, hits = 0;
        amqp_table_iter_init(&it, args, false);
        while (amqp_table_next(&it, &f) == 1) {
                if (field_is(&f, "x-match") ||
                    (!with_x && f.name.len >= 2 && !memcmp(f.name.ptr, "x-", 2)))
                        continue;
                n++;
                char key[256];
                memcpy(key, f.name.ptr, f.name.len);
                key[f.name.len] = 0;
                struct amqp_field h;
                bool hit =
                    headers.len && amqp_table_find(headers, key, &h) == 1 && field_matches(&f, &h);
                hits += hit;
                if (any && hit)
                        return true;
                if (!any && !hit)
                        return false;
        }
        return any ? false : n == hits;
}

static struct amqp_bytes route_headers(struct amqp_route *r)
{
        if (!r->headers_known) {
                struct amqp_header h;
                const struct amqp_msg *m = r->m;
                r->headers_known = true;
                if (amqp_header_decode(m->data + m->ex_len + m->rk_len, m->hdr_len, &h) == 0 &&
                    amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS))
                        r->headers = h.props[AMQP_BASIC_PROP_HEADERS].b; /* a view into m */
        }
        return r->headers;
}

static void route_ex(struct amqp_route *r, struct amqp_exchange *e, struct amqp_bytes rk)
{
        for (uint32_t i = 0; i < r->nseen; i++)
                if (r->seen[i] == e)
                        return;
        if (r->nseen == AMQP_ROUTE_EXCHANGES_MAX)
                return;
        r->seen[r->nseen++] = e;
        for (struct amqp_binding *b = e->bindings; b; b = b->next) {
                bool hit =
                    e->type == AMQP_EX_FANOUT ||
                    (e->type == AMQP_EX_DIRECT && name_eq(&b->key, rk)) ||
                    (e->type == AMQP_EX_TOPIC &&
                     topic_match((const uint8_t *)b->key.s, b->key.len, rk.ptr, rk.len)) ||
                    (e->type == AMQP_EX_HEADERS &&
                     headers_match((struct amqp_bytes){b->args, b->args_len}, route_headers(r)));
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

/* Who to tell when a forwarded copy is accepted (seq 0: nobody). */
struct amqp_origin {
        uint64_t conn, seq;
        uint32_t slot, gen, epoch;
        uint16_t chan;
        bool nack; /* the queue refused it (x-overflow reject-publish) */
};

static void fwd_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m);
struct amqp_fwd;
static struct amqp_msg *msg_new(struct amqp_bytes ex, struct amqp_bytes rk, uint64_t hdr_max,
                                uint64_t body_len);
static int queue_enqueue(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                         const struct amqp_origin *o, struct amqp_fwd *f);
static void queue_expire(struct amqp_worker *aw, struct amqp_queue *q);
static void dead_letter(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                        const char *reason);
struct amqp_fwd;
static int dq_store(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                    const struct amqp_origin *o, struct amqp_fwd *f);
static void dq_ack(struct amqp_worker *aw, struct amqp_queue *q, const struct amqp_msg *m);

/* Hands m to the queue r names: here, or in the batch for its worker. */
static void route_one(struct amqp_worker *aw, struct amqp_qref *r, struct amqp_msg *m,
                      const struct amqp_origin *o, uint32_t *nremote, uint32_t *nrejected)
{
        if (qref_local(aw, r)) {
                /* a persistent message to a durable queue: its confirm
                 * waits for the log (counted like a queue elsewhere) */
                int rc = queue_enqueue(aw, r->q, m, o, NULL);
                if (rc > 0)
                        (*nremote)++;
                else if (rc < 0)
                        (*nrejected)++;
                queue_dispatch(aw, r->q);
                return;
        }
        m->qid = r->qid;
        m->o_conn = o->conn;
        m->o_seq = o->seq;
        m->o_slot = o->slot;
        m->o_gen = o->gen;
        m->o_epoch = o->epoch;
        m->o_chan = o->chan;
        fwd_push(aw, r->worker, m);
        (*nremote)++;
}

/* Routes a complete message: the first matching queue takes m, further ones
 * a copy (allocated per extra queue). Returns the number of queues; those
 * on other workers are counted in *nremote (their confirm comes later). */
static uint32_t route_at(struct amqp_worker *aw, struct amqp_route *r, struct amqp_msg *m,
                         const struct amqp_origin *o, uint32_t *nremote, uint32_t *nrejected);

static uint32_t route(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o,
                      uint32_t *nremote, uint32_t *nrejected)
{
        /* Dead-lettering routes again from inside a route (max-length,
         * expiry): one 2.3 KiB struct per nesting level, off the stack. */
        static _Thread_local struct amqp_route stack[AMQP_ROUTE_DEPTH_MAX];
        static _Thread_local uint32_t depth;
        *nremote = *nrejected = 0;
        if (depth == AMQP_ROUTE_DEPTH_MAX)
                return 0; /* a dead-letter chain this deep is dropped */
        struct amqp_route *r = &stack[depth++];
        uint32_t nt = route_at(aw, r, m, o, nremote, nrejected);
        depth--;
        return nt;
}

static uint32_t route_at(struct amqp_worker *aw, struct amqp_route *r, struct amqp_msg *m,
                         const struct amqp_origin *o, uint32_t *nremote, uint32_t *nrejected)
{
        struct amqp_bytes ex = {m->data, m->ex_len};
        struct amqp_bytes rk = {m->data + m->ex_len, m->rk_len};
        r->nq = r->nseen = 0;
        r->m = m;
        r->headers_known = false;
        r->headers = (struct amqp_bytes){NULL, 0};
        *nremote = *nrejected = 0;
        if (ex.len == 0) {
                struct amqp_qref *q = qref_find(aw, rk);
                if (q)
                        r->q[r->nq++] = q;
        } else {
                struct amqp_exchange *e = ex_find(aw, ex);
                if (e)
                        route_ex(r, e, rk);
        }
        /* a queue deleted here whose removal is not applied yet */
        uint32_t nt = 0;
        for (uint32_t i = 0; i < r->nq; i++)
                if (!qref_local(aw, r->q[i]) || r->q[i]->q)
                        r->q[nt++] = r->q[i];
        struct amqp_qref **targets = r->q;
        if (nt == 0)
                return 0; /* m stays the caller's (basic.return) */
        for (uint32_t i = 1; i < nt; i++) {
                struct amqp_msg *cp = malloc(msg_size(m));
                if (!cp)
                        break;
                memcpy(cp, m, msg_size(m));
                route_one(aw, targets[i], cp, o, nremote, nrejected);
        }
        route_one(aw, targets[0], m, o, nremote, nrejected);
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

static void queue_free(struct amqp_queue *q)
{
        free(q->ptail);
        free(q->pend);
        free(q->acks);
        free(q);
}

static void queue_unref(struct amqp_queue *q)
{
        SL_ASSERT(q->unacked_refs > 0);
        if (--q->unacked_refs == 0 && q->deleted)
                queue_free(q);
}

/* m (delivered with a tag) joins its channel's unacked list; a message from
 * a queue here holds a reference on the queue (remote ones hold it at
 * home). */
static void unacked_add(struct amqp_worker *aw, struct amqp_channel *ch, struct amqp_msg *m)
{
        if (m->home == aw->w->id)
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
static void dlv_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m);

/* Hands the head of q to a consumer on another worker (through its proxy). */
static void proxy_send(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_consumer *k)
{
        struct amqp_msg *m = queue_pop(q);
        m->home = aw->w->id;
        m->qid = q->qid;
        m->rstub = k->peer;
        m->ucons = k;
        m->tracked = !k->no_ack;
        m->uq = m->tracked ? q : NULL;
        if (m->tracked) {
                q->unacked_refs++;
                k->unacked++;
        } else {
                dq_ack(aw, q, m); /* no-ack: settled as it leaves */
        }
        k->inflight++;
        dlv_push(aw, k->rworker, m);
}

static void queue_dispatch(struct amqp_worker *aw, struct amqp_queue *q)
{
        queue_expire(aw, q);
        while (q->head && q->consumers) {
                struct amqp_consumer *pick = NULL;
                /* round robin: the head of the list is next; rotate after use */
                struct amqp_consumer **pp = &q->consumers;
                for (; *pp; pp = &(*pp)->next_in_queue) {
                        struct amqp_consumer *k = *pp;
                        if (k->proxy) {
                                if (k->inflight >= k->window ||
                                    (!k->no_ack && k->prefetch && k->unacked >= k->prefetch))
                                        continue;
                                pick = k;
                                break;
                        }
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
                if (pick->proxy) {
                        *pp = pick->next_in_queue;
                        pick->next_in_queue = NULL;
                        struct amqp_consumer **tail = &q->consumers;
                        while (*tail)
                                tail = &(*tail)->next_in_queue;
                        *tail = pick;
                        proxy_send(aw, q, pick);
                        sl_counter_add(&aw->delivered, 1);
                        continue;
                }
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
                        dq_ack(aw, q, m);
                        free(m);
                } else {
                        m->dtag = ch->next_tag;
                        m->uq = q;
                        m->ucons = pick;
                        m->home = aw->w->id;
                        pick->unacked++;
                        unacked_add(aw, ch, m);
                }
        }
}

static uint64_t queue_delete(struct amqp_worker *aw, struct amqp_queue *q);

static void stub_cancel(struct amqp_worker *aw, struct amqp_consumer *k, struct sl_conn *c,
                        uint16_t chan, uint32_t method, bool nowait);
static void queue_delete_announce(struct amqp_worker *aw, struct amqp_queue *q);

static void consumer_remove(struct amqp_consumer *k)
{
        struct amqp_worker *aw = aw_of(k->c->w);
        if (k->stub) {
                stub_cancel(aw, k, NULL, 0, 0, false);
                return;
        }
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
                queue_delete_announce(aw, q);
}

enum amqp_settle_op {
        AMQP_SETTLE_ACK,     /* acked, or rejected without requeue: gone */
        AMQP_SETTLE_REQUEUE, /* back at the head, redelivered */
        AMQP_SETTLE_RETURN,  /* never reached the client: back at the head as it was */
        AMQP_SETTLE_REJECT,  /* rejected/nacked without requeue: dead-lettered */
};

static void stl_push(struct amqp_worker *aw, struct amqp_msg *m, uint8_t op);

/* Puts unacked messages back at the head of their queues, in order; those
 * from queues on other workers travel home. */
static void requeue_list(struct amqp_worker *aw, struct amqp_msg *m)
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
                if (rev->home != aw->w->id) {
                        /* home pushes each to the front as it arrives: in
                         * this reversed order, that restores the original */
                        rev->next = NULL;
                        stl_push(aw, rev, AMQP_SETTLE_REQUEUE);
                        rev = n;
                        continue;
                }
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
        requeue_list(aw, un);
        free(ch->pub);
        free(ch->conf);
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

/* ---- across workers: links, ordered output ------------------------------- */

static struct amqp_link *link_of(struct amqp_worker *aw, uint16_t dst)
{
        SL_DASSERT(dst <= aw->w->nworkers && dst != aw->w->id);
        return &aw->link[dst];
}

/* Queues one ring message to dst behind everything queued before it. */
static void out_push(struct amqp_worker *aw, uint16_t dst, const struct sl_msg *m)
{
        struct amqp_link *l = link_of(aw, dst);
        struct sl_msg copy = *m;
        if (l->out_n == 0 && sl_mbox_send(&aw->w->mb, dst, &copy) == 0)
                return;
        if (l->out_n == l->out_cap) {
                /* The ring is full: the peer is behind. Keep order; what
                 * is queued is bounded by the windows and by connections
                 * waiting (rx paused) for their replies. */
                uint32_t cap = l->out_cap ? l->out_cap * 2 : 64;
                struct sl_msg *n = malloc(cap * sizeof(*n));
                SL_ASSERT(n);
                for (uint32_t i = 0; i < l->out_n; i++)
                        n[i] = l->out[(l->out_head + i) % l->out_cap];
                free(l->out);
                l->out = n;
                l->out_cap = cap;
                l->out_head = 0;
        }
        l->out[(l->out_head + l->out_n++) % l->out_cap] = *m;
        aw->links_dirty = true;
}

static void fwd_flush(struct amqp_worker *aw, uint16_t dst);

/* Batches for dst become ring messages (before anything else goes to dst). */
static void link_flush(struct amqp_worker *aw, uint16_t dst)
{
        struct amqp_link *l = link_of(aw, dst);
        /* settlements before publishes: an ack is recorded before any
         * message published after it */
        if (l->stl_head) {
                struct sl_msg m = {.type = CTL_AMQP_MSG_SETTLE};
                m.a.ptr[0] = l->stl_head;
                l->stl_head = l->stl_tail = NULL;
                out_push(aw, dst, &m);
        }
        if (l->fwd_head)
                fwd_flush(aw, dst);
        if (l->dlv_head) {
                struct sl_msg m = {.type = CTL_AMQP_MSG_DELIVER};
                m.a.ptr[0] = l->dlv_head;
                l->dlv_head = l->dlv_tail = NULL;
                out_push(aw, dst, &m);
        }
}

/* A one-off message to dst, after the batches already bound for it. */
static void out_msg(struct amqp_worker *aw, uint16_t dst, const struct sl_msg *m)
{
        if (dst < aw->w->nworkers)
                link_flush(aw, dst);
        out_push(aw, dst, m);
}

static void list_append(struct amqp_msg **head, struct amqp_msg **tail, struct amqp_msg *m)
{
        m->next = NULL;
        if (*tail)
                (*tail)->next = m;
        else
                *head = m;
        *tail = m;
}

static void fwd_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m)
{
        if (aw->w->draining) {
                /* Shutting down: every worker drops its (in-memory) messages. */
                free(m);
                return;
        }
        struct amqp_link *l = link_of(aw, dst);
        list_append(&l->fwd_head, &l->fwd_tail, m);
        aw->links_dirty = true;
}

static void dlv_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m)
{
        if (aw->w->draining) {
                /* Shutting down: every worker drops its (in-memory) messages. */
                free(m);
                return;
        }
        struct amqp_link *l = link_of(aw, dst);
        list_append(&l->dlv_head, &l->dlv_tail, m);
        aw->links_dirty = true;
}

static void stl_push(struct amqp_worker *aw, struct amqp_msg *m, uint8_t op)
{
        if (aw->w->draining) {
                /* Shutting down: every worker drops its (in-memory) messages. */
                free(m);
                return;
        }
        struct amqp_link *l = link_of(aw, m->home);
        m->op = op;
        list_append(&l->stl_head, &l->stl_tail, m);
        aw->links_dirty = true;
}

/* A forwarded batch: the messages, then who to confirm to once the queue's
 * worker has taken them (the same block travels back as the acceptance). */
struct amqp_fwd {
        struct amqp_msg *msgs;
        uint32_t n;
        uint32_t waiting; /* on the queue's worker: appends not yet durable */
        uint16_t src;
        struct amqp_origin o[];
};

static void fwd_flush(struct amqp_worker *aw, uint16_t dst)
{
        struct amqp_link *l = link_of(aw, dst);
        uint32_t n = 0;
        for (struct amqp_msg *m = l->fwd_head; m; m = m->next)
                n += m->o_seq != 0;
        /* One allocation per batch (per destination and loop iteration),
         * not per message. */
        struct amqp_fwd *f = malloc(sizeof(*f) + n * sizeof(f->o[0]));
        SL_ASSERT(f);
        f->msgs = l->fwd_head;
        f->n = 0;
        for (struct amqp_msg *m = l->fwd_head; m; m = m->next)
                if (m->o_seq)
                        f->o[f->n++] = (struct amqp_origin){m->o_conn, m->o_seq,   m->o_slot,
                                                            m->o_gen,  m->o_epoch, m->o_chan};
        l->fwd_head = l->fwd_tail = NULL;
        struct sl_msg msg = {.type = CTL_AMQP_MSG_FWD};
        msg.a.ptr[0] = f;
        out_push(aw, dst, &msg);
}

static void stub_flush_credit(struct amqp_worker *aw)
{
        for (struct amqp_consumer *k = aw->stubs; k; k = k->next_stub) {
                if (!k->credit_owed)
                        continue;
                struct sl_msg m = {.type = CTL_AMQP_MSG_CREDIT, .u32 = k->credit_owed};
                m.a.ptr[0] = k->peer;
                k->credit_owed = 0;
                out_msg(aw, k->rworker, &m);
        }
}

static uint32_t dq_poll(struct amqp_worker *aw);
static uint32_t delayed_poll(struct amqp_worker *aw);

/* Once per loop iteration: batches out, then the ordered FIFOs into the
 * rings (the runtime publishes them with one flush). */
static uint32_t amqp_links_poll(struct sl_worker *w, void *arg)
{
        struct amqp_worker *aw = arg;
        uint32_t work = dq_poll(aw) + delayed_poll(aw);
        if (w->now_ms >= aw->next_expire_ms) {
                /* TTL: heads expire even where nobody consumes */
                aw->next_expire_ms = w->now_ms + 50;
                for (struct amqp_queue *q = aw->queues, *next; q; q = next) {
                        next = q->next;
                        queue_expire(aw, q);
                        /* x-expires: unused (no consumer, no get or
                         * declare) for that long, the queue goes */
                        if (q->nconsumers)
                                q->last_used_ms = w->now_ms;
                        else if (q->qa.expires_ms > 0 &&
                                 w->now_ms - q->last_used_ms >= (uint64_t)q->qa.expires_ms)
                                queue_delete_announce(aw, q);
                }
        }
        if (!aw->links_dirty)
                return work;
        aw->links_dirty = false;
        stub_flush_credit(aw);
        for (uint16_t d = 0; d <= w->nworkers; d++) {
                if (d == w->id)
                        continue;
                if (d < w->nworkers)
                        link_flush(aw, d);
                struct amqp_link *l = &aw->link[d];
                while (l->out_n) {
                        if (sl_mbox_send(&w->mb, d, &l->out[l->out_head]) != 0) {
                                aw->links_dirty = true; /* retried next iteration */
                                break;
                        }
                        l->out_head = (l->out_head + 1) % l->out_cap;
                        l->out_n--;
                        work++;
                }
        }
        /* A peer's ring is full: stay awake to retry (nothing else would
         * wake this worker when the peer catches up). */
        return work + (aw->links_dirty ? 1 : 0);
}

static struct sl_conn *conn_find(struct sl_worker *w, uint32_t slot, uint32_t gen, uint64_t id)
{
        if (slot >= w->conns_max)
                return NULL;
        struct sl_conn *c = &w->conns[slot];
        if (c->gen != gen || c->id != id || c->state != SL_CONN_OPEN || c->proto != CTL_PROTO_AMQP)
                return NULL;
        return c;
}

/* The channel a reply is for, if it is still the same open channel. */
static struct amqp_channel *chan_find(struct sl_conn *c, uint16_t chan, uint32_t epoch)
{
        struct amqp_conn *ac = c->proto_state;
        if (!ac->chans || chan > ac->channel_max)
                return NULL;
        struct amqp_channel *ch = ac->chans[chan];
        if (!ch || ch->closing || (epoch && ch->epoch != epoch))
                return NULL;
        return ch;
}

static void conn_wait(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        ac->waiting = true;
        sl_conn_rx_pause(c);
}

static void conn_resume(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        if (!ac->waiting)
                return;
        ac->waiting = false;
        if (ac->doomed)
                return; /* closed from the next tick */
        sl_conn_rx_resume(c);
}

/* ---- publisher confirms across workers ------------------------------------ */

static long confirm_send(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq, bool multiple)
{
        struct amqp_method a;
        amqp_method_init(&a, AMQP_BASIC_ACK);
        a.args[AMQP_BASIC_ACK_DELIVERY_TAG].u = seq;
        a.args[AMQP_BASIC_ACK_MULTIPLE].u = multiple;
        return send_method(c, ch->id, &a);
}

static void confirm_nack(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq)
{
        struct amqp_method a;
        amqp_method_init(&a, AMQP_BASIC_NACK);
        a.args[AMQP_BASIC_NACK_DELIVERY_TAG].u = seq;
        send_method(c, ch->id, &a);
}

/* Answers every confirm at the head whose queues have all answered: runs
 * of acks as one ack with multiple, nacks one by one. */
static void confirm_pump(struct sl_conn *c, struct amqp_channel *ch)
{
        uint32_t popped = 0;
        uint64_t last = 0;
        while (ch->conf_n && ch->conf[ch->conf_head].pending == 0) {
                struct amqp_confirm *e = &ch->conf[ch->conf_head];
                if (e->nack) {
                        if (popped)
                                confirm_send(c, ch, last, popped > 1);
                        popped = 0;
                        confirm_nack(c, ch, e->seq);
                } else {
                        last = e->seq;
                        popped++;
                }
                ch->conf_head++;
                ch->conf_n--;
        }
        if (ch->conf_n == 0)
                ch->conf_head = 0;
        if (popped)
                confirm_send(c, ch, last, popped > 1);
}

/* Publish seq went to nremote queues on other workers: ack now when none
 * and nothing earlier waits, else when the last accepts. */
static long confirm_add(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq, uint32_t nremote,
                        bool nack)
{
        if (nremote == 0 && ch->conf_n == 0) {
                if (nack) {
                        confirm_nack(c, ch, seq);
                        return 0;
                }
                return confirm_send(c, ch, seq, false);
        }
        if (ch->conf_head + ch->conf_n == ch->conf_cap) {
                if (ch->conf_head) {
                        memmove(ch->conf, ch->conf + ch->conf_head, ch->conf_n * sizeof(*ch->conf));
                        ch->conf_head = 0;
                } else {
                        uint32_t cap = ch->conf_cap ? ch->conf_cap * 2 : 64;
                        struct amqp_confirm *n = realloc(ch->conf, cap * sizeof(*n));
                        if (!n)
                                return conn_error(c, 541, "out of memory", AMQP_BASIC_PUBLISH);
                        ch->conf = n;
                        ch->conf_cap = cap;
                }
        }
        ch->conf[ch->conf_head + ch->conf_n++] = (struct amqp_confirm){seq, nremote, nack};
        confirm_pump(c, ch);
        return 0;
}

static void confirm_accepted(struct sl_worker *w, const struct amqp_origin *o)
{
        struct sl_conn *c = conn_find(w, o->slot, o->gen, o->conn);
        if (!c)
                return;
        struct amqp_channel *ch = chan_find(c, o->chan, o->epoch);
        if (!ch || !ch->conf_n)
                return;
        uint64_t i = o->seq - ch->conf[ch->conf_head].seq;
        if (o->seq < ch->conf[ch->conf_head].seq || i >= ch->conf_n)
                return;
        SL_ASSERT(ch->conf[ch->conf_head + i].pending > 0);
        ch->conf[ch->conf_head + i].pending--;
        ch->conf[ch->conf_head + i].nack |= o->nack;
        confirm_pump(c, ch);
}

/* ---- durable queues: a storage log per queue ------------------------------
 *
 * A durable queue keeps a partition log (storage/log.h) in
 * <data_dir>/amqp/q-<hex name>, owned by the queue's worker. Persistent
 * messages are appended as they enter the queue (one record per v2 batch);
 * a publisher confirm for such a message waits for the append's ack, i.e.
 * the group-committed fdatasync. Settlements (ack, reject without requeue,
 * no-ack deliveries, purge) are appended as ack records listing the
 * offsets, once per loop iteration, and always before the next message
 * append of the queue, so an ack is durable once any later confirm is.
 * At open the log is read back: messages without an ack record return,
 * marked redelivered. The in-memory queue stays the source of deliveries;
 * the log is for recovery only. */

#define DQ_REC_MSG   'M'
#define DQ_REC_ACK   'A'
#define DQ_BATCH_MAX (2u << 20)

struct amqp_pend {
        struct amqp_origin o;
        struct amqp_fwd *f;
};

struct amqp_plog {
        struct amqp_plog *next;
        struct log_partition *log;
};

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
        put_be32(p, (uint32_t)(v >> 32));
        put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* A Kafka v2 batch frame of one record holding our payload (the log checks
 * the frame and CRC, never the records). Returns the batch length. */
static uint32_t dq_frame(uint8_t *b, uint32_t payload_len, uint64_t now_ms)
{
        uint32_t len = LOG_BATCH_HEADER_BYTES + payload_len;
        memset(b, 0, LOG_BATCH_HEADER_BYTES);
        put_be32(b + 8, len - 12);
        b[16] = 2;
        put_be64(b + 27, now_ms);
        put_be64(b + 35, now_ms);
        put_be64(b + 43, UINT64_MAX);
        b[51] = b[52] = 0xff;
        put_be32(b + 53, UINT32_MAX);
        put_be32(b + 57, 1);
        put_be32(b + 17, log_crc32c(0, b + 21, len - 21));
        return len;
}

static int dq_owner(struct amqp_worker *aw)
{
        if (aw->owner)
                return 0;
        aw->io = log_io_uring_create(NULL, 256, 0);
        if (!aw->io)
                return -ENOMEM;
        aw->owner = log_owner_create(aw->io);
        aw->scratch = aligned_alloc(4096, DQ_BATCH_MAX + 4096);
        if (!aw->owner || !aw->scratch)
                return -ENOMEM;
        return 0;
}

static void dq_dir(struct amqp_worker *aw, const struct amqp_name *name, char *buf, size_t n)
{
        int off = snprintf(buf, n, "%s/amqp/q-", aw->w->cfg->data_dir);
        for (uint32_t i = 0; i < name->len && (size_t)off + 3 < n; i++)
                off += snprintf(buf + off, n - (size_t)off, "%02x", (uint8_t)name->s[i]);
}

static void dq_append_cb(void *ctx, int64_t base_offset, int res);
static void dq_noop_cb(void *ctx, int64_t base_offset, int res)
{
        (void)ctx;
        (void)base_offset;
        if (res < 0)
                SL_WARN("amqp: ack record not stored: %s", strerror(-res));
}

/* Appends the queue's pending ack records (before anything newer). */
static void dq_acks_flush(struct amqp_worker *aw, struct amqp_queue *q)
{
        uint32_t per = (DQ_BATCH_MAX - LOG_BATCH_HEADER_BYTES - 1) / 8;
        for (uint32_t i = 0; i < q->nacks; i += per) {
                uint32_t n = SL_MIN(per, q->nacks - i);
                uint8_t *b = aw->scratch;
                b[LOG_BATCH_HEADER_BYTES] = DQ_REC_ACK;
                for (uint32_t j = 0; j < n; j++)
                        put_be64(b + LOG_BATCH_HEADER_BYTES + 1 + 8 * j, q->acks[i + j]);
                uint32_t len = dq_frame(b, 1 + 8 * n, aw->w->now_ms);
                int64_t off;
                int rc = log_append(q->log, b, len, dq_noop_cb, NULL, &off);
                if (rc)
                        SL_WARN("amqp: queue %s: ack record refused: %s", q->name.s, strerror(-rc));
        }
        q->nacks = 0;
}

/* m left q for good: remember its offset for the next ack record. */
static void dq_ack(struct amqp_worker *aw, struct amqp_queue *q, const struct amqp_msg *m)
{
        if (!q || !q->log || m->loff < 0 || q->deleted)
                return;
        if (q->nacks == q->acks_cap) {
                uint32_t cap = q->acks_cap ? q->acks_cap * 2 : 256;
                uint64_t *n = realloc(q->acks, cap * sizeof(*n));
                SL_ASSERT(n);
                q->acks = n;
                q->acks_cap = cap;
        }
        q->acks[q->nacks++] = (uint64_t)m->loff;
        if (!q->ack_dirty) {
                q->ack_dirty = true;
                q->unacked_refs++; /* alive until flushed */
                q->next_dirty = aw->ack_dirty;
                aw->ack_dirty = q;
        }
}

/* Appends persistent m entering durable q; the confirm (o, or the
 * forwarded batch f) waits for the append's ack. Returns 1 when the
 * caller must wait, 0 when nothing was stored. */
static int dq_store(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                    const struct amqp_origin *o, struct amqp_fwd *f)
{
        m->loff = -1;
        if (!q->log || !m->persistent)
                return 0;
        uint64_t payload = 1 + 14 + m->ex_len + m->rk_len + m->hdr_len + m->body_len;
        if (payload + LOG_BATCH_HEADER_BYTES > DQ_BATCH_MAX) {
                sl_counter_add(&aw->persist_too_large, 1);
                return 0;
        }
        if (q->nacks)
                dq_acks_flush(aw, q);
        uint8_t *b = aw->scratch;
        uint8_t *p = b + LOG_BATCH_HEADER_BYTES;
        p[0] = DQ_REC_MSG;
        p[1] = m->ex_len;
        p[2] = m->rk_len;
        put_be32(p + 3, m->hdr_len);
        put_be64(p + 7, m->body_len);
        p[15] = m->redelivered;
        memcpy(p + 16, m->data, m->ex_len + m->rk_len + m->hdr_len + m->body_len);
        uint32_t len = dq_frame(b, (uint32_t)payload + 1, aw->w->now_ms);
        int64_t off;
        int rc = log_append(q->log, b, len, dq_append_cb, q, &off);
        if (rc) {
                SL_WARN("amqp: queue %s: message not stored: %s", q->name.s, strerror(-rc));
                return 0;
        }
        m->loff = off;
        if (q->pend_n == q->pend_cap) {
                uint32_t cap = q->pend_cap ? q->pend_cap * 2 : 64;
                struct amqp_pend *n = malloc(cap * sizeof(*n));
                SL_ASSERT(n);
                for (uint32_t i = 0; i < q->pend_n; i++)
                        n[i] = q->pend[(q->pend_head + i) % q->pend_cap];
                free(q->pend);
                q->pend = n;
                q->pend_cap = cap;
                q->pend_head = 0;
        }
        struct amqp_pend *e = &q->pend[(q->pend_head + q->pend_n++) % q->pend_cap];
        e->o = o ? *o : (struct amqp_origin){0};
        e->f = f;
        if (f)
                f->waiting++;
        q->unacked_refs++; /* alive until the append is acked */
        return o && o->seq ? 1 : 0;
}

/* Every message of forwarded batch f is in its queue (and durable where
 * it must be): the block goes back as the confirm, if anyone waits. */
static void fwd_accepted(struct amqp_worker *aw, struct amqp_fwd *f)
{
        if (!f->n) {
                free(f);
                return;
        }
        struct sl_msg r = {.type = CTL_AMQP_MSG_ACCEPT};
        r.a.ptr[0] = f;
        out_msg(aw, f->src, &r);
}

static void dq_append_cb(void *ctx, int64_t base_offset, int res)
{
        (void)base_offset;
        struct amqp_queue *q = ctx;
        struct amqp_worker *aw = q->aw;
        SL_ASSERT(q->pend_n > 0);
        struct amqp_pend e = q->pend[q->pend_head];
        q->pend_head = (q->pend_head + 1) % q->pend_cap;
        q->pend_n--;
        if (res < 0)
                SL_WARN("amqp: queue %s: append failed: %s", q->name.s, strerror(-res));
        if (e.f) {
                if (--e.f->waiting == 0)
                        fwd_accepted(aw, e.f);
        } else if (e.o.seq) {
                confirm_accepted(aw->w, &e.o);
        }
        queue_unref(q);
}

static int dq_rmdir(const char *dir)
{
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
        return rmdir(dir) ? -errno : 0;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

struct dq_reader {
        bool done;
        int res;
};

static void dq_read_cb(struct log_read *r, int res)
{
        struct dq_reader *rd = r->ctx;
        rd->done = true;
        rd->res = res;
}

/* Reads the whole log back (at queue open: synchronous, start-up only). */
static int dq_recover(struct amqp_worker *aw, struct amqp_queue *q)
{
        int64_t off = log_start_offset(q->log), hw = log_high_watermark(q->log);
        if (off >= hw)
                return 0;
        uint32_t align = log_dio_align(q->log);
        uint32_t cap = DQ_BATCH_MAX + 2 * 4096 + 2 * align + 4096;
        uint8_t *buf = aligned_alloc(4096, SL_ALIGN_UP(cap, 4096u));
        struct amqp_msg *head = NULL, *tail = NULL;
        uint64_t *acked = NULL;
        uint32_t nacked = 0, acked_cap = 0;
        int rc = buf ? 0 : -ENOMEM;
        while (rc == 0 && off < hw) {
                struct dq_reader rd = {0};
                struct log_read r = {.offset = off,
                                     .max_bytes = DQ_BATCH_MAX,
                                     .buf = buf,
                                     .buf_cap = cap,
                                     .cb = dq_read_cb,
                                     .ctx = &rd};
                int n = log_read_submit(q->log, &r);
                if (n == 0) {
                        while (!rd.done)
                                log_owner_drain(aw->owner);
                        n = rd.res < 0 ? rd.res : (int)r.data_len;
                }
                if (n < 0) {
                        rc = n;
                        break;
                }
                const uint8_t *p = buf + r.data_off, *end = p + r.data_len;
                if (p == end)
                        break;
                while (end - p >= LOG_BATCH_HEADER_BYTES) {
                        uint32_t blen = log_batch_len(p);
                        if (blen > (size_t)(end - p))
                                break;
                        int64_t boff = log_batch_base_offset(p);
                        const uint8_t *pl = p + LOG_BATCH_HEADER_BYTES;
                        uint32_t plen = blen - LOG_BATCH_HEADER_BYTES;
                        if (boff >= off && plen >= 1 && pl[0] == DQ_REC_ACK) {
                                for (uint32_t i = 0; 1 + 8 * (i + 1) <= plen; i++) {
                                        if (nacked == acked_cap) {
                                                acked_cap = acked_cap ? acked_cap * 2 : 256;
                                                acked = realloc(acked, acked_cap * 8);
                                                SL_ASSERT(acked);
                                        }
                                        acked[nacked++] = get_be64(pl + 1 + 8 * i);
                                }
                        } else if (boff >= off && plen >= 16 && pl[0] == DQ_REC_MSG) {
                                uint32_t hl = (uint32_t)pl[3] << 24 | (uint32_t)pl[4] << 16 |
                                              (uint32_t)pl[5] << 8 | pl[6];
                                uint64_t bl = get_be64(pl + 7);
                                if (16 + (uint64_t)pl[1] + pl[2] + hl + bl == plen) {
                                        struct amqp_msg *m = malloc(sizeof(*m) + plen - 16);
                                        SL_ASSERT(m);
                                        memset(m, 0, sizeof(*m));
                                        m->ex_len = pl[1];
                                        m->rk_len = pl[2];
                                        m->hdr_len = hl;
                                        m->body_len = m->got = bl;
                                        m->persistent = true;
                                        m->loff = boff;
                                        m->ttl_ms = -1;
                                        memcpy(m->data, pl + 16, plen - 16);
                                        struct amqp_header h;
                                        if (amqp_header_decode(m->data + m->ex_len + m->rk_len, hl,
                                                               &h) == 0 &&
                                            amqp_header_has(&h, AMQP_BASIC_PROP_PRIORITY))
                                                m->priority =
                                                    (uint8_t)h.props[AMQP_BASIC_PROP_PRIORITY].u;
                                        list_append(&head, &tail, m);
                                }
                        }
                        off = boff + log_batch_last_delta(p) + 1;
                        p += blen;
                }
        }
        qsort(acked, nacked, 8, cmp_u64);
        uint32_t back = 0;
        for (struct amqp_msg *m = head, *next; m; m = next) {
                next = m->next;
                uint64_t key = (uint64_t)m->loff;
                if (nacked && bsearch(&key, acked, nacked, 8, cmp_u64)) {
                        free(m);
                        continue;
                }
                /* it may have been delivered before the crash */
                m->redelivered = true;
                queue_push(q, m);
                back++;
        }
        free(acked);
        free(buf);
        if (back)
                SL_INFO("amqp: queue %s: %u messages recovered", q->name.s, back);
        return rc;
}

/* Opens (creating) the log of durable queue q on its worker. */
static int dq_open(struct amqp_worker *aw, struct amqp_queue *q)
{
        int rc = dq_owner(aw);
        if (rc)
                return rc;
        char dir[CTL_PATH_MAX + 600];
        snprintf(dir, sizeof(dir), "%s/amqp", aw->w->cfg->data_dir);
        if (mkdir(dir, 0750) && errno != EEXIST)
                return -errno;
        dq_dir(aw, &q->name, dir, sizeof(dir));
        struct log_config cfg;
        log_config_default(&cfg);
        cfg.max_batch_bytes = DQ_BATCH_MAX;
        /* Many queues, most of them short: preallocate 1 MiB ahead, not a
         * whole segment per queue. */
        cfg.prealloc_bytes = 1u << 20;
        struct amqp_plog *pl = calloc(1, sizeof(*pl));
        if (!pl)
                return -ENOMEM;
        rc = log_partition_open(aw->owner, dir, &cfg, 0, &pl->log);
        if (rc) {
                free(pl);
                return rc;
        }
        /* Kept until the worker stops, even after the queue is deleted:
         * closing needs its I/O finished (see amqp_worker_fini). */
        pl->next = aw->plogs;
        aw->plogs = pl;
        q->log = pl->log;
        return dq_recover(aw, q);
}

/* The durable queue q is deleted: its files go (the open log writes to
 * unlinked files until the worker stops). */
static void dq_remove(struct amqp_worker *aw, struct amqp_queue *q)
{
        if (!q->log)
                return;
        char dir[CTL_PATH_MAX + 600];
        dq_dir(aw, &q->name, dir, sizeof(dir));
        dq_rmdir(dir);
        q->nacks = 0;
}

static uint32_t dq_poll(struct amqp_worker *aw)
{
        while (aw->ack_dirty) {
                struct amqp_queue *q = aw->ack_dirty;
                aw->ack_dirty = q->next_dirty;
                q->ack_dirty = false;
                if (q->nacks && !q->deleted)
                        dq_acks_flush(aw, q);
                /* Everything settled and nothing out (our list's reference
                 * is the only one): the whole durable log before the high
                 * watermark is dead, so its segments can go. */
                int64_t hw = q->log ? log_high_watermark(q->log) : 0;
                if (!q->deleted && q->log && q->count == 0 && q->unacked_refs == 1 &&
                    q->pend_n == 0 && hw > log_start_offset(q->log) && log_trim(q->log, hw) == 0)
                        sl_counter_add(&aw->log_trims, 1);
                queue_unref(q);
        }
        if (!aw->owner)
                return 0;
        int n = log_owner_poll(aw->owner);
        return (n > 0 ? (uint32_t)n : 0) + (log_owner_busy(aw->owner) ? 1 : 0);
}

/* ---- queue arguments, TTL, max-length, dead-lettering -------------------- */

static void qargs_default(struct amqp_qargs *a)
{
        memset(a, 0, sizeof(*a));
        a->ttl_ms = a->max_len = a->max_bytes = a->max_prio = a->expires_ms = -1;
        a->overflow = AMQP_OVERFLOW_DROP_HEAD;
}

static bool field_int(const struct amqp_field *f, int64_t *v)
{
        switch (f->tag) {
        case 'b':
        case 's':
        case 'I':
        case 'l':
        case 'L':
                *v = f->v.i;
                return true;
        case 'B':
        case 'u':
        case 'i':
                *v = (int64_t)f->v.u;
                return true;
        default:
                return false;
        }
}

static bool field_is(const struct amqp_field *f, const char *name)
{
        size_t n = strlen(name);
        return f->name.len == n && memcmp(f->name.ptr, name, n) == 0;
}

static bool bytes_is(struct amqp_bytes b, const char *s)
{
        size_t n = strlen(s);
        return b.len == n && memcmp(b.ptr, s, n) == 0;
}

/* queue.declare arguments: the ones RabbitMQ checks are checked the same
 * way (406 with its wording); others are ignored, as RabbitMQ does. */
static int qargs_parse(struct amqp_bytes tbl, const struct amqp_name *qname, struct amqp_qargs *a,
                       char *text, size_t n)
{
        qargs_default(a);
        struct amqp_table_iter it;
        struct amqp_field f;
        amqp_table_iter_init(&it, tbl, false);
        int rc;
        while ((rc = amqp_table_next(&it, &f)) == 1) {
                int64_t v = 0;
                int64_t *slot = field_is(&f, "x-message-ttl")        ? &a->ttl_ms
                                : field_is(&f, "x-max-length")       ? &a->max_len
                                : field_is(&f, "x-max-length-bytes") ? &a->max_bytes
                                : field_is(&f, "x-max-priority")     ? &a->max_prio
                                : field_is(&f, "x-expires")          ? &a->expires_ms
                                                                     : NULL;
                const char *bad = NULL;
                if (slot) {
                        if (!field_int(&f, &v))
                                bad = "not an integer";
                        else if (v < 0)
                                bad = "value_negative";
                        else if (slot == &a->max_prio && v > 255)
                                bad = "value_out_of_range (max 255)";
                        else if (slot == &a->expires_ms && v == 0)
                                bad = "value_zero";
                        else
                                *slot = v;
                } else if (field_is(&f, "x-overflow")) {
                        if (f.tag != 'S')
                                bad = "not a string";
                        else if (bytes_is(f.v.b, "drop-head"))
                                a->overflow = AMQP_OVERFLOW_DROP_HEAD;
                        else if (bytes_is(f.v.b, "reject-publish"))
                                a->overflow = AMQP_OVERFLOW_REJECT_PUBLISH;
                        else if (bytes_is(f.v.b, "reject-publish-dlx"))
                                a->overflow = AMQP_OVERFLOW_REJECT_PUBLISH_DLX;
                        else
                                bad = "not one of drop-head, reject-publish, reject-publish-dlx";
                } else if (field_is(&f, "x-dead-letter-exchange") ||
                           field_is(&f, "x-dead-letter-routing-key")) {
                        bool ex = field_is(&f, "x-dead-letter-exchange");
                        if (f.tag != 'S' || f.v.b.len > 255) {
                                bad = "not a short string";
                        } else {
                                name_set(ex ? &a->dlx : &a->dlrk, f.v.b);
                                *(ex ? &a->dlx_set : &a->dlrk_set) = true;
                        }
                }
                if (bad) {
                        snprintf(text, n, "invalid arg '%.*s' for queue '%s' in vhost '/': %s",
                                 (int)f.name.len, (const char *)f.name.ptr, qname->s, bad);
                        return 406;
                }
        }
        if (rc < 0) {
                snprintf(text, n, "malformed arguments");
                return 406;
        }
        if (a->dlrk_set && !a->dlx_set) {
                snprintf(text, n,
                         "invalid arg 'x-dead-letter-routing-key' for queue '%s' in vhost '/': "
                         "Key x-dead-letter-routing-key should be specified together with "
                         "x-dead-letter-exchange",
                         qname->s);
                return 406;
        }
        return 0;
}

/* The first argument two declarations disagree on, or NULL. */
static const char *qargs_differ(const struct amqp_qargs *x, const struct amqp_qargs *y)
{
        if (x->ttl_ms != y->ttl_ms)
                return "x-message-ttl";
        if (x->max_len != y->max_len)
                return "x-max-length";
        if (x->max_bytes != y->max_bytes)
                return "x-max-length-bytes";
        if (x->overflow != y->overflow)
                return "x-overflow";
        if (x->max_prio != y->max_prio)
                return "x-max-priority";
        if (x->expires_ms != y->expires_ms)
                return "x-expires";
        if (x->dlx_set != y->dlx_set || (x->dlx_set && !name_eq(&x->dlx, name_view(&y->dlx))))
                return "x-dead-letter-exchange";
        if (x->dlrk_set != y->dlrk_set || (x->dlrk_set && !name_eq(&x->dlrk, name_view(&y->dlrk))))
                return "x-dead-letter-routing-key";
        return NULL;
}

/* The expiration property: milliseconds as a decimal string. */
static int64_t expiration_ms(const struct amqp_header *h)
{
        if (!amqp_header_has(h, AMQP_BASIC_PROP_EXPIRATION))
                return -1;
        struct amqp_bytes e = h->props[AMQP_BASIC_PROP_EXPIRATION].b;
        if (e.len == 0 || e.len > 18)
                return -1;
        int64_t v = 0;
        for (uint32_t i = 0; i < e.len; i++) {
                if (e.ptr[i] < '0' || e.ptr[i] > '9')
                        return -1;
                v = v * 10 + (e.ptr[i] - '0');
        }
        return v;
}

/* Is the x-death history a cycle through q without a rejection? (RabbitMQ:
 * a message dead-lettered around a loop by expiry or max-length alone is
 * dropped.) Also returns the count of the (q, reason) entry. */
static bool xdeath_scan(struct amqp_bytes xdeath, const struct amqp_queue *q, const char *reason,
                        int64_t *count)
{
        struct amqp_table_iter it;
        struct amqp_field item;
        bool rejected_seen = false, cycle = false;
        *count = 0;
        amqp_table_iter_init(&it, xdeath, true);
        while (amqp_table_next(&it, &item) == 1) {
                if (item.tag != 'F')
                        continue;
                struct amqp_field fq, fr, fc;
                bool same_q = amqp_table_find(item.v.b, "queue", &fq) == 1 && fq.tag == 'S' &&
                              name_eq(&q->name, fq.v.b);
                bool has_r = amqp_table_find(item.v.b, "reason", &fr) == 1 && fr.tag == 'S';
                if (same_q && has_r && bytes_is(fr.v.b, reason) &&
                    amqp_table_find(item.v.b, "count", &fc) == 1)
                        field_int(&fc, count);
                if (same_q && !rejected_seen)
                        cycle = true;
                if (has_r && bytes_is(fr.v.b, "rejected"))
                        rejected_seen = true;
        }
        return cycle && strcmp(reason, "rejected") != 0;
}

/* The dead-lettered copy of m from q: exchange and routing key from the
 * queue's arguments, headers with x-death updated as RabbitMQ writes it.
 * NULL: dropped (cycle, or no memory). */
static struct amqp_msg *dl_build(struct amqp_worker *aw, const struct amqp_queue *q,
                                 const struct amqp_msg *m, const char *reason)
{
        struct amqp_header h;
        const uint8_t *hdr = m->data + m->ex_len + m->rk_len;
        if (amqp_header_decode(hdr, m->hdr_len, &h) < 0)
                return NULL;
        struct amqp_bytes old = amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS)
                                    ? h.props[AMQP_BASIC_PROP_HEADERS].b
                                    : (struct amqp_bytes){NULL, 0};
        struct amqp_field xd = {0};
        bool have_xd = old.len && amqp_table_find(old, "x-death", &xd) == 1 && xd.tag == 'A';
        int64_t count = 0;
        if (have_xd && xdeath_scan(xd.v.b, q, reason, &count))
                return NULL;
        struct amqp_bytes ex = {m->data, m->ex_len}, rk = {m->data + m->ex_len, m->rk_len};
        size_t cap = old.len + 2048 + 4 * 256;
        uint8_t *tb = malloc(cap), *hb = malloc(m->hdr_len + cap + 64);
        struct amqp_msg *nm = NULL;
        if (!tb || !hb)
                goto out;
        struct amqp_table_writer w;
        amqp_table_writer_init(&w, tb, cap);
        bool have_first = false;
        struct amqp_table_iter it;
        struct amqp_field f;
        amqp_table_iter_init(&it, old, false);
        while (amqp_table_next(&it, &f) == 1) {
                if (field_is(&f, "x-death"))
                        continue;
                have_first |= field_is(&f, "x-first-death-reason");
                amqp_table_put(&w, &f);
        }
        amqp_table_begin(&w, "x-death", 'A');
        amqp_table_begin(&w, "", 'F');
        amqp_table_put_i64(&w, "count", count + 1);
        amqp_table_put_str(&w, "reason", amqp_cstr(reason));
        amqp_table_put_str(&w, "queue", name_view(&q->name));
        struct amqp_field tf = {
            .name = amqp_cstr("time"), .tag = 'T', .v.u = (uint64_t)sl_time_ms() / 1000};
        amqp_table_put(&w, &tf);
        amqp_table_put_str(&w, "exchange", ex);
        amqp_table_begin(&w, "routing-keys", 'A');
        amqp_table_put_str(&w, "", rk);
        amqp_table_end(&w);
        amqp_table_end(&w);
        if (have_xd) {
                amqp_table_iter_init(&it, xd.v.b, true);
                while (amqp_table_next(&it, &f) == 1) {
                        struct amqp_field fq, fr;
                        if (f.tag == 'F' && amqp_table_find(f.v.b, "queue", &fq) == 1 &&
                            fq.tag == 'S' && name_eq(&q->name, fq.v.b) &&
                            amqp_table_find(f.v.b, "reason", &fr) == 1 && fr.tag == 'S' &&
                            bytes_is(fr.v.b, reason))
                                continue; /* replaced by the entry above */
                        amqp_table_put(&w, &f);
                }
        }
        amqp_table_end(&w);
        if (!have_first) {
                amqp_table_put_str(&w, "x-first-death-reason", amqp_cstr(reason));
                amqp_table_put_str(&w, "x-first-death-queue", name_view(&q->name));
                amqp_table_put_str(&w, "x-first-death-exchange", ex);
        }
        struct amqp_bytes tbl;
        if (amqp_table_writer_finish(&w, &tbl) != 0)
                goto out;
        h.props[AMQP_BASIC_PROP_HEADERS].b = tbl;
        h.present |= 1u << AMQP_BASIC_PROP_HEADERS;
        if (!strcmp(reason, "expired"))
                h.present &= ~(1u << AMQP_BASIC_PROP_EXPIRATION); /* as RabbitMQ */
        int hl = amqp_header_encode(&h, hb, m->hdr_len + cap + 64);
        if (hl < 0)
                goto out;
        struct amqp_bytes nrk = q->qa.dlrk_set ? name_view(&q->qa.dlrk) : rk;
        nm = msg_new(name_view(&q->qa.dlx), nrk, (uint64_t)hl, m->body_len);
        if (!nm)
                goto out;
        nm->hdr_len = (uint32_t)hl;
        nm->got = m->body_len;
        nm->persistent = m->persistent;
        nm->priority = m->priority;
        nm->ttl_ms = -1;
        memcpy(nm->data + nm->ex_len + nm->rk_len, hb, (size_t)hl);
        memcpy(nm->data + nm->ex_len + nm->rk_len + hl, hdr + m->hdr_len, m->body_len);
out:
        (void)aw;
        free(tb);
        free(hb);
        return nm;
}

/* m leaves q for good without being acked (reject/nack without requeue,
 * expiry, max-length): to the dead-letter exchange if q has one, else
 * dropped. Consumes m. */
static void dead_letter(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                        const char *reason)
{
        struct amqp_msg *nm = q && q->qa.dlx_set ? dl_build(aw, q, m, reason) : NULL;
        dq_ack(aw, q, m);
        free(m);
        if (!nm)
                return;
        static const struct amqp_origin none;
        uint32_t pending = 0, rejected = 0;
        if (route(aw, nm, &none, &pending, &rejected) == 0)
                free(nm);
}

/* Drops expired messages at the head (never delivered; RabbitMQ expires
 * from the head too). */
static void queue_expire(struct amqp_worker *aw, struct amqp_queue *q)
{
        while (q->head && q->head->expires_ms && aw->w->now_ms >= q->head->expires_ms)
                dead_letter(aw, q, queue_pop(q), "expired");
}

/* m enters q: TTL stamped, max-length applied, stored if durable.
 * Returns 1 when its confirm must wait for the log, 0 when accepted, -1
 * when refused (x-overflow reject-publish: m is consumed). */
static int queue_enqueue(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                         const struct amqp_origin *o, struct amqp_fwd *f)
{
        const struct amqp_qargs *a = &q->qa;
        if (a->overflow != AMQP_OVERFLOW_DROP_HEAD &&
            ((a->max_len >= 0 && q->count + 1 > (uint64_t)a->max_len) ||
             (a->max_bytes >= 0 && q->bytes + m->body_len > (uint64_t)a->max_bytes))) {
                if (a->overflow == AMQP_OVERFLOW_REJECT_PUBLISH_DLX)
                        dead_letter(aw, q, m, "maxlen");
                else
                        free(m);
                return -1;
        }
        int64_t ttl = a->ttl_ms;
        if (m->ttl_ms >= 0 && (ttl < 0 || m->ttl_ms < ttl))
                ttl = m->ttl_ms;
        m->expires_ms = ttl >= 0 ? aw->w->now_ms + (uint64_t)ttl : 0;
        if (ttl == 0)
                m->expires_ms = aw->w->now_ms ? aw->w->now_ms : 1;
        queue_push(q, m);
        int rc = dq_store(aw, q, m, o, f);
        while ((a->max_len >= 0 && q->count > (uint64_t)a->max_len) ||
               (a->max_bytes >= 0 && q->bytes > (uint64_t)a->max_bytes))
                dead_letter(aw, q, queue_pop(q), "maxlen");
        return rc;
}

/* ---- x-delayed-message ------------------------------------------------------ */

static bool delayed_before(const struct amqp_delayed *a, const struct amqp_delayed *b)
{
        return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

/* Holds m when it goes to a delayed exchange with a positive x-delay
 * header. true: m is the heap's. */
static bool delayed_hold(struct amqp_worker *aw, struct amqp_msg *m)
{
        if (!m->ex_len || !aw->delayed_exchanges)
                return false;
        struct amqp_exchange *e = ex_find(aw, (struct amqp_bytes){m->data, m->ex_len});
        if (!e || !e->delayed)
                return false;
        struct amqp_header h;
        struct amqp_field f;
        int64_t delay = 0;
        if (amqp_header_decode(m->data + m->ex_len + m->rk_len, m->hdr_len, &h) != 0 ||
            !amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS) ||
            amqp_table_find(h.props[AMQP_BASIC_PROP_HEADERS].b, "x-delay", &f) != 1 ||
            !field_int(&f, &delay) || delay <= 0)
                return false;
        if (aw->ndelayed == aw->delayed_cap) {
                uint32_t cap = aw->delayed_cap ? aw->delayed_cap * 2 : 64;
                struct amqp_delayed *n = realloc(aw->delayed, cap * sizeof(*n));
                if (!n)
                        return false; /* routed now rather than lost */
                aw->delayed = n;
                aw->delayed_cap = cap;
        }
        uint32_t i = aw->ndelayed++;
        struct amqp_delayed d = {aw->w->now_ms + (uint64_t)delay, ++aw->delayed_seq, m};
        while (i > 0 && delayed_before(&d, &aw->delayed[(i - 1) / 2])) {
                aw->delayed[i] = aw->delayed[(i - 1) / 2];
                i = (i - 1) / 2;
        }
        aw->delayed[i] = d;
        return true;
}

/* Routes the held messages that are due (through the exchange's type). */
static uint32_t delayed_poll(struct amqp_worker *aw)
{
        uint32_t n = 0;
        while (aw->ndelayed && aw->delayed[0].due_ms <= aw->w->now_ms) {
                struct amqp_msg *m = aw->delayed[0].m;
                struct amqp_delayed last = aw->delayed[--aw->ndelayed];
                uint32_t i = 0;
                for (;;) {
                        uint32_t c = 2 * i + 1;
                        if (c >= aw->ndelayed)
                                break;
                        if (c + 1 < aw->ndelayed &&
                            delayed_before(&aw->delayed[c + 1], &aw->delayed[c]))
                                c++;
                        if (!delayed_before(&aw->delayed[c], &last))
                                break;
                        aw->delayed[i] = aw->delayed[c];
                        i = c;
                }
                if (aw->ndelayed)
                        aw->delayed[i] = last;
                static const struct amqp_origin none;
                uint32_t pending, rejected;
                if (route(aw, m, &none, &pending, &rejected) == 0) {
                        sl_counter_add(&aw->unroutable, 1);
                        free(m);
                }
                n++;
        }
        return n;
}

/* ---- routing-table changes (through the control thread) ------------------ */

enum amqp_topo_op {
        AMQP_TOPO_EX_DECLARE,
        AMQP_TOPO_EX_DELETE,
        AMQP_TOPO_Q_DECLARE,
        AMQP_TOPO_Q_DELETE,
        AMQP_TOPO_Q_BIND,
        AMQP_TOPO_Q_UNBIND,
        AMQP_TOPO_EX_BIND,
        AMQP_TOPO_EX_UNBIND,
};

/* One change, read by every worker while it is applied; owned by the
 * worker told DONE, which answers the waiting client (conn 0: nobody). */
struct amqp_topo {
        uint8_t op, ex_type;
        bool durable, exclusive, auto_delete, nowait;
        uint16_t worker;      /* Q_DECLARE: where the queue lives */
        uint64_t owner_conn;  /* Q_DECLARE exclusive */
        uint64_t qid;         /* Q_DELETE */
        struct amqp_qargs qa; /* Q_DECLARE */
        uint16_t bargs_len;   /* bindings: their arguments */
        uint8_t bargs[AMQP_BIND_ARGS_MAX];
        struct amqp_name a; /* queue, exchange, or destination exchange */
        struct amqp_name b; /* source exchange */
        struct amqp_name key;
        /* the client waiting */
        uint64_t conn, count;
        uint32_t slot, gen, epoch, method;
        uint16_t chan;
        /* a durable object's record, written by the control thread first */
        bool has_def;
        struct ctl_amqp_def def;
};

/* The stored form of a change (the value of its definition record):
 * version, op, exchange type, flags, worker, then names as length + bytes. */
#define AMQP_DEF_VERSION 1

static uint32_t topo_encode(const struct amqp_topo *t, uint8_t *b)
{
        uint32_t n = 0;
        b[n++] = AMQP_DEF_VERSION;
        b[n++] = t->op;
        b[n++] = t->ex_type;
        b[n++] = (uint8_t)(t->durable | t->auto_delete << 1);
        b[n++] = (uint8_t)(t->worker >> 8);
        b[n++] = (uint8_t)t->worker;
        const struct amqp_name *names[5] = {&t->a, &t->b, &t->key, &t->qa.dlx, &t->qa.dlrk};
        for (int i = 0; i < 5; i++) {
                b[n++] = names[i]->len;
                memcpy(b + n, names[i]->s, names[i]->len);
                n += names[i]->len;
        }
        /* queue arguments */
        int64_t nums[5] = {t->qa.ttl_ms, t->qa.max_len, t->qa.max_bytes, t->qa.max_prio,
                           t->qa.expires_ms};
        for (int i = 0; i < 5; i++, n += 8)
                for (int j = 0; j < 8; j++)
                        b[n + (uint32_t)j] = (uint8_t)((uint64_t)nums[i] >> (56 - 8 * j));
        b[n++] = t->qa.overflow;
        b[n++] = (uint8_t)(t->qa.dlx_set | t->qa.dlrk_set << 1);
        b[n++] = (uint8_t)(t->bargs_len >> 8);
        b[n++] = (uint8_t)t->bargs_len;
        memcpy(b + n, t->bargs, t->bargs_len);
        n += t->bargs_len;
        return n;
}

static int topo_decode(const uint8_t *b, uint32_t len, struct amqp_topo *t)
{
        memset(t, 0, sizeof(*t));
        if (len < 6 || b[0] != AMQP_DEF_VERSION)
                return -EBADMSG;
        t->op = b[1];
        t->ex_type = b[2];
        t->durable = b[3] & 1;
        t->auto_delete = (b[3] >> 1) & 1;
        t->worker = (uint16_t)(b[4] << 8 | b[5]);
        uint32_t n = 6;
        qargs_default(&t->qa);
        struct amqp_name *names[5] = {&t->a, &t->b, &t->key, &t->qa.dlx, &t->qa.dlrk};
        for (int i = 0; i < 5; i++) {
                if (n >= len || n + 1 + b[n] > len)
                        return -EBADMSG;
                names[i]->len = b[n];
                memcpy(names[i]->s, b + n + 1, b[n]);
                names[i]->s[b[n]] = 0;
                n += 1 + b[n];
        }
        if (n + 42 > len)
                return -EBADMSG;
        int64_t *nums[5] = {&t->qa.ttl_ms, &t->qa.max_len, &t->qa.max_bytes, &t->qa.max_prio,
                            &t->qa.expires_ms};
        for (int i = 0; i < 5; i++, n += 8)
                *nums[i] = (int64_t)get_be64(b + n);
        t->qa.overflow = b[n++];
        t->qa.dlx_set = b[n] & 1;
        t->qa.dlrk_set = (b[n] >> 1) & 1;
        n++;
        if (n + 2 > len)
                return -EBADMSG;
        t->bargs_len = (uint16_t)(b[n] << 8 | b[n + 1]);
        n += 2;
        if (t->bargs_len > AMQP_BIND_ARGS_MAX || n + t->bargs_len > len)
                return -EBADMSG;
        memcpy(t->bargs, b + n, t->bargs_len);
        return 0;
}

static int hex_put(char *dst, size_t cap, const struct amqp_name *n)
{
        int off = 0;
        for (uint32_t i = 0; i < n->len && (size_t)off + 3 < cap; i++)
                off += snprintf(dst + off, cap - (size_t)off, "%02x", (uint8_t)n->s[i]);
        return off;
}

static int topo_bind_args(struct amqp_topo *t, struct amqp_bytes args)
{
        if (args.len > AMQP_BIND_ARGS_MAX)
                return -E2BIG;
        t->bargs_len = (uint16_t)args.len;
        memcpy(t->bargs, args.ptr, args.len);
        return 0;
}

/* Makes t durable: PUT of its object (the key from its names), or a delete. */
static void topo_def(struct amqp_topo *t, uint8_t op)
{
        struct ctl_amqp_def *d = &t->def;
        char *k = d->key;
        size_t cap = sizeof(d->key);
        int n = 0;
        switch (t->op) {
        case AMQP_TOPO_EX_DECLARE:
        case AMQP_TOPO_EX_DELETE:
                n = snprintf(k, cap, "e:");
                hex_put(k + n, cap - (size_t)n, &t->a);
                break;
        case AMQP_TOPO_Q_DECLARE:
        case AMQP_TOPO_Q_DELETE:
                n = snprintf(k, cap, "q:");
                hex_put(k + n, cap - (size_t)n, &t->a);
                break;
        default: /* bindings: source, destination kind + name, key */
                n = snprintf(k, cap, "b:");
                n += hex_put(k + n, cap - (size_t)n, &t->b);
                n += snprintf(k + n, cap - (size_t)n, ":%c",
                              t->op == AMQP_TOPO_Q_BIND || t->op == AMQP_TOPO_Q_UNBIND ? 'q' : 'e');
                n += hex_put(k + n, cap - (size_t)n, &t->a);
                n += snprintf(k + n, cap - (size_t)n, ":");
                n += hex_put(k + n, cap - (size_t)n, &t->key);
                if (t->bargs_len) /* bindings differing only in arguments */
                        snprintf(k + n, cap - (size_t)n, ":%08x",
                                 log_crc32c(0, t->bargs, t->bargs_len));
                break;
        }
        d->op = op;
        d->len = op == CTL_AMQP_DEF_PUT ? topo_encode(t, d->val) : 0;
        t->has_def = true;
}

static struct amqp_topo *topo_new(struct sl_conn *c, struct amqp_channel *ch, uint8_t op,
                                  uint32_t method)
{
        struct amqp_topo *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->op = op;
        t->method = method;
        if (c) {
                t->conn = c->id;
                t->slot = c->slot;
                t->gen = c->gen;
                t->chan = ch->id;
                t->epoch = ch->epoch;
        }
        return t;
}

/* Sends t to the sequencer; the client's input waits for the barrier. */
static long topo_submit(struct amqp_worker *aw, struct sl_conn *c, struct amqp_topo *t)
{
        struct sl_msg m = {.type = CTL_AMQP_MSG_CHANGE, .u16 = aw->w->id};
        m.a.ptr[0] = t;
        m.a.ptr[1] = t->has_def ? &t->def : NULL;
        out_msg(aw, aw->w->rt->control_ep, &m);
        if (c)
                conn_wait(c);
        return 0;
}

static void bindings_drop_queue(struct amqp_worker *aw, struct amqp_qref *r)
{
        for (struct amqp_exchange *e = aw->exchanges; e; e = e->next)
                for (struct amqp_binding **bp = &e->bindings; *bp;) {
                        struct amqp_binding *b = *bp;
                        if (b->q == r) {
                                *bp = b->next;
                                free(b);
                        } else {
                                bp = &b->next;
                        }
                }
}

static void ex_remove(struct amqp_worker *aw, struct amqp_bytes name)
{
        struct amqp_exchange **pp = &aw->exchanges;
        while (*pp && !name_eq(&(*pp)->name, name))
                pp = &(*pp)->next;
        struct amqp_exchange *e = *pp;
        if (!e)
                return;
        *pp = e->next;
        aw->delayed_exchanges -= e->delayed;
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

static void binding_set(struct amqp_exchange *src, struct amqp_qref *q, struct amqp_exchange *dst,
                        const struct amqp_topo *t, bool bind)
{
        const struct amqp_name *key = &t->key;
        struct amqp_binding **bp = &src->bindings;
        /* a binding is (source, destination, key, arguments), as in RabbitMQ */
        while (*bp &&
               !((*bp)->q == q && (*bp)->dst == dst && name_eq(&(*bp)->key, name_view(key)) &&
                 (*bp)->args_len == t->bargs_len && !memcmp((*bp)->args, t->bargs, t->bargs_len)))
                bp = &(*bp)->next;
        if (bind && !*bp) {
                struct amqp_binding *b = calloc(1, sizeof(*b));
                SL_ASSERT(b); /* replicas must not diverge */
                b->q = q;
                b->dst = dst;
                b->key = *key;
                b->args_len = t->bargs_len;
                memcpy(b->args, t->bargs, t->bargs_len);
                b->next = src->bindings;
                src->bindings = b;
        } else if (!bind && *bp) {
                struct amqp_binding *b = *bp;
                *bp = b->next;
                free(b);
        }
}

/* Applies a change to this worker's replica (the same on every worker:
 * deterministic, idempotent against what is already there). */
static void topo_apply(struct amqp_worker *aw, const struct amqp_topo *t, uint64_t seq)
{
        switch (t->op) {
        case AMQP_TOPO_EX_DECLARE:
                if (!ex_find(aw, name_view(&t->a))) {
                        struct amqp_exchange *e =
                            ex_add(aw, name_view(&t->a), t->ex_type & ~AMQP_EX_DELAYED);
                        SL_ASSERT(e);
                        e->durable = t->durable;
                        e->delayed = t->ex_type & AMQP_EX_DELAYED;
                        aw->delayed_exchanges += e->delayed;
                }
                return;
        case AMQP_TOPO_EX_DELETE:
                ex_remove(aw, name_view(&t->a));
                return;
        case AMQP_TOPO_Q_DECLARE: {
                if (qref_find(aw, name_view(&t->a)))
                        return;
                struct amqp_qref *r = calloc(1, sizeof(*r));
                SL_ASSERT(r);
                r->name = t->a;
                r->qid = seq;
                r->worker = (uint16_t)(t->worker % aw->w->nworkers);
                r->durable = t->durable;
                r->exclusive = t->exclusive;
                r->auto_delete = t->auto_delete;
                r->owner_conn = t->owner_conn;
                r->qa = t->qa;
                if (qref_local(aw, r)) {
                        struct amqp_queue *q = calloc(1, sizeof(*q));
                        SL_ASSERT(q);
                        q->name = t->a;
                        q->qid = seq;
                        q->auto_delete = t->auto_delete;
                        q->durable = t->durable;
                        q->qa = t->qa;
                        q->aw = aw;
                        q->last_used_ms = aw->w->now_ms;
                        if (q->qa.max_prio > 0) {
                                q->ptail = calloc((size_t)q->qa.max_prio + 1, sizeof(*q->ptail));
                                SL_ASSERT(q->ptail);
                        }
                        if (q->durable) {
                                int rc = dq_open(aw, q);
                                if (rc)
                                        SL_WARN("amqp: durable queue %s: storage: %s", q->name.s,
                                                strerror(-rc));
                        }
                        /* the owner, if still here (it may have closed) */
                        if (t->exclusive)
                                q->owner = conn_find(aw->w, t->slot, t->gen, t->owner_conn);
                        q->next = aw->queues;
                        aw->queues = q;
                        sl_counter_add(&aw->queues_n, 1);
                        r->q = q;
                        if (t->exclusive && !q->owner)
                                queue_delete_announce(aw, q);
                }
                r->next = aw->qrefs;
                aw->qrefs = r;
                return;
        }
        case AMQP_TOPO_Q_DELETE: {
                for (struct amqp_qref **pp = &aw->qrefs; *pp; pp = &(*pp)->next)
                        if ((*pp)->qid == t->qid) {
                                struct amqp_qref *r = *pp;
                                *pp = r->next;
                                bindings_drop_queue(aw, r);
                                free(r);
                                break;
                        }
                return;
        }
        case AMQP_TOPO_Q_BIND:
        case AMQP_TOPO_Q_UNBIND: {
                struct amqp_qref *r = qref_find(aw, name_view(&t->a));
                struct amqp_exchange *e = ex_find(aw, name_view(&t->b));
                if (r && e)
                        binding_set(e, r, NULL, t, t->op == AMQP_TOPO_Q_BIND);
                return;
        }
        case AMQP_TOPO_EX_BIND:
        case AMQP_TOPO_EX_UNBIND: {
                struct amqp_exchange *d = ex_find(aw, name_view(&t->a));
                struct amqp_exchange *e = ex_find(aw, name_view(&t->b));
                if (d && e)
                        binding_set(e, NULL, d, t, t->op == AMQP_TOPO_EX_BIND);
                return;
        }
        default:
                SL_ASSERT(!"unknown routing-table change");
        }
}

static long queue_declare_ok(struct sl_conn *c, struct amqp_channel *ch, struct amqp_bytes name,
                             uint64_t count, uint32_t consumers)
{
        struct amqp_method r;
        amqp_method_init(&r, AMQP_QUEUE_DECLARE_OK);
        r.args[AMQP_QUEUE_DECLARE_OK_QUEUE].b = name;
        r.args[AMQP_QUEUE_DECLARE_OK_MESSAGE_COUNT].u = (uint32_t)count;
        r.args[AMQP_QUEUE_DECLARE_OK_CONSUMER_COUNT].u = consumers;
        return send_method(c, ch->id, &r);
}

static long queue_check_equivalent(struct sl_conn *c, struct amqp_channel *ch,
                                   const struct amqp_qref *r, bool durable, bool exclusive,
                                   bool auto_delete, const struct amqp_qargs *qa, uint32_t key);

/* Every worker applied t: answer the client that waits for it. */
static void topo_done(struct amqp_worker *aw, struct amqp_topo *t)
{
        struct sl_conn *c = t->conn ? conn_find(aw->w, t->slot, t->gen, t->conn) : NULL;
        struct amqp_channel *ch = c ? chan_find(c, t->chan, t->epoch) : NULL;
        if (ch && !t->nowait) {
                switch (t->method) {
                case AMQP_EXCHANGE_DECLARE: {
                        struct amqp_exchange *e = ex_find(aw, name_view(&t->a));
                        if (!e)
                                chan_error(c, ch, 404, "exchange deleted meanwhile", t->method);
                        else if ((e->type | (e->delayed ? AMQP_EX_DELAYED : 0)) != t->ex_type)
                                chan_error(c, ch, 406, "inequivalent arg 'type'", t->method);
                        else
                                send_simple(c, ch->id, AMQP_EXCHANGE_DECLARE_OK);
                        break;
                }
                case AMQP_QUEUE_DECLARE: {
                        struct amqp_qref *r = qref_find(aw, name_view(&t->a));
                        if (!r) {
                                chan_error(c, ch, 404, "queue deleted meanwhile", t->method);
                                break;
                        }
                        if (queue_check_equivalent(c, ch, r, t->durable, t->exclusive,
                                                   t->auto_delete, &t->qa, t->method))
                                break;
                        uint64_t n = qref_local(aw, r) && r->q ? r->q->count : 0;
                        uint32_t k = qref_local(aw, r) && r->q ? r->q->nconsumers : 0;
                        queue_declare_ok(c, ch, name_view(&r->name), n, k);
                        break;
                }
                case AMQP_QUEUE_DELETE: {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_QUEUE_DELETE_OK);
                        r.args[AMQP_QUEUE_DELETE_OK_MESSAGE_COUNT].u = (uint32_t)t->count;
                        send_method(c, ch->id, &r);
                        break;
                }
                case AMQP_EXCHANGE_DELETE:
                        send_simple(c, ch->id, AMQP_EXCHANGE_DELETE_OK);
                        break;
                case AMQP_QUEUE_BIND:
                        send_simple(c, ch->id, AMQP_QUEUE_BIND_OK);
                        break;
                case AMQP_QUEUE_UNBIND:
                        send_simple(c, ch->id, AMQP_QUEUE_UNBIND_OK);
                        break;
                case AMQP_EXCHANGE_BIND:
                        send_simple(c, ch->id, AMQP_EXCHANGE_BIND_OK);
                        break;
                case AMQP_EXCHANGE_UNBIND:
                        send_simple(c, ch->id, AMQP_EXCHANGE_UNBIND_OK);
                        break;
                default:
                        break;
                }
        }
        if (c)
                conn_resume(c);
        free(t);
}

/* A queue here went away (deleted, auto-delete, exclusive owner closed):
 * the routing table forgets it everywhere. */
static void queue_delete_announce(struct amqp_worker *aw, struct amqp_queue *q)
{
        uint64_t qid = q->qid;
        struct amqp_topo *t = topo_new(NULL, NULL, AMQP_TOPO_Q_DELETE, 0);
        SL_ASSERT(t);
        t->qid = qid;
        t->a = q->name;
        if (q->durable && !q->owner)
                topo_def(t, CTL_AMQP_DEF_DELETE_QUEUE);
        queue_delete(aw, q);
        topo_submit(aw, NULL, t);
}

/* ---- operations on a queue that lives on another worker ------------------ */

enum amqp_qop_op {
        AMQP_QOP_STAT, /* queue.declare of an existing queue: counts */
        AMQP_QOP_CONSUME,
        AMQP_QOP_CANCEL, /* the stub says goodbye to its proxy */
        AMQP_QOP_GET,
        AMQP_QOP_PURGE,
        AMQP_QOP_DELETE,
};

/* Sent by the channel's worker to the queue's, and back with the result. */
struct amqp_qop {
        uint8_t op;
        bool if_unused, if_empty, no_ack, exclusive, nowait, reply;
        uint16_t from, prefetch, code, window;
        uint64_t qid;
        uint64_t conn;
        uint32_t slot, gen, epoch, method;
        uint16_t chan;
        struct amqp_consumer *stub, *proxy;
        uint64_t count;
        uint32_t consumers;
        struct amqp_msg *msg;
        struct amqp_name name;
        char text[320];
};

static struct amqp_qop *qop_new(struct sl_conn *c, struct amqp_channel *ch, uint8_t op,
                                const struct amqp_qref *r, uint32_t method)
{
        struct amqp_qop *o = calloc(1, sizeof(*o));
        if (!o)
                return NULL;
        o->op = op;
        o->from = c->w->id;
        o->qid = r->qid;
        o->name = r->name;
        o->conn = c->id;
        o->slot = c->slot;
        o->gen = c->gen;
        o->chan = ch->id;
        o->epoch = ch->epoch;
        o->method = method;
        o->reply = true;
        return o;
}

static long qop_submit(struct amqp_worker *aw, struct sl_conn *c, uint16_t dst, struct amqp_qop *o)
{
        struct sl_msg m = {.type = CTL_AMQP_MSG_QOP};
        m.a.ptr[0] = o;
        out_msg(aw, dst, &m);
        if (c && o->reply)
                conn_wait(c);
        return 0;
}

static void stub_unlink(struct amqp_worker *aw, struct amqp_consumer *k)
{
        (void)aw;
        if (!k->prev_stub)
                return;
        *k->prev_stub = k->next_stub;
        if (k->next_stub)
                k->next_stub->prev_stub = k->prev_stub;
        k->prev_stub = NULL;
        k->next_stub = NULL;
}

static void stub_link(struct amqp_worker *aw, struct amqp_consumer *k)
{
        k->next_stub = aw->stubs;
        if (aw->stubs)
                aw->stubs->prev_stub = &k->next_stub;
        aw->stubs = k;
        k->prev_stub = &aw->stubs;
}

/* The channel no longer has stub k: what waits for room goes home, and the
 * proxy is told goodbye (its answer frees k). method != 0: the client
 * waits for cancel-ok. */
static void stub_cancel(struct amqp_worker *aw, struct amqp_consumer *k, struct sl_conn *c,
                        uint16_t chan, uint32_t method, bool nowait)
{
        if (k->ch) {
                for (struct amqp_consumer **pp = &k->ch->consumers; *pp; pp = &(*pp)->next_in_chan)
                        if (*pp == k) {
                                *pp = k->next_in_chan;
                                break;
                        }
        }
        while (k->pend_head) {
                struct amqp_msg *m = k->pend_head;
                k->pend_head = m->next;
                stl_push(aw, m, AMQP_SETTLE_RETURN);
        }
        k->pend_tail = NULL;
        if (aw->w->draining) {
                /* Shutting down: the proxy's worker stops too, nobody would
                 * answer (nor send more). */
                stub_unlink(aw, k);
                free(k);
                return;
        }
        struct amqp_qop *o = calloc(1, sizeof(*o));
        SL_ASSERT(o);
        o->op = AMQP_QOP_CANCEL;
        o->from = aw->w->id;
        o->qid = k->qid;
        o->stub = k;
        o->proxy = k->peer;
        o->name = k->tag;
        o->method = method;
        o->nowait = nowait;
        o->reply = method != 0;
        if (c) {
                o->conn = c->id;
                o->slot = c->slot;
                o->gen = c->gen;
                o->chan = chan;
                o->epoch = k->ch ? k->ch->epoch : 0;
        }
        k->detached = true;
        k->c = NULL;
        k->ch = NULL;
        struct sl_msg m = {.type = CTL_AMQP_MSG_QOP};
        m.a.ptr[0] = o;
        out_msg(aw, k->rworker, &m);
        if (c && method)
                conn_wait(c);
}

/* Writes a delivery that came from another worker to the stub's client.
 * 0, -EAGAIN (no room: keep it), -ENOBUFS (connection gone). */
static int stub_write(struct amqp_worker *aw, struct amqp_consumer *k, struct amqp_msg *m)
{
        struct amqp_channel *ch = k->ch;
        struct amqp_conn *ac = k->c->proto_state;
        if (ac->phase != AMQP_PH_RUNNING)
                return -ENOBUFS;
        if (m->tracked && ch->gprefetch && ch->nunacked >= ch->gprefetch)
                return -EAGAIN; /* basic.qos global: written once an ack makes room */
        struct amqp_method meth;
        amqp_method_init(&meth, AMQP_BASIC_DELIVER);
        meth.args[AMQP_BASIC_DELIVER_CONSUMER_TAG].b = name_view(&k->tag);
        meth.args[AMQP_BASIC_DELIVER_DELIVERY_TAG].u = ch->next_tag + 1;
        meth.args[AMQP_BASIC_DELIVER_REDELIVERED].u = m->redelivered;
        meth.args[AMQP_BASIC_DELIVER_EXCHANGE].b = (struct amqp_bytes){m->data, m->ex_len};
        meth.args[AMQP_BASIC_DELIVER_ROUTING_KEY].b =
            (struct amqp_bytes){m->data + m->ex_len, m->rk_len};
        int rc = send_content(k->c, ch->id, &meth, m);
        if (rc)
                return rc;
        ch->next_tag++;
        k->credit_owed++;
        aw->links_dirty = true;
        if (!m->tracked) {
                free(m);
        } else {
                m->dtag = ch->next_tag;
                unacked_add(aw, ch, m);
        }
        return 0;
}

static void stub_deliver(struct amqp_worker *aw, struct amqp_consumer *k, struct amqp_msg *m)
{
        if (k->detached) {
                stl_push(aw, m, AMQP_SETTLE_RETURN);
                return;
        }
        if (!k->pend_head) {
                int rc = stub_write(aw, k, m);
                if (rc == 0)
                        return;
                if (rc == -ENOBUFS) {
                        stl_push(aw, m, AMQP_SETTLE_RETURN);
                        return;
                }
        }
        list_append(&k->pend_head, &k->pend_tail, m);
}

/* Output room came back on c, or (ch) acks made room under basic.qos
 * global: stubs write what waits. */
static void stubs_writable(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch)
{
        for (struct amqp_consumer *k = aw->stubs; k; k = k->next_stub) {
                if (k->c != c || k->detached || (ch && k->ch != ch))
                        continue;
                while (k->pend_head) {
                        struct amqp_msg *m = k->pend_head;
                        struct amqp_msg *next = m->next;
                        int rc = stub_write(aw, k, m);
                        if (rc == -EAGAIN)
                                break;
                        k->pend_head = next;
                        if (!next)
                                k->pend_tail = NULL;
                        if (rc)
                                stl_push(aw, m, AMQP_SETTLE_RETURN);
                }
        }
}

static void proxy_maybe_free(struct amqp_consumer *k)
{
        if (k->released && !k->q && k->inflight == 0 && k->unacked == 0)
                free(k);
}

/* Unlinks a proxy from its queue (cancel or queue deletion). */
static void proxy_unlink(struct amqp_consumer *k)
{
        struct amqp_queue *q = k->q;
        if (!q)
                return;
        for (struct amqp_consumer **pp = &q->consumers; *pp; pp = &(*pp)->next_in_queue)
                if (*pp == k) {
                        *pp = k->next_in_queue;
                        break;
                }
        q->nconsumers--;
        q->exclusive_consumer = false;
        k->q = NULL;
}

static void qop_reply(struct amqp_worker *aw, struct amqp_qop *o);

static void qop_answer(struct amqp_worker *aw, struct amqp_qop *o)
{
        if (o->from == aw->w->id) {
                qop_reply(aw, o);
                return;
        }
        struct sl_msg m = {.type = CTL_AMQP_MSG_QOP_REPLY};
        m.a.ptr[0] = o;
        out_msg(aw, o->from, &m);
}

/* The queue's worker runs o (it lives here, or o finds it gone). */
static void qop_exec(struct amqp_worker *aw, struct amqp_qop *o)
{
        struct amqp_queue *q = queue_by_qid(aw, o->qid);
        if (o->op == AMQP_QOP_CANCEL) {
                struct amqp_consumer *k = o->proxy;
                if (k) {
                        struct amqp_queue *kq = k->q;
                        proxy_unlink(k);
                        k->released = true;
                        proxy_maybe_free(k);
                        if (kq && kq->auto_delete && !kq->deleted && kq->nconsumers == 0)
                                queue_delete_announce(aw, kq);
                }
                goto reply;
        }
        if (!q) {
                o->code = 404;
                snprintf(o->text, sizeof(o->text), "no queue '%s' in vhost '/'", o->name.s);
                goto reply;
        }
        queue_expire(aw, q);
        q->last_used_ms = aw->w->now_ms;
        switch (o->op) {
        case AMQP_QOP_STAT:
                o->count = q->count;
                o->consumers = q->nconsumers;
                break;
        case AMQP_QOP_CONSUME: {
                if (q->exclusive_consumer || (o->exclusive && q->nconsumers)) {
                        o->code = 403;
                        snprintf(o->text, sizeof(o->text),
                                 "queue has an exclusive consumer or is in use");
                        break;
                }
                struct amqp_consumer *k = calloc(1, sizeof(*k));
                if (!k) {
                        o->code = 541;
                        break;
                }
                k->proxy = true;
                k->q = q;
                k->tag = o->stub->tag; /* copied by the channel's worker before sending */
                k->no_ack = o->no_ack;
                k->prefetch = o->prefetch;
                k->window = o->window ? o->window : AMQP_REMOTE_WINDOW;
                k->rworker = o->from;
                k->peer = o->stub;
                q->exclusive_consumer = o->exclusive;
                struct amqp_consumer **tail = &q->consumers;
                while (*tail)
                        tail = &(*tail)->next_in_queue;
                *tail = k;
                q->nconsumers++;
                o->proxy = k;
                break;
        }
        case AMQP_QOP_GET: {
                struct amqp_msg *m = queue_pop(q);
                o->count = q->count;
                if (m) {
                        m->home = aw->w->id;
                        m->qid = q->qid;
                        m->ucons = NULL;
                        m->tracked = !o->no_ack;
                        m->uq = m->tracked ? q : NULL;
                        if (m->tracked)
                                q->unacked_refs++;
                        else
                                dq_ack(aw, q, m);
                        sl_counter_add(&aw->delivered, 1);
                }
                o->msg = m;
                break;
        }
        case AMQP_QOP_PURGE: {
                o->count = q->count;
                struct amqp_msg *x;
                while ((x = queue_pop(q))) {
                        dq_ack(aw, q, x);
                        free(x);
                }
                break;
        }
        case AMQP_QOP_DELETE: {
                if (o->if_unused && q->nconsumers) {
                        o->code = 406;
                        snprintf(o->text, sizeof(o->text), "queue in use");
                        break;
                }
                if (o->if_empty && q->count) {
                        o->code = 406;
                        snprintf(o->text, sizeof(o->text), "queue not empty");
                        break;
                }
                uint64_t qid = q->qid;
                struct amqp_name qname = q->name;
                bool durable = q->durable;
                uint64_t n = queue_delete(aw, q);
                /* delete-ok once every worker forgot the queue */
                struct amqp_topo *t = calloc(1, sizeof(*t));
                SL_ASSERT(t);
                t->op = AMQP_TOPO_Q_DELETE;
                t->qid = qid;
                t->method = AMQP_QUEUE_DELETE;
                t->conn = o->conn;
                t->slot = o->slot;
                t->gen = o->gen;
                t->chan = o->chan;
                t->epoch = o->epoch;
                t->nowait = o->nowait;
                t->count = n;
                t->a = qname;
                if (durable)
                        topo_def(t, CTL_AMQP_DEF_DELETE_QUEUE);
                struct sl_msg m = {.type = CTL_AMQP_MSG_CHANGE, .u16 = o->from};
                m.a.ptr[0] = t;
                m.a.ptr[1] = t->has_def ? &t->def : NULL;
                out_msg(aw, aw->w->rt->control_ep, &m);
                free(o);
                return;
        }
        default:
                break;
        }
        if (o->op == AMQP_QOP_CONSUME && o->code == 0) {
                /* reply first: deliveries must follow consume-ok */
                qop_answer(aw, o);
                queue_dispatch(aw, q);
                return;
        }
reply:
        qop_answer(aw, o);
}

static long get_ok_send(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch,
                        struct amqp_msg *msg, uint64_t left, bool no_ack);

/* The queue's worker answered o: finish the method for the client. */
static void qop_reply(struct amqp_worker *aw, struct amqp_qop *o)
{
        struct sl_conn *c = o->conn ? conn_find(aw->w, o->slot, o->gen, o->conn) : NULL;
        struct amqp_channel *ch = c ? chan_find(c, o->chan, o->epoch) : NULL;
        switch (o->op) {
        case AMQP_QOP_CANCEL:
                stub_unlink(aw, o->stub);
                free(o->stub);
                if (ch && o->method && !o->nowait) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_CANCEL_OK);
                        r.args[AMQP_BASIC_CANCEL_OK_CONSUMER_TAG].b = name_view(&o->name);
                        send_method(c, ch->id, &r);
                }
                break;
        case AMQP_QOP_CONSUME: {
                struct amqp_consumer *k = o->stub;
                if (o->code) {
                        free(k);
                        if (ch)
                                chan_error(c, ch, o->code, o->text, o->method);
                        break;
                }
                k->peer = o->proxy;
                stub_link(aw, k);
                if (!ch) {
                        k->c = NULL;
                        k->ch = NULL;
                        stub_cancel(aw, k, NULL, 0, 0, false);
                        break;
                }
                k->c = c;
                k->ch = ch;
                k->next_in_chan = ch->consumers;
                ch->consumers = k;
                if (!o->nowait) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_CONSUME_OK);
                        r.args[AMQP_BASIC_CONSUME_OK_CONSUMER_TAG].b = name_view(&k->tag);
                        send_method(c, ch->id, &r);
                }
                break;
        }
        case AMQP_QOP_GET:
                if (!ch) {
                        if (o->msg)
                                stl_push(aw, o->msg, AMQP_SETTLE_RETURN);
                        break;
                }
                if (o->code) {
                        chan_error(c, ch, o->code, o->text, o->method);
                        break;
                }
                if (!o->msg) {
                        send_simple(c, ch->id, AMQP_BASIC_GET_EMPTY);
                        break;
                }
                if (get_ok_send(aw, c, ch, o->msg, o->count, o->no_ack))
                        stl_push(aw, o->msg, AMQP_SETTLE_RETURN);
                break;
        default:
                if (!ch)
                        break;
                if (o->code) {
                        chan_error(c, ch, o->code, o->text, o->method);
                        break;
                }
                if (o->op == AMQP_QOP_STAT) {
                        queue_declare_ok(c, ch, name_view(&o->name), o->count, o->consumers);
                } else if (o->op == AMQP_QOP_PURGE && !o->nowait) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_QUEUE_PURGE_OK);
                        r.args[AMQP_QUEUE_PURGE_OK_MESSAGE_COUNT].u = (uint32_t)o->count;
                        send_method(c, ch->id, &r);
                } else if (o->op == AMQP_QOP_DELETE) {
                        chan_error(c, ch, 541, "delete failed", o->method);
                }
                break;
        }
        if (c && o->reply)
                conn_resume(c);
        free(o);
}

/* ---- messages from other workers and the control thread ----------------- */

static void on_fwd(struct amqp_worker *aw, const struct sl_msg *msg)
{
        struct amqp_fwd *f = msg->a.ptr[0];
        f->src = msg->src;
        f->waiting = 1; /* until every message below is in */
        struct amqp_queue *touched[16];
        uint32_t nt = 0, oi = 0;
        bool all = false;
        for (struct amqp_msg *m = f->msgs, *next; m; m = next) {
                next = m->next;
                struct amqp_queue *q = queue_by_qid(aw, m->qid);
                uint32_t o = m->o_seq ? oi++ : UINT32_MAX;
                if (!q) {
                        free(m); /* deleted meanwhile: as if it had been dropped there */
                        continue;
                }
                if (queue_enqueue(aw, q, m, NULL, f) < 0 && o != UINT32_MAX)
                        f->o[o].nack = true;
                bool seen = false;
                for (uint32_t i = 0; i < nt && !seen; i++)
                        seen = touched[i] == q;
                if (!seen) {
                        if (nt < SL_ARRAY_LEN(touched))
                                touched[nt++] = q;
                        else
                                all = true;
                }
        }
        f->msgs = NULL;
        if (--f->waiting == 0)
                fwd_accepted(aw, f);
        if (all) {
                for (struct amqp_queue *q = aw->queues; q; q = q->next)
                        queue_dispatch(aw, q);
        } else {
                for (uint32_t i = 0; i < nt; i++)
                        queue_dispatch(aw, touched[i]);
        }
}

static void on_settle(struct amqp_worker *aw, struct amqp_msg *m)
{
        for (struct amqp_msg *next; m; m = next) {
                next = m->next;
                m->next = NULL;
                struct amqp_consumer *k = m->ucons;
                bool tracked = m->tracked;
                struct amqp_queue *q = tracked ? m->uq : queue_by_qid(aw, m->qid);
                if (m->op == AMQP_SETTLE_RETURN && k)
                        k->inflight--;
                if (tracked && k)
                        k->unacked--;
                if (m->op == AMQP_SETTLE_ACK || (m->op == AMQP_SETTLE_REJECT && q->deleted)) {
                        sl_counter_add(&aw->acked, 1);
                        dq_ack(aw, q, m);
                        free(m);
                } else if (m->op == AMQP_SETTLE_REJECT) {
                        sl_counter_add(&aw->acked, 1);
                        dead_letter(aw, q, m, "rejected");
                } else {
                        if (m->op == AMQP_SETTLE_REQUEUE)
                                m->redelivered = true;
                        if (!q || q->deleted)
                                free(m);
                        else
                                queue_push_front(q, m);
                }
                if (tracked)
                        queue_unref(q);
                if (k)
                        proxy_maybe_free(k);
        }
        for (struct amqp_queue *q = aw->queues; q; q = q->next)
                queue_dispatch(aw, q);
}

/* The queue of stub k went away on its worker: tell the client (when it
 * asked for consumer_cancel_notify) and say goodbye to the proxy. */
static void on_cancelled(struct amqp_worker *aw, struct amqp_consumer *k)
{
        if (k->detached)
                return; /* our goodbye is on its way already */
        struct sl_conn *c = k->c;
        struct amqp_conn *kc = c->proto_state;
        if (kc->cancel_notify && c->state == SL_CONN_OPEN && !k->ch->closing) {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_BASIC_CANCEL);
                r.args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b = name_view(&k->tag);
                r.args[AMQP_BASIC_CANCEL_NOWAIT].u = 1;
                send_method(c, k->ch->id, &r);
        }
        stub_cancel(aw, k, NULL, 0, 0, false);
}

static void amqp_msg_in(struct sl_worker *w, const struct sl_msg *m)
{
        struct amqp_worker *aw = aw_of(w);
        switch (m->type) {
        case CTL_AMQP_MSG_APPLY: {
                if (m->u16 == 2) {
                        aw->ready = true;
                } else if (m->u16 == 1) {
                        /* restored from the metadata log at start */
                        static _Thread_local struct amqp_topo t;
                        if (topo_decode(m->a.ptr[0], m->u32, &t) == 0)
                                topo_apply(aw, &t, m->a.u64[1]);
                        else
                                SL_WARN("amqp: stored definition not understood; skipped");
                } else {
                        topo_apply(aw, m->a.ptr[0], m->a.u64[1]);
                }
                struct sl_msg r = {.type = CTL_AMQP_MSG_APPLY, .cookie = m->cookie};
                sl_mbox_reply(&w->mb, m->src, &r);
                return;
        }
        case CTL_AMQP_MSG_DONE:
                topo_done(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_FWD:
                on_fwd(aw, m);
                return;
        case CTL_AMQP_MSG_ACCEPT: {
                struct amqp_fwd *f = m->a.ptr[0];
                for (uint32_t i = 0; i < f->n; i++)
                        confirm_accepted(w, &f->o[i]);
                free(f);
                return;
        }
        case CTL_AMQP_MSG_DELIVER:
                for (struct amqp_msg *x = m->a.ptr[0], *next; x; x = next) {
                        next = x->next;
                        x->next = NULL;
                        stub_deliver(aw, x->rstub, x);
                }
                return;
        case CTL_AMQP_MSG_SETTLE:
                on_settle(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_CREDIT: {
                struct amqp_consumer *k = m->a.ptr[0];
                SL_ASSERT(k->inflight >= m->u32);
                k->inflight -= m->u32;
                struct amqp_queue *q = k->q;
                proxy_maybe_free(k);
                if (q)
                        queue_dispatch(aw, q);
                return;
        }
        case CTL_AMQP_MSG_QOP:
                qop_exec(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_QOP_REPLY:
                qop_reply(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_CANCELLED:
                on_cancelled(aw, m->a.ptr[0]);
                return;
        default:
                SL_WARN("amqp: worker %u: unexpected message %u", w->id, m->type);
        }
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
        m->loff = -1;
        m->ttl_ms = -1;
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
        else if (bytes_is(type, "headers"))
                t = AMQP_EX_HEADERS;
        else if (bytes_is(type, "x-delayed-message")) {
                struct amqp_field dt;
                int sub = -1;
                if (amqp_table_find(m->args[AMQP_EXCHANGE_DECLARE_ARGUMENTS].b, "x-delayed-type",
                                    &dt) == 1 &&
                    dt.tag == 'S')
                        sub = bytes_is(dt.v.b, "direct")    ? AMQP_EX_DIRECT
                              : bytes_is(dt.v.b, "fanout")  ? AMQP_EX_FANOUT
                              : bytes_is(dt.v.b, "topic")   ? AMQP_EX_TOPIC
                              : bytes_is(dt.v.b, "headers") ? AMQP_EX_HEADERS
                                                            : -1;
                if (sub < 0 && !passive)
                        return chan_error(c, ch, 406,
                                          "Invalid argument, 'x-delayed-type' must be an existing "
                                          "exchange type",
                                          m->key);
                t = sub | AMQP_EX_DELAYED;
        }
        struct amqp_exchange *e = ex_find(aw, name);
        if (passive) {
                if (!e)
                        return chan_error(c, ch, 404, "no exchange", m->key);
        } else if (name.len == 0) {
                return chan_error(c, ch, 403, "the default exchange cannot be declared", m->key);
        } else if (t < 0) {
                return conn_error(c, 503, "invalid exchange type", m->key);
        } else if (e && (e->type | (e->delayed ? AMQP_EX_DELAYED : 0)) != t) {
                return chan_error(c, ch, 406, "inequivalent arg 'type'", m->key);
        } else if (!e) {
                if (name.len >= 4 && !memcmp(name.ptr, "amq.", 4))
                        return chan_error(c, ch, 403, "exchange names amq.* are reserved", m->key);
                struct amqp_topo *x = topo_new(c, ch, AMQP_TOPO_EX_DECLARE, m->key);
                if (!x)
                        return conn_error(c, 541, "out of memory", m->key);
                name_set(&x->a, name);
                x->ex_type = (uint8_t)t;
                x->nowait = m->args[AMQP_EXCHANGE_DECLARE_NOWAIT].u;
                x->durable = m->args[AMQP_EXCHANGE_DECLARE_DURABLE].u;
                if (x->durable)
                        topo_def(x, CTL_AMQP_DEF_PUT);
                return topo_submit(aw, c, x);
        }
        if (m->args[AMQP_EXCHANGE_DECLARE_NOWAIT].u)
                return 0;
        return send_simple(c, ch->id, AMQP_EXCHANGE_DECLARE_OK);
}

/* 406 when a redeclaration differs from the queue; 405 when another
 * connection holds it exclusively. Returns non-zero after an error. */
static long queue_check_equivalent(struct sl_conn *c, struct amqp_channel *ch,
                                   const struct amqp_qref *r, bool durable, bool exclusive,
                                   bool auto_delete, const struct amqp_qargs *qa, uint32_t key)
{
        if (r->owner_conn && r->owner_conn != c->id) {
                chan_error(c, ch, 405, "queue is exclusive to another connection", key);
                return 1;
        }
        const char *what = r->durable != durable           ? "durable"
                           : r->exclusive != exclusive     ? "exclusive"
                           : r->auto_delete != auto_delete ? "auto_delete"
                                                           : qargs_differ(&r->qa, qa);
        if (!what)
                return 0;
        char t[320];
        snprintf(t, sizeof(t), "inequivalent arg '%s' for queue '%s'", what, r->name.s);
        chan_error(c, ch, 406, t, key);
        return 1;
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
        struct amqp_qref *r = qref_find(aw, name);
        if (r && qref_local(aw, r) && !r->q)
                r = NULL; /* deleted here; its Q_DELETE is ahead of any new declare */
        bool passive = m->args[AMQP_QUEUE_DECLARE_PASSIVE].u;
        bool durable = m->args[AMQP_QUEUE_DECLARE_DURABLE].u;
        bool exclusive = m->args[AMQP_QUEUE_DECLARE_EXCLUSIVE].u;
        bool auto_delete = m->args[AMQP_QUEUE_DECLARE_AUTO_DELETE].u;
        bool nowait = m->args[AMQP_QUEUE_DECLARE_NOWAIT].u;
        struct amqp_qargs qa;
        struct amqp_name qn;
        name_set(&qn, name);
        char text[700];
        if (!passive) {
                int code = qargs_parse(m->args[AMQP_QUEUE_DECLARE_ARGUMENTS].b, &qn, &qa, text,
                                       sizeof(text));
                if (code)
                        return chan_error(c, ch, (uint16_t)code, text, m->key);
        }
        if (!r && !passive && name.ptr != (const uint8_t *)gen && name.len >= 4 &&
            !memcmp(name.ptr, "amq.", 4))
                return chan_error(c, ch, 403, "queue names amq.* are reserved", m->key);
        if (!r) {
                if (passive)
                        return chan_error(c, ch, 404, "no queue", m->key);
                struct amqp_topo *t = topo_new(c, ch, AMQP_TOPO_Q_DECLARE, m->key);
                if (!t)
                        return conn_error(c, 541, "out of memory", m->key);
                name_set(&t->a, name);
                /* Placed on the declaring connection's worker: the usual
                 * declarer is also the consumer (and always is for
                 * exclusive and server-named queues), so delivery stays
                 * local and an exclusive queue dies with its owner here. */
                t->worker = c->w->id;
                t->durable = durable;
                t->exclusive = exclusive;
                t->auto_delete = auto_delete;
                t->owner_conn = exclusive ? c->id : 0;
                t->nowait = nowait;
                t->qa = qa;
                /* exclusive queues die with their connection: never stored */
                if (durable && !exclusive)
                        topo_def(t, CTL_AMQP_DEF_PUT);
                return topo_submit(aw, c, t);
        }
        if (passive) {
                if (r->owner_conn && r->owner_conn != c->id)
                        return chan_error(c, ch, 405, "queue is exclusive to another connection",
                                          m->key);
        } else if (queue_check_equivalent(c, ch, r, durable, exclusive, auto_delete, &qa, m->key)) {
                return 0;
        }
        if (nowait)
                return 0;
        if (qref_local(aw, r) && r->q) {
                queue_expire(aw, r->q);
                r->q->last_used_ms = aw->w->now_ms;
        }
        if (qref_local(aw, r))
                return queue_declare_ok(c, ch, name_view(&r->name), r->q ? r->q->count : 0,
                                        r->q ? r->q->nconsumers : 0);
        struct amqp_qop *o = qop_new(c, ch, AMQP_QOP_STAT, r, m->key);
        if (!o)
                return conn_error(c, 541, "out of memory", m->key);
        return qop_submit(aw, c, r->worker, o);
}

/* Finds a queue in the routing table for a channel method: 404 if missing,
 * 405 if another connection holds it exclusively. */
static struct amqp_qref *queue_lookup(struct sl_conn *c, struct amqp_channel *ch,
                                      struct amqp_bytes name, uint32_t key, long *err)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_qref *r = qref_find(aw, name);
        if (!r || (qref_local(aw, r) && !r->q)) {
                char t[300];
                snprintf(t, sizeof(t), "no queue '%.*s' in vhost '/'", (int)name.len,
                         (const char *)name.ptr);
                *err = chan_error(c, ch, 404, t, key);
                return NULL;
        }
        if (r->owner_conn && r->owner_conn != c->id) {
                *err = chan_error(c, ch, 405, "queue is exclusive to another connection", key);
                return NULL;
        }
        return r;
}

static long on_queue_bind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        bool bind = m->key == AMQP_QUEUE_BIND;
        /* queue, exchange and routing key share their positions */
        long err = 0;
        struct amqp_qref *r = queue_lookup(c, ch, m->args[AMQP_QUEUE_BIND_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        struct amqp_bytes exn = m->args[AMQP_QUEUE_BIND_EXCHANGE].b;
        if (exn.len == 0)
                return chan_error(c, ch, 403, "operation not permitted on the default exchange",
                                  m->key);
        struct amqp_exchange *e = ex_find(aw, exn);
        if (!e)
                return chan_error(c, ch, 404, "no exchange", m->key);
        struct amqp_topo *t = topo_new(c, ch, bind ? AMQP_TOPO_Q_BIND : AMQP_TOPO_Q_UNBIND, m->key);
        if (!t)
                return conn_error(c, 541, "out of memory", m->key);
        t->a = r->name;
        name_set(&t->b, exn);
        name_set(&t->key, m->args[AMQP_QUEUE_BIND_ROUTING_KEY].b);
        t->nowait = bind && m->args[AMQP_QUEUE_BIND_NOWAIT].u;
        if (topo_bind_args(
                t, m->args[bind ? AMQP_QUEUE_BIND_ARGUMENTS : AMQP_QUEUE_UNBIND_ARGUMENTS].b)) {
                free(t);
                return chan_error(c, ch, 406, "binding arguments over 512 bytes", m->key);
        }
        /* a binding is durable when both ends are (as in RabbitMQ) */
        if (r->durable && !r->exclusive && e->durable)
                topo_def(t, bind ? CTL_AMQP_DEF_PUT : CTL_AMQP_DEF_DELETE);
        return topo_submit(aw, c, t);
}

/* Unlinks q here: consumers cancelled (notified when the client asked for
 * it; remote ones through their stubs), ready messages freed. Unacked ones
 * keep q alive until they settle. The routing table forgets q when the
 * caller's Q_DELETE change is applied. Returns the ready messages dropped. */
static uint64_t queue_delete(struct amqp_worker *aw, struct amqp_queue *q)
{
        for (struct amqp_queue **pp = &aw->queues; *pp; pp = &(*pp)->next)
                if (*pp == q) {
                        *pp = q->next;
                        break;
                }
        if (aw->qid_cache == q)
                aw->qid_cache = NULL;
        struct amqp_qref *r = qref_by_qid(aw, q->qid);
        if (r)
                r->q = NULL;
        q->deleted = true;
        dq_remove(aw, q);
        sl_counter_add(&aw->queues_n, -1);
        while (q->consumers) {
                struct amqp_consumer *k = q->consumers;
                if (k->proxy) {
                        struct sl_msg m = {.type = CTL_AMQP_MSG_CANCELLED};
                        m.a.ptr[0] = k->peer;
                        out_msg(aw, k->rworker, &m);
                        proxy_unlink(k);
                        continue;
                }
                struct amqp_conn *kc = k->c->proto_state;
                if (kc->cancel_notify && k->c->state == SL_CONN_OPEN && !k->ch->closing) {
                        struct amqp_method cm;
                        amqp_method_init(&cm, AMQP_BASIC_CANCEL);
                        cm.args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b = name_view(&k->tag);
                        cm.args[AMQP_BASIC_CANCEL_NOWAIT].u = 1;
                        send_method(k->c, k->ch->id, &cm);
                }
                consumer_remove(k);
        }
        uint64_t n = q->count;
        struct amqp_msg *m;
        while ((m = queue_pop(q)))
                free(m);
        if (!q->unacked_refs)
                queue_free(q);
        return n;
}

static long on_queue_delete(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_QUEUE_DELETE_QUEUE].b;
        struct amqp_qref *r = qref_find(aw, name);
        bool nowait = m->args[AMQP_QUEUE_DELETE_NOWAIT].u;
        /* A missing queue is deleted already: delete-ok, as RabbitMQ does. */
        if (!r || (qref_local(aw, r) && !r->q)) {
                if (nowait)
                        return 0;
                struct amqp_method ok;
                amqp_method_init(&ok, AMQP_QUEUE_DELETE_OK);
                return send_method(c, ch->id, &ok);
        }
        long err = 0;
        if (!queue_lookup(c, ch, name, m->key, &err))
                return err;
        struct amqp_qop *o = qop_new(c, ch, AMQP_QOP_DELETE, r, m->key);
        if (!o)
                return conn_error(c, 541, "out of memory", m->key);
        o->if_unused = m->args[AMQP_QUEUE_DELETE_IF_UNUSED].u;
        o->if_empty = m->args[AMQP_QUEUE_DELETE_IF_EMPTY].u;
        o->nowait = nowait;
        if (!qref_local(aw, r))
                return qop_submit(aw, c, r->worker, o);
        /* here: run it now; the client waits for the routing-table change
         * (or gets the error) */
        o->reply = true;
        conn_wait(c);
        qop_exec(aw, o);
        return 0;
}

static long on_queue_purge(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_qref *r = queue_lookup(c, ch, m->args[AMQP_QUEUE_PURGE_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        struct amqp_qop *o = qop_new(c, ch, AMQP_QOP_PURGE, r, m->key);
        if (!o)
                return conn_error(c, 541, "out of memory", m->key);
        o->nowait = m->args[AMQP_QUEUE_PURGE_NOWAIT].u;
        if (!qref_local(aw, r))
                return qop_submit(aw, c, r->worker, o);
        conn_wait(c);
        qop_exec(aw, o);
        return 0;
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
        struct amqp_topo *t =
            topo_new(c, ch, bind ? AMQP_TOPO_EX_BIND : AMQP_TOPO_EX_UNBIND, m->key);
        if (!t)
                return conn_error(c, 541, "out of memory", m->key);
        name_set(&t->a, dn);
        name_set(&t->b, sn);
        name_set(&t->key, key);
        t->nowait = m->args[AMQP_EXCHANGE_BIND_NOWAIT].u;
        if (topo_bind_args(t, m->args[AMQP_EXCHANGE_BIND_ARGUMENTS].b)) {
                free(t);
                return chan_error(c, ch, 406, "binding arguments over 512 bytes", m->key);
        }
        if (src->durable && dst->durable)
                topo_def(t, bind ? CTL_AMQP_DEF_PUT : CTL_AMQP_DEF_DELETE);
        return topo_submit(aw, c, t);
}

static long on_exchange_delete(struct sl_conn *c, struct amqp_channel *ch,
                               const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_EXCHANGE_DELETE_EXCHANGE].b;
        if (name.len == 0 || (name.len >= 4 && !memcmp(name.ptr, "amq.", 4)))
                return chan_error(c, ch, 403, "cannot delete a built-in exchange", m->key);
        struct amqp_exchange *e = ex_find(aw, name);
        bool nowait = m->args[AMQP_EXCHANGE_DELETE_NOWAIT].u;
        if (!e)
                return nowait ? 0 : send_simple(c, ch->id, AMQP_EXCHANGE_DELETE_OK);
        if (m->args[AMQP_EXCHANGE_DELETE_IF_UNUSED].u && e->bindings)
                return chan_error(c, ch, 406, "exchange in use", m->key);
        struct amqp_topo *t = topo_new(c, ch, AMQP_TOPO_EX_DELETE, m->key);
        if (!t)
                return conn_error(c, 541, "out of memory", m->key);
        name_set(&t->a, name);
        t->nowait = nowait;
        if (e->durable)
                topo_def(t, CTL_AMQP_DEF_DELETE_EXCHANGE);
        return topo_submit(aw, c, t);
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

/* Routes a published message; basic.return when unroutable and mandatory.
 * seq: its confirm number (0: none); *nremote: queues elsewhere. */
static long publish_route(struct sl_conn *c, struct amqp_channel *ch, struct amqp_msg *m,
                          bool mandatory, uint64_t seq, uint32_t *nremote, uint32_t *nrejected)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_origin o = {c->id, seq, c->slot, c->gen, ch->epoch, ch->id, false};
        *nremote = *nrejected = 0;
        if (delayed_hold(aw, m))
                return 0; /* accepted by the exchange: routed when due */
        if (route(aw, m, &o, nremote, nrejected) == 0) {
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
        uint64_t seq = ch->confirm ? ++ch->pub_seq : 0;
        uint32_t nremote = 0, nrejected = 0;
        if (publish_route(c, ch, m, ch->mandatory, seq, &nremote, &nrejected))
                return -1;
        if (ch->confirm)
                return confirm_add(c, ch, seq, nremote, nrejected > 0);
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
        m->persistent = amqp_header_has(&h, AMQP_BASIC_PROP_DELIVERY_MODE) &&
                        h.props[AMQP_BASIC_PROP_DELIVERY_MODE].u == 2;
        m->ttl_ms = expiration_ms(&h);
        if (amqp_header_has(&h, AMQP_BASIC_PROP_PRIORITY))
                m->priority = (uint8_t)h.props[AMQP_BASIC_PROP_PRIORITY].u;
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
        struct amqp_qref *r =
            queue_lookup(c, ch, m->args[AMQP_BASIC_CONSUME_QUEUE].b, m->key, &err);
        if (!r)
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
        if (!qref_local(aw, r)) {
                /* The stub is linked to the channel once the queue's worker
                 * has its proxy (qop_reply). */
                struct amqp_consumer *k = calloc(1, sizeof(*k));
                struct amqp_qop *o = qop_new(c, ch, AMQP_QOP_CONSUME, r, m->key);
                if (!k || !o) {
                        free(k);
                        free(o);
                        return conn_error(c, 541, "out of memory", m->key);
                }
                name_set(&k->tag, tag);
                k->stub = true;
                k->c = c;
                k->ch = ch;
                k->rworker = r->worker;
                k->qid = r->qid;
                k->no_ack = m->args[AMQP_BASIC_CONSUME_NO_ACK].u;
                /* The per-consumer prefetch is counted by the queue's worker;
                 * basic.qos global=1 by this one (stub_write holds what
                 * would pass it), with the hop's window no larger. */
                k->prefetch = ch->prefetch;
                o->window =
                    ch->gprefetch ? SL_MIN(ch->gprefetch, AMQP_REMOTE_WINDOW) : AMQP_REMOTE_WINDOW;
                o->stub = k;
                o->no_ack = k->no_ack;
                o->exclusive = exclusive;
                o->prefetch = k->prefetch;
                o->nowait = m->args[AMQP_BASIC_CONSUME_NOWAIT].u;
                return qop_submit(aw, c, r->worker, o);
        }
        struct amqp_queue *q = r->q;
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
                struct amqp_method ok;
                amqp_method_init(&ok, AMQP_BASIC_CONSUME_OK);
                ok.args[AMQP_BASIC_CONSUME_OK_CONSUMER_TAG].b = name_view(&k->tag);
                if (send_method(c, ch->id, &ok))
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
                        if (k->stub) {
                                /* cancel-ok once the proxy is gone: nothing
                                 * is delivered after it */
                                stub_cancel(aw_of(c->w), k, c, ch->id, m->key,
                                            m->args[AMQP_BASIC_CANCEL_NOWAIT].u);
                                return 0;
                        }
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

/* basic.get-ok for msg (from a queue here or elsewhere); it joins the
 * unacked list unless no_ack. Non-zero: not sent (msg still the caller's). */
static long get_ok_send(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch,
                        struct amqp_msg *msg, uint64_t left, bool no_ack)
{
        struct amqp_method r;
        amqp_method_init(&r, AMQP_BASIC_GET_OK);
        r.args[AMQP_BASIC_GET_OK_DELIVERY_TAG].u = ch->next_tag + 1;
        r.args[AMQP_BASIC_GET_OK_REDELIVERED].u = msg->redelivered;
        r.args[AMQP_BASIC_GET_OK_EXCHANGE].b = (struct amqp_bytes){msg->data, msg->ex_len};
        r.args[AMQP_BASIC_GET_OK_ROUTING_KEY].b =
            (struct amqp_bytes){msg->data + msg->ex_len, msg->rk_len};
        r.args[AMQP_BASIC_GET_OK_MESSAGE_COUNT].u = (uint32_t)left;
        int rc = send_content(c, ch->id, &r, msg);
        if (rc == -EAGAIN)
                doom(c);
        if (rc)
                return -1;
        ch->next_tag++;
        if (no_ack) {
                free(msg);
        } else {
                msg->dtag = ch->next_tag;
                unacked_add(aw, ch, msg);
        }
        return 0;
}

static long on_get(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_qref *r = queue_lookup(c, ch, m->args[AMQP_BASIC_GET_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        bool no_ack = m->args[AMQP_BASIC_GET_NO_ACK].u;
        if (!qref_local(aw, r)) {
                struct amqp_qop *o = qop_new(c, ch, AMQP_QOP_GET, r, m->key);
                if (!o)
                        return conn_error(c, 541, "out of memory", m->key);
                o->no_ack = no_ack;
                return qop_submit(aw, c, r->worker, o);
        }
        struct amqp_queue *q = r->q;
        queue_expire(aw, q);
        q->last_used_ms = aw->w->now_ms;
        struct amqp_msg *msg = queue_pop(q);
        if (!msg)
                return send_simple(c, ch->id, AMQP_BASIC_GET_EMPTY);
        msg->home = aw->w->id;
        msg->uq = q;
        msg->ucons = NULL;
        msg->tracked = !no_ack;
        if (no_ack)
                dq_ack(aw, q, msg);
        if (get_ok_send(aw, c, ch, msg, q->count, no_ack)) {
                queue_push_front(q, msg);
                return -1;
        }
        sl_counter_add(&aw->delivered, 1);
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
                } else if (x->home != aw->w->id) {
                        sl_counter_add(&aw->acked, 1);
                        stl_push(aw, x,
                                 m->key == AMQP_BASIC_ACK ? AMQP_SETTLE_ACK : AMQP_SETTLE_REJECT);
                } else {
                        if (x->ucons)
                                x->ucons->unacked--;
                        sl_counter_add(&aw->acked, 1);
                        struct amqp_queue *q = x->uq;
                        if (m->key == AMQP_BASIC_ACK || q->deleted) {
                                dq_ack(aw, q, x);
                                free(x);
                        } else {
                                dead_letter(aw, q, x, "rejected");
                        }
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
                if (x->home != aw->w->id)
                        continue;
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
        requeue_list(aw, req);
        if (all) {
                for (struct amqp_queue *q = aw->queues; q; q = q->next)
                        queue_dispatch(aw, q);
                return 0;
        }
        for (uint32_t i = 0; i < nt; i++)
                queue_dispatch(aw, touched[i]);
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                if (!k->stub)
                        queue_dispatch(aw, k->q);
        if (ch->gprefetch)
                stubs_writable(aw, c, ch);
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
                uint32_t nremote, nrejected;
                if (rc == 0)
                        rc = publish_route(c, ch, p, p->mandatory, 0, &nremote, &nrejected);
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
                ch->epoch = ++aw_of(c->w)->epoch_seq;
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
                return on_queue_bind(c, ch, m);
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
                struct amqp_worker *aw = aw_of(c->w);
                requeue_list(aw, un);
                if (ch->gprefetch)
                        stubs_writable(aw, c, ch);
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
        if (ac->waiting || !aw_of(c->w)->ready)
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
                if (ac->waiting) {
                        /* the rest is offered again once the answer came */
                        sl_conn_set_partial(c, false);
                        return ac->doomed ? -1 : (long)off;
                }
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
        stubs_writable(aw, c, NULL);
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
                        queue_delete_announce(aw, q); /* unlinks q: *pp is now the next */
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
                struct amqp_exchange *e = ex_add(aw, amqp_cstr(builtin[i].name), builtin[i].type);
                if (!e)
                        return -ENOMEM;
                e->durable = true;
        }
        return 0;
}

static void amqp_worker_fini(struct sl_worker *w)
{
        struct amqp_worker *aw = aw_of(w);
        if (!aw)
                return;
        if (aw->owner) {
                /* acks recorded, every append finished (callbacks run) */
                dq_poll(aw);
                log_owner_drain(aw->owner);
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
                while ((m = queue_pop(q)))
                        free(m);
                while (q->consumers) {
                        struct amqp_consumer *k = q->consumers;
                        q->consumers = k->next_in_queue;
                        free(k); /* proxies (connections are closed already) */
                }
                queue_free(q);
        }
        for (uint32_t i = 0; i < aw->ndelayed; i++)
                free(aw->delayed[i].m);
        free(aw->delayed);
        while (aw->qrefs) {
                struct amqp_qref *r = aw->qrefs;
                aw->qrefs = r->next;
                free(r);
        }
        while (aw->stubs) {
                struct amqp_consumer *k = aw->stubs;
                stub_unlink(aw, k);
                free(k);
        }
        /* What is still on its way at shutdown: batches not sent. */
        for (uint16_t d = 0; d <= w->nworkers; d++) {
                struct amqp_link *l = &aw->link[d];
                struct amqp_msg *lists[3] = {l->fwd_head, l->dlv_head, l->stl_head};
                for (int i = 0; i < 3; i++)
                        for (struct amqp_msg *m = lists[i], *n; m; m = n) {
                                n = m->next;
                                free(m);
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
        emit(ctx, "sluice_amqp_persist_too_large_total", "counter",
             "Persistent messages over 2 MiB kept in memory only.", AMQP_LOAD(persist_too_large));
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
