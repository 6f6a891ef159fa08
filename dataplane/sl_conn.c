/* The generic half of the connection interface: receive hand-off with
 * held bytes as backpressure, the send queue of pool chunks, close and
 * timeouts. Backends (net/) call the net_conn_* entry points; protocols
 * call sl_conn_*. Everything runs on the connection's worker. */
#include "sl_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net/net.h"
#include "sl_worker.h"

static const char *const close_names[SL_CLOSE_REASONS] = {
    "none",  "peer",          "protocol", "idle",     "partial_frame_timeout",
    "limit", "slow_consumer", "shutdown", "io_error",
};

const char *sl_close_reason_name(enum sl_close_reason r)
{
        return r < SL_CLOSE_REASONS ? close_names[r] : "?";
}

/* Counters of a connection or worker are written by the worker only. */
static inline void stat_add(_Atomic uint64_t *v, int64_t d)
{
        sl_counter_add(v, d);
}

static void conn_set_state(struct sl_conn *c, enum sl_conn_state s)
{
        c->state = s;
        atomic_store_explicit(&c->pub.state, (uint8_t)s, memory_order_release);
}

/* ---- receive ---------------------------------------------------------- */

static void conn_rx_release(struct sl_worker *w, struct sl_conn *c)
{
        if (!(c->flags & SL_CONN_RX_HELD))
                return;
        c->flags &= ~SL_CONN_RX_HELD;
        stat_add(&w->stats.pinned_bytes, -(int64_t)c->pinned_bytes);
        c->pinned_bytes = 0;
        c->held = NULL;
        c->held_len = 0;
        w->net->rx_release(w, c->rx_token);
}

/* Starts the next receive unless something says not to. */
static void conn_rx_maybe_arm(struct sl_worker *w, struct sl_conn *c)
{
        if (c->state != SL_CONN_OPEN ||
            (c->flags & (SL_CONN_RX_ARMED | SL_CONN_RX_PAUSED | SL_CONN_RX_HELD | SL_CONN_RX_EOF)))
                return;
        if (c->rx_direct) {
                /* into the protocol's own buffer: no receive buffer pinned */
                c->flags |= SL_CONN_RX_ARMED;
                w->net->rx_arm_direct(w, c);
                return;
        }
        uint64_t pinned = atomic_load_explicit(&w->stats.pinned_bytes, memory_order_relaxed);
        if (pinned >= w->limits.pinned_bytes_per_worker_max ||
            (w->chaos && net_chaos_exhaust(w->chaos))) {
                net_conn_rx_nobufs(w, c);
                return;
        }
        c->flags |= SL_CONN_RX_ARMED;
        w->net->rx_arm(w, c);
}

/* Offers held bytes to the protocol again. Returns true if it made
 * progress. */
static bool conn_offer(struct sl_worker *w, struct sl_conn *c)
{
        uint32_t n = c->held_len;
        uint32_t offer = w->chaos ? net_chaos_rx_split(w->chaos, n) : n;
        long r = c->ops->recv(c, c->held, offer);
        if (r < 0) {
                conn_rx_release(w, c);
                sl_conn_close(c, SL_CLOSE_PROTOCOL);
                return true;
        }
        SL_ASSERT((uint32_t)r <= offer);
        c->held += r;
        c->held_len -= (uint32_t)r;
        if (c->held_len == 0) {
                conn_rx_release(w, c);
                conn_rx_maybe_arm(w, c);
        }
        return r > 0;
}

/* The worker's lists are intrusive and singly linked; a flag says whether a
 * connection is on one, so it is never pushed twice, and a slot reused
 * while still listed keeps its place (see net_conn_accepted). */
static void conn_hold(struct sl_worker *w, struct sl_conn *c)
{
        if (!(c->flags & (SL_CONN_RX_PAUSED | SL_CONN_IN_HELD)) && c->state == SL_CONN_OPEN) {
                c->flags |= SL_CONN_IN_HELD;
                c->next_held = w->held;
                w->held = c;
        }
}

void net_conn_rx(struct sl_worker *w, struct sl_conn *c, const uint8_t *p, uint32_t n,
                 uint32_t token)
{
        c->flags &= ~SL_CONN_RX_ARMED;
        c->last_rx_ms = w->now_ms;
        stat_add(&c->pub.rx_bytes, n);
        stat_add(&w->stats.rx_bytes[c->proto], n);
        if (c->state != SL_CONN_OPEN) {
                w->net->rx_release(w, token);
                return;
        }
        c->flags |= SL_CONN_RX_HELD;
        c->held = p;
        c->held_len = n;
        c->rx_token = token;
        c->pinned_bytes = n;
        stat_add(&w->stats.pinned_bytes, n);
        if (c->flags & SL_CONN_RX_PAUSED)
                return;
        conn_offer(w, c);
        if (c->flags & SL_CONN_RX_HELD) {
                stat_add(&w->stats.rx_held_events, 1);

                conn_hold(w, c);
        }
}

/* The receive could not go now: armed again on the next iteration
 * (sl_conn_retry_held). False if it already waits. */
static bool conn_rx_retry_later(struct sl_worker *w, struct sl_conn *c)
{
        c->flags &= ~SL_CONN_RX_ARMED;
        if (c->flags & SL_CONN_RX_STARVED)
                return false;
        c->flags |= SL_CONN_RX_STARVED;
        c->next_starved = w->starved;
        w->starved = c;
        return true;
}

void net_conn_rx_nobufs(struct sl_worker *w, struct sl_conn *c)
{
        if (conn_rx_retry_later(w, c))
                stat_add(&w->stats.rx_nobufs, 1);
}

bool sl_conn_rx_direct(struct sl_conn *c, struct sl_buf *b, uint32_t off, uint32_t len)
{
        struct sl_worker *w = c->w;
        if (!w->net->rx_arm_direct || w->chaos || c->state != SL_CONN_OPEN || len == 0)
                return false;
        /* from recv (the held bytes all consumed: released right after) or
         * from recv_direct: no receive is in flight */
        SL_ASSERT(!(c->flags & SL_CONN_RX_ARMED) && !c->rx_direct);
        SL_ASSERT((uint64_t)off + len <= b->cap);
        sl_buf_ref(b);
        c->rx_direct = b;
        c->rx_direct_off = off;
        c->rx_direct_len = len;
        return true;
}

bool sl_conn_rx_direct_cancel(struct sl_conn *c)
{
        struct sl_worker *w = c->w;
        if (!c->rx_direct || !(c->flags & SL_CONN_RX_ARMED) || c->state != SL_CONN_OPEN)
                return false;
        if (w->net->rx_cancel_direct)
                w->net->rx_cancel_direct(w, c);
        else
                net_conn_rx_direct(w, c, -ECANCELED);
        return true;
}

static void conn_rx_direct_drop(struct sl_worker *w, struct sl_conn *c)
{
        if (c->rx_direct) {
                sl_worker_buf_put(w, c->rx_direct);
                c->rx_direct = NULL;
        }
}

void net_conn_rx_direct(struct sl_worker *w, struct sl_conn *c, long res)
{
        c->flags &= ~SL_CONN_RX_ARMED;
        if (res == -EINTR || res == -EAGAIN) {
                (void)conn_rx_retry_later(w, c); /* the target stays */
                return;
        }
        struct sl_buf *b = c->rx_direct;
        c->rx_direct = NULL;
        if (res == -ECANCELED && c->state == SL_CONN_OPEN)
                res = 0; /* sl_conn_rx_direct_cancel: reported as no bytes */
        else if (res <= 0 || c->state != SL_CONN_OPEN) {
                sl_worker_buf_put(w, b);
                if (res <= 0)
                        net_conn_rx_end(w, c, (int)res);
                return;
        }
        if (res > 0) {
                c->last_rx_ms = w->now_ms;
                stat_add(&c->pub.rx_bytes, res);
                stat_add(&w->stats.rx_bytes[c->proto], res);
        }
        long r = c->ops->recv_direct(c, b, c->rx_direct_off, (uint32_t)res);
        sl_worker_buf_put(w, b);
        if (r < 0) {
                sl_conn_close(c, SL_CLOSE_PROTOCOL);
                return;
        }
        conn_rx_maybe_arm(w, c);
}

void net_conn_rx_end(struct sl_worker *w SL_UNUSED, struct sl_conn *c, int err)
{
        c->flags &= ~SL_CONN_RX_ARMED;
        c->flags |= SL_CONN_RX_EOF;
        if (c->state != SL_CONN_OPEN)
                return;
        /* A peer that half-closes still gets what was queued for it. */
        sl_conn_close(c, err == 0 || err == -ECONNRESET ? SL_CLOSE_PEER : SL_CLOSE_IO_ERROR);
}

/* Worker loop: held bytes are offered again; starved receives re-armed. */
uint32_t sl_conn_retry_held(struct sl_worker *w)
{
        uint32_t work = 0;
        struct sl_conn *list = w->held;
        w->held = NULL;
        while (list) {
                struct sl_conn *c = list;
                list = c->next_held;
                c->flags &= ~SL_CONN_IN_HELD;
                if (!(c->flags & SL_CONN_RX_HELD) || (c->flags & SL_CONN_RX_PAUSED) ||
                    c->state != SL_CONN_OPEN)
                        continue;
                if (conn_offer(w, c))
                        work++;
                if (c->flags & SL_CONN_RX_HELD)
                        conn_hold(w, c);
        }
        list = w->starved;
        w->starved = NULL;
        while (list) {
                struct sl_conn *c = list;
                list = c->next_starved;
                c->flags &= ~SL_CONN_RX_STARVED;
                conn_rx_maybe_arm(w, c);
        }
        return work;
}

void sl_conn_rx_pause(struct sl_conn *c)
{
        c->flags |= SL_CONN_RX_PAUSED;
}

void sl_conn_rx_resume(struct sl_conn *c)
{
        struct sl_worker *w = c->w;
        if (!(c->flags & SL_CONN_RX_PAUSED))
                return;
        c->flags &= ~SL_CONN_RX_PAUSED;
        if (c->flags & SL_CONN_RX_HELD)
                conn_hold(w, c); /* offered on the next iteration, not re-entrantly */
        else
                conn_rx_maybe_arm(w, c);
}

void sl_conn_set_partial(struct sl_conn *c, bool inside_frame)
{
        if (inside_frame && !(c->flags & SL_CONN_PARTIAL)) {
                c->flags |= SL_CONN_PARTIAL;
                c->partial_since_ms = c->w->now_ms;
        } else if (!inside_frame) {
                c->flags &= ~SL_CONN_PARTIAL;
        }
}

/* ---- send ------------------------------------------------------------- */

uint64_t sl_conn_tx_room(const struct sl_conn *c)
{
        uint64_t cap = c->w->limits.pending_response_bytes_max;
        return c->tx_pending >= cap ? 0 : cap - c->tx_pending;
}

static void conn_mark_dirty(struct sl_worker *w, struct sl_conn *c)
{
        if (c->flags & SL_CONN_TX_DIRTY)
                return;
        c->flags |= SL_CONN_TX_DIRTY;
        c->next_dirty = w->dirty;
        w->dirty = c;
}

/* The chaos layer does not fake send-chunk exhaustion: a protocol treats
 * real exhaustion as overload (a subscriber cut off as slow), which no test
 * could tell from a bug. It fakes receive-buffer exhaustion instead. */
static struct sl_buf *conn_chunk_alloc(struct sl_worker *w)
{
        return sl_buf_alloc(&w->pool, SL_BUF_CHUNK);
}

static bool chunk_is_ref(const struct sl_buf *b)
{
        return b->flags & SL_BUF_F_REF;
}

static const struct sl_buf_ref *chunk_ref(const struct sl_buf *b)
{
        return (const struct sl_buf_ref *)(const void *)b->data;
}

/* A sent or discarded tx chunk goes back; a reference chunk first drops its
 * hold on the buffer it points into (which may belong to another worker). */
static void conn_chunk_free(struct sl_worker *w, struct sl_buf *b)
{
        if (chunk_is_ref(b)) {
                sl_worker_buf_put(w, chunk_ref(b)->target);
                b->flags &= (uint8_t)~SL_BUF_F_REF;
        }
        sl_buf_pool_give(&w->pool, b);
}

/* Room left in the tail chunk for copied bytes (none in a reference). */
static size_t chunk_room(const struct sl_buf *b)
{
        return b && !chunk_is_ref(b) ? b->cap - b->len : 0;
}

static int conn_tx_refuse(struct sl_conn *c)
{
        struct sl_worker *w = c->w;
        /* With output in flight, its completion calls writable(); without,
         * (the pool was empty, not the cap) nothing would: the loop checks. */
        if (c->tx_pending == 0 && !(c->flags & SL_CONN_IN_WRITABLE)) {
                c->flags |= SL_CONN_IN_WRITABLE;
                c->next_writable = w->want_writable;
                w->want_writable = c;
        }
        c->flags |= SL_CONN_WANT_WRITABLE;
        stat_add(&c->w->stats.tx_cap_refusals, 1);
        return -ENOBUFS;
}

static int conn_sendv(struct sl_conn *c, const struct iovec *iov, int iovcnt, bool capped)
{
        struct sl_worker *w = c->w;
        if (c->state != SL_CONN_OPEN && c->state != SL_CONN_CLOSING)
                return -EPIPE;
        size_t total = 0;
        for (int i = 0; i < iovcnt; i++)
                total += iov[i].iov_len;
        if (total == 0)
                return 0;
        if (capped && total > sl_conn_tx_room(c))
                return conn_tx_refuse(c);

        /* Reserve every chunk first so a failure queues nothing. */
        struct sl_buf *tail = c->tx_tail;
        size_t room = chunk_room(tail);
        struct sl_buf *fresh = NULL, *fresh_tail = NULL;
        while (room < total) {
                struct sl_buf *b = conn_chunk_alloc(w);
                if (!b) {
                        while (fresh) {
                                struct sl_buf *n = fresh->next;
                                sl_buf_pool_give(&w->pool, fresh);
                                fresh = n;
                        }
                        return conn_tx_refuse(c);
                }
                if (fresh_tail)
                        fresh_tail->next = b;
                else
                        fresh = b;
                fresh_tail = b;
                room += b->cap;
        }
        if (fresh) {
                if (c->tx_tail)
                        c->tx_tail->next = fresh;
                else
                        c->tx_head = fresh;
                c->tx_tail = fresh_tail;
        }
        struct sl_buf *b = chunk_room(tail) ? tail : (tail ? tail->next : c->tx_head);
        for (int i = 0; i < iovcnt; i++) {
                const uint8_t *p = iov[i].iov_base;
                size_t n = iov[i].iov_len;
                while (n) {
                        if (b->len == b->cap)
                                b = b->next;
                        size_t k = SL_MIN(n, (size_t)(b->cap - b->len));
                        memcpy(b->data + b->len, p, k);
                        b->len += (uint32_t)k;
                        p += k;
                        n -= k;
                }
        }
        if (c->tx_pending == 0)
                c->tx_stalled_since_ms = w->now_ms;
        c->tx_pending += total;
        stat_add(&c->pub.tx_pending, (int64_t)total);
        stat_add(&w->stats.tx_pending_bytes, (int64_t)total);
        conn_mark_dirty(w, c);
        return 0;
}

int sl_conn_sendv(struct sl_conn *c, const struct iovec *iov, int iovcnt)
{
        return conn_sendv(c, iov, iovcnt, true);
}

int sl_conn_sendv_ref(struct sl_conn *c, const struct iovec *iov, struct sl_buf *const *refs,
                      int iovcnt)
{
        struct sl_worker *w = c->w;
        if (c->state != SL_CONN_OPEN && c->state != SL_CONN_CLOSING)
                return -EPIPE;
        bool any_ref = false;
        for (int i = 0; i < iovcnt; i++)
                any_ref |= refs[i] && iov[i].iov_len;
        if (!any_ref) /* e.g. a Produce answer: plain copies */
                return conn_sendv(c, iov, iovcnt, true);
        /* Exactly the chunks the fill below takes: copies fill the tail's
         * room first; a reference takes a chunk of its own and leaves no
         * room behind it. */
        size_t total = 0, chunk = w->pool.bytes[SL_BUF_CHUNK];
        size_t room = chunk_room(c->tx_tail);
        uint32_t need = 0;
        for (int i = 0; i < iovcnt; i++) {
                size_t n = iov[i].iov_len;
                total += n;
                if (n == 0)
                        continue;
                if (refs[i]) {
                        need++;
                        room = 0;
                } else if (n > room) {
                        size_t k = (n - room + chunk - 1) / chunk;
                        need += (uint32_t)k;
                        room = room + k * chunk - n;
                } else {
                        room -= n;
                }
        }
        if (total > sl_conn_tx_room(c))
                return conn_tx_refuse(c);
        /* Take every chunk first so a failure queues nothing. */
        struct sl_buf *spare = NULL;
        for (uint32_t k = 0; k < need; k++) {
                struct sl_buf *b = conn_chunk_alloc(w);
                if (!b) {
                        while (spare) {
                                struct sl_buf *n = spare->next;
                                sl_buf_pool_give(&w->pool, spare);
                                spare = n;
                        }
                        return conn_tx_refuse(c);
                }
                b->next = spare;
                spare = b;
        }
        for (int i = 0; i < iovcnt; i++) {
                const uint8_t *p = iov[i].iov_base;
                size_t n = iov[i].iov_len;
                if (n == 0)
                        continue;
                if (refs[i]) {
                        struct sl_buf *b = spare;
                        spare = b->next;
                        b->next = NULL;
                        b->flags |= SL_BUF_F_REF;
                        sl_buf_ref(refs[i]);
                        *(struct sl_buf_ref *)(void *)b->data =
                            (struct sl_buf_ref){.target = refs[i], .ptr = p};
                        b->len = (uint32_t)n;
                        if (c->tx_tail)
                                c->tx_tail->next = b;
                        else
                                c->tx_head = b;
                        c->tx_tail = b;
                        continue;
                }
                while (n) {
                        struct sl_buf *b = c->tx_tail;
                        if (!chunk_room(b)) {
                                SL_ASSERT(spare); /* counted exactly above */
                                b = spare;
                                spare = b->next;
                                b->next = NULL;
                                if (c->tx_tail)
                                        c->tx_tail->next = b;
                                else
                                        c->tx_head = b;
                                c->tx_tail = b;
                        }
                        size_t k = SL_MIN(n, (size_t)(b->cap - b->len));
                        memcpy(b->data + b->len, p, k);
                        b->len += (uint32_t)k;
                        p += k;
                        n -= k;
                }
        }
        while (spare) {
                struct sl_buf *n = spare->next;
                sl_buf_pool_give(&w->pool, spare);
                spare = n;
        }
        if (c->tx_pending == 0)
                c->tx_stalled_since_ms = w->now_ms;
        c->tx_pending += total;
        stat_add(&c->pub.tx_pending, (int64_t)total);
        stat_add(&w->stats.tx_pending_bytes, (int64_t)total);
        conn_mark_dirty(w, c);
        return 0;
}

int sl_conn_send(struct sl_conn *c, const void *p, size_t n)
{
        struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
        return conn_sendv(c, &iov, 1, true);
}

void sl_conn_send_last(struct sl_conn *c, const void *p, size_t n, enum sl_close_reason why)
{
        struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
        conn_sendv(c, &iov, 1, false);
        sl_conn_close(c, why);
}

void *sl_conn_tx_reserve(struct sl_conn *c, size_t n)
{
        struct sl_worker *w = c->w;
        if (c->state != SL_CONN_OPEN && c->state != SL_CONN_CLOSING)
                return NULL;
        if (n > sl_conn_tx_room(c) || n > w->pool.bytes[SL_BUF_CHUNK]) {
                conn_tx_refuse(c);
                return NULL;
        }
        struct sl_buf *t = c->tx_tail;
        if (chunk_room(t) >= n)
                return t->data + t->len;
        struct sl_buf *b = conn_chunk_alloc(w);
        if (!b) {
                conn_tx_refuse(c);
                return NULL;
        }
        if (t)
                t->next = b;
        else
                c->tx_head = b;
        c->tx_tail = b;
        return b->data;
}

void sl_conn_tx_commit(struct sl_conn *c, size_t n)
{
        struct sl_worker *w = c->w;
        struct sl_buf *t = c->tx_tail;
        SL_ASSERT(t && t->len + n <= t->cap);
        if (n == 0)
                return;
        t->len += (uint32_t)n;
        if (c->tx_pending == 0)
                c->tx_stalled_since_ms = w->now_ms;
        c->tx_pending += n;
        stat_add(&c->pub.tx_pending, (int64_t)n);
        stat_add(&w->stats.tx_pending_bytes, (int64_t)n);
        conn_mark_dirty(w, c);
}

/* Builds the iovec of what is queued and not yet in flight and submits it. */
static void conn_tx_start(struct sl_worker *w, struct sl_conn *c)
{
        if ((c->flags & SL_CONN_TX_INFLIGHT) || c->tx_pending == 0 || c->state == SL_CONN_DRAINING)
                return;
        /* Chaos shortens sends, except a connection's first (its greeting):
         * nats.c 3.4 reads the INFO line with a reader that misses a CR LF
         * split across two reads and then hangs until its connect timeout. */
        size_t cap = w->chaos && atomic_load_explicit(&c->pub.tx_bytes, memory_order_relaxed)
                         ? net_chaos_tx_cap(w->chaos, c->tx_pending)
                         : SIZE_MAX;
        int n = 0;
        size_t bytes = 0;
        for (struct sl_buf *b = c->tx_head; b && n < SL_CONN_IOV_MAX && bytes < cap; b = b->next) {
                size_t len = b->len - b->off;
                if (len == 0)
                        continue;
                len = SL_MIN(len, cap - bytes);
                const uint8_t *base = chunk_is_ref(b) ? chunk_ref(b)->ptr : b->data;
                c->iov[n].iov_base = (void *)(uintptr_t)(base + b->off);
                c->iov[n].iov_len = len;
                bytes += len;
                n++;
        }
        if (n == 0)
                return;
        c->tx_inflight_bytes = bytes;
        c->flags |= SL_CONN_TX_INFLIGHT;
        w->net->tx_submit(w, c, n);
}

static void conn_shutdown(struct sl_worker *w, struct sl_conn *c);

static void conn_tx_complete(struct sl_worker *w, struct sl_conn *c, long res)
{
        c->flags &= ~SL_CONN_TX_INFLIGHT;
        if (c->state == SL_CONN_DRAINING)
                return;
        if (res < 0) {
                if (res == -EAGAIN || res == -EINTR) {
                        conn_mark_dirty(w, c);
                        return;
                }
                if (c->state == SL_CONN_OPEN)
                        c->close_reason =
                            res == -EPIPE || res == -ECONNRESET ? SL_CLOSE_PEER : SL_CLOSE_IO_ERROR;
                conn_shutdown(w, c);
                return;
        }
        size_t left = (size_t)res;
        SL_ASSERT(left <= c->tx_pending);
        c->tx_pending -= left;
        stat_add(&c->pub.tx_pending, -(int64_t)left);
        stat_add(&c->pub.tx_bytes, (int64_t)left);
        stat_add(&w->stats.tx_pending_bytes, -(int64_t)left);
        stat_add(&w->stats.tx_bytes[c->proto], (int64_t)left);
        while (left) {
                struct sl_buf *b = c->tx_head;
                size_t k = SL_MIN(left, (size_t)(b->len - b->off));
                b->off += (uint32_t)k;
                left -= k;
                if (b->off == b->len && (b != c->tx_tail || !chunk_room(b))) {
                        c->tx_head = b->next;
                        if (!c->tx_head)
                                c->tx_tail = NULL;
                        conn_chunk_free(w, b);
                }
        }
        /* Reuse a drained tail chunk from the start. */
        if (c->tx_head && c->tx_head == c->tx_tail && c->tx_head->off == c->tx_head->len &&
            !chunk_is_ref(c->tx_head))
                c->tx_head->off = c->tx_head->len = 0;
        c->tx_stalled_since_ms = w->now_ms;
        if (c->tx_pending)
                conn_mark_dirty(w, c);
        if (c->state == SL_CONN_CLOSING && c->tx_pending == 0) {
                conn_shutdown(w, c);
                return;
        }
        if ((c->flags & SL_CONN_WANT_WRITABLE) &&
            c->tx_pending <= w->limits.pending_response_bytes_max / 2) {
                c->flags &= ~SL_CONN_WANT_WRITABLE;
                if (c->ops->writable && c->state == SL_CONN_OPEN)
                        c->ops->writable(c);
        }
}

void net_conn_tx_done(struct sl_worker *w, struct sl_conn *c, long res)
{
        if (w->chaos && c->state != SL_CONN_DRAINING) {
                uint32_t delay = net_chaos_tx_delay(w->chaos);
                if (delay) {
                        c->chaos_tx_res = res;
                        c->chaos_tx_delay = delay;
                        c->next_delayed = w->chaos_delayed;
                        w->chaos_delayed = c;
                        return;
                }
        }
        conn_tx_complete(w, c, res);
}

/* Worker loop: completions the chaos layer held back. */
uint32_t sl_conn_chaos_step(struct sl_worker *w)
{
        uint32_t work = 0;
        struct sl_conn *list = w->chaos_delayed, *keep = NULL;
        w->chaos_delayed = NULL;
        while (list) {
                struct sl_conn *c = list;
                list = c->next_delayed;
                if (--c->chaos_tx_delay > 0 && c->state != SL_CONN_DRAINING) {
                        c->next_delayed = keep;
                        keep = c;
                        continue;
                }
                work++;
                c->chaos_tx_delay = 0;
                conn_tx_complete(w, c, c->chaos_tx_res);
                /* The held completion may have been the last I/O of a closing
                 * connection: nothing else will release it. */
                if (c->state == SL_CONN_DRAINING &&
                    !(c->flags & (SL_CONN_RX_ARMED | SL_CONN_TX_INFLIGHT))) {
                        c->flags &= ~SL_CONN_RELEASE_PENDING;
                        net_conn_released(w, c);
                }
        }
        w->chaos_delayed = keep;
        return work;
}

/* Worker loop: connections refused output while nothing was in flight get
 * their writable() call once there is room again. */
uint32_t sl_conn_writable_step(struct sl_worker *w)
{
        uint32_t work = 0;
        struct sl_conn *list = w->want_writable;
        w->want_writable = NULL;
        while (list) {
                struct sl_conn *c = list;
                list = c->next_writable;
                c->flags &= ~SL_CONN_IN_WRITABLE;
                if (!(c->flags & SL_CONN_WANT_WRITABLE) || c->state != SL_CONN_OPEN)
                        continue;
                if (c->tx_pending) /* a completion will come */
                        continue;
                c->flags &= ~SL_CONN_WANT_WRITABLE;
                if (c->ops->writable)
                        c->ops->writable(c);
                work++;
        }
        return work;
}

/* Worker loop: one send per dirty connection. */

uint32_t sl_conn_flush(struct sl_worker *w)
{
        uint32_t n = 0;
        struct sl_conn *list = w->dirty;
        w->dirty = NULL;
        while (list) {
                struct sl_conn *c = list;
                list = c->next_dirty;
                c->flags &= ~SL_CONN_TX_DIRTY;
                conn_tx_start(w, c);
                n++;
        }
        return n;
}

/* ---- open and close --------------------------------------------------- */

static void conn_tx_discard(struct sl_worker *w, struct sl_conn *c)
{
        while (c->tx_head) {
                struct sl_buf *b = c->tx_head;
                c->tx_head = b->next;
                conn_chunk_free(w, b);
        }
        c->tx_tail = NULL;
        stat_add(&c->pub.tx_pending, -(int64_t)c->tx_pending);
        stat_add(&w->stats.tx_pending_bytes, -(int64_t)c->tx_pending);
        c->tx_pending = 0;
}

/* Stops I/O; the slot is freed when the backend reports nothing in flight. */
static void conn_shutdown(struct sl_worker *w, struct sl_conn *c)
{
        if (c->state == SL_CONN_DRAINING || c->state == SL_CONN_FREE)
                return;
        if (c->close_reason == SL_CLOSE_NONE)
                c->close_reason = SL_CLOSE_PEER;
        conn_set_state(c, SL_CONN_DRAINING);
        if (c->ops->closed)
                c->ops->closed(c, c->close_reason);
        conn_rx_release(w, c);
        if (!(c->flags & SL_CONN_TX_INFLIGHT))
                conn_tx_discard(w, c);
        w->net->shutdown(w, c);
}

void sl_conn_close(struct sl_conn *c, enum sl_close_reason why)
{
        struct sl_worker *w = c->w;
        if (c->state != SL_CONN_OPEN)
                return;
        c->close_reason = why;
        conn_set_state(c, SL_CONN_CLOSING);
        c->closing_since_ms = w->now_ms;
        c->flags |= SL_CONN_RX_PAUSED;
        if (c->tx_pending == 0 || why == SL_CLOSE_IO_ERROR)
                conn_shutdown(w, c);
}

static uint32_t ip_bucket(const struct sockaddr_storage *ss)
{
        uint32_t h = 2166136261u;
        const uint8_t *p;
        size_t n;
        if (ss->ss_family == AF_INET6) {
                p = (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
                n = 16;
        } else {
                p = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
                n = 4;
        }
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 16777619u;
        return h % 4096;
}

static void peer_format(struct sl_conn *c)
{
        char host[INET6_ADDRSTRLEN] = "?";
        uint16_t port = 0;
        if (c->peer.ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&c->peer;
                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
                port = ntohs(a->sin6_port);
                snprintf(c->peer_str, sizeof(c->peer_str), "[%s]:%u", host, port);
        } else {
                const struct sockaddr_in *a = (const struct sockaddr_in *)&c->peer;
                inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
                port = ntohs(a->sin_port);
                snprintf(c->peer_str, sizeof(c->peer_str), "%s:%u", host, port);
        }
}

/* Seqlock writer: only the owner writes, so a plain increment suffices. */
static void identity_publish(struct sl_conn *c)
{
        struct sl_conn_pub *p = &c->pub;
        uint32_t seq = atomic_load_explicit(&p->ident_seq, memory_order_relaxed);
        atomic_store_explicit(&p->ident_seq, seq + 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
        atomic_store_explicit(&p->ident_id, c->id, memory_order_relaxed);
        atomic_store_explicit(&p->ident_proto, c->proto, memory_order_relaxed);
        for (size_t i = 0; i < SL_PEER_STR_BYTES / 8; i++) {
                uint64_t word;
                memcpy(&word, c->peer_str + 8 * i, 8);
                atomic_store_explicit(&p->ident_peer[i], word, memory_order_relaxed);
        }
        atomic_store_explicit(&p->ident_seq, seq + 2, memory_order_release);
}

bool sl_conn_identity_read(const struct sl_conn *c, struct sl_conn_identity *out)
{
        struct sl_conn_pub *p = (struct sl_conn_pub *)&c->pub;
        for (int attempt = 0; attempt < 4; attempt++) {
                uint32_t before = atomic_load_explicit(&p->ident_seq, memory_order_acquire);
                if (before & 1)
                        continue;
                out->id = atomic_load_explicit(&p->ident_id, memory_order_relaxed);
                out->proto = atomic_load_explicit(&p->ident_proto, memory_order_relaxed);
                for (size_t i = 0; i < SL_PEER_STR_BYTES / 8; i++) {
                        uint64_t word =
                            atomic_load_explicit(&p->ident_peer[i], memory_order_relaxed);
                        memcpy(out->peer + 8 * i, &word, 8);
                }
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&p->ident_seq, memory_order_relaxed) == before) {
                        out->peer[SL_PEER_STR_BYTES - 1] = 0;
                        return true;
                }
        }
        return false;
}

uint16_t sl_conn_local_port(const struct sl_conn *c)
{
        return c->w->rt->bound_ports[c->proto];
}

int net_conn_accepted(struct sl_worker *w, int fd, uint8_t proto,
                      const struct sockaddr_storage *peer)
{
        struct sl_runtime *rt = w->rt;
        struct sl_conn *c = w->free_conns;
        if (c) {
                w->free_conns = c->next_free;
        } else if (w->conns_high < w->conns_max) {
                c = &w->conns[w->conns_high];
                c->slot = w->conns_high;
                c->fd = -1;
                c->proto_state = w->conn_state_mem + (size_t)c->slot * w->conn_state_bytes;
                /* Published for the control thread's connection listing. */
                __atomic_store_n(&w->conns_high, c->slot + 1, __ATOMIC_RELEASE);

        } else {
                /* Not even a slot to say why: refuse at the transport level. */
                stat_add(&w->stats.conns_refused, 1);
                return -ENOSPC;
        }

        void *state = c->proto_state;
        uint32_t slot = c->slot, gen = c->gen + 1;
        /* A slot freed while still on a worker list keeps its place there:
         * the list entry now stands for the new connection (the processing
         * code re-checks state), so links and membership flags survive. */
        uint16_t listed = c->flags & (SL_CONN_IN_HELD | SL_CONN_RX_STARVED | SL_CONN_TX_DIRTY |
                                      SL_CONN_IN_WRITABLE);
        struct sl_conn *nh = c->next_held, *ns = c->next_starved, *nd = c->next_dirty,
                       *nwr = c->next_writable;
        memset(c, 0, offsetof(struct sl_conn, pub));
        c->flags = listed;
        c->next_held = nh;
        c->next_starved = ns;
        c->next_dirty = nd;
        c->next_writable = nwr;
        c->w = w;

        c->slot = slot;
        c->gen = gen;
        c->fd = fd; /* the backend's handle: a socket for the kernel backends */
        c->proto = proto;
        c->ops = rt->protos[proto];
        c->proto_state = state;
        memset(state, 0, w->conn_state_bytes);
        c->id = ++w->conn_seq * rt->nworkers + w->id;
        c->created_ms = c->last_rx_ms = w->now_ms;
        atomic_store_explicit(&c->pub.rx_bytes, 0, memory_order_relaxed);
        atomic_store_explicit(&c->pub.tx_bytes, 0, memory_order_relaxed);
        atomic_store_explicit(&c->pub.tx_pending, 0, memory_order_relaxed);

        if (peer)
                c->peer = *peer;
        else
                memset(&c->peer, 0, sizeof(c->peer));
        peer_format(c);
        identity_publish(c);
        c->ip_bucket = ip_bucket(&c->peer);
        w->conns_open++;
        stat_add(&w->stats.conns_accepted, 1);
        stat_add(&w->stats.conns_open, 1);
        conn_set_state(c, SL_CONN_OPEN);

        uint32_t total = atomic_fetch_add(&rt->conns_total, 1) + 1;
        uint32_t per_ip = atomic_fetch_add(&rt->conns_per_ip[c->ip_bucket], 1) + 1;
        const struct ctl_limits *lim = &w->limits;
        if (total > lim->connections_max ||
            (lim->connections_per_ip_max && per_ip > lim->connections_per_ip_max)) {
                stat_add(&w->stats.conns_refused, 1);
                if (c->ops->refused)
                        c->ops->refused(c, SL_CLOSE_LIMIT);
                c->flags |= SL_CONN_RX_PAUSED;
                sl_conn_close(c, SL_CLOSE_LIMIT);
                return 0;
        }
        if (c->ops->open && c->ops->open(c) != 0) {
                sl_conn_close(c, SL_CLOSE_PROTOCOL);
                return 0;
        }
        conn_rx_maybe_arm(w, c);
        return 0;
}

void net_conn_released(struct sl_worker *w, struct sl_conn *c)
{
        SL_ASSERT(c->state == SL_CONN_DRAINING);
        if (c->chaos_tx_delay) {
                /* The chaos layer still holds this connection's send completion. */
                c->flags |= SL_CONN_RELEASE_PENDING;
                return;
        }
        conn_tx_discard(w, c);
        conn_rx_direct_drop(w, c); /* asked for, never armed */
        w->net->release(w, c);

        atomic_fetch_sub(&w->rt->conns_total, 1);
        atomic_fetch_sub(&w->rt->conns_per_ip[c->ip_bucket], 1);
        stat_add(&w->stats.conns_closed, 1);
        stat_add(&w->stats.conns_open, -1);
        stat_add(&w->stats.close_reasons[c->close_reason], 1);
        w->conns_open--;
        conn_set_state(c, SL_CONN_FREE);
        c->next_free = w->free_conns;
        w->free_conns = c;
}

/* ---- timers ----------------------------------------------------------- */

void sl_conn_tick_all(struct sl_worker *w)
{
        const struct ctl_limits *lim = &w->limits;
        uint64_t now = w->now_ms;
        for (uint32_t i = 0; i < w->conns_high; i++) {
                struct sl_conn *c = &w->conns[i];
                if (c->state == SL_CONN_CLOSING) {
                        /* Output that cannot be delivered in time is dropped. */
                        if (now - c->closing_since_ms > SL_MAX(lim->write_deadline_ms, 100u))
                                conn_shutdown(w, c);
                        continue;
                }
                if (c->state != SL_CONN_OPEN)
                        continue;
                if (c->ops->tick) {
                        c->ops->tick(c, now);
                        if (c->state != SL_CONN_OPEN)
                                continue;
                }
                if ((c->flags & SL_CONN_PARTIAL) && lim->partial_frame_timeout_ms &&
                    now - c->partial_since_ms > lim->partial_frame_timeout_ms) {
                        sl_conn_close(c, SL_CLOSE_PARTIAL_TIMEOUT);
                        continue;
                }
                if (lim->idle_timeout_ms && now - c->last_rx_ms > lim->idle_timeout_ms &&
                    c->tx_pending == 0) {
                        sl_conn_close(c, SL_CLOSE_IDLE);
                        continue;
                }
                if (c->tx_pending && lim->write_deadline_ms &&
                    now - c->tx_stalled_since_ms > lim->write_deadline_ms) {
                        /* The peer has not read for too long: what is queued
                         * cannot be delivered, drop it with the connection. */
                        if (c->ops->tick_deadline)
                                c->ops->tick_deadline(c);
                        c->close_reason = SL_CLOSE_SLOW_CONSUMER;
                        conn_shutdown(w, c);
                        continue;
                }
        }
}

/* Shutdown: every open connection starts closing. */
void sl_conn_close_all(struct sl_worker *w, enum sl_close_reason why)
{
        for (uint32_t i = 0; i < w->conns_high; i++)
                if (w->conns[i].state == SL_CONN_OPEN)
                        sl_conn_close(&w->conns[i], why);
}

void sl_conn_abort_all(struct sl_worker *w)
{
        for (uint32_t i = 0; i < w->conns_high; i++) {
                struct sl_conn *c = &w->conns[i];
                if (c->state == SL_CONN_OPEN || c->state == SL_CONN_CLOSING) {
                        if (c->close_reason == SL_CLOSE_NONE)
                                c->close_reason = SL_CLOSE_SHUTDOWN;
                        conn_shutdown(w, c);
                }
        }
}
