/* State shared by the NATS front-end's files: the per-connection state
 * (nats_server.c), the per-worker routing state and the messages workers
 * exchange (nats_route.c). All of it lives on one worker; other workers
 * see only what crosses the rings. */
#ifndef NATS_INTERNAL_H
#define NATS_INTERNAL_H

#include "nats_parser.h"
#include "nats_sublist.h"
#include "sl_conn.h"
#include "sl_worker.h"

/* Ring messages of the NATS range. */
enum nats_msg {
        NATS_MSG_INTEREST =
            SL_MSG_NATS, /* request: a.ptr[0] = struct nats_change* (sender-owned) */
        NATS_MSG_BATCH,  /* one-way: a.ptr[0] = sl_buf of forwarded messages */
};

#define NATS_SID_MAX     64   /* bytes of a sid we keep */
#define NATS_PENDING_MAX 4096 /* interest changes not yet acknowledged, per worker */

/* A subscription of a local connection. */
struct nats_lsub {
        struct nats_sub entry; /* in the worker's local sublist */
        struct sl_conn *conn;
        struct nats_lsub *next_of_conn; /* all subs of one connection */
        int64_t max_msgs;               /* -1 = unlimited */
        uint64_t delivered;
        uint16_t subject_len, queue_len;
        uint8_t sid_len;
        char sid[NATS_SID_MAX];
        uint8_t *subject; /* malloc'd with the queue right after it */
};

struct nats_conn {
        struct nats_parser parser;
        uint32_t nsubs;
        struct nats_lsub *subs;
        /* Payload of a PUB split across receives, assembled here. */
        struct sl_buf *asm_buf;
        uint32_t asm_len;
        struct nats_op asm_op; /* views point into asm_buf */
        /* Interest barrier: changes sent to other workers not yet applied by
         * all of them; a PING (and, in verbose mode, the +OK of SUB/UNSUB)
         * waits until this is zero. */
        uint32_t acks_outstanding;
        uint32_t oks_owed;
        bool ping_waiting;
        /* Our own short replies (INFO, PONG, +OK, -ERR) that found no send
         * buffer: sent from writable(), reading paused meanwhile. */
        uint16_t owed_len;
        char owed[1024];

        bool connected; /* CONNECT accepted */
        bool verbose, pedantic, echo, headers, no_responders;
        uint8_t pings_outstanding;
        uint64_t last_ping_ms;
        uint8_t name_len;
        char name[64];
};

/* One interest change, broadcast to every other worker. Allocated by the
 * worker that made it (SUB/UNSUB is not the message hot path), read by the
 * others, freed by its maker when all have acknowledged. */
struct nats_change {
        struct nats_change *next_pending[CTL_WORKERS_MAX]; /* per-destination FIFO */
        uint64_t conn_id; /* who waits for the barrier (0: nobody) */
        uint32_t conn_slot;
        uint32_t conn_gen;
        uint16_t acks_left;
        int16_t delta; /* +1 subscribe, -1 unsubscribe */
        uint16_t subject_len, queue_len;
        uint8_t data[]; /* subject then queue */
};

/* Per-worker NATS state, at w->proto_ctx[CTL_PROTO_NATS]. */
struct nats_worker {
        struct sl_worker *w;
        struct nats_sublist local;  /* this worker's subscriptions */
        struct nats_sublist remote; /* other workers' interest, refcounted */
        struct nats_rsub **rtable;  /* (worker, subject, queue) -> remote entry */
        uint32_t rtable_mask;
        uint32_t rcount;
        /* Changes waiting for credit, per destination worker. */
        struct nats_change *pending_head[CTL_WORKERS_MAX];
        struct nats_change *pending_tail[CTL_WORKERS_MAX];
        uint32_t pending;
        /* Open batch of forwarded messages per destination worker. */
        struct sl_buf *batch[CTL_WORKERS_MAX];
        uint64_t rng;
        /* match scratch */
        struct nats_sub *m_subs[1024];
        struct nats_match_part m_parts[256];
        struct nats_match_group m_groups[128];
        struct nats_sub *r_subs[1024];
        struct nats_match_part r_parts[256];
        struct nats_match_group r_groups[128];
        /* counters (published for metrics) */
        _Atomic uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
        _Atomic uint64_t forwarded, bounced, dropped_no_member, slow_consumers;
        _Atomic uint64_t subscriptions;
};

static inline struct nats_worker *nats_worker_of(struct sl_worker *w)
{
        return w->proto_ctx[CTL_PROTO_NATS];
}

/* nats_route.c */
int nats_route_init(struct sl_worker *w);
void nats_route_fini(struct sl_worker *w);
/* True when one more message may be routed and interest changed without
 * stalling (ring slots, batch buffers, pending changes). */
bool nats_route_ready(struct nats_worker *nw);
/* Broadcasts a change for lsub (delta +1/-1); conn waits for it when
 * barrier is set. 0 or -ENOMEM. */
int nats_route_interest(struct nats_worker *nw, struct sl_conn *c, const struct nats_lsub *s,
                        int delta, bool barrier);
/* Routes one published message from c. Returns the number of
 * subscriptions it reached (local plus remote workers), for
 * no-responders. */
uint32_t nats_route_publish(struct nats_worker *nw, struct sl_conn *c, const struct nats_op *op);
void nats_route_msg(struct sl_worker *w, const struct sl_msg *m);
uint32_t nats_route_poll(struct sl_worker *w, void *arg);

/* nats_server.c */
/* Delivers one message to a local subscription; false if the subscriber
 * was cut off as a slow consumer. */
bool nats_deliver(struct nats_worker *nw, struct nats_lsub *s, const uint8_t *subject,
                  uint32_t subject_len, const uint8_t *reply, uint32_t reply_len,
                  const uint8_t *payload, uint32_t hdr_len, uint32_t total_len);
/* The interest barrier of connection c advanced by one acknowledgement. */
void nats_conn_barrier_ack(struct sl_conn *c);

extern const struct sl_proto_ops nats_proto_ops;

#endif
