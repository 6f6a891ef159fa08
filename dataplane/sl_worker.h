/* A worker: one pinned thread that owns its connections, buffer pool,
 * network backend state and (later) partitions and queues. Everything in
 * struct sl_worker is touched by its own thread only, except the `pub`
 * counters (written by the owner, read by the control thread) and the
 * mailbox rings. sl_runtime is the read-only-after-start process view. */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include <pthread.h>
#include <stdatomic.h>

#include "ctl_config.h"
#include "sl_buf.h"
#include "sl_common.h"
#include "sl_conn.h"
#include "sl_log.h"
#include "sl_mbox.h"

struct sl_net_ops;
struct sl_chaos;

/* Core message types (SL_MSG_CORE range). */
enum sl_core_msg {
        SL_MSG_BUF_RETURN = SL_MSG_CORE, /* a.ptr[0] = chain head, u32 = count */
        SL_MSG_SHUTDOWN,                 /* control -> worker */
        SL_MSG_RELOAD,    /* control -> worker request: a.ptr[0] = const struct ctl_config* */
        SL_MSG_PING,      /* request; the reply proves the ring round trip */
        SL_MSG_NET_FRAME, /* dpdk: a.ptr[0] = a received frame for the owner of its flow */
};

struct sl_worker_stats {
        _Atomic uint64_t loops;
        _Atomic uint64_t busy_ns;
        _Atomic uint64_t total_ns;
        _Atomic uint64_t sleeps;
        _Atomic uint64_t conns_accepted;
        _Atomic uint64_t conns_closed;
        _Atomic uint64_t conns_open;
        _Atomic uint64_t conns_refused;
        _Atomic uint64_t close_reasons[SL_CLOSE_REASONS];
        _Atomic uint64_t rx_bytes[CTL_PROTO_COUNT];
        _Atomic uint64_t tx_bytes[CTL_PROTO_COUNT];
        _Atomic uint64_t rx_held_events;   /* protocol left bytes unconsumed */
        _Atomic uint64_t rx_nobufs;        /* receive found no provided buffer */
        _Atomic uint64_t tx_cap_refusals;  /* sends refused at the pending cap */
        _Atomic uint64_t pinned_bytes;     /* receive bytes held now */
        _Atomic uint64_t tx_pending_bytes; /* output queued now, all connections */
        _Atomic uint64_t sqe_full;         /* submission queue full: submitted early */
};

#define SL_POLLERS_MAX 8

typedef uint32_t (*sl_poll_fn)(struct sl_worker *w, void *arg);

struct sl_worker {
        uint16_t id;
        uint16_t nworkers;
        int core;
        pthread_t thread;
        struct sl_runtime *rt;
        /* Configuration snapshot in force for this worker: replaced (never
         * modified) on SIGHUP through the ring; limits copied for speed. */
        const struct ctl_config *cfg;
        struct ctl_limits limits;

        struct sl_mbox mb;
        struct sl_buf_pool pool;
        struct sl_logq logq;
        struct sl_buf_chain returns[CTL_WORKERS_MAX + 1];

        const struct sl_net_ops *net;
        void *net_state;
        struct sl_chaos *chaos; /* non-NULL: the chaos test layer is on */
        int listen_fds[CTL_PROTO_COUNT];

        struct sl_conn *conns;
        uint8_t *conn_state_mem;
        uint32_t conn_state_bytes;
        uint32_t conns_max;
        uint32_t conns_open;
        uint64_t conn_seq;
        struct sl_conn *free_conns;
        uint32_t conns_high;           /* slots [0, conns_high) have been used */
        struct sl_conn *dirty;         /* output to flush this iteration */
        struct sl_conn *held;          /* bytes held, not paused: offered again next iteration */
        struct sl_conn *starved;       /* receive to re-arm when buffers return */
        struct sl_conn *chaos_delayed; /* send completions held back by chaos */
        struct sl_conn *want_writable; /* refused while nothing was in flight */

        void *proto_ctx[CTL_PROTO_COUNT]; /* per-worker protocol state */

        struct {
                sl_poll_fn fn;
                void *arg;
        } pollers[SL_POLLERS_MAX];
        uint32_t npollers;

        uint64_t now_ms; /* cached once per iteration */
        uint64_t next_tick_ms;
        _Atomic bool quit;
        bool draining;
        int exit_code;

        struct sl_worker_stats stats;
} sl_cacheline_aligned;

struct sl_runtime {
        const struct ctl_config *cfg;
        uint16_t nworkers;
        uint16_t control_ep; /* mailbox index of the control thread (= nworkers) */
        struct sl_fabric fabric;
        struct sl_worker *workers;
        const struct sl_proto_ops *protos[CTL_PROTO_COUNT];
        /* Listening sockets: [proto][worker], SO_REUSEPORT so the kernel's hash
         * of the 4-tuple picks the owning worker. */
        int listen_fds[CTL_PROTO_COUNT][CTL_WORKERS_MAX];
        uint16_t bound_ports[CTL_PROTO_COUNT];
        /* Connection limits shared by all workers (accept path only). */
        _Atomic uint32_t conns_total;
        _Atomic uint32_t conns_per_ip[4096];
        _Atomic bool started;
};

/* Builds the runtime: fabric, worker structs, listening sockets (bound
 * here, so ports are known before anything starts). */
int sl_runtime_init(struct sl_runtime *rt, const struct ctl_config *cfg,
                    const struct sl_proto_ops *const protos[CTL_PROTO_COUNT], char *err,
                    size_t err_len);
/* Starts the pinned worker threads. */
int sl_runtime_start(struct sl_runtime *rt, char *err, size_t err_len);
/* Asks every worker to stop (after draining) and joins them. */
void sl_runtime_stop(struct sl_runtime *rt);
void sl_runtime_fini(struct sl_runtime *rt);

/* Registers a poll step run every loop iteration (storage, protocol timers). */
int sl_worker_add_poller(struct sl_worker *w, sl_poll_fn fn, void *arg);

/* Drops a reference to b from worker w; the last one sends it home. */
void sl_worker_buf_put(struct sl_worker *w, struct sl_buf *b);

/* The adaptive idle policy's spin: spinning pays only when work tends to
 * come back within idle_spin_us (a reply from another worker, a peer on
 * loopback). While a worker waits on something slower, e.g. a produce burst
 * waiting on its fdatasync (0.5-1 ms), every spin ran its full length and
 * then slept anyway: on 2 vCPUs shared with the client and io-wq, CPU taken
 * from them for nothing (the loop's clock reads alone were 9% of sluiced's
 * samples in a Kafka produce run, nearly all of them spinning). So after
 * SL_SPIN_MISSES_MAX spins in a row that ended asleep the worker sleeps at
 * once, except that every SL_SPIN_PROBE_EVERY-th idle period still spins;
 * one spin that finds work turns spinning back on. */
#define SL_SPIN_MISSES_MAX  4u
#define SL_SPIN_PROBE_EVERY 16u

struct sl_spin {
        uint32_t misses;  /* spins in a row that ended asleep */
        uint32_t skipped; /* idle periods that did not spin (probe count) */
        bool spinning;    /* the current idle period spins first */
};

/* An idle period starts: returns whether it spins before it sleeps. */
static inline bool sl_spin_begin(struct sl_spin *s)
{
        s->spinning = s->misses < SL_SPIN_MISSES_MAX || ++s->skipped % SL_SPIN_PROBE_EVERY == 0;
        return s->spinning;
}

/* The idle period ended: by work found (slept = false) or by a sleep. */
static inline void sl_spin_end(struct sl_spin *s, bool slept)
{
        if (s->spinning)
                s->misses = slept ? SL_MIN(s->misses + 1, SL_SPIN_MISSES_MAX) : 0;
        s->spinning = false;
}

/* Wrappers over w->mb for protocol code. */
static inline int sl_worker_send(struct sl_worker *w, uint16_t dst, struct sl_msg *m)
{
        return sl_mbox_send(&w->mb, dst, m);
}

#endif
