/* The partition log's running half: appends into a per-partition staging
 * ring, O_DIRECT writes with the single-tail-write rule, group commit across
 * the owner's partitions, acks per durability policy, reads from memory or
 * disk, wake-ups, rolls, retention and trims.
 *
 * Positions: every appended byte has a "stream" position that grows forever;
 * a segment maps stream [sbase, send) to file offsets [0, size). A roll
 * aligns the stream up to the DIO block, so no block spans two files. The
 * ring holds stream position s at ring[s % ring_bytes]; it keeps every byte
 * not yet written plus the tail block, and what is left of older data is
 * the in-memory read window. */
#include "log_internal.h"
#include "log_crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void log_config_default(struct log_config *c)
{
        memset(c, 0, sizeof(*c));
        c->durability = LOG_DURABILITY_FSYNC;
        c->flush_interval_ms = 1000;
        c->segment_bytes = 1ull << 30;
        c->retention_bytes = -1;
        c->retention_ms = 7ll * 24 * 3600 * 1000;
        c->index_interval_bytes = 4096;
        c->ring_bytes = 4u << 20;
        c->max_batch_bytes = 1u << 20;
        c->max_write_bytes = 1u << 20;
        c->max_pending = 1024;
        c->preallocate = true;
        c->prealloc_bytes = 64u << 20;
        c->prealloc_ahead_ms = 250;
        c->recovery_point_bytes = 64u << 20;
        c->zero_ahead_bytes = 8u << 20;
        c->recycle_segments = 2;
        c->zero_fill_max_sync_bytes = 512u << 10;
        c->defer_tail_block = true;
}

/* ---- owner ---------------------------------------------------------- */

struct log_owner *log_owner_create(struct log_io *io)
{
        struct log_owner *o = calloc(1, sizeof(*o));
        if (!o)
                return NULL;
        o->io = io;
        return o;
}

void log_owner_destroy(struct log_owner *o)
{
        if (o && o->zero_buf)
                munmap(o->zero_buf, LOG_ZERO_WRITE_BYTES);
        free(o);
}

struct log_metrics *log_owner_metrics(struct log_owner *o)
{
        return &o->m;
}

static void work_add(struct log_partition *p)
{
        if (p->in_work)
                return;
        p->in_work = true;
        p->work_next = p->o->work;
        p->o->work = p;
}

/* ---- acks and wake-ups ---------------------------------------------- */

static void ack_latency(struct log_metrics *m, uint64_t t_ns, uint64_t now_ns)
{
        uint64_t us = now_ns > t_ns ? (now_ns - t_ns) / 1000 : 0;
        int b = us ? 63 - __builtin_clzll(us) : 0;
        if (b >= LOG_LAT_BUCKETS)
                b = LOG_LAT_BUCKETS - 1;
        LOG_STAT_ADD(m, ack_latency_us[b], 1);
}

/* Ack, in order, every pending append whose bytes end at or before s. */
static uint32_t pend_ack_upto(struct log_partition *p, uint64_t s)
{
        uint64_t now = sl_time_ns();
        uint32_t n = 0;
        while (p->npend) {
                struct log_pending *e = &p->pend[p->pend_head];
                if (e->s_end > s)
                        break;
                p->pend_head = (p->pend_head + 1) % p->cfg.max_pending;
                p->npend--;
                p->acked_next = e->last + 1;
                if (p->cfg.durability == LOG_DURABILITY_FSYNC) {
                        p->hw = p->acked_next;
                        p->hw_dirty = true;
                }
                ack_latency(&p->o->m, e->t_ns, now);
                n++;
                if (e->cb)
                        e->cb(e->ctx, e->base, 0);
        }
        return n;
}

static void pend_fail_all(struct log_partition *p, int err)
{
        while (p->npend) {
                struct log_pending *e = &p->pend[p->pend_head];
                p->pend_head = (p->pend_head + 1) % p->cfg.max_pending;
                p->npend--;
                if (e->cb)
                        e->cb(e->ctx, e->base, err);
        }
}

/* A failed write or sync: nothing acknowledged is touched, everything
 * waiting fails, and the visible end goes back to what was acknowledged
 * (for `none`/`interval` readers may have seen more; that is the policy). */
static void part_fail(struct log_partition *p, int err)
{
        if (!p->err) {
                p->err = err;
                LOG_STAT_ADD(&p->o->m, io_errors, 1);
        }
        if (p->hw > p->acked_next) {
                p->hw = p->acked_next;
        }
        pend_fail_all(p, p->err);
}

static void wake_waiters(struct log_partition *p)
{
        p->hw_dirty = false;
        struct log_wait *w = p->waiters;
        while (w) {
                struct log_wait *n = w->next;
                if (w->offset < p->hw) {
                        log_wait_cancel(p, w);
                        LOG_STAT_ADD(&p->o->m, waits_woken, 1);
                        w->cb(w, p->hw);
                }
                w = n;
        }
}

int log_wait_add(struct log_partition *p, struct log_wait *w)
{
        if (w->offset < p->hw)
                return 1;
        w->prev = NULL;
        w->next = p->waiters;
        if (p->waiters)
                p->waiters->prev = w;
        p->waiters = w;
        return 0;
}

void log_wait_cancel(struct log_partition *p, struct log_wait *w)
{
        if (w->prev)
                w->prev->next = w->next;
        else if (p->waiters == w)
                p->waiters = w->next;
        else
                return; /* not registered */
        if (w->next)
                w->next->prev = w->prev;
        w->prev = w->next = NULL;
}

/* ---- write path ----------------------------------------------------- */

static struct log_wseg *ws_at(struct log_partition *p, uint32_t i)
{
        return &p->ws[(p->ws_head + i) % LOG_WSEGS];
}

static struct log_wseg *ws_active(struct log_partition *p)
{
        return ws_at(p, p->nws - 1);
}

/* Lowest stream position the ring must keep: the oldest write in flight,
 * or the block holding the first byte not yet submitted (it is rewritten). */
static uint64_t ring_keep_low(const struct log_partition *p)
{
        if (p->nw)
                return p->w[p->w_head].s_from;
        return log_align_down(p->s_sub, p->align);
}

static void seal_synced(struct log_io_req *req, int res)
{
        struct log_seg *s = SL_CONTAINER_OF(req, struct log_seg, seal_sync_req);
        if (res == 0 && !s->deleted)
                log_seg_write_index(s->p, s);
        log_seg_put(s);
}

static void retire_wsegs(struct log_partition *p)
{
        while (p->nws > 1) {
                struct log_wseg *ws = ws_at(p, 0);
                bool synced = p->cfg.durability == LOG_DURABILITY_NONE || p->s_synced >= ws->send;
                if (p->s_written < ws->send || !synced)
                        break;
                /* Written only now that the data is durable: at open, a
                 * valid index proves the segment was complete, so a
                 * short one is damage, not a crash in the write window. */
                if (p->cfg.durability == LOG_DURABILITY_NONE) {
                        /* `none` never syncs: one fdatasync per sealed
                         * segment keeps "an index means durable" true. */
                        struct log_seg *sg = ws->seg;
                        sg->refs++;
                        sg->seal_sync_req = (struct log_io_req){
                            .op = LOG_IO_FDATASYNC, .fd = sg->fd, .cb = seal_synced};
                        log_io_submit(p->o->io, &sg->seal_sync_req);
                } else {
                        log_seg_write_index(p, ws->seg);
                }
                ws->seg = NULL;
                p->ws_head = (p->ws_head + 1) % LOG_WSEGS;
                p->nws--;
        }
}

static void write_done(struct log_io_req *req, int res)
{
        struct log_write *w = SL_CONTAINER_OF(req, struct log_write, req);
        struct log_partition *p = w->p;
        w->done = true;
        w->res = res;
        if (p->tail_w == w)
                p->tail_w = NULL;
        if (p->held_w && p->held_after == w) {
                /* The block is free: its rewrite goes now, unless the
                 * partition failed (then it completes as failed). */
                struct log_write *h = p->held_w;
                p->held_w = p->held_after = NULL;
                if (p->err || res < 0) {
                        h->done = true;
                        h->res = res < 0 ? res : p->err;
                } else {
                        log_io_submit(p->o->io, &h->req);
                }
        }
        if (res >= 0) {
                LOG_STAT_ADD(&p->o->m, writes, 1);
                LOG_STAT_ADD(&p->o->m, write_bytes, (uint64_t)res);
        }
        /* Completions may arrive out of order: advance over the done prefix. */
        while (p->nw && p->w[p->w_head].done) {
                struct log_write *h = &p->w[p->w_head];
                if (h->res < 0 || (uint32_t)h->res != h->req.len)
                        part_fail(p, h->res < 0 ? h->res : -EIO);
                else if (!p->err && h->s_data_end > p->s_written)
                        p->s_written = h->s_data_end;
                p->w_head = (p->w_head + 1) % LOG_WRITES;
                p->nw--;
        }
        if (p->cfg.durability != LOG_DURABILITY_FSYNC)
                p->ack_due = true;
        retire_wsegs(p);
        work_add(p);
}

static struct log_wseg *ws_for(struct log_partition *p, uint64_t s)
{
        for (uint32_t i = 0; i < p->nws; i++) {
                struct log_wseg *ws = ws_at(p, i);
                if (s >= ws->sbase && s < ws->send)
                        return ws;
        }
        return NULL;
}

/* `fsync` partitions write the tail block at once: an append's ack waits
 * for a sync round, and a round covers the writes submitted when it became
 * due (sync_due); a tail held back to the next write would leave the
 * append to the round after. */
static bool defer_tail(const struct log_partition *p)
{
        return p->cfg.defer_tail_block && p->cfg.durability != LOG_DURABILITY_FSYNC;
}

static void issue_writes(struct log_partition *p)
{
        const uint64_t R = p->cfg.ring_bytes;
        const uint32_t B = p->align;
        while (!p->err && p->s_sub < p->s_end && p->nw < LOG_WRITES) {
                struct log_wseg *ws = ws_for(p, p->s_sub);
                if (!ws) {
                        /* s_sub sits at a sealed segment's end: skip the gap. */
                        for (uint32_t i = 0; i < p->nws; i++)
                                if (ws_at(p, i)->sbase > p->s_sub) {
                                        p->s_sub = ws_at(p, i)->sbase;
                                        break;
                                }
                        SL_ASSERT(ws_for(p, p->s_sub));
                        continue;
                }
                if (ws->seg->fd < 0)
                        break; /* a rolled segment's file is still being created */
                uint64_t from = log_align_down(p->s_sub, B);
                uint64_t data_end = SL_MIN(p->s_end, ws->send);
                /* The single-tail-write rule: the block holding s_sub was part of
                 * a write still in flight; the device does not order
                 * overlapping writes. When data goes past that block, its
                 * rewrite is queued now but held until the tail write
                 * completes, and the full blocks after it go at once;
                 * otherwise wait and merge into the next write. */
                if (p->s_sub % B && p->tail_w) {
                        if (p->held_w || data_end < from + B || p->nw + 2 > LOG_WRITES)
                                break;
                        struct log_write *h = &p->w[(p->w_head + p->nw) % LOG_WRITES];
                        p->nw++;
                        *h = (struct log_write){.p = p, .s_from = from, .s_data_end = from + B};
                        h->req = (struct log_io_req){.op = LOG_IO_WRITE,
                                                     .fd = ws->seg->fd,
                                                     .buf = p->ring + from % R,
                                                     .len = B,
                                                     .off = from - ws->sbase,
                                                     .cb = write_done};
                        p->held_w = h;
                        p->held_after = p->tail_w;
                        p->s_sub = from + B;
                        continue;
                }
                uint64_t to = log_align_up(data_end, B);
                uint64_t wrap = from - from % R + R;
                if (to > wrap)
                        to = wrap;
                if (to - from > p->cfg.max_write_bytes)
                        to = from + p->cfg.max_write_bytes;
                struct log_seg *zs = ws->seg;
                /* The block holding s_sub was written before (partly) and the
                 * blocks after it may be preallocated but never written: one
                 * write over both is not an overwrite to ext4 (no single
                 * extent maps it), so it takes the inode lock exclusively
                 * and io_uring punts it to io-wq. Written apart, the
                 * block's rewrite is a plain overwrite and the rest lies in
                 * one unwritten extent: both are issued inline. */
                uint64_t written = zs->zero_end == UINT64_MAX ? 0 : log_align_down(zs->zero_end, B);
                if (p->s_sub % B && to > from + B && to - ws->sbase > written)
                        to = from + B;
                /* likewise from written blocks (recycled, zero-filled) into
                 * fresh ones */
                else if (from - ws->sbase < written && to - ws->sbase > written)
                        to = ws->sbase + written;
                /* Never overlap the zero-fill write in flight (the device
                 * does not order overlapping writes): it starts past every
                 * byte appended when it was issued, so only appends that
                 * outran it get here; they go up to its start and wait. */
                if (zs->zero_inflight && to - ws->sbase > zs->zero_req.off) {
                        if (zs->zero_req.off <= from - ws->sbase)
                                break;
                        to = ws->sbase + zs->zero_req.off;
                }
                data_end = SL_MIN(data_end, to);
                /* Under load, the partly filled tail block is not written
                 * now: a write of this partition is in flight, whose
                 * completion comes back here, and by then the next append
                 * has usually filled the block, so it goes once, as the
                 * start of the next write. Written now, it had to be
                 * rewritten by a 4 KiB write of its own, held until this
                 * one completes; that small write and the overlap kept the
                 * block layer from merging the sequential writes into
                 * large requests, and this disk's cost is per request
                 * (RESULTS.md: 1.8 MiB requests instead of 4 MiB). */
                if (to > data_end && p->nw && defer_tail(p) && data_end == p->s_end &&
                    ws == ws_active(p)) {
                        uint64_t full = log_align_down(data_end, B);
                        if (full <= from)
                                break;
                        to = data_end = full;
                }
                if (to > data_end)
                        memset(p->ring + data_end % R, 0, to - data_end);
                struct log_write *w = &p->w[(p->w_head + p->nw) % LOG_WRITES];
                p->nw++;
                memset(w, 0, sizeof(*w));
                w->p = p;
                w->s_from = from;
                w->s_data_end = data_end;
                w->req.op = LOG_IO_WRITE;
                w->req.fd = ws->seg->fd;
                w->req.buf = p->ring + from % R;
                w->req.len = (uint32_t)(to - from);
                w->req.off = from - ws->sbase;
                w->req.cb = write_done;
                SL_DASSERT(w->req.off % B == 0 && w->req.len % B == 0);
                if (data_end % B)
                        p->tail_w = w;
                p->s_sub = data_end;
                log_io_submit(p->o->io, &w->req);
        }
}

/* ---- zero-fill ahead of the tail ------------------------------------ */

/* Preallocated blocks are unwritten extents on ext4: an O_DIRECT write into
 * them converts the extent when it completes, and the next fdatasync has to
 * write that metadata (a journal commit, or with no journal, as on this
 * machine's disk, the extent block and inode: 1.75 to 1.95 metadata block
 * writes per fdatasync measured) before the flush, instead of only
 * flushing the device cache; the write itself needs the inode lock
 * exclusively. Over blocks written before, both are plain. So a `fsync`
 * partition's tail is written with zeros a window ahead of its appends, in
 * large writes off the hot path: one conversion (one metadata write in some
 * fdatasync) per zero write instead of one per fdatasync. The zeros need no fdatasync of their
 * own: the next group fdatasync covers them, and a power cut before it only
 * takes them back to unwritten space, which reads as zeros too. */
static bool zero_fill_on(const struct log_partition *p)
{
        return p->cfg.zero_ahead_bytes && p->cfg.preallocate &&
               (p->cfg.durability == LOG_DURABILITY_FSYNC || p->cfg.zero_fill_all);
}

/* Measured here (RESULTS.md): fsync appends of 16 KiB and 64 x 1 KiB ran
 * 1.5 to 3x faster with zero-fill, 1 x 256 KiB with a third less ack
 * latency; rows whose fdatasyncs carry 0.5 MiB and more (64 x 16 KiB, 1
 * MiB appends) ran no faster or slower: there the commit is spread over
 * much data already, and the zeros double the bytes the device writes and
 * the fdatasync flushes. */
static bool zero_fill_pays(const struct log_partition *p)
{
        return !p->cfg.zero_fill_max_sync_bytes ||
               p->sync_bytes_avg < p->cfg.zero_fill_max_sync_bytes;
}

/* Bytes of the active segment kept ahead of the appends: preallocation must
 * run ahead of them too (a zero write never extends the file). */
static uint64_t zero_window(const struct log_partition *p)
{
        /* never further ahead than preallocation steps go: a caller with
         * many small logs (AMQP queues, 1 MiB steps) chose that footprint */
        uint64_t step_max = p->cfg.prealloc_bytes ? p->cfg.prealloc_bytes : p->cfg.segment_bytes;
        return zero_fill_on(p) ? SL_MIN(p->cfg.zero_ahead_bytes, step_max) : 0;
}

static void zero_done(struct log_io_req *req, int res)
{
        struct log_seg *s = SL_CONTAINER_OF(req, struct log_seg, zero_req);
        struct log_partition *p = s->p;
        s->zero_inflight = false;
        if (res == (int)req->len) {
                s->zero_end = req->off + req->len;
                LOG_STAT_ADD(&p->o->m, zero_writes, 1);
                LOG_STAT_ADD(&p->o->m, zero_bytes, req->len);
        } else {
                /* Only an optimisation: appends still work over unwritten
                 * space, and their own writes report a failing disk. */
                s->zero_end = UINT64_MAX;
        }
        if (!s->deleted)
                work_add(p); /* appends may wait for this write */
        log_seg_put(s);
}

static void zero_ahead(struct log_partition *p)
{
        if (!zero_fill_on(p) || !zero_fill_pays(p) || p->err || p->o->draining)
                return;
        struct log_wseg *ws = ws_active(p);
        struct log_seg *s = ws->seg;
        if (s->fd < 0 || s->zero_inflight || s->zero_end == UINT64_MAX ||
            s->alloc_end == UINT64_MAX)
                return;
        /* past every byte appended so far, so no data write in flight can
         * touch it; later appends stop at it (issue_writes) */
        uint64_t front = log_align_up(p->s_end - ws->sbase, p->align);
        if (s->zero_end < front)
                s->zero_end = front;
        uint64_t cap = SL_MIN(s->alloc_end, p->cfg.segment_bytes);
        /* Whole chunks of a quarter of the window, issued while it still
         * has room for one: the appends then have three quarters of it to
         * cover before they could reach the write in flight. */
        uint64_t ahead = zero_window(p);
        uint64_t chunk =
            SL_MAX(SL_MIN((uint64_t)LOG_ZERO_WRITE_BYTES, ahead / 4), (uint64_t)p->align);
        if (s->zero_end >= cap || s->zero_end - front + chunk > SL_MAX(ahead, chunk))
                return;
        uint64_t len = log_align_down(SL_MIN(chunk, cap - s->zero_end), p->align);
        if (!len)
                return;
        if (!p->o->zero_buf) {
                void *z = mmap(NULL, LOG_ZERO_WRITE_BYTES, PROT_READ,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (z == MAP_FAILED)
                        return;
                p->o->zero_buf = z;
        }
        s->zero_inflight = true;
        s->refs++;
        s->zero_req = (struct log_io_req){.op = LOG_IO_WRITE,
                                          .fd = s->fd,
                                          .buf = p->o->zero_buf,
                                          .len = (uint32_t)len,
                                          .off = s->zero_end,
                                          .cb = zero_done};
        log_io_submit(p->o->io, &s->zero_req);
}

/* ---- group commit ----------------------------------------------------- */

/* After a sync round: when another recovery_point_bytes of the tail are
 * durable, record the last durable batch boundary in the tail's index, so a
 * crash rescans at most that much of it. */
static void recovery_point(struct log_partition *p)
{
        struct log_wseg *ws = ws_active(p);
        struct log_seg *t = ws->seg;
        if (!p->cfg.recovery_point_bytes || p->s_synced <= ws->sbase ||
            p->s_synced - ws->sbase < t->rp_size + p->cfg.recovery_point_bytes || !p->nbdir)
                return;
        /* the last batch that ends at or before s_synced, in this segment */
        uint32_t lo = 0, hi = p->nbdir;
        while (lo < hi) {
                uint32_t mid = (lo + hi) / 2;
                const struct log_bdir *d = &p->bdir[(p->bdir_head + mid) % p->bdir_cap];
                if (d->s + d->len <= p->s_synced)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo == 0)
                return;
        const struct log_bdir *d = &p->bdir[(p->bdir_head + lo - 1) % p->bdir_cap];
        if (d->s < ws->sbase)
                return;
        uint64_t size = d->s + d->len - ws->sbase;
        if (size <= t->rp_size)
                return;
        /* Busy (one index write per segment at a time): rp_size stays, so
         * the next round retries instead of leaving the next crash up to
         * twice the rescan. */
        if (log_seg_write_rp(p, t, size, d->last + 1) == 0)
                t->rp_size = size;
}

static void sync_done(struct log_io_req *req, int res)
{
        struct log_sync *sy = SL_CONTAINER_OF(req, struct log_sync, req);
        struct log_partition *p = sy->p;
        if (res < 0 && !p->sync_err)
                p->sync_err = res;
        SL_ASSERT(p->sync_inflight > 0);
        if (--p->sync_inflight)
                return;
        LOG_STAT_ADD(&p->o->m, fsyncs, 1);
        if (p->sync_err) {
                /* After a failed fdatasync the kernel may have dropped the
                 * error state: nothing since the last good sync is trusted. */
                part_fail(p, p->sync_err);
        } else if (p->sync_target > p->s_synced) {
                uint64_t bytes = p->sync_target - p->s_synced;
                p->sync_bytes_avg = (p->sync_bytes_avg * 7 + bytes) / 8;
                LOG_STAT_ADD(&p->o->m, synced_bytes, bytes);
                p->s_synced = p->sync_target;
                if (p->cfg.durability == LOG_DURABILITY_FSYNC)
                        p->ack_due = true;
        }
        if (!p->err)
                recovery_point(p);
        retire_wsegs(p);
        work_add(p);
}

static bool sync_due(struct log_partition *p, uint64_t now_ns)
{
        if (p->err || p->sync_inflight || p->s_written <= p->s_synced)
                return false;
        switch (p->cfg.durability) {
        case LOG_DURABILITY_FSYNC:
                /* Only when it acks something: a batch written in several
                 * pieces whose first piece completed alone would otherwise
                 * cost an fdatasync that acks nothing, and the next one
                 * would wait behind it. */
                if (p->npend && p->pend[p->pend_head].s_end > p->s_written)
                        return false;
                /* ... and covering the writes already submitted then: they
                 * complete about together, and an fdatasync issued on the
                 * first completion would leave the others to the next round,
                 * which waits for this one (traced, fsync 1x5 x 256 KiB:
                 * twice the fdatasyncs at half the bytes each). Later
                 * submissions do not move the mark, so a stream of appends
                 * cannot hold the round back. */
                if (!p->sync_hold)
                        p->sync_hold = p->s_sub;
                return p->s_written >= p->sync_hold;
        case LOG_DURABILITY_INTERVAL:
                if (p->o->draining)
                        return true;
                /* A sealed segment leaves the write window only once its
                 * data is durable (its index then says so), and a roll
                 * needs a free slot: without this sync a partition filling
                 * LOG_WSEGS segments within one interval stalled until the
                 * interval's sync (64 MiB segments, 1 s interval: capped at
                 * 268 MB/s). One fdatasync per segment, as `none` pays. */
                if (p->nws > 1 && p->s_written >= ws_at(p, 0)->send)
                        return true;
                if (p->cfg.flush_interval_bytes &&
                    p->s_written - p->s_synced >= p->cfg.flush_interval_bytes)
                        return true;
                return now_ns - p->last_sync_ns >= (uint64_t)p->cfg.flush_interval_ms * 1000000u;
        case LOG_DURABILITY_NONE:
                return false;
        }
        return false;
}

/* One fdatasync per file with data written since the last sync, plus the
 * directory when a segment was created: all in flight together. */
static void issue_sync(struct log_partition *p, uint64_t now_ns)
{
        uint32_t n = 0;
        p->sync_hold = 0;
        p->sync_target = p->s_written;
        p->sync_err = 0;
        p->last_sync_ns = now_ns;
        for (uint32_t i = 0; i < p->nws; i++) {
                struct log_wseg *ws = ws_at(p, i);
                if (ws->sbase >= p->sync_target || ws->send <= p->s_synced)
                        continue;
                struct log_sync *sy = &p->syncs[n++];
                sy->p = p;
                sy->req =
                    (struct log_io_req){.op = LOG_IO_FDATASYNC, .fd = ws->seg->fd, .cb = sync_done};
        }
        if (p->dir_dirty) {
                p->dir_dirty = false;
                struct log_sync *sy = &p->syncs[n++];
                sy->p = p;
                sy->req = (struct log_io_req){.op = LOG_IO_FSYNC, .fd = p->dirfd, .cb = sync_done};
        }
        SL_ASSERT(n > 0);
        p->sync_inflight = n;
        for (uint32_t i = 0; i < n; i++)
                log_io_submit(p->o->io, &p->syncs[i].req);
}

static bool part_needs_work(const struct log_partition *p)
{
        if (p->ack_due)
                return true;
        if (p->err)
                return false;
        if (p->s_sub < p->s_end || p->nw || p->sync_inflight)
                return true;
        return p->cfg.durability != LOG_DURABILITY_NONE && p->s_written > p->s_synced;
}

/* Ack what the step's completions made written (or durable). */
static void acks_run(struct log_partition *p)
{
        p->ack_due = false;
        if (p->err)
                return;
        if (p->cfg.durability == LOG_DURABILITY_FSYNC)
                LOG_STAT_ADD(&p->o->m, synced_appends, pend_ack_upto(p, p->s_synced));
        else
                pend_ack_upto(p, p->s_written);
        if (p->hw_dirty)
                wake_waiters(p);
}

/* One pass over the partitions with work: writes, zero-fill, syncs and
 * wake-ups go out; those with acks due are listed on *acks. */
static void work_run(struct log_owner *o, uint64_t now_ns, struct log_partition **acks)
{
        uint32_t rounds = 0;
        struct log_partition *list = o->work;
        o->work = NULL;
        while (list) {
                struct log_partition *p = list;
                list = p->work_next;
                p->in_work = false;
                if (p->ack_due) {
                        p->ack_next = *acks;
                        *acks = p;
                }
                /* the active segment's index grows here, a chunk ahead of
                 * the appends that fill it (half a chunk left at least) */
                log_seg_idx_reserve(ws_active(p)->seg, LOG_IDX_CHUNK / 2);
                issue_writes(p);
                zero_ahead(p);
                if (sync_due(p, now_ns)) {
                        issue_sync(p, now_ns);
                        rounds = 1;
                }
                if (p->hw_dirty)
                        wake_waiters(p);
                /* Interval timers keep a partition on the list until synced;
                 * completions put the others back. */
                if (p->cfg.durability == LOG_DURABILITY_INTERVAL && !p->sync_inflight &&
                    p->s_written > p->s_synced && !p->err)
                        work_add(p);
        }
        LOG_STAT_ADD(&o->m, fsync_rounds, rounds);
}

/* log_owner_poll without the final hand-over to the kernel. */
static int owner_step(struct log_owner *o)
{
        int n = o->io->ops->reap(o->io);
        if (n < 0)
                return n;
        uint64_t now_ns = sl_time_ns();
        struct log_partition *acks = NULL;
        work_run(o, now_ns, &acks);
        /* Acks last, after the writes and syncs above reach the kernel:
         * an ack's callback may append (a closed-loop producer, or a
         * queue's consumer) and copy a batch, and the device should not
         * idle meanwhile with the writes already staged held back
         * (traced: all 16 writes in flight completed together and the
         * next went out only after 16 appenders had copied 1 MiB each).
         * What those appends staged goes out in a second pass. */
        if (acks) {
                int rc = o->io->ops->flush(o->io);
                if (rc < 0)
                        return rc;
                while (acks) {
                        struct log_partition *p = acks;
                        acks = p->ack_next;
                        acks_run(p);
                }
                work_run(o, now_ns, &acks);
                SL_DASSERT(!acks);
        }
        uint64_t now_ms = sl_time_ms();
        if (now_ms >= o->next_retention_ms) {
                o->next_retention_ms = now_ms + 1000;
                for (struct log_partition *p = o->all; p; p = p->all_next)
                        log_retention_run(p, sl_realtime_ms());
        }
        return n;
}

int log_owner_poll(struct log_owner *o)
{
        int n = owner_step(o);
        if (n < 0)
                return n;
        int rc = o->io->ops->flush(o->io);
        return rc < 0 ? rc : n;
}

int log_owner_poll_wait(struct log_owner *o)
{
        int n = owner_step(o);
        if (n < 0)
                return n;
        /* The backend's wait submits what this step queued and blocks in
         * the same system call. */
        int rc = o->io->inflight ? o->io->ops->wait(o->io) : o->io->ops->flush(o->io);
        return rc < 0 ? rc : n + rc;
}

bool log_owner_busy(const struct log_owner *o)
{
        if (o->io->inflight)
                return true;
        for (const struct log_partition *p = o->all; p; p = p->all_next)
                if (part_needs_work(p) || p->hw_dirty)
                        return true;
        return false;
}

bool log_owner_ready(const struct log_owner *o)
{
        if (!o->io->notifies)
                return log_owner_busy(o);
        /* Only partitions on the work list move in a poll (interval syncs
         * keep theirs there until due); every other one waits for a
         * completion, whose eventfd signal wakes the owner. */
        return o->work || (o->io->ops->unsubmitted && o->io->ops->unsubmitted(o->io));
}

int log_owner_drain(struct log_owner *o)
{
        o->draining = true;
        for (struct log_partition *p = o->all; p; p = p->all_next)
                work_add(p);
        int rc = 0;
        for (;;) {
                rc = log_owner_poll_wait(o);
                if (rc < 0 || !log_owner_busy(o))
                        break;
        }
        o->draining = false;
        return rc < 0 ? rc : 0;
}

/* ---- append --------------------------------------------------------- */

static void ring_put(struct log_partition *p, uint64_t s, const void *src, uint32_t n)
{
        const uint64_t R = p->cfg.ring_bytes;
        uint32_t first = (uint32_t)SL_MIN((uint64_t)n, R - s % R);
        memcpy(p->ring + s % R, src, first);
        if (first < n)
                memcpy(p->ring, (const uint8_t *)src + first, n - first);
}

static uint32_t ring_put_crc(struct log_partition *p, uint64_t s, const void *src, uint32_t n)
{
        const uint64_t R = p->cfg.ring_bytes;
        uint32_t first = (uint32_t)SL_MIN((uint64_t)n, R - s % R);
        uint32_t crc = log_crc32c_copy(0, p->ring + s % R, src, first);
        if (first < n)
                crc = log_crc32c_copy(crc, p->ring, (const uint8_t *)src + first, n - first);
        return crc;
}

static void ring_get(const struct log_partition *p, uint64_t s, void *dst, uint32_t n)
{
        const uint64_t R = p->cfg.ring_bytes;
        uint32_t first = (uint32_t)SL_MIN((uint64_t)n, R - s % R);
        memcpy(dst, p->ring + s % R, first);
        if (first < n)
                memcpy((uint8_t *)dst + first, p->ring, n - first);
}

static void put_be64(uint8_t *b, uint64_t v)
{
        for (int i = 7; i >= 0; i--, v >>= 8)
                b[i] = (uint8_t)v;
}

static void put_be32(uint8_t *b, uint32_t v)
{
        for (int i = 3; i >= 0; i--, v >>= 8)
                b[i] = (uint8_t)v;
}

/* ---- recycling ------------------------------------------------------- */

/* Retention renames a deleted segment's file to a spare name instead of
 * unlinking it (up to cfg.recycle_segments per partition), and the next
 * roll renames it back as the new segment: appends then overwrite blocks
 * written once, which ext4 commits without converting extents, so an
 * fdatasync only flushes (RESULTS.md: write(S)+fdatasync over written
 * blocks at about twice the fresh-space rate here). What stays in the file
 * past the appends is older batches of this same partition, all with
 * offsets below the new segment's base: recovery's continuity check stops
 * at the first of them, as at any stale batch. */
static int spare_find(const struct log_partition *p, enum log_spare_state state)
{
        for (uint32_t i = 0; i < p->cfg.recycle_segments; i++)
                if (p->spares[i].state == state)
                        return (int)i;
        return -1;
}

static void roll_open_req(struct log_seg *s, int create_flags);

/* The new segment's file exists: its writes may go, and the directory
 * entry joins the next sync round, so it is durable before anything in the
 * file is acknowledged (no write reached it before now). */
static void roll_open_done(struct log_io_req *req, int res)
{
        struct log_seg *s = SL_CONTAINER_OF(req, struct log_seg, open_req);
        struct log_partition *p = s->p;
        if (res < 0) {
                part_fail(p, res);
        } else {
                s->fd = res;
                p->dir_dirty = true;
                log_seg_prealloc(p, s);
                work_add(p);
        }
        log_seg_put(s);
}

static void roll_open_req(struct log_seg *s, int create_flags)
{
        s->open_req = (struct log_io_req){.op = LOG_IO_OPENAT,
                                          .fd = s->p->dirfd,
                                          .path = s->unlink_name[0],
                                          .open_flags = O_RDWR | O_DIRECT | create_flags,
                                          .open_mode = 0644,
                                          .cb = roll_open_done};
}

/* The spare now has the new segment's name (its stale batches all have
 * offsets below the new base, so recovery's continuity check stops at
 * them); the next sync round makes the name durable. Writes went on
 * meanwhile: until then a power cut leaves them under the spare's name,
 * and recovery adopts it (log_part_load). */
static void roll_reuse_done(struct log_io_req *req, int res)
{
        struct log_seg *s = SL_CONTAINER_OF(req, struct log_seg, open_req);
        struct log_partition *p = s->p;
        p->spares[s->spare_slot].state = LOG_SPARE_FREE;
        s->spare_slot = -1;
        if (res < 0) {
                part_fail(p, res);
        } else {
                p->dir_dirty = true;
                LOG_STAT_ADD(&p->o->m, segments_reused, 1);
                work_add(p);
        }
        log_seg_put(s);
}

/* Start a new segment at next_offset without blocking the append: the
 * openat (hundreds of microseconds on ext4 here) runs asynchronously, and
 * appends go on into the staging ring while it does; writes to the new
 * file wait for its fd. */
static int roll(struct log_partition *p, uint64_t now_ms)
{
        if (p->nws == LOG_WSEGS)
                return -ENOBUFS;
        struct log_seg *s = log_seg_new(p, p->next_offset);
        if (!s)
                return -ENOMEM;
        s->created_ms = now_ms;
        int rc = log_segs_push(p, s);
        if (rc < 0) {
                log_seg_put(s);
                return rc;
        }
        s->refs++;
        int slot = spare_find(p, LOG_SPARE_READY);
        if (slot >= 0) {
                /* write to the open spare at once; rename it to the new
                 * segment's name meanwhile */
                struct log_spare *sp = &p->spares[slot];
                sp->state = LOG_SPARE_MOVING;
                s->spare_slot = (int8_t)slot;
                s->zero_end = sp->written;
                s->fd = sp->fd;
                s->alloc_end = sp->alloc;
                sp->fd = -1;
                log_seg_prealloc(p, s);
                s->open_req = (struct log_io_req){.op = LOG_IO_RENAMEAT,
                                                  .fd = p->dirfd,
                                                  .path = sp->name,
                                                  .path2 = s->unlink_name[0],
                                                  .cb = roll_reuse_done};
        } else {
                roll_open_req(s, O_CREAT | O_EXCL);
        }
        log_io_submit(p->o->io, &s->open_req);
        struct log_wseg *old = ws_active(p);
        old->send = p->s_end;
        p->s_end = log_align_up(p->s_end, p->align);
        struct log_wseg *ws = &p->ws[(p->ws_head + p->nws++) % LOG_WSEGS];
        ws->seg = s;
        ws->sbase = p->s_end;
        ws->send = UINT64_MAX;
        LOG_STAT_ADD(&p->o->m, segments_rolled, 1);
        return 0;
}

int log_append(struct log_partition *p, const void *batch, uint32_t len, log_append_cb cb,
               void *ctx, int64_t *base_offset)
{
        struct log_metrics *m = &p->o->m;
        if (p->fenced)
                return -EUCLEAN;
        if (p->err)
                return p->err;
        int rc = log_batch_check_header(batch, len, p->cfg.max_batch_bytes);
        if (rc < 0) {
                LOG_STAT_ADD(m, corrupt_batches, 1);
                return rc;
        }
        if (p->npend == p->cfg.max_pending) {
                LOG_STAT_ADD(m, append_rejects, 1);
                return -ENOBUFS;
        }
        struct log_seg *seg = ws_active(p)->seg;
        uint64_t now_ms = sl_realtime_ms();
        if (seg->size > 0 &&
            (seg->size + len > p->cfg.segment_bytes ||
             (p->cfg.segment_ms && now_ms - seg->created_ms >= p->cfg.segment_ms))) {
                rc = roll(p, now_ms);
                if (rc < 0) {
                        if (rc == -ENOBUFS)
                                LOG_STAT_ADD(m, append_rejects, 1);
                        else
                                LOG_STAT_ADD(m, append_errors, 1);
                        return rc;
                }
                seg = ws_active(p)->seg;
        }
        if (log_align_up(p->s_end + len, p->align) - ring_keep_low(p) > p->cfg.ring_bytes) {
                LOG_STAT_ADD(m, append_rejects, 1);
                return -ENOBUFS;
        }
        const uint8_t *b = batch;
        int32_t count = log_batch_last_delta(b) + 1;
        int64_t max_ts = log_batch_max_timestamp(b);
        int64_t base = p->next_offset;
        uint8_t hdr[21];
        memcpy(hdr, b, sizeof(hdr));
        put_be64(hdr, (uint64_t)base);
        put_be32(hdr + 12, (uint32_t)p->leader_epoch);
        uint64_t s = p->s_end;
        /* The CRC is checked while copying (one pass over the batch). The
         * bytes land past s_end, which nothing reads until s_end moves: a
         * corrupt batch leaves no trace. */
        ring_put(p, s, hdr, sizeof(hdr));
        if (ring_put_crc(p, s + sizeof(hdr), b + sizeof(hdr), len - (uint32_t)sizeof(hdr)) !=
            log_batch_crc(b)) {
                LOG_STAT_ADD(m, corrupt_batches, 1);
                return -EBADMSG;
        }

        if (seg->nidx == 0 ||
            seg->size - log_seg_idx(seg, seg->nidx - 1)->pos >= p->cfg.index_interval_bytes) {
                /* Room was reserved by the poll step. Only a burst of
                 * hundreds of indexed appends with no poll step between
                 * outruns it: then one chunk is allocated here (never a
                 * copy). Reads size their disk reads by the index interval,
                 * so an entry is never skipped. */
                if ((uint64_t)seg->nidx == (uint64_t)seg->nchunks * LOG_IDX_CHUNK)
                        LOG_STAT_ADD(m, index_grows_on_append, 1);
                if (log_seg_idx_push(seg, (uint32_t)(base - seg->base), (uint32_t)seg->size,
                                     seg->max_ts) < 0) {
                        LOG_STAT_ADD(m, append_errors, 1);
                        return -ENOMEM; /* nothing of this batch is visible */
                }
        }
        struct log_bdir *d;
        if (p->nbdir == p->bdir_cap) {
                p->bdir_head = (p->bdir_head + 1) % p->bdir_cap;
                p->nbdir--;
        }
        d = &p->bdir[(p->bdir_head + p->nbdir++) % p->bdir_cap];
        *d = (struct log_bdir){
            .base = base, .last = base + count - 1, .max_ts = max_ts, .s = s, .len = len};

        seg->size += len;
        seg->next = base + count;
        log_seg_prealloc(p, seg);
        if (max_ts > seg->max_ts)
                seg->max_ts = max_ts;
        p->total_bytes += len;
        p->next_offset = base + count;
        p->s_end = s + len;

        struct log_pending *e = &p->pend[(p->pend_head + p->npend++) % p->cfg.max_pending];
        *e = (struct log_pending){.base = base,
                                  .last = base + count - 1,
                                  .s_end = p->s_end,
                                  .t_ns = sl_time_ns(),
                                  .bytes = len,
                                  .cb = cb,
                                  .ctx = ctx};
        if (p->cfg.durability != LOG_DURABILITY_FSYNC) {
                p->hw = p->next_offset;
                p->hw_dirty = true;
        }
        LOG_STAT_ADD(m, appends, 1);
        LOG_STAT_ADD(m, append_bytes, len);
        work_add(p);
        /* A full write's worth staged: it goes to the kernel now, not at
         * the caller's next poll step, so the device works while the
         * caller copies its next batches (one system call per
         * max_write_bytes appended at most). Traced, one appender with 5
         * x 1 MiB in flight: the device merged the writes in flight into
         * one request, they completed together, and it idled while the
         * appender copied the next four. */
        if (p->s_end - p->s_sub >= p->cfg.max_write_bytes && !p->err) {
                issue_writes(p);
                p->o->io->ops->flush(p->o->io);
        }
        if (base_offset)
                *base_offset = base;
        return 0;
}

/* ---- accessors ------------------------------------------------------ */

int64_t log_start_offset(const struct log_partition *p)
{
        return p->start_offset;
}

int64_t log_end_offset(const struct log_partition *p)
{
        return p->next_offset;
}

int64_t log_high_watermark(const struct log_partition *p)
{
        return p->hw;
}

int log_partition_state(const struct log_partition *p)
{
        return p->fenced ? -EUCLEAN : p->err;
}

uint32_t log_dio_align(const struct log_partition *p)
{
        return p->align;
}

/* ---- reads ---------------------------------------------------------- */

static struct log_seg *seg_for_offset(struct log_partition *p, int64_t off)
{
        uint32_t lo = 0, hi = p->nsegs;
        while (hi - lo > 1) {
                uint32_t mid = (lo + hi) / 2;
                if (p->segs[mid]->base <= off)
                        lo = mid;
                else
                        hi = mid;
        }
        return p->nsegs ? p->segs[lo] : NULL;
}

static uint32_t seg_index_of(struct log_partition *p, struct log_seg *s)
{
        for (uint32_t i = 0; i < p->nsegs; i++)
                if (p->segs[i] == s)
                        return i;
        return UINT32_MAX;
}

/* Position to start scanning from for offset `off` / timestamp `ts`. */
static uint32_t idx_lookup(const struct log_seg *s, const struct log_read *r)
{
        uint32_t lo = 0, hi = s->nidx;
        if (!hi)
                return 0;
        while (hi - lo > 1) {
                uint32_t mid = (lo + hi) / 2;
                const struct log_idx *x = log_seg_idx(s, mid);
                bool before = r->by_time ? x->ts_before < r->timestamp
                                         : (int64_t)x->rel <= r->offset - s->base;
                if (before)
                        lo = mid;
                else
                        hi = mid;
        }
        return log_seg_idx(s, lo)->pos;
}

/* Bytes of segment s that are on disk (reads never see unwritten bytes). */
static uint64_t seg_readable(struct log_partition *p, struct log_seg *s)
{
        for (uint32_t i = 0; i < p->nws; i++) {
                struct log_wseg *ws = ws_at(p, i);
                if (ws->seg == s)
                        return p->s_written > ws->sbase ? SL_MIN(s->size, p->s_written - ws->sbase)
                                                        : 0;
        }
        return s->size;
}

/* By time, a batch wholly below the start offset (trimmed, its segment
 * not yet deleted) is never the answer. */
static bool batch_wanted(const struct log_partition *p, const struct log_read *r, int64_t last,
                         int64_t max_ts)
{
        return r->by_time ? max_ts >= r->timestamp && last >= p->start_offset : last >= r->offset;
}

/* The offset a by-time lookup answers: a batch cut by the start offset
 * answers the first retained offset, never a trimmed one. */
static int64_t found_offset(const struct log_partition *p, const struct log_read *r, int64_t base)
{
        return r->by_time ? SL_MAX(base, p->start_offset) : base;
}

/* Serve from the batch directory when the wanted batches are still in the
 * ring; returns bytes, 0 when memory cannot answer, or -ERANGE. */
static int read_mem(struct log_partition *p, struct log_read *r, uint64_t min_s)
{
        if (!p->nbdir)
                return 0;
        uint64_t top = log_align_up(p->s_end, p->align);
        uint64_t low = SL_MAX(p->s_mem_low, top > p->cfg.ring_bytes ? top - p->cfg.ring_bytes : 0);
        struct log_bdir *d = NULL;
        uint32_t i, n = p->nbdir;
#define BD(k) (&p->bdir[(p->bdir_head + (k)) % p->bdir_cap])
        if (r->by_time) {
                /* Every batch from min_s on must be here: max_ts is not
                 * monotonic, so scan forward from the index position. */
                if (BD(0)->s > min_s || BD(0)->s < low)
                        return 0;
                for (i = 0; i < n; i++)
                        if (BD(i)->s >= min_s && batch_wanted(p, r, BD(i)->last, BD(i)->max_ts))
                                break;
                if (i == n)
                        return -ERANGE;
        } else {
                uint32_t lo = 0, hi = n;
                while (lo < hi) {
                        uint32_t mid = (lo + hi) / 2;
                        if (BD(mid)->last >= r->offset)
                                hi = mid;
                        else
                                lo = mid + 1;
                }
                i = lo;
                if (i == n || BD(i)->base > r->offset || BD(i)->s < low)
                        return 0;
        }
        uint32_t got = 0;
        for (; i < n; i++) {
                d = BD(i);
                if (d->base >= p->hw || (got && got + d->len > r->max_bytes) ||
                    got + d->len > r->buf_cap)
                        break;
                if (!got)
                        r->offset_found = found_offset(p, r, d->base);
                ring_get(p, d->s, (uint8_t *)r->buf + got, d->len);
                got += d->len;
        }
#undef BD
        if (!got)
                return r->by_time ? -ERANGE : 0;
        r->data_off = 0;
        r->data_len = got;
        r->hw = p->hw;
        LOG_STAT_ADD(&p->o->m, reads_mem, 1);
        LOG_STAT_ADD(&p->o->m, read_bytes, got);
        return (int)got;
}

static void read_done(struct log_io_req *req, int res);

/* Read from pos at least `need` bytes (a batch known to be there), or
 * enough to cover max_bytes past the sparse index's granularity. */
static int read_issue(struct log_partition *p, struct log_read *r, struct log_seg *s, uint64_t pos,
                      uint64_t need)
{
        uint64_t end = seg_readable(p, s);
        if (pos >= end)
                return -ERANGE;
        uint64_t from = log_align_down(pos, p->align);
        uint64_t want =
            SL_MAX(need, (uint64_t)r->max_bytes + 2ull * p->cfg.index_interval_bytes) + p->align;
        uint64_t to = SL_MIN(log_align_up(pos + want, p->align), log_align_up(end, p->align));
        uint64_t cap = log_align_down(r->buf_cap, p->align);
        if (to - from > cap)
                to = from + cap;
        if (to <= pos)
                return -ENOBUFS;
        r->p = p;
        r->seg = s;
        r->pos = pos;
        s->refs++;
        r->req = (struct log_io_req){.op = LOG_IO_READ,
                                     .fd = s->fd,
                                     .buf = r->buf,
                                     .len = (uint32_t)(to - from),
                                     .off = from,
                                     .cb = read_done};
        log_io_submit(p->o->io, &r->req);
        return 0;
}

static void read_finish(struct log_read *r, int res)
{
        r->cb(r, res);
}

static void read_done(struct log_io_req *req, int res)
{
        struct log_read *r = SL_CONTAINER_OF(req, struct log_read, req);
        struct log_partition *p = r->p;
        struct log_seg *s = r->seg;
        bool deleted = s->deleted;
        uint64_t end = deleted ? 0 : seg_readable(p, s);
        log_seg_put(s);
        if (res < 0) {
                read_finish(r, res);
                return;
        }
        if (deleted) {
                read_finish(r, -ERANGE);
                return;
        }
        const uint8_t *buf = r->buf;
        uint64_t from = req->off;
        uint64_t pos = r->pos;
        uint64_t lim = SL_MIN(from + (uint64_t)res, end);
        uint32_t start = UINT32_MAX, got = 0;
        uint64_t need = LOG_BATCH_HEADER_BYTES;
        bool bad = false;
        while (pos + LOG_BATCH_HEADER_BYTES <= lim) {
                const uint8_t *b = buf + (pos - from);
                uint32_t len = log_batch_len(b);
                int64_t base = log_batch_base_offset(b);
                if (b[16] != 2 || len < LOG_BATCH_HEADER_BYTES || base >= r->hw) {
                        bad = true;
                        break;
                }
                if (pos + len > lim) {
                        need = len;
                        break;
                }
                if (start == UINT32_MAX) {
                        if (batch_wanted(p, r, base + log_batch_last_delta(b),
                                         log_batch_max_timestamp(b))) {
                                start = (uint32_t)(pos - from);
                                r->offset_found = found_offset(p, r, base);
                        }
                } else if (got + len > r->max_bytes) {
                        break;
                }
                if (start != UINT32_MAX)
                        got += len;
                pos += len;
        }
        if (start == UINT32_MAX && !bad && pos < end) {
                /* The wanted batch lies past what this read covered: read on
                 * from the first batch we could not see whole. */
                if (++r->tries < 16 && read_issue(p, r, s, pos, need) == 0)
                        return;
                read_finish(r, -EIO);
                return;
        }
        if (start == UINT32_MAX) {
                /* Nothing wanted in this segment: by time, go on to the next. */
                uint32_t i = seg_index_of(p, s);
                if (r->by_time && i + 1 < p->nsegs && ++r->tries < 64) {
                        struct log_seg *n = p->segs[i + 1];
                        if (read_issue(p, r, n, idx_lookup(n, r), 0) == 0)
                                return;
                }
                read_finish(r, -ERANGE);
                return;
        }
        r->data_off = start;
        r->data_len = got;
        LOG_STAT_ADD(&p->o->m, reads_disk, 1);
        LOG_STAT_ADD(&p->o->m, read_bytes, got);
        read_finish(r, (int)got);
}

int log_read_submit(struct log_partition *p, struct log_read *r)
{
        if (p->fenced)
                return -EUCLEAN;
        r->hw = p->hw;
        r->tries = 0;
        r->data_off = r->data_len = 0;
        struct log_seg *s;
        if (r->by_time) {
                s = NULL;
                for (uint32_t i = 0; i < p->nsegs; i++)
                        if (p->segs[i]->max_ts >= r->timestamp && p->segs[i]->size &&
                            p->segs[i]->next > p->start_offset) {
                                s = p->segs[i];
                                break;
                        }
        } else {
                if (r->offset < p->start_offset || r->offset >= p->hw)
                        return -ERANGE;
                s = seg_for_offset(p, r->offset);
        }
        if (!s)
                return -ERANGE;
        uint64_t pos = idx_lookup(s, r);
        /* stream position of pos, when s still maps onto the stream */
        uint64_t min_s = UINT64_MAX;
        for (uint32_t i = 0; i < p->nws; i++)
                if (ws_at(p, i)->seg == s)
                        min_s = ws_at(p, i)->sbase + pos;
        if (min_s != UINT64_MAX) {
                int n = read_mem(p, r, r->by_time ? min_s : UINT64_MAX);
                if (n != 0)
                        return n;
        }
        if (r->mem_only)
                return -EAGAIN;
        return read_issue(p, r, s, pos, 0);
}

/* ---- trim and retention --------------------------------------------- */

static void start_write_done(struct log_io_req *req, int res);

/* Deleted segments' files go only once a start offset past them is
 * durable in log_start: a power cut may keep any subset of the unlinks and
 * renames a directory fsync did not cover, and a segment missing between
 * two kept ones would look like damage (a gap). Recovery drops every
 * segment below the durable start, so whatever subset survives, the kept
 * segments are contiguous. A start move that deletes nothing (a trim
 * inside a segment) is only written: losing it means redelivery. */
static void start_persist(struct log_partition *p)
{
        if (p->start_inflight) {
                p->start_dirty = true;
                return;
        }
        /* this round's deletions: those queued so far */
        p->dooming = p->doomed;
        p->doomed = p->doomed_tail = NULL;
        int64_t v = p->start_offset;
        memcpy(p->start_buf, "SLST", 4);
        memcpy(p->start_buf + 8, &v, 8);
        uint32_t crc = log_crc32c(0, p->start_buf + 8, 8);
        memcpy(p->start_buf + 4, &crc, 4);
        p->start_inflight = true;
        p->start_req = (struct log_io_req){.op = LOG_IO_WRITE,
                                           .fd = p->start_fd,
                                           .buf = p->start_buf,
                                           .len = sizeof(p->start_buf),
                                           .off = 0,
                                           .cb = start_write_done};
        log_io_submit(p->o->io, &p->start_req);
}

static void start_write_done(struct log_io_req *req, int res)
{
        struct log_partition *p = SL_CONTAINER_OF(req, struct log_partition, start_req);
        if (res >= 0 && p->dooming && req->op == LOG_IO_WRITE) {
                *req = (struct log_io_req){
                    .op = LOG_IO_FDATASYNC, .fd = p->start_fd, .cb = start_write_done};
                log_io_submit(p->o->io, req);
                return;
        }
        /* durable (or failed: then the files stay, and come back as
         * segments after a restart: redelivery, never loss) */
        while (p->dooming) {
                struct log_seg *s = p->dooming;
                p->dooming = s->doom_next;
                for (int i = 0; i < 3; i++) {
                        if (res >= 0) {
                                log_io_submit(p->o->io, &s->unlink_req[i]);
                                continue;
                        }
                        if (i == 0 && s->spare_slot >= 0) {
                                p->spares[s->spare_slot].state = LOG_SPARE_FREE;
                                s->spare_slot = -1;
                        }
                        log_seg_put(s);
                }
        }
        p->start_inflight = false;
        if (p->start_dirty || p->doomed) {
                p->start_dirty = false;
                start_persist(p);
        }
}

static void unlink_done(struct log_io_req *req, int res)
{
        struct log_seg *s = (struct log_seg *)req->buf;
        (void)res;
        log_seg_put(s);
}

/* The end of a spare's preparation: a roll may take it. */
static void spare_ready(struct log_seg *s)
{
        struct log_partition *p = s->p;
        p->spares[s->spare_slot].state = LOG_SPARE_READY;
        s->spare_slot = -1;
        LOG_STAT_ADD(&p->o->m, segments_recycled, 1);
        log_seg_put(s);
}

static void spare_allocated(struct log_io_req *req, int res)
{
        struct log_seg *s = (struct log_seg *)req->buf;
        if (res == 0) /* else the roll's own preallocation retries */
                s->p->spares[s->spare_slot].alloc = req->off + req->len;
        spare_ready(s);
}

static void spare_opened(struct log_io_req *req, int res)
{
        struct log_seg *s = (struct log_seg *)req->buf;
        struct log_partition *p = s->p;
        struct log_spare *sp = &p->spares[s->spare_slot];
        struct stat st;
        if (res >= 0 && fstat(res, &st) == 0) {
                sp->fd = res;
                sp->alloc = (uint64_t)st.st_size;
                /* The segment it was rolled short of its last preallocation
                 * step: allocate the rest now, while nothing writes to the
                 * file. In its next life that fallocate would wait for the
                 * O_DIRECT writes in flight on it and stall the ones issued
                 * meanwhile (traced: p90 12.7 ms, 14 in 48 rolls). */
                if (p->cfg.preallocate && sp->alloc < p->cfg.segment_bytes) {
                        *req =
                            (struct log_io_req){.op = LOG_IO_FALLOCATE,
                                                .fd = res,
                                                .off = sp->alloc,
                                                .len = (uint32_t)(p->cfg.segment_bytes - sp->alloc),
                                                .buf = s,
                                                .cb = spare_allocated};
                        log_io_submit(p->o->io, req);
                        return;
                }
                spare_ready(s);
                return;
        }
        /* left under its spare name: the next open unlinks it */
        if (res >= 0)
                close(res);
        s->spare_slot = -1;
        sp->state = LOG_SPARE_FREE;
        log_seg_put(s);
}

static void spare_dir_synced(struct log_io_req *req, int res)
{
        struct log_seg *s = (struct log_seg *)req->buf;
        struct log_partition *p = s->p;
        if (res < 0) {
                spare_opened(req, res);
                return;
        }
        *req = (struct log_io_req){.op = LOG_IO_OPENAT,
                                   .fd = p->dirfd,
                                   .path = p->spares[s->spare_slot].name,
                                   .open_flags = O_RDWR | O_DIRECT,
                                   .buf = s,
                                   .cb = spare_opened};
        log_io_submit(p->o->io, req);
}

/* A deleted segment's file became a spare. If the rename failed, unlink
 * it as retention otherwise would. */
static void recycle_done(struct log_io_req *req, int res)
{
        struct log_seg *s = (struct log_seg *)req->buf;
        struct log_partition *p = s->p;
        struct log_spare *sp = &p->spares[s->spare_slot];
        if (res < 0) {
                s->spare_slot = -1;
                sp->state = LOG_SPARE_FREE;
                req->op = LOG_IO_UNLINK;
                req->cb = unlink_done;
                log_io_submit(p->o->io, req);
                return;
        }
        /* Its new name is made durable before a roll may write to it (a
         * power cut must not bring the old segment's name back over new
         * batches; recovery adopts a spare holding the log's next batches,
         * see log_part_load), then it is opened, so a roll needs no system
         * call before its first write. s->spare_slot stays set until the
         * chain ends (spare_ready). */
        *req = (struct log_io_req){
            .op = LOG_IO_FSYNC, .fd = p->dirfd, .buf = s, .cb = spare_dir_synced};
        log_io_submit(p->o->io, req);
}

static void seg_delete(struct log_partition *p)
{
        struct log_seg *s = p->segs[0];
        memmove(p->segs, p->segs + 1, sizeof(*p->segs) * --p->nsegs);
        p->total_bytes -= s->size;
        if (p->segs[0]->base > p->start_offset)
                p->start_offset = p->segs[0]->base;
        s->deleted = true;
        int slot = spare_find(p, LOG_SPARE_FREE);
        for (int i = 0; i < 3; i++) {
                s->refs++;
                s->unlink_req[i] = (struct log_io_req){.op = LOG_IO_UNLINK,
                                                       .fd = p->dirfd,
                                                       .path = s->unlink_name[i],
                                                       .buf = s,
                                                       .cb = unlink_done};
                if (i == 0 && slot >= 0) {
                        /* keep the data file as a spare (recycling, above) */
                        struct log_spare *sp = &p->spares[slot];
                        sp->state = LOG_SPARE_MOVING;
                        sp->written = log_align_up(s->size, p->align); /* whole blocks */
                        s->spare_slot = (int8_t)slot;
                        s->unlink_req[0].op = LOG_IO_RENAMEAT;
                        s->unlink_req[0].path2 = sp->name;
                        s->unlink_req[0].cb = recycle_done;
                }
        }
        /* The file operations wait for the new start offset to be durable
         * (start_persist) */
        s->doom_next = NULL;
        if (p->doomed_tail)
                p->doomed_tail->doom_next = s;
        else
                p->doomed = s;
        p->doomed_tail = s;
        LOG_STAT_ADD(&p->o->m, segments_deleted, 1);
        s->zombie_next = p->zombies;
        p->zombies = s;
        log_seg_put(s); /* the list's reference */
}

static bool seg_in_wsegs(struct log_partition *p, struct log_seg *s)
{
        for (uint32_t i = 0; i < p->nws; i++)
                if (ws_at(p, i)->seg == s)
                        return true;
        return false;
}

int log_retention_run(struct log_partition *p, uint64_t now_ms)
{
        int n = 0;
        if (p->fenced)
                return 0;
        while (p->nsegs > 1) {
                struct log_seg *s = p->segs[0];
                if (seg_in_wsegs(p, s) || s->refs > 1)
                        break;
                bool by_trim = s->next <= p->start_offset;
                bool by_size = p->cfg.retention_bytes >= 0 &&
                               p->total_bytes - s->size >= (uint64_t)p->cfg.retention_bytes;
                bool by_time = p->cfg.retention_ms >= 0 && s->max_ts >= 0 &&
                               s->max_ts < (int64_t)now_ms - p->cfg.retention_ms;
                if (!by_trim && !by_size && !by_time)
                        break;
                seg_delete(p);
                n++;
        }
        if (n) {
                start_persist(p);
                work_add(p);
        }
        return n;
}

int log_trim(struct log_partition *p, int64_t new_start)
{
        if (p->fenced)
                return -EUCLEAN;
        if (new_start > p->hw)
                return -ERANGE;
        if (new_start <= p->start_offset)
                return 0;
        p->start_offset = new_start;
        /* Whole segments below the new start go (once it is durable); the
         * rest stays until the offset passes them. Retention limits do not
         * apply here. */
        while (p->nsegs > 1 && p->segs[0]->next <= new_start && !seg_in_wsegs(p, p->segs[0]) &&
               p->segs[0]->refs <= 1)
                seg_delete(p);
        start_persist(p);
        work_add(p);
        return 0;
}

/* ---- open / close --------------------------------------------------- */

static void part_free(struct log_partition *p)
{
        sl_dio_free(p->ring, p->cfg.ring_bytes);
        free(p->pend);
        free(p->bdir);
        free(p);
}

int log_partition_open(struct log_owner *o, const char *dir, const struct log_config *cfg,
                       int32_t leader_epoch, struct log_partition **out)
{
        struct log_partition *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->o = o;
        p->cfg = *cfg;
        p->leader_epoch = leader_epoch;
        p->dirfd = p->start_fd = -1;
        snprintf(p->dir, sizeof(p->dir), "%s", dir);
        if (p->cfg.recycle_segments > LOG_RECYCLE_MAX)
                p->cfg.recycle_segments = LOG_RECYCLE_MAX;
        for (int i = 0; i < LOG_RECYCLE_MAX; i++) {
                snprintf(p->spares[i].name, sizeof(p->spares[i].name), "recycle-%d.seg", i);
                p->spares[i].fd = -1;
        }
        if (p->cfg.max_batch_bytes > p->cfg.ring_bytes / 2)
                p->cfg.max_batch_bytes = p->cfg.ring_bytes / 2;
        if (p->cfg.segment_bytes > (1ull << 31))
                p->cfg.segment_bytes = 1ull << 31;
        if (!p->cfg.max_pending)
                p->cfg.max_pending = 1;
        p->pend = calloc(p->cfg.max_pending, sizeof(*p->pend));
        p->bdir_cap = SL_MAX(p->cfg.ring_bytes / 128, 16u);
        p->bdir = calloc(p->bdir_cap, sizeof(*p->bdir));
        if (!p->pend || !p->bdir) {
                part_free(p);
                return -ENOMEM;
        }
        int rc = log_part_load(p);
        if (rc < 0) {
                part_free(p);
                return rc;
        }
        p->all_next = o->all;
        if (o->all)
                o->all->all_prev = p;
        o->all = p;
        *out = p;
        return 0;
}

static void part_detach(struct log_partition *p)
{
        struct log_owner *o = p->o;
        if (p->all_prev)
                p->all_prev->all_next = p->all_next;
        else
                o->all = p->all_next;
        if (p->all_next)
                p->all_next->all_prev = p->all_prev;
        struct log_partition **pp = &o->work;
        while (*pp) {
                if (*pp == p) {
                        *pp = p->work_next;
                        break;
                }
                pp = &(*pp)->work_next;
        }
}

void log_partition_close(struct log_partition *p)
{
        if (!p)
                return;
        SL_ASSERT(!p->nw && !p->sync_inflight);
        /* A clean close leaves a recovery point: the tail's index, written
         * after its data is durable, so the next open scans only past it. */
        struct log_seg *tail = p->nsegs ? p->segs[p->nsegs - 1] : NULL;
        if (tail && tail->size && !p->err && !p->fenced &&
            (p->s_synced >= p->s_written || p->o->io->ops->fsync_now(p->o->io, tail->fd) == 0))
                log_seg_write_index_sync(p, tail, true);
        part_detach(p);
        log_part_unload(p);
        part_free(p);
}

void log_partition_abandon(struct log_partition *p)
{
        if (!p)
                return;
        part_detach(p);
        for (uint32_t i = 0; i < p->nsegs; i++)
                p->segs[i]->refs = 1;
        /* deleted ones whose unlinks the cut dropped */
        while (p->zombies) {
                p->zombies->refs = 1;
                log_seg_put(p->zombies);
        }
        log_part_unload(p);
        part_free(p);
}

int log_partition_resume(struct log_partition *p)
{
        if (!p->err)
                return 0;
        if (p->nw || p->sync_inflight || p->start_inflight)
                return -EBUSY;
        for (uint32_t i = 0; i < p->nsegs; i++)
                if (p->segs[i]->refs > 1)
                        return -EBUSY;
        /* Re-run recovery: it keeps exactly the valid prefix on disk. */
        log_part_unload(p);
        p->err = 0;
        return log_part_load(p);
}

/* Preallocation runs a step ahead of the writes: O_DIRECT writes that
 * extend a file are slow (MACHINE-FACTS), and a whole segment per partition
 * up front would claim segment_bytes x partitions of disk. Steps start at
 * LOG_PREALLOC_FIRST_BYTES and double up to prealloc_bytes: an idle
 * partition claims 1 MiB, not 64 MiB (1,000 of them: 1 GB, not 64 GB), and
 * a busy segment reaches full steps after its first 64 MiB. */
uint64_t log_prealloc_step(const struct log_partition *p, uint64_t alloc_end)
{
        uint64_t max_step = p->cfg.prealloc_bytes ? p->cfg.prealloc_bytes : p->cfg.segment_bytes;
        return SL_MIN(max_step, SL_MAX((uint64_t)LOG_PREALLOC_FIRST_BYTES, alloc_end));
}

/* ext4's fallocate takes the inode lock and waits for every O_DIRECT
 * write in flight on the file to finish (inode_dio_wait); writes issued
 * meanwhile cannot take the lock without blocking, so io_uring punts them
 * to io-wq. Traced (none, 64 x 1 MiB): 17 fallocates per GiB at 64 MiB
 * steps, 12 to 19 ms each with 16 writes in flight, and a third of the
 * writes punted. So a partition appending faster than prealloc_bytes per
 * prealloc_ahead_ms gets steps of prealloc_ahead_ms of its append rate
 * (measured since its last fallocate), at most doubling the file: a few
 * fallocates per second, and the disk it claims ahead is what it fills in
 * that time. */
static uint64_t prealloc_rate_step(const struct log_seg *s, uint64_t step, uint32_t ahead_ms)
{
        if (!ahead_ms || !s->falloc_t_ns || s->size <= s->falloc_size)
                return step;
        uint64_t us = (sl_time_ns() - s->falloc_t_ns) / 1000 + 1;
        uint64_t rate_step = (s->size - s->falloc_size) * ahead_ms * 1000 / us;
        rate_step = SL_MIN(rate_step, SL_MAX(s->alloc_end, (uint64_t)LOG_PREALLOC_FIRST_BYTES));
        return SL_MAX(step, log_align_up(rate_step, LOG_PREALLOC_FIRST_BYTES));
}

void log_seg_prealloc(struct log_partition *p, struct log_seg *s)
{
        uint64_t step = log_prealloc_step(p, s->alloc_end);
        if (!p->cfg.preallocate || s->fd < 0 || s->alloc_inflight ||
            s->alloc_end >= p->cfg.segment_bytes ||
            s->size + zero_window(p) + step / 2 < s->alloc_end)
                return;
        step = prealloc_rate_step(s, step, p->cfg.prealloc_ahead_ms);
        s->falloc_t_ns = sl_time_ns();
        s->falloc_size = s->size;
        s->alloc_inflight = true;
        s->refs++;
        s->falloc_req =
            (struct log_io_req){.op = LOG_IO_FALLOCATE,
                                .fd = s->fd,
                                .off = s->alloc_end,
                                .len = (uint32_t)SL_MIN(step, p->cfg.segment_bytes - s->alloc_end),
                                .cb = log_seg_falloc_done};
        log_io_submit(p->o->io, &s->falloc_req);
}

void log_seg_falloc_done(struct log_io_req *req, int res)
{
        struct log_seg *s = SL_CONTAINER_OF(req, struct log_seg, falloc_req);
        s->alloc_inflight = false;
        /* Without preallocation writes still work, only slower: after a
         * failure (ENOSPC) stop asking for this segment. */
        s->alloc_end = res < 0 ? UINT64_MAX : req->off + req->len;
        log_seg_put(s);
}
