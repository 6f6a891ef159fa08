/* Kernel backend on io_uring, one ring per worker: multishot accept on the
 * worker's SO_REUSEPORT listeners, receives that pick a buffer from a
 * provided-buffer ring (no memory pinned by idle connections), sendmsg of
 * each connection's queued chunks, and a multishot poll on the worker's
 * wake-up eventfd so a sleeping worker wakes for ring messages. All
 * submissions of an iteration go to the kernel in one io_uring_submit. */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

#define URING_ENTRIES   4096
#define URING_CQE_BATCH 256
#define URING_BGID      0

struct net_uring {
        struct io_uring ring;
        struct io_uring_buf_ring *br;
        uint8_t *bufs;
        uint32_t nbufs;
        uint32_t buf_bytes;
        uint32_t br_pending; /* buffers added, not yet made visible */
        uint32_t accepting;  /* listeners with an armed multishot accept */
        bool listeners_closed;
};

static struct io_uring_sqe *uring_sqe(struct sl_worker *w, struct net_uring *u)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
        if (sl_unlikely(!sqe)) {
                /* A full submission queue is a normal case: submit and retry. */
                atomic_fetch_add_explicit(&w->stats.sqe_full, 1, memory_order_relaxed);
                io_uring_submit(&u->ring);
                sqe = io_uring_get_sqe(&u->ring);
        }
        SL_ASSERT(sqe);
        return sqe;
}

static void uring_arm_accept(struct sl_worker *w, struct net_uring *u, int proto)
{
        struct io_uring_sqe *sqe = uring_sqe(w, u);
        io_uring_prep_multishot_accept(sqe, w->listen_fds[proto], NULL, NULL, SOCK_CLOEXEC);
        io_uring_sqe_set_data64(sqe, net_ud(NET_OP_ACCEPT, (uint32_t)proto, 0));
}

static void uring_arm_wake(struct sl_worker *w, struct net_uring *u)
{
        struct io_uring_sqe *sqe = uring_sqe(w, u);
        io_uring_prep_poll_multishot(sqe, w->mb.wake->eventfd, POLLIN);
        io_uring_sqe_set_data64(sqe, net_ud(NET_OP_WAKE, 0, 0));
}

static int uring_bufs_init(struct sl_worker *w, struct net_uring *u)
{
        const struct ctl_config *cfg = w->rt->cfg;
        u->nbufs = cfg->recv_buffers;
        u->buf_bytes = cfg->recv_buffer_bytes;
        size_t ring_bytes = SL_ALIGN_UP((size_t)u->nbufs * sizeof(struct io_uring_buf), 4096);
        void *mem =
            mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED)
                return -ENOMEM;
        u->br = mem;
        u->bufs = mmap(NULL, (size_t)u->nbufs * u->buf_bytes, PROT_READ | PROT_WRITE,
                       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (u->bufs == MAP_FAILED)
                return -ENOMEM;
        /* liburing 2.3 has no io_uring_setup_buf_ring(): register by hand. */
        struct io_uring_buf_reg reg = {
            .ring_addr = (uint64_t)(uintptr_t)u->br, .ring_entries = u->nbufs, .bgid = URING_BGID};
        int rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
        if (rc)
                return rc;
        io_uring_buf_ring_init(u->br);
        int mask = io_uring_buf_ring_mask(u->nbufs);
        for (uint32_t i = 0; i < u->nbufs; i++)
                io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * u->buf_bytes, u->buf_bytes,
                                      (unsigned short)i, mask, (int)i);
        io_uring_buf_ring_advance(u->br, (int)u->nbufs);
        return 0;
}

static void uring_fini(struct sl_worker *w)
{
        struct net_uring *u = w->net_state;
        if (!u)
                return;
        io_uring_queue_exit(&u->ring);
        if (u->br)
                munmap(u->br, SL_ALIGN_UP((size_t)u->nbufs * sizeof(struct io_uring_buf), 4096));
        if (u->bufs && u->bufs != MAP_FAILED)
                munmap(u->bufs, (size_t)u->nbufs * u->buf_bytes);
        free(u);
        w->net_state = NULL;
}

static int uring_init(struct sl_worker *w)
{
        struct net_uring *u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER |
                                             IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
                                    .cq_entries = URING_ENTRIES * 4};
        p.flags |= IORING_SETUP_CQSIZE;
        int rc = io_uring_queue_init_params(URING_ENTRIES, &u->ring, &p);
        if (rc) {
                free(u);
                return rc;
        }
        w->net_state = u;
        rc = uring_bufs_init(w, u);
        if (rc) {
                uring_fini(w);
                return rc;
        }
        for (int proto = 0; proto < CTL_PROTO_COUNT; proto++)
                if (w->listen_fds[proto] >= 0) {
                        uring_arm_accept(w, u, proto);
                        u->accepting++;
                }
        uring_arm_wake(w, u);
        io_uring_submit(&u->ring);
        return 0;
}

static void uring_rx_arm(struct sl_worker *w, struct sl_conn *c)
{
        struct net_uring *u = w->net_state;
        struct io_uring_sqe *sqe = uring_sqe(w, u);
        io_uring_prep_recv(sqe, c->fd, NULL, u->buf_bytes, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = URING_BGID;
        io_uring_sqe_set_data64(sqe, net_ud(NET_OP_RECV, c->slot, c->gen));
}

/* Into the protocol's buffer (sl_conn_rx_direct): no buffer selected, so a
 * connection's large frame arrives where it will be parsed. */
static void uring_rx_arm_direct(struct sl_worker *w, struct sl_conn *c)
{
        struct net_uring *u = w->net_state;
        struct io_uring_sqe *sqe = uring_sqe(w, u);
        io_uring_prep_recv(sqe, c->fd, c->rx_direct->data + c->rx_direct_off, c->rx_direct_len, 0);
        io_uring_sqe_set_data64(sqe, net_ud(NET_OP_RECV_DIRECT, c->slot, c->gen));
}

static void uring_rx_cancel_direct(struct sl_worker *w, struct sl_conn *c)
{
        struct net_uring *u = w->net_state;
        struct io_uring_sqe *sqe = uring_sqe(w, u);
        io_uring_prep_cancel64(sqe, net_ud(NET_OP_RECV_DIRECT, c->slot, c->gen), 0);
        /* its own completion says nothing the receive's does not */
        io_uring_sqe_set_data64(sqe, net_ud(NET_OP_CANCEL, c->slot, c->gen));
}

static void uring_tx_submit(struct sl_worker *w, struct sl_conn *c, int iovcnt)
{
        struct net_uring *u = w->net_state;
        memset(&c->msg, 0, sizeof(c->msg));
        c->msg.msg_iov = c->iov;
        c->msg.msg_iovlen = (size_t)iovcnt;
        struct io_uring_sqe *sqe = uring_sqe(w, u);
        io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, net_ud(NET_OP_SEND, c->slot, c->gen));
}

static void uring_rx_release(struct sl_worker *w, uint32_t token)
{
        struct net_uring *u = w->net_state;
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)token * u->buf_bytes, u->buf_bytes,
                              (unsigned short)token, io_uring_buf_ring_mask(u->nbufs),
                              (int)u->br_pending);
        u->br_pending++;
}

static void uring_shutdown(struct sl_worker *w, struct sl_conn *c)
{
        /* shutdown(2) completes a pending receive with 0 and fails a pending
         * send; once neither is in flight the slot can be reused. */
        shutdown(c->fd, SHUT_RDWR);
        if (!(c->flags & (SL_CONN_RX_ARMED | SL_CONN_TX_INFLIGHT)))
                net_conn_released(w, c);
}

static struct sl_conn *uring_conn(struct sl_worker *w, uint64_t ud)
{
        uint32_t slot = net_ud_slot(ud);
        if (slot >= w->conns_max)
                return NULL;
        struct sl_conn *c = &w->conns[slot];
        return c->gen == net_ud_gen(ud) && c->state != SL_CONN_FREE ? c : NULL;
}

static void uring_maybe_released(struct sl_worker *w, struct sl_conn *c)
{
        if (c->state == SL_CONN_DRAINING && !(c->flags & (SL_CONN_RX_ARMED | SL_CONN_TX_INFLIGHT)))
                net_conn_released(w, c);
}

static void uring_cqe(struct sl_worker *w, struct net_uring *u, struct io_uring_cqe *cqe)
{
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        struct sl_conn *c;
        switch (net_ud_op(ud)) {
        case NET_OP_ACCEPT: {
                int proto = (int)net_ud_slot(ud);
                if (cqe->res >= 0) {
                        if (w->draining)
                                close(cqe->res);
                        else
                                net_kernel_accepted(w, cqe->res, (uint8_t)proto);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) {
                        if (!u->listeners_closed && w->listen_fds[proto] >= 0)
                                uring_arm_accept(w, u, proto);
                        else
                                u->accepting--;
                }
                return;
        }
        case NET_OP_WAKE:
                if (!(cqe->flags & IORING_CQE_F_MORE))
                        uring_arm_wake(w, u);
                return;
        case NET_OP_RECV:
                c = uring_conn(w, ud);
                if (!c) {
                        if (cqe->flags & IORING_CQE_F_BUFFER)
                                uring_rx_release(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                        return;
                }
                if (cqe->res > 0) {
                        SL_ASSERT(cqe->flags & IORING_CQE_F_BUFFER);
                        uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                        net_conn_rx(w, c, u->bufs + (size_t)bid * u->buf_bytes, (uint32_t)cqe->res,
                                    bid);
                } else {
                        if (cqe->flags & IORING_CQE_F_BUFFER)
                                uring_rx_release(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                        if (cqe->res == -ENOBUFS)
                                net_conn_rx_nobufs(w, c);
                        else if (cqe->res == -EINTR || cqe->res == -EAGAIN)
                                net_conn_rx_nobufs(w, c); /* retried next iteration */
                        else
                                net_conn_rx_end(w, c, cqe->res);
                }
                uring_maybe_released(w, c);
                return;
        case NET_OP_RECV_DIRECT:
                c = uring_conn(w, ud);
                if (!c)
                        return;
                net_conn_rx_direct(w, c, cqe->res);
                uring_maybe_released(w, c);
                return;
        case NET_OP_SEND:
                c = uring_conn(w, ud);
                if (!c)
                        return;
                net_conn_tx_done(w, c, cqe->res);
                uring_maybe_released(w, c);
                return;
        default:
                return;
        }
}

static uint32_t uring_poll(struct sl_worker *w)
{
        struct net_uring *u = w->net_state;
        struct io_uring_cqe *cqes[URING_CQE_BATCH];
        uint32_t total = 0;
        for (;;) {
                unsigned n = io_uring_peek_batch_cqe(&u->ring, cqes, URING_CQE_BATCH);
                if (n == 0)
                        break;
                for (unsigned i = 0; i < n; i++)
                        uring_cqe(w, u, cqes[i]);
                io_uring_cq_advance(&u->ring, n);
                total += n;
                if (n < URING_CQE_BATCH)
                        break;
        }
        if (u->br_pending) {
                io_uring_buf_ring_advance(u->br, (int)u->br_pending);
                u->br_pending = 0;
        }
        return total;
}

static void uring_flush(struct sl_worker *w)
{
        struct net_uring *u = w->net_state;
        if (u->br_pending) {
                io_uring_buf_ring_advance(u->br, (int)u->br_pending);
                u->br_pending = 0;
        }
        if (io_uring_sq_ready(&u->ring))
                io_uring_submit(&u->ring);
}

static void uring_wait(struct sl_worker *w, int timeout_ms)
{
        struct net_uring *u = w->net_state;
        struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
}

static void uring_listeners_close(struct sl_worker *w)
{
        struct net_uring *u = w->net_state;
        u->listeners_closed = true;
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                if (w->listen_fds[p] < 0)
                        continue;
                /* Closing does not cancel a multishot accept: shut it down. */
                shutdown(w->listen_fds[p], SHUT_RDWR);
                close(w->listen_fds[p]);
                w->listen_fds[p] = -1;
                w->rt->listen_fds[p][w->id] = -1;
        }
}

const struct sl_net_ops net_uring_ops = {
    .name = "io_uring",
    .init = uring_init,
    .fini = uring_fini,
    .poll = uring_poll,
    .rx_arm = uring_rx_arm,
    .rx_arm_direct = uring_rx_arm_direct,
    .rx_cancel_direct = uring_rx_cancel_direct,
    .tx_submit = uring_tx_submit,
    .rx_release = uring_rx_release,
    .shutdown = uring_shutdown,
    .flush = uring_flush,
    .wait = uring_wait,
    .listeners_close = uring_listeners_close,
    .release = net_kernel_release,
};
