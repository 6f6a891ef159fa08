/* The backend side of the connection interface: what a transport (kernel
 * io_uring, kernel epoll, later DPDK) implements, and the calls it makes
 * into the generic connection layer (sl_conn.c). Protocol code never
 * includes this file. */
#ifndef NET_H
#define NET_H

#include "sl_conn.h"
#include "sl_worker.h"

struct sl_net_ops {
        const char *name;
        /* On the worker thread, before the loop: set up queues, arm accepts on
         * w->listen_fds and the wake-up fd. */
        int (*init)(struct sl_worker *w);
        void (*fini)(struct sl_worker *w);
        /* Reaps completions/events without blocking; returns work done. */
        uint32_t (*poll)(struct sl_worker *w);
        /* Start receiving on c (no receive in flight, not paused, not held). */
        void (*rx_arm)(struct sl_worker *w, struct sl_conn *c);
        /* Start a receive into c->rx_direct + c->rx_direct_off, at most
         * c->rx_direct_len bytes; net_conn_rx_direct reports it. NULL: the
         * backend has none (sl_conn_rx_direct then says no). */
        void (*rx_arm_direct)(struct sl_worker *w, struct sl_conn *c);
        /* Cancel c's direct receive in flight: it completes through
         * net_conn_rx_direct with -ECANCELED, or with data if that came
         * first. NULL: nothing is ever in the kernel (epoll reads on
         * readiness), so the layer completes it as cancelled at once. */
        void (*rx_cancel_direct)(struct sl_worker *w, struct sl_conn *c);
        /* Send c->iov[0..n) (built by the generic layer); one send in flight. */
        void (*tx_submit)(struct sl_worker *w, struct sl_conn *c, int iovcnt);
        /* Return the receive buffer behind token to the backend. */
        void (*rx_release)(struct sl_worker *w, uint32_t token);
        /* Stop all I/O on c; net_conn_released() follows once nothing is in
         * flight. */
        void (*shutdown)(struct sl_worker *w, struct sl_conn *c);
        /* Submit what was queued this iteration (batched syscalls). */
        void (*flush)(struct sl_worker *w);
        /* Block until an event, the wake-up fd, or timeout_ms. */
        void (*wait)(struct sl_worker *w, int timeout_ms);
        /* Stop accepting. */
        void (*listeners_close)(struct sl_worker *w);
        /* Nothing is in flight any more on c: free its transport handle
         * (the kernel backends close the socket). */
        void (*release)(struct sl_worker *w, struct sl_conn *c);
};

extern const struct sl_net_ops net_uring_ops;
extern const struct sl_net_ops net_epoll_ops;

/* Calls from a backend into the generic layer. handle is the backend's own
 * (a socket for the kernel backends); peer may be NULL. 0, or -ENOSPC when
 * no connection slot is left: the backend then drops the handle. */
int net_conn_accepted(struct sl_worker *w, int handle, uint8_t proto,
                      const struct sockaddr_storage *peer);
/* Kernel backends: socket options and peer address, then the above. */
void net_kernel_accepted(struct sl_worker *w, int fd, uint8_t proto);
void net_kernel_release(struct sl_worker *w, struct sl_conn *c);

void net_conn_rx(struct sl_worker *w, struct sl_conn *c, const uint8_t *p, uint32_t n,
                 uint32_t token);
void net_conn_rx_nobufs(struct sl_worker *w, struct sl_conn *c);
/* A direct receive finished: res bytes (> 0), 0 at end of stream, or
 * -errno. */
void net_conn_rx_direct(struct sl_worker *w, struct sl_conn *c, long res);
void net_conn_rx_end(struct sl_worker *w, struct sl_conn *c, int err);
void net_conn_tx_done(struct sl_worker *w, struct sl_conn *c, long res);
void net_conn_released(struct sl_worker *w, struct sl_conn *c);

/* user_data layout shared by completion-based backends. */
enum net_op {
        NET_OP_ACCEPT = 1,
        NET_OP_RECV,
        NET_OP_SEND,
        NET_OP_WAKE,
        NET_OP_CANCEL,
        NET_OP_RECV_DIRECT,
};

static inline uint64_t net_ud(enum net_op op, uint32_t slot, uint32_t gen)
{
        return ((uint64_t)gen << 32) | ((uint64_t)(slot & 0xffffff) << 8) | (uint64_t)op;
}
static inline enum net_op net_ud_op(uint64_t ud)
{
        return (enum net_op)(ud & 0xff);
}
static inline uint32_t net_ud_slot(uint64_t ud)
{
        return (uint32_t)(ud >> 8) & 0xffffff;
}
static inline uint32_t net_ud_gen(uint64_t ud)
{
        return (uint32_t)(ud >> 32);
}

/* The chaos test layer (net_chaos.c): decides splits, short sends, delays
 * and simulated exhaustion from a seeded PRNG. */
struct sl_chaos;
struct sl_chaos *net_chaos_create(uint32_t seed, uint16_t worker);
void net_chaos_destroy(struct sl_chaos *ch);
uint32_t net_chaos_rx_split(struct sl_chaos *ch, uint32_t n); /* bytes to offer now, 1..n */
size_t net_chaos_tx_cap(struct sl_chaos *ch, size_t n);       /* bytes to send now, 1..n */
uint32_t net_chaos_tx_delay(struct sl_chaos *ch);             /* iterations to hold a completion */
bool net_chaos_exhaust(struct sl_chaos *ch);                  /* pretend a pool is empty */

#endif
