/* The connection interface: what a protocol front-end sees of a client
 * connection, whatever carries it (kernel sockets, the chaos test layer, or
 * later the DPDK TCP stack). Protocol code includes this header and
 * sl_worker.h, never anything from dataplane/net/.
 *
 * Receive: the runtime hands the protocol views of received bytes
 * (proto->recv). The protocol returns how much it consumed; the rest stays
 * pinned in its receive buffer and is offered again later (at once on the
 * next loop iteration, or after sl_conn_rx_resume() if the protocol paused).
 * While bytes are held, the socket is not read: that is the backpressure.
 *
 * Send: bytes are copied into the connection's queue of pool chunks and go
 * out in one batched send per loop iteration; completions are asynchronous.
 * The queue is capped (limits.pending_response_bytes_max): at the cap,
 * sends fail with -ENOBUFS and the protocol pauses reading or, for a
 * subscriber, declares a slow consumer. */
#ifndef SL_CONN_H
#define SL_CONN_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "sl_buf.h"
#include "sl_common.h"

struct sl_worker;
struct sl_msg;
struct sl_conn;

/* One metric sample for the admin API: name, Prometheus type, help, value.
 * The name may end in labels of its own, name{state="x"}: the worker's
 * label goes first; samples of one name must be emitted in a row. */
typedef void (*sl_metric_emit_fn)(void *ctx, const char *name, const char *type, const char *help,
                                  double value);

enum sl_close_reason {
        SL_CLOSE_NONE,
        SL_CLOSE_PEER,            /* peer closed or reset */
        SL_CLOSE_PROTOCOL,        /* protocol error: the protocol already sent its error */
        SL_CLOSE_IDLE,            /* idle timeout */
        SL_CLOSE_PARTIAL_TIMEOUT, /* a frame did not complete in time (slowloris) */
        SL_CLOSE_LIMIT,           /* connection limits on accept */
        SL_CLOSE_SLOW_CONSUMER,   /* pending output over the cap or past the write deadline */
        SL_CLOSE_SHUTDOWN,
        SL_CLOSE_IO_ERROR,
        SL_CLOSE_REASONS,
};

const char *sl_close_reason_name(enum sl_close_reason r);

enum sl_conn_state {
        SL_CONN_FREE,
        SL_CONN_OPEN,
        SL_CONN_CLOSING, /* flushing queued output, then closes */
        SL_CONN_DRAINING /* socket shut; waiting for in-flight I/O to finish */
};

enum sl_conn_flag {
        SL_CONN_RX_ARMED = 1 << 0,    /* a receive is in flight (backend) */
        SL_CONN_TX_INFLIGHT = 1 << 1, /* a send is in flight (backend) */
        SL_CONN_RX_PAUSED = 1 << 2,   /* protocol asked to stop reading */
        SL_CONN_RX_HELD = 1 << 3,     /* unconsumed bytes are pinned */
        SL_CONN_RX_EOF = 1 << 4,      /* peer half-closed */
        SL_CONN_TX_DIRTY = 1 << 5,    /* on the worker's flush list */
        SL_CONN_PARTIAL = 1 << 6,     /* protocol is inside a frame */
        SL_CONN_RX_STARVED = 1 << 7,  /* receive found no buffer: re-arm later */
        SL_CONN_WANT_WRITABLE = 1 << 8,
        SL_CONN_RELEASE_PENDING = 1 << 9, /* released while chaos holds a completion */
        SL_CONN_IN_HELD = 1 << 10,        /* on the worker's held list */
        SL_CONN_IN_WRITABLE = 1 << 11,    /* on the worker's want_writable list */

};

#define SL_CONN_IOV_MAX 32

/* The protocol front-end's callbacks. All run on the connection's worker. */
struct sl_proto_ops {
        const char *name;
        uint32_t conn_state_bytes; /* zeroed per connection, at c->proto_state */
        int (*worker_init)(struct sl_worker *w);
        void (*worker_fini)(struct sl_worker *w);
        /* After accept (limits passed). Non-zero closes the connection. */
        int (*open)(struct sl_conn *c);
        /* Bytes received. Returns bytes consumed (0..n) or a negative value to
         * close (after what it queued has been sent). */
        long (*recv)(struct sl_conn *c, const uint8_t *p, size_t n);
        /* n bytes landed at b->data + off, where the protocol asked with
         * sl_conn_rx_direct; n == 0: the receive was cancelled
         * (sl_conn_rx_direct_cancel). The protocol owns the bytes at once
         * (nothing is held). 0, or negative to close as for recv. Optional:
         * only a protocol that calls sl_conn_rx_direct needs it. */
        long (*recv_direct)(struct sl_conn *c, struct sl_buf *b, uint32_t off, uint32_t n);
        /* Queued output fell below half of the cap after -ENOBUFS. */
        void (*writable)(struct sl_conn *c);
        /* About every 100 ms: protocol timers (pings, auth timeout, ...). */
        void (*tick)(struct sl_conn *c, uint64_t now_ms);
        /* Output stalled past the write deadline; the connection is dropped
         * right after (count it, e.g. as a slow consumer). */
        void (*tick_deadline)(struct sl_conn *c);

        /* The connection is going away; release protocol state. */
        void (*closed)(struct sl_conn *c, enum sl_close_reason why);
        /* Refused on accept by a limit: queue the protocol's error text. */
        void (*refused)(struct sl_conn *c, enum sl_close_reason why);
        /* Ring messages of this protocol's type range. */
        void (*msg)(struct sl_worker *w, const struct sl_msg *m);
        /* Control thread: report this worker's protocol counters (read with
         * relaxed atomics). */
        void (*metrics)(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx);
};

#define SL_PEER_STR_BYTES 64

struct sl_conn_pub {
        /* Read by the control thread for the admin API; written by the owner. */
        _Atomic uint8_t state;
        _Atomic uint64_t rx_bytes;
        _Atomic uint64_t tx_bytes;
        _Atomic uint64_t tx_pending;
        /* The connection's identity as the admin API lists it, behind a
         * seqlock (odd while the owner rewrites it for a reused slot): a
         * listing never shows one connection's id with another's peer. */
        _Atomic uint32_t ident_seq;
        _Atomic uint8_t ident_proto;
        _Atomic uint64_t ident_id;
        _Atomic uint64_t ident_peer[SL_PEER_STR_BYTES / 8];
};

/* What the admin API shows of a connection. */
struct sl_conn_identity {
        uint64_t id;
        uint8_t proto;
        char peer[SL_PEER_STR_BYTES];
};

/* Any thread: a consistent copy of c's identity; false if the owner kept
 * rewriting it (the slot is being reused: skip it). */
bool sl_conn_identity_read(const struct sl_conn *c, struct sl_conn_identity *out);

struct sl_conn {
        struct sl_worker *w;
        void *proto_state;
        const struct sl_proto_ops *ops;
        uint64_t id; /* process-unique, small: usable as a client id */
        uint32_t slot;
        uint32_t gen;  /* bumped on reuse: stale completions are ignored */
        uint8_t proto; /* enum ctl_proto */
        uint8_t listener;
        uint16_t flags;
        enum sl_close_reason close_reason;
        enum sl_conn_state state;
        int fd;

        /* receive */
        const uint8_t *held;
        uint32_t held_len;
        uint32_t rx_token; /* backend's handle of the pinned receive buffer */
        uint32_t pinned_bytes;
        /* direct receive target (sl_conn_rx_direct): the layer holds a
         * reference on it until the receive into it completes */
        struct sl_buf *rx_direct;
        uint32_t rx_direct_off, rx_direct_len;

        /* send: a chain of pool chunks */
        struct sl_buf *tx_head, *tx_tail;
        uint64_t tx_pending;
        uint64_t tx_inflight_bytes;
        uint64_t tx_stalled_since_ms; /* output pending without progress */
        struct iovec iov[SL_CONN_IOV_MAX];
        struct msghdr msg;

        /* time */
        uint64_t created_ms;
        uint64_t last_rx_ms;
        uint64_t partial_since_ms;
        uint64_t closing_since_ms;

        /* lists of the worker */
        struct sl_conn *next_dirty;
        struct sl_conn *next_free;
        struct sl_conn *next_held;
        struct sl_conn *next_starved;
        struct sl_conn *next_delayed;
        struct sl_conn *next_writable;

        /* chaos: a send completion being held back */
        long chaos_tx_res;
        uint32_t chaos_tx_delay;

        struct sockaddr_storage peer;
        char peer_str[SL_PEER_STR_BYTES];
        uint32_t ip_bucket;
        struct sl_conn_pub pub;
};

/* Queues n bytes (copied). 0, or -ENOBUFS when over the pending cap or out
 * of chunks: nothing is queued then. */
int sl_conn_send(struct sl_conn *c, const void *p, size_t n);

/* Queues the concatenation of iov (copied), all or nothing. */
int sl_conn_sendv(struct sl_conn *c, const struct iovec *iov, int iovcnt);

/* As sl_conn_sendv, but iov[i] with refs[i] != NULL is not copied: those
 * bytes lie inside pool buffer refs[i], which gains a reference until they
 * are sent (the protocol may drop its own at once). For large payloads a
 * protocol already holds in a buffer (Kafka Fetch): the bytes then reach the
 * socket with the kernel's copy only. All or nothing, like sl_conn_sendv. */
int sl_conn_sendv_ref(struct sl_conn *c, const struct iovec *iov, struct sl_buf *const *refs,
                      int iovcnt);

/* Queues a protocol's last words (an error text) past the pending cap, then
 * closes: the overshoot is bounded by the text. */
void sl_conn_send_last(struct sl_conn *c, const void *p, size_t n, enum sl_close_reason why);

/* Contiguous space for n bytes (n up to one chunk) at the queue's tail, to
 * format output in place; commit what was written. NULL as -ENOBUFS. */
void *sl_conn_tx_reserve(struct sl_conn *c, size_t n);
void sl_conn_tx_commit(struct sl_conn *c, size_t n);

/* Bytes queued and not yet acknowledged by the transport. */
static inline uint64_t sl_conn_tx_pending(const struct sl_conn *c)
{
        return c->tx_pending;
}

/* Bytes that may still be queued before the cap. */
uint64_t sl_conn_tx_room(const struct sl_conn *c);

/* Asks for proto->writable once queued output falls below half the cap. */
static inline void sl_conn_want_writable(struct sl_conn *c)
{
        c->flags |= SL_CONN_WANT_WRITABLE;
}

/* Stop / restart offering received bytes to the protocol. */
void sl_conn_rx_pause(struct sl_conn *c);
void sl_conn_rx_resume(struct sl_conn *c);

/* Direct receive: the next receive puts up to len bytes at b->data + off
 * instead of into a backend receive buffer, and proto->recv_direct reports
 * them. For a protocol whose frames are larger than a receive buffer (Kafka
 * produce): received in place, they skip the copy that reassembles them.
 * The layer takes a reference on b until that receive completes (the
 * protocol may drop its own, e.g. when the connection closes meanwhile).
 * Call with nothing held (from recv after consuming everything, or from
 * recv_direct). False when the transport cannot (DPDK, the chaos layer):
 * bytes keep coming through recv. */
bool sl_conn_rx_direct(struct sl_conn *c, struct sl_buf *b, uint32_t off, uint32_t len);

/* Gives up a direct receive that waits for bytes (a quiet connection need
 * not pin the protocol's buffer): recv_direct then reports n == 0 (or the
 * bytes, if they came first), possibly before this returns, and the
 * protocol says where the next bytes go as usual. False when no direct
 * receive is armed. */
bool sl_conn_rx_direct_cancel(struct sl_conn *c);

/* The protocol is (not) in the middle of a frame: drives the partial-frame
 * timeout. */
void sl_conn_set_partial(struct sl_conn *c, bool inside_frame);

/* Closes after queued output is sent (bounded by the write deadline). */
void sl_conn_close(struct sl_conn *c, enum sl_close_reason why);

/* Local port the connection came in on (for INFO / advertised ports). */
uint16_t sl_conn_local_port(const struct sl_conn *c);

#endif
