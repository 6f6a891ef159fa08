/* Kernel backend on epoll, for kernels or sandboxes that refuse io_uring
 * (or when [net] backend = epoll). Same contract as net_uring.c: receives go
 * into buffers of a per-worker pool, sends are writev of the queued chunks
 * and complete synchronously (or when the socket becomes writable). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net.h"

#define EPOLL_BATCH      256
#define EPOLL_WAKE_TAG   UINT64_MAX
#define EPOLL_LISTEN_TAG (UINT64_MAX - 64)

struct net_epoll {
        int epfd;
        uint8_t *bufs;
        uint32_t nbufs;
        uint32_t buf_bytes;
        uint32_t *free_stack;
        uint32_t nfree;
        /* Connections whose receive is armed: read on the next readiness. */
};

static uint64_t conn_tag(const struct sl_conn *c)
{
        return ((uint64_t)c->gen << 32) | c->slot;
}

static int epoll_init(struct sl_worker *w)
{
        const struct ctl_config *cfg = w->rt->cfg;
        struct net_epoll *e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        w->net_state = e;
        e->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (e->epfd < 0)
                return -errno;
        e->nbufs = cfg->recv_buffers;
        e->buf_bytes = cfg->recv_buffer_bytes;
        e->bufs = mmap(NULL, (size_t)e->nbufs * e->buf_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        e->free_stack = calloc(e->nbufs, sizeof(uint32_t));
        if (e->bufs == MAP_FAILED || !e->free_stack)
                return -ENOMEM;
        for (uint32_t i = 0; i < e->nbufs; i++)
                e->free_stack[e->nfree++] = e->nbufs - 1 - i;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EPOLL_WAKE_TAG};
        if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, w->mb.wake->eventfd, &ev) != 0)
                return -errno;
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                if (w->listen_fds[p] < 0)
                        continue;
                ev.events = EPOLLIN;
                ev.data.u64 = EPOLL_LISTEN_TAG + (uint64_t)p;
                if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, w->listen_fds[p], &ev) != 0)
                        return -errno;
        }
        return 0;
}

static void epoll_fini(struct sl_worker *w)
{
        struct net_epoll *e = w->net_state;
        if (!e)
                return;
        if (e->epfd >= 0)
                close(e->epfd);
        if (e->bufs && e->bufs != MAP_FAILED)
                munmap(e->bufs, (size_t)e->nbufs * e->buf_bytes);
        free(e->free_stack);
        free(e);
        w->net_state = NULL;
}

static void epoll_set(struct sl_worker *w, struct sl_conn *c, uint32_t events)
{
        struct net_epoll *e = w->net_state;
        struct epoll_event ev = {.events = events, .data.u64 = conn_tag(c)};
        /* The fd is registered on first use; afterwards only modified. */
        if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0 && errno == ENOENT)
                epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static uint32_t conn_events(const struct sl_conn *c)
{
        uint32_t ev = 0;
        if (c->flags & SL_CONN_RX_ARMED)
                ev |= EPOLLIN | EPOLLRDHUP;
        if (c->flags & SL_CONN_TX_INFLIGHT)
                ev |= EPOLLOUT;
        return ev;
}

static void epoll_rx_arm(struct sl_worker *w, struct sl_conn *c)
{
        epoll_set(w, c, conn_events(c));
}

static void epoll_rx_release(struct sl_worker *w, uint32_t token)
{
        struct net_epoll *e = w->net_state;
        SL_ASSERT(e->nfree < e->nbufs);
        e->free_stack[e->nfree++] = token;
}

static void epoll_try_send(struct sl_worker *w, struct sl_conn *c)
{
        ssize_t n = sendmsg(c->fd, &c->msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN) {
                epoll_set(w, c, conn_events(c));
                return;
        }
        net_conn_tx_done(w, c, n < 0 ? -errno : n);
}

static void epoll_tx_submit(struct sl_worker *w, struct sl_conn *c, int iovcnt)
{
        memset(&c->msg, 0, sizeof(c->msg));
        c->msg.msg_iov = c->iov;
        c->msg.msg_iovlen = (size_t)iovcnt;
        epoll_try_send(w, c);
}

static void epoll_shutdown(struct sl_worker *w, struct sl_conn *c)
{
        struct net_epoll *e = w->net_state;
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        shutdown(c->fd, SHUT_RDWR);
        /* Synchronous I/O: nothing is ever in flight in the kernel. */
        c->flags &= ~(SL_CONN_RX_ARMED | SL_CONN_TX_INFLIGHT);
        net_conn_released(w, c);
}

static void epoll_read(struct sl_worker *w, struct sl_conn *c)
{
        struct net_epoll *e = w->net_state;
        if (!(c->flags & SL_CONN_RX_ARMED))
                return;
        if (c->rx_direct) {
                ssize_t n = recv(c->fd, c->rx_direct->data + c->rx_direct_off, c->rx_direct_len,
                                 MSG_DONTWAIT);
                if (n < 0 && errno == EAGAIN)
                        return; /* still armed: the next readiness retries */
                net_conn_rx_direct(w, c, n < 0 ? -errno : n);
                if (c->state != SL_CONN_FREE && c->state != SL_CONN_DRAINING)
                        epoll_set(w, c, conn_events(c));
                return;
        }
        if (e->nfree == 0) {
                net_conn_rx_nobufs(w, c);
                epoll_set(w, c, conn_events(c));
                return;
        }
        uint32_t bid = e->free_stack[--e->nfree];
        uint8_t *buf = e->bufs + (size_t)bid * e->buf_bytes;
        ssize_t n = recv(c->fd, buf, e->buf_bytes, MSG_DONTWAIT);
        if (n > 0) {
                net_conn_rx(w, c, buf, (uint32_t)n, bid);
                if (c->state != SL_CONN_FREE && c->state != SL_CONN_DRAINING)
                        epoll_set(w, c, conn_events(c));
                return;
        }
        e->free_stack[e->nfree++] = bid;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        net_conn_rx_end(w, c, n == 0 ? 0 : -errno);
}

static uint32_t epoll_poll_timeout(struct sl_worker *w, int timeout_ms)
{
        struct net_epoll *e = w->net_state;
        struct epoll_event evs[EPOLL_BATCH];
        int n = epoll_wait(e->epfd, evs, EPOLL_BATCH, timeout_ms);
        uint32_t work = 0;
        for (int i = 0; i < n; i++) {
                uint64_t tag = evs[i].data.u64;
                if (tag == EPOLL_WAKE_TAG)
                        continue; /* drained by sl_mbox_sleep_end */
                if (tag >= EPOLL_LISTEN_TAG) {
                        int p = (int)(tag - EPOLL_LISTEN_TAG);
                        for (int k = 0; k < 64 && w->listen_fds[p] >= 0; k++) {
                                int fd = accept4(w->listen_fds[p], NULL, NULL,
                                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
                                if (fd < 0)
                                        break;
                                net_kernel_accepted(w, fd, (uint8_t)p);
                                work++;
                        }
                        continue;
                }
                uint32_t slot = (uint32_t)tag;
                if (slot >= w->conns_max)
                        continue;
                struct sl_conn *c = &w->conns[slot];
                if (c->gen != (uint32_t)(tag >> 32) || c->state == SL_CONN_FREE ||
                    c->state == SL_CONN_DRAINING)
                        continue;
                work++;
                if ((evs[i].events & EPOLLOUT) && (c->flags & SL_CONN_TX_INFLIGHT))
                        epoll_try_send(w, c);
                if (c->state == SL_CONN_FREE || c->state == SL_CONN_DRAINING)
                        continue;
                if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                        epoll_read(w, c);
        }
        return work;
}

static uint32_t epoll_poll(struct sl_worker *w)
{
        return epoll_poll_timeout(w, 0);
}

static void epoll_flush(struct sl_worker *w)
{
        (void)w;
}

static void epoll_wait_events(struct sl_worker *w, int timeout_ms)
{
        /* Events found here are handled now; the loop's next poll finds the
         * rest. */
        epoll_poll_timeout(w, timeout_ms);
}

static void epoll_listeners_close(struct sl_worker *w)
{
        struct net_epoll *e = w->net_state;
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                if (w->listen_fds[p] < 0)
                        continue;
                epoll_ctl(e->epfd, EPOLL_CTL_DEL, w->listen_fds[p], NULL);
                close(w->listen_fds[p]);
                w->listen_fds[p] = -1;
                w->rt->listen_fds[p][w->id] = -1;
        }
}

const struct sl_net_ops net_epoll_ops = {
    .name = "epoll",
    .init = epoll_init,
    .fini = epoll_fini,
    .poll = epoll_poll,
    .rx_arm = epoll_rx_arm,
    .rx_arm_direct = epoll_rx_arm,
    .tx_submit = epoll_tx_submit,
    .rx_release = epoll_rx_release,
    .shutdown = epoll_shutdown,
    .flush = epoll_flush,
    .wait = epoll_wait_events,
    .listeners_close = epoll_listeners_close,
    .release = net_kernel_release,
};
