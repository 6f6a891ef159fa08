/* Internal to dataplane/amqp: the broker's types (per worker, per
 * connection, per channel, messages, queues, exchanges) and the functions
 * the server's files call across each other. Not for use outside. */
#ifndef AMQP_INTERNAL_H
#define AMQP_INTERNAL_H

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
#include "amqp_qrec.h"
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
/* No message is larger ([limits] amqp_message_bytes_max's upper bound):
 * what recovery accepts from a log record. */
#define AMQP_MSG_LIMIT (512ull << 20)
#define AMQP_CTL_BUF   2048
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
        uint64_t alloc_bytes; /* what amqp_msg_alloc took, for amqp_msg_free */
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
        /* Fan-out on one worker: a copy for another local queue is this
         * header alone, reading body_of's bytes (amqp_msg_bytes); the
         * owner counts its readers and outlives them (body_dead: freed by
         * its last reader). Never across workers: a message that leaves
         * its worker is made whole first (amqp_msg_own). */
        struct amqp_msg *body_of;
        uint32_t body_refs;
        bool body_dead;
        uint8_t data[]; /* ex, rk, header payload, body (owners only) */
};

/* A message's ex, rk, header payload and body, wherever they live. */
static inline uint8_t *amqp_msg_bytes(const struct amqp_msg *m)
{
        return (uint8_t *)(m->body_of ? m->body_of->data : m->data);
}

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
        /* records waiting for room in the log, in order (see amqp_spill);
         * while any wait, every later record of the queue waits behind */
        struct amqp_spill *spill_head, *spill_tail;
        uint32_t spill_n;
        struct amqp_queue *next_spill;
        /* durable: the log offsets of its live persistent messages (ready,
         * unacked or being appended) in log order, AMQP_LIVE_SETTLED set
         * once settled; the head is the lowest live offset, below which
         * the log is trimmed (at most every AMQP_TRIM_MS while not empty) */
        uint64_t *live;
        uint32_t live_head, live_n, live_cap;
        uint64_t trim_ms;
        bool trim_wanted; /* settled since the last trim: try again after AMQP_TRIM_MS */
        struct amqp_msg *head, *tail;
        uint64_t count;
        struct amqp_consumer *consumers;
        /* the last consumer's next_in_queue (NULL or &consumers when none):
         * appends and the round robin's rotation without a walk */
        struct amqp_consumer **ctail;
        bool marked; /* on the worker's list of queues to dispatch */
        struct amqp_queue *next_marked;
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

/* A held message released from the delayed log: acked there once its
 * `pending` target queues have it durably. Its origin in amqp_route() is
 * {slot AMQP_SLOT_DELAYED, seq loff + 1}. */
struct amqp_release {
        int64_t loff;
        uint32_t pending;
};
#define AMQP_SLOT_DELAYED UINT32_MAX

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
        struct amqp_queue *spilled; /* queues with records waiting for the log */
        /* queues an event may have unblocked (credit back, messages
         * requeued, output room): dispatched by amqp_dispatch_marked
         * instead of every queue of the worker */
        struct amqp_queue *marked;
        /* Resource alarms (CTL_AMQP_ALARM_* bits from the control thread):
         * while set, a connection that publishes is no longer read (and
         * told with connection.blocked) until they clear. The memory
         * alarm's measure is amqp_msg_held_bytes (every message allocated
         * and not yet freed: ready, unacked, in a transaction or in flight
         * between workers), published to held_bytes_pub once per loop
         * iteration for the control thread. */
        uint8_t alarm;
        uint64_t held_told, held_told_ms; /* last reported to the control thread */
        struct sl_conn *blocked;          /* connections blocked by the alarm */
        struct amqp_channel *acks_dirty;  /* channels with confirms to send */
        /* Durable x-delayed-message: the persistent messages held here are
         * in a log of their own (a queue that is never listed, in
         * <data>/amqp/delayed-w<id>); a released one is acked there once
         * every queue it reached has it (releases wait in rel). */
        struct amqp_queue *delayq;
        struct amqp_release *rel;
        uint32_t nrel, rel_cap;
        /* written by the worker, read by the control thread (metrics) */
        _Atomic uint64_t published, delivered, acked, unroutable, returned;
        _Atomic uint64_t queues_n, messages_ready, channels, conn_errors, chan_errors;
        _Atomic uint64_t persist_split, persist_spilled, log_trims;
        _Atomic uint64_t alarm_pub;
        _Atomic int64_t held_bytes_pub;
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
        /* Positive confirms decided but not sent yet: ack_n of them, the
         * last ack_last; one basic.ack (multiple when ack_n > 1) goes at
         * the end of the loop iteration (the worker's ack_dirty list). */
        uint64_t ack_last;
        uint32_t ack_n;
        struct amqp_channel *ack_next;
        struct sl_conn *ack_conn;
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
        /* Resource alarm: the client understands connection.blocked; a
         * publish completed while the alarm is on (block once the frame is
         * handled); input stopped until the alarm clears (a list through
         * the worker's blocked connections). */
        bool blocked_cap, block_after, blocked;
        struct sl_conn *blocked_prev, *blocked_next;
        uint64_t last_rx_ms, last_tx_hb_ms, phase_since_ms;
        struct amqp_channel **chans; /* [channel_max + 1], allocated at the first channel.open */
        /* Queues whose delivery waited for this connection's output room
         * (each holds a reference): writable() dispatches these. More than
         * fit: every queue of the worker. */
        struct amqp_queue *room_q[8];
        uint8_t nroom_q;
        bool room_all;
};

static inline struct amqp_worker *aw_of(struct sl_worker *w)
{
        return w->proto_ctx[CTL_PROTO_AMQP];
}

static inline bool name_eq(const struct amqp_name *n, struct amqp_bytes b)
{
        return n->len == b.len && memcmp(n->s, b.ptr, b.len) == 0;
}

static inline void name_set(struct amqp_name *n, struct amqp_bytes b)
{
        n->len = (uint8_t)SL_MIN(b.len, 255u);
        memcpy(n->s, b.ptr, n->len);
        n->s[n->len] = 0;
}

static inline struct amqp_bytes name_view(const struct amqp_name *n)
{
        return (struct amqp_bytes){(const uint8_t *)n->s, n->len};
}

/* Who to tell when a forwarded copy is accepted (seq 0: nobody). */
struct amqp_origin {
        uint64_t conn, seq;
        uint32_t slot, gen, epoch;
        uint16_t chan;
        bool nack; /* the queue refused it (x-overflow reject-publish) */
};

enum amqp_settle_op {
        AMQP_SETTLE_ACK,     /* acked, or rejected without requeue: gone */
        AMQP_SETTLE_REQUEUE, /* back at the head, redelivered */
        AMQP_SETTLE_RETURN,  /* never reached the client: back at the head as it was */
        AMQP_SETTLE_REJECT,  /* rejected/nacked without requeue: dead-lettered */
};

/* A forwarded batch: the messages, then who to confirm to once the queue's
 * worker has taken them (the same block travels back as the acceptance). */
struct amqp_fwd {
        struct amqp_msg *msgs;
        uint32_t n;
        uint32_t waiting; /* on the queue's worker: appends not yet durable */
        uint16_t src;
        struct amqp_origin o[];
};

#define DQ_SEGMENT_BYTES  (8u << 20) /* small: a queue that is never empty still trims */
#define AMQP_LIVE_SETTLED (1ull << 63)
#define AMQP_TRIM_MS      1000

struct amqp_pend {
        struct amqp_origin o;
        struct amqp_fwd *f;
};

/* A record the log could not take yet (staging ring or ack queue full: a
 * piece of a large message, or anything after one), appended in order from
 * amqp_dq_poll. Its offset was predicted (the log end plus the records
 * ahead), so acks and live offsets can name it already. */
struct amqp_spill {
        struct amqp_spill *next;
        int64_t off;
        bool piece;            /* a message record: its ack runs dq_append_cb */
        struct amqp_pend pend; /* piece: the confirm waiting for it (last piece only) */
        uint32_t len;
        uint8_t b[];
};

struct amqp_plog {
        struct amqp_plog *next;
        struct log_partition *log;
};

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

/* amqp_server.c */
long amqp_conn_block(struct sl_conn *c);
void amqp_blocked_unlink(struct amqp_worker *aw, struct sl_conn *c);
void amqp_alarm_set(struct amqp_worker *aw, uint8_t alarm);
void amqp_doom(struct sl_conn *c);
bool amqp_conn_usable(struct sl_conn *c);
int amqp_send_method(struct sl_conn *c, uint16_t ch, const struct amqp_method *m);
int amqp_send_simple(struct sl_conn *c, uint16_t ch, uint32_t key);
long amqp_conn_error(struct sl_conn *c, uint16_t code, const char *text, uint32_t cause);
long amqp_chan_error(struct sl_conn *c, struct amqp_channel *ch, uint16_t code, const char *text,
                     uint32_t cause);
void amqp_worker_fini(struct sl_worker *w);

/* amqp_channel.c */
/* Every message is allocated and freed through these two, so the memory
 * alarm sees all of them wherever they are. The count is per thread (a
 * message freed on another worker than its allocator's counts there, so one
 * worker's value may be negative); the sum over workers is what is held. */
extern _Thread_local int64_t amqp_msg_held_bytes;
struct amqp_msg *amqp_msg_alloc(uint64_t bytes);
struct amqp_msg *amqp_msg_share(struct amqp_msg *owner);
struct amqp_msg *amqp_msg_own(struct amqp_msg *m);
void amqp_msg_free(struct amqp_msg *m);
struct amqp_msg *amqp_msg_new(struct amqp_bytes ex, struct amqp_bytes rk, uint64_t hdr_max,
                              uint64_t body_len);
long amqp_on_exchange_declare(struct sl_conn *c, struct amqp_channel *ch,
                              const struct amqp_method *m);
long amqp_queue_check_equivalent(struct sl_conn *c, struct amqp_channel *ch,
                                 const struct amqp_qref *r, bool durable, bool exclusive,
                                 bool auto_delete, const struct amqp_qargs *qa, uint32_t key);
long amqp_on_queue_declare(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_on_queue_bind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
uint64_t amqp_queue_delete(struct amqp_worker *aw, struct amqp_queue *q);
long amqp_on_queue_delete(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_on_queue_purge(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_on_exchange_bind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_on_exchange_delete(struct sl_conn *c, struct amqp_channel *ch,
                             const struct amqp_method *m);
long amqp_on_publish(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_on_header(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_frame *f);
long amqp_on_body(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_frame *f);
long amqp_on_consume(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_on_cancel(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_get_ok_send(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch,
                      struct amqp_msg *msg, uint64_t left, bool no_ack);
long amqp_on_get(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_settle(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m,
                 uint64_t tag, bool multiple, bool requeue);
long amqp_tx_hold_settle(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m);
long amqp_tx_commit(struct sl_conn *c, struct amqp_channel *ch);
long amqp_tx_rollback(struct sl_conn *c, struct amqp_channel *ch);

/* amqp_route.c */
struct amqp_exchange *amqp_ex_find(struct amqp_worker *aw, struct amqp_bytes name);
struct amqp_qref *amqp_qref_find(struct amqp_worker *aw, struct amqp_bytes name);
struct amqp_qref *amqp_qref_by_qid(struct amqp_worker *aw, uint64_t qid);
struct amqp_queue *amqp_queue_by_qid(struct amqp_worker *aw, uint64_t qid);
bool amqp_qref_local(struct amqp_worker *aw, const struct amqp_qref *r);
struct amqp_exchange *amqp_ex_add(struct amqp_worker *aw, struct amqp_bytes name, uint8_t type);
void amqp_queue_push(struct amqp_queue *q, struct amqp_msg *m);
void amqp_queue_push_front(struct amqp_queue *q, struct amqp_msg *m);
struct amqp_msg *amqp_queue_pop(struct amqp_queue *q);
uint32_t amqp_route(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o,
                    uint32_t *nremote, uint32_t *nrejected);
int amqp_topo_decode(const uint8_t *b, uint32_t len, struct amqp_topo *t);
int amqp_topo_bind_args(struct amqp_topo *t, struct amqp_bytes args);
void amqp_topo_def(struct amqp_topo *t, uint8_t op);
struct amqp_topo *amqp_topo_new(struct sl_conn *c, struct amqp_channel *ch, uint8_t op,
                                uint32_t method);
long amqp_topo_submit(struct amqp_worker *aw, struct sl_conn *c, struct amqp_topo *t);
void amqp_topo_apply(struct amqp_worker *aw, const struct amqp_topo *t, uint64_t seq);
long amqp_queue_declare_ok(struct sl_conn *c, struct amqp_channel *ch, struct amqp_bytes name,
                           uint64_t count, uint32_t consumers);
void amqp_topo_done(struct amqp_worker *aw, struct amqp_topo *t);
struct amqp_qop;
void amqp_queue_delete_announce(struct amqp_worker *aw, struct amqp_queue *q,
                                const struct amqp_qop *o);

/* amqp_queue.c */
int amqp_send_content(struct sl_conn *c, uint16_t chan, const struct amqp_method *meth,
                      const struct amqp_msg *m);
void amqp_queue_free(struct amqp_queue *q);
void amqp_queue_unref(struct amqp_queue *q);
void amqp_unacked_add(struct amqp_worker *aw, struct amqp_channel *ch, struct amqp_msg *m);
void amqp_consumer_append(struct amqp_queue *q, struct amqp_consumer *k);
void amqp_queue_mark(struct amqp_worker *aw, struct amqp_queue *q);
void amqp_conn_room(struct amqp_worker *aw, struct sl_conn *c);
void amqp_conn_room_release(struct sl_conn *c);
void amqp_dispatch_marked(struct amqp_worker *aw);
void amqp_consumer_unlink_at(struct amqp_queue *q, struct amqp_consumer **pp);
void amqp_queue_dispatch(struct amqp_worker *aw, struct amqp_queue *q);
void amqp_consumer_remove(struct amqp_consumer *k);
void amqp_requeue_list(struct amqp_worker *aw, struct amqp_msg *m);
void amqp_chan_free(struct sl_conn *c, struct amqp_channel *ch);

/* amqp_link.c */
void amqp_out_msg(struct amqp_worker *aw, uint16_t dst, const struct sl_msg *m);
void amqp_list_append(struct amqp_msg **head, struct amqp_msg **tail, struct amqp_msg *m);
void amqp_fwd_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m);
void amqp_dlv_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m);
void amqp_stl_push(struct amqp_worker *aw, struct amqp_msg *m, uint8_t op);
uint32_t amqp_links_poll(struct sl_worker *w, void *arg);
struct sl_conn *amqp_conn_find(struct sl_worker *w, uint32_t slot, uint32_t gen, uint64_t id);
struct amqp_channel *amqp_chan_find(struct sl_conn *c, uint16_t chan, uint32_t epoch);
void amqp_conn_wait(struct sl_conn *c);
void amqp_conn_resume(struct sl_conn *c);
void amqp_confirms_flush(struct amqp_worker *aw);
void amqp_confirms_forget(struct amqp_worker *aw, struct amqp_channel *ch);
long amqp_confirm_add(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq, uint32_t nremote,
                      bool nack);
void amqp_confirm_accepted(struct sl_worker *w, const struct amqp_origin *o);
struct amqp_qop *amqp_qop_new(struct sl_conn *c, struct amqp_channel *ch, uint8_t op,
                              const struct amqp_qref *r, uint32_t method);
long amqp_qop_submit(struct amqp_worker *aw, struct sl_conn *c, uint16_t dst, struct amqp_qop *o);
void amqp_stub_unlink(struct amqp_worker *aw, struct amqp_consumer *k);
void amqp_stub_cancel(struct amqp_worker *aw, struct amqp_consumer *k, struct sl_conn *c,
                      uint16_t chan, uint32_t method, bool nowait);
int amqp_stub_write(struct amqp_worker *aw, struct amqp_consumer *k, struct amqp_msg *m);
void amqp_stubs_writable(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch);
void amqp_proxy_unlink(struct amqp_consumer *k);
void amqp_qop_exec(struct amqp_worker *aw, struct amqp_qop *o);
void amqp_qop_reply(struct amqp_worker *aw, struct amqp_qop *o);
void amqp_msg_in(struct sl_worker *w, const struct sl_msg *m);

/* amqp_durable.c */
uint64_t amqp_get_be64(const uint8_t *p);
void amqp_dq_ack(struct amqp_worker *aw, struct amqp_queue *q, const struct amqp_msg *m);
void amqp_dq_ack_off(struct amqp_worker *aw, struct amqp_queue *q, int64_t off);
int amqp_dq_store_delayed(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o,
                          uint64_t due_wall_ms);
int amqp_dq_delayed_open(struct amqp_worker *aw);
bool amqp_dq_delayed_exists(struct amqp_worker *aw);
void amqp_delayed_recover(struct amqp_worker *aw);
void amqp_delayed_released(struct amqp_worker *aw, int64_t loff);
int amqp_dq_store(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                  const struct amqp_origin *o, struct amqp_fwd *f);
void amqp_fwd_accepted(struct amqp_worker *aw, struct amqp_fwd *f);
int amqp_dq_open(struct amqp_worker *aw, struct amqp_queue *q);
void amqp_dq_remove(struct amqp_worker *aw, struct amqp_queue *q);
uint32_t amqp_dq_poll(struct amqp_worker *aw);
void amqp_dq_spill_discard(struct amqp_worker *aw);
void amqp_dq_trim(struct amqp_worker *aw, struct amqp_queue *q);

/* amqp_qargs.c */
void amqp_qargs_default(struct amqp_qargs *a);
bool amqp_field_int(const struct amqp_field *f, int64_t *v);
bool amqp_field_is(const struct amqp_field *f, const char *name);
bool amqp_bytes_is(struct amqp_bytes b, const char *s);
int amqp_qargs_parse(struct amqp_bytes tbl, const struct amqp_name *qname, struct amqp_qargs *a,
                     char *text, size_t n);
const char *amqp_qargs_differ(const struct amqp_qargs *x, const struct amqp_qargs *y);
int64_t amqp_expiration_ms(const struct amqp_header *h);
void amqp_dead_letter(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                      const char *reason);
void amqp_queue_expire(struct amqp_worker *aw, struct amqp_queue *q);
int amqp_queue_enqueue(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                       const struct amqp_origin *o, struct amqp_fwd *f);
int amqp_delayed_hold(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o);
uint32_t amqp_delayed_poll(struct amqp_worker *aw);

#endif
