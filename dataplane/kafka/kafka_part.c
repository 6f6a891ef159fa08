/* The owner side of Kafka partitions: each worker opens the logs the topic
 * snapshot places on it, runs appends, reads and offset look-ups for its own
 * requests and for other workers' (over the rings), and holds long-poll
 * waiters for remote fetches. Storage runs on its own io_uring, driven from
 * the worker's poller. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kafka_part.h"
#include "log_crc32c.h"
#include "sl_log.h"

static void owner_exec(struct kafka_worker *kw, struct kafka_pop *p);
static void cache_forget(struct kafka_worker *kw, uint32_t pid, bool dropped);

static int16_t err_map(int rc)
{
        switch (rc) {
        case 0:
                return 0;
        case -EBADMSG:
                return KERR_CORRUPT_MESSAGE;
        case -EMSGSIZE:
                return KERR_MESSAGE_TOO_LARGE;
        case -ERANGE:
                return KERR_OFFSET_OUT_OF_RANGE;
        default:
                return KERR_KAFKA_STORAGE_ERROR;
        }
}

static void queue_push(struct kafka_pop **head, struct kafka_pop **tail, struct kafka_pop *p)
{
        p->next = NULL;
        if (*tail)
                (*tail)->next = p;
        else
                *head = p;
        *tail = p;
}

/* The owner is done with p: answer the requester. */
static void owner_done(struct kafka_worker *kw, struct kafka_pop *p)
{
        if (p->req_ep == kw->w->id) {
                kafka_pop_complete(kw, p);
                return;
        }
        struct sl_msg m = {.type = CTL_KAFKA_MSG_POP, .cookie = (uint64_t)(uintptr_t)p};
        sl_mbox_reply(&kw->w->mb, p->req_ep, &m);
}

static bool pop_send(struct kafka_worker *kw, struct kafka_pop *p, uint16_t dst)
{
        struct sl_msg m = {.cookie = (uint64_t)(uintptr_t)p};
        if (p->op == KAFKA_POP_GROUP) {
                m.type = CTL_KAFKA_MSG_GROUP;
                m.a.ptr[0] = &p->req->gcall;
        } else if (p->op == KAFKA_POP_CREATE || p->op == KAFKA_POP_DELETE) {
                m.type = p->op == KAFKA_POP_CREATE ? CTL_KAFKA_MSG_CREATE : CTL_KAFKA_MSG_DELETE;
                m.a.ptr[0] = (void *)p->batch;
                m.u32 = p->len;
                m.a.i64[1] = p->offset;
                m.a.i64[2] = p->timestamp; /* create: META_TOPIC_* flags */
                m.a.ptr[3] = p->op == KAFKA_POP_CREATE ? (void *)p->topic_cfg : NULL;
        } else {
                m.type = CTL_KAFKA_MSG_POP;
                m.a.ptr[0] = p;
        }
        m.u16 = dst;
        return sl_mbox_request(&kw->w->mb, dst, &m) == 0;
}

void kafka_pop_submit(struct kafka_worker *kw, struct kafka_pop *p, uint16_t dst)
{
        p->req_ep = kw->w->id;
        p->snap_gen = kw->snap ? kw->snap->gen : 0;
        if (dst == kw->w->id) {
                owner_exec(kw, p);
                return;
        }
        if (!pop_send(kw, p, dst)) {
                /* No credit: retried from the poller. Until sent, the
                 * owner-side counter holds the destination. */
                p->appends_pending = dst;
                queue_push(&kw->send_head, &kw->send_tail, p);
        }
}

/* ---- appends ------------------------------------------------------------ */

/* For /metrics (consumer lag): this worker is the partition's only writer. */
static void offsets_publish(const struct kafka_part *kp)
{
        struct ctl_kafka_offsets *o = &ctl_kafka_published[kp->pid];
        atomic_store_explicit(&o->hw, log_high_watermark(kp->log), memory_order_relaxed);
        atomic_store_explicit(&o->end, log_end_offset(kp->log), memory_order_relaxed);
}

static void start_publish(const struct kafka_part *kp)
{
        atomic_store_explicit(&ctl_kafka_published[kp->pid].start, log_start_offset(kp->log),
                              memory_order_relaxed);
}

static void append_cb(void *ctx, int64_t base, int res)
{
        (void)base;
        struct kafka_pop *p = ctx;
        struct kafka_worker *kw = (struct kafka_worker *)p->dest;
        struct kafka_part *kp = p->pid < CTL_KAFKA_PIDS_MAX ? kw->parts[p->pid] : NULL;
        if (kp)
                offsets_publish(kp);
        if (res && kp) /* what failed must never be served from the cache */
                cache_forget(kw, p->pid, false);
        if (res && !p->err)
                p->err = err_map(res);
        if (--p->appends_pending == 0 && p->started)
                owner_done(kw, p);
}

static void put_be64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* LogAppendTime topics: the broker's clock replaces maxTimestamp and the
 * timestamp-type attribute bit says so; the CRC (attributes to the end)
 * is recomputed, after checking the client's, so a corrupt batch is never
 * blessed with a fresh CRC. The batch is the request's frame, lent to the
 * owner until the answer. Returns 0 or -EBADMSG / -EMSGSIZE. */
static int batch_stamp_log_append_time(uint8_t *b, uint32_t len, int64_t now_ms)
{
        int rc = log_batch_validate(b, len, UINT32_MAX);
        if (rc < 0)
                return rc;
        b[22] |= 0x08; /* attributes bit 3: timestamp type = LogAppendTime */
        put_be64(b + 35, (uint64_t)now_ms);
        uint32_t crc = log_crc32c(0, b + 21, len - 21);
        for (int i = 0; i < 4; i++)
                b[17 + i] = (uint8_t)(crc >> (24 - 8 * i));
        return 0;
}

/* Appends the batches of p from done_bytes on. Returns false on -ENOBUFS
 * (p goes on the retry queue). */
static bool append_run(struct kafka_worker *kw, struct kafka_pop *p, struct kafka_part *kp)
{
        p->dest = (uint8_t *)kw; /* for append_cb: the owner's state */
        while (p->done_bytes < p->len && !p->err) {
                const uint8_t *b = p->batch + p->done_bytes;
                uint32_t left = p->len - p->done_bytes;
                if (left < LOG_BATCH_HEADER_BYTES || log_batch_len(b) > left) {
                        p->err = KERR_CORRUPT_MESSAGE;
                        break;
                }
                uint32_t blen = log_batch_len(b);
                int16_t attrs = (int16_t)((uint16_t)b[21] << 8 | b[22]);
                if (attrs & 0x20) { /* control batches are the broker's to write */
                        p->err = KERR_INVALID_RECORD;
                        break;
                }
                int64_t base = -1;
                struct kafka_producer *st = NULL;
                int dup = kafka_producer_check(&kp->producers, b, kw->w->now_ms, &st, &base);
                if (dup == 1) { /* already stored: answer with its offset */
                        if (p->base < 0)
                                p->base = base;
                        p->done_bytes += blen;
                        continue;
                }
                if (dup) {
                        p->err = (int16_t)dup;
                        break;
                }
                if (kp->log_append_time) {
                        if (p->timestamp < 0)
                                p->timestamp = (int64_t)sl_realtime_ms();
                        int src = batch_stamp_log_append_time((uint8_t *)(uintptr_t)b, blen,
                                                              p->timestamp);
                        if (src < 0) {
                                p->err = err_map(src);
                                break;
                        }
                }
                p->appends_pending++;
                int rc = log_append(kp->log, b, blen, append_cb, p, &base);
                if (rc == -ENOBUFS) {
                        p->appends_pending--;
                        return false;
                }
                if (rc) {
                        p->appends_pending--;
                        p->err = err_map(rc);
                        break;
                }
                if (st)
                        kafka_producer_note(st, b, base, kw->w->now_ms);
                /* Recent data stays in memory for consumers that fall
                 * behind the log's window (served only below the HW). */
                kafka_cache_append(&kw->cache, &kp->cache, kp->pid, b, blen, base,
                                   KAFKA_LEADER_EPOCH);
                if (p->base < 0)
                        p->base = base;
                p->done_bytes += blen;
        }
        p->lso = log_start_offset(kp->log);
        p->started = true;
        if (p->appends_pending == 0)
                owner_done(kw, p);
        return true;
}

/* ---- reads ---------------------------------------------------------------- */

/* Copies whole batches from `src` (len bytes of whole batches) to
 * p->dest + p->got: from the batch holding `from`, below hw, up to p->max
 * (KIP-74: the first batch of the answer even when larger; cut at p->cap,
 * as a client skips a partial last batch). Adds to p->got and returns the
 * bytes copied (and where in src they end); 0 when src does not hold
 * `from` or nothing more fits. */
static uint32_t batches_copy(struct kafka_pop *p, int64_t from, const uint8_t *src, uint32_t len,
                             int64_t hw, uint32_t *end)
{
        uint32_t pos = 0, start = UINT32_MAX, got = 0;
        uint32_t max = p->max > p->got ? p->max - p->got : 0;
        uint32_t cap = p->cap - p->got;
        while (pos + LOG_BATCH_HEADER_BYTES <= len) {
                const uint8_t *b = src + pos;
                uint32_t blen = log_batch_len(b);
                int64_t base = log_batch_base_offset(b);
                if (blen < LOG_BATCH_HEADER_BYTES || blen > len - pos || base >= hw)
                        break;
                if (start == UINT32_MAX) {
                        if (base + log_batch_last_delta(b) < from) {
                                pos += blen;
                                continue;
                        }
                        start = pos;
                        /* Past the answer's first batch, a batch is whole
                         * and within max_bytes or not sent. */
                        if (p->got && (blen > max || blen > cap))
                                return 0;
                } else if (got + blen > max || got + blen > cap) {
                        break;
                }
                got += blen;
                pos += blen;
        }
        if (start == UINT32_MAX)
                return 0;
        got = SL_MIN(got, cap);
        if (end)
                *end = start + got;
        memcpy(p->dest + p->got, src + start, got);
        p->got += got;
        return got;
}

/* Data still in the log's memory window goes straight into the response
 * buffer: one copy, no reader, no disk. */
static bool read_from_mem(struct kafka_worker *kw, struct kafka_pop *p, struct kafka_part *kp)
{
        struct log_read lr = {.offset = p->offset,
                              .mem_only = true,
                              .max_bytes = SL_MAX(p->max, 1u),
                              .buf = p->dest,
                              .buf_cap = p->cap};
        int n = log_read_submit(kp->log, &lr);
        if (n == -EAGAIN || n == 0)
                return false;
        if (n < 0) {
                p->err = err_map(n);
        } else {
                p->got = (uint32_t)n;
                if (lr.hw > p->hw)
                        p->hw = lr.hw;
                atomic_fetch_add_explicit(&kw->fetch_reads_mem, 1, memory_order_relaxed);
        }
        owner_done(kw, p);
        return true;
}

static struct kafka_reader *reader_pick(struct kafka_worker *kw);
static void read_cb(struct log_read *lr, int res);
static void read_finish(struct kafka_reader *rd, int res);

/* A reader taken for a disk read: for a fetch (pop) or ahead of one
 * (ahead_pid); the caller fills the read's position and size. */
static void reader_begin(struct kafka_reader *rd, struct kafka_pop *pop, uint32_t ahead_pid)
{
        rd->busy = true;
        rd->pop = pop;
        rd->cache_pid = UINT32_MAX;
        rd->ahead_pid = ahead_pid;
        memset(&rd->lr, 0, sizeof(rd->lr));
        rd->lr.buf = rd->buf;
        rd->lr.buf_cap = rd->cap;
        rd->lr.cb = read_cb;
        rd->lr.ctx = rd;
}

static void reader_submit(struct kafka_part *kp, struct kafka_reader *rd)
{
        int rc = log_read_submit(kp->log, &rd->lr);
        if (rc != 0)
                read_finish(rd, rc); /* answered from memory (bytes) or failed */
}

/* The reader reading ahead from exactly `offset` of partition `pid`; NULL
 * if none. */
static struct kafka_reader *reader_reading(struct kafka_worker *kw, uint32_t pid, int64_t offset)
{
        for (int i = 0; i < KAFKA_READERS; i++) {
                struct kafka_reader *rd = &kw->readers[i];
                if (rd->busy && rd->ahead_pid == pid && rd->ahead_offset == offset)
                        return rd;
        }
        return NULL;
}

/* The cached whole batches of kp holding `offset`: a write-through block
 * (kafka_cache.c), else a reader's cache of a disk read; NULL if neither.
 * hit: the caller answers from it (counted, most recently used). */
static const struct kafka_cview *cache_find(struct kafka_worker *kw, struct kafka_part *kp,
                                            int64_t offset, bool hit)
{
        struct kafka_cblock *b = kafka_cache_find(&kw->cache, &kp->cache, kp->pid, offset, hit);
        if (b)
                return &b->cv;
        for (int i = 0; i < KAFKA_READERS; i++) {
                struct kafka_reader *rd = &kw->readers[i];
                if (!rd->busy && rd->cache_pid == kp->pid && rd->cv.first <= offset &&
                    offset <= rd->cv.last) {
                        if (hit)
                                rd->cv.used = ++kw->read_clock;
                        return &rd->cv;
                }
        }
        return NULL;
}

/* A free reader for a read-ahead of partition pid whose consumer is at
 * `offset`: never one caching what that consumer has still to read (it
 * would be read again), else as reader_pick. */
static struct kafka_reader *reader_pick_ahead(struct kafka_worker *kw, uint32_t pid, int64_t offset)
{
        struct kafka_reader *rd = NULL;
        uint32_t free_readers = 0;
        for (int i = 0; i < KAFKA_READERS; i++) {
                struct kafka_reader *c = &kw->readers[i];
                if (c->busy)
                        continue;
                free_readers++;
                if (c->cache_pid == pid && c->cv.last >= offset)
                        continue;
                if (!rd || (rd->cache_pid != UINT32_MAX &&
                            (c->cache_pid == UINT32_MAX || c->cv.used < rd->cv.used)))
                        rd = c;
        }
        /* Only with a second reader free, so read-ahead never takes the
         * last reader from a fetch. */
        return free_readers >= 2 ? rd : NULL;
}

/* Sequential consumers: while a consumer reads a partition from a cache,
 * the next KAFKA_READ_AHEAD_DEPTH ranges after it are read (or being read),
 * so its next fetches find them in memory instead of waiting for the disk:
 * one 4 MiB read takes longer than the few fetches a consumer needs to go
 * through a cache (measured: most cache changes waited for the read when
 * the read started only in the cache's second half). */
static void read_ahead(struct kafka_worker *kw, struct kafka_part *kp,
                       const struct kafka_cview *from, const struct kafka_pop *p)
{
        int64_t hw = log_high_watermark(kp->log);
        int64_t next = from->last + 1;
        for (int depth = 0; depth < KAFKA_READ_AHEAD_DEPTH; depth++) {
                if (next >= hw)
                        return;
                if (reader_reading(kw, p->pid, next))
                        return; /* being read: where it ends is not known yet */
                const struct kafka_cview *have = cache_find(kw, kp, next, false);
                if (have) {
                        next = have->last + 1;
                        continue;
                }
                struct kafka_reader *rd = reader_pick_ahead(kw, p->pid, p->offset);
                if (!rd)
                        return;
                reader_begin(rd, NULL, p->pid);
                rd->ahead_offset = next;
                atomic_fetch_add_explicit(&kw->fetch_reads_ahead, 1, memory_order_relaxed);
                rd->lr.offset = next;
                rd->lr.max_bytes = rd->cap;
                reader_submit(kp, rd);
                return;
        }
}

/* A fetch for exactly where a read-ahead in flight starts waits for it. */
static bool read_join_ahead(struct kafka_worker *kw, struct kafka_pop *p)
{
        struct kafka_reader *rd = reader_reading(kw, p->pid, p->offset);
        if (!rd || rd->pop)
                return false;
        rd->pop = p;
        return true;
}

/* Answers from the caches: the one holding p->offset, then, while the
 * answer has room, the caches that continue it, so a cache's end does not
 * cut an answer short (one more round trip per cache otherwise). */
static bool read_from_cache(struct kafka_worker *kw, struct kafka_pop *p, struct kafka_part *kp)
{
        const struct kafka_cview *cv = cache_find(kw, kp, p->offset, true);
        uint32_t end = 0;
        if (!cv || !batches_copy(p, p->offset, cv->data, cv->len, p->hw, &end))
                return false;
        atomic_fetch_add_explicit(&kw->fetch_reads_cache, 1, memory_order_relaxed);
        const struct kafka_cview *last = cv;
        while (end == last->len && p->got < SL_MIN(p->max, p->cap)) {
                const struct kafka_cview *nx = cache_find(kw, kp, last->last + 1, true);
                if (!nx || !batches_copy(p, last->last + 1, nx->data, nx->len, p->hw, &end))
                        break;
                last = nx;
        }
        read_ahead(kw, kp, last, p);
        owner_done(kw, p);
        return true;
}

/* The partition's cached data is no longer valid (dropped: its blocks'
 * memory goes back; failed: kept for reuse). */
static void cache_forget(struct kafka_worker *kw, uint32_t pid, bool dropped)
{
        struct kafka_part *kp = pid < CTL_KAFKA_PIDS_MAX ? kw->parts[pid] : NULL;
        kafka_cache_forget(&kw->cache, kp ? &kp->cache : NULL, pid, dropped);
        for (int i = 0; i < KAFKA_READERS; i++) {
                if (kw->readers[i].cache_pid == pid)
                        kw->readers[i].cache_pid = UINT32_MAX;
                if (kw->readers[i].ahead_pid == pid) /* in flight: kept by nobody */
                        kw->readers[i].ahead_pid = UINT32_MAX;
        }
}

/* Keeps the whole batches a disk read returned as the partition's cache. */
static void cache_keep(struct kafka_worker *kw, struct kafka_reader *rd, uint32_t pid)
{
        const uint8_t *d = rd->buf + rd->lr.data_off;
        uint32_t n = rd->lr.data_len;
        if (n < LOG_BATCH_HEADER_BYTES)
                return;
        uint32_t last = 0;
        for (uint32_t pos = 0; pos + LOG_BATCH_HEADER_BYTES <= n; pos += log_batch_len(d + pos))
                last = pos;
        rd->cache_pid = pid;
        rd->cv.data = d;
        rd->cv.len = n;
        rd->cv.first = log_batch_base_offset(d);
        rd->cv.last = log_batch_base_offset(d + last) + log_batch_last_delta(d + last);
        rd->cv.used = ++kw->read_clock;
}

static void read_finish(struct kafka_reader *rd, int res)
{
        struct kafka_pop *p = rd->pop;
        struct kafka_worker *kw = rd->kw;
        uint32_t ahead_pid = rd->ahead_pid;
        rd->ahead_pid = UINT32_MAX;
        if (!p) { /* a read-ahead no fetch has joined yet */
                rd->busy = false;
                if (res > 0 && ahead_pid < CTL_KAFKA_PIDS_MAX && kw->parts[ahead_pid])
                        cache_keep(kw, rd, ahead_pid);
                return;
        }
        if (res < 0) {
                if (p->op == KAFKA_POP_OFFSET) {
                        p->base = -1; /* no batch at or after that timestamp */
                        p->hw = -1;
                } else {
                        p->err = err_map(res);
                }
        } else if (p->op == KAFKA_POP_OFFSET) {
                p->base = rd->lr.offset_found;
                p->hw = p->timestamp;
        } else {
                const uint8_t *d = rd->buf + rd->lr.data_off;
                uint32_t n = rd->lr.data_len;
                if (rd->lr.hw > p->hw)
                        p->hw = rd->lr.hw;
                p->got = 0;
                batches_copy(p, p->offset, d, n, p->hw, NULL);
                atomic_fetch_add_explicit(&kw->fetch_reads_disk, 1, memory_order_relaxed);
                /* Keep what was read ahead for the next fetches. */
                cache_keep(kw, rd, p->pid);
        }
        rd->busy = false;
        rd->pop = NULL;
        struct kafka_part *kp = p->pid < CTL_KAFKA_PIDS_MAX ? kw->parts[p->pid] : NULL;
        if (kp && res > 0 && p->op != KAFKA_POP_OFFSET && rd->cache_pid == p->pid)
                read_ahead(kw, kp, &rd->cv, p); /* the consumer is reading this cache now */
        owner_done(kw, p);
}

static void read_cb(struct log_read *lr, int res)
{
        read_finish(lr->ctx, res);
}

/* A free reader, preferring one caching nothing, then the least recently
 * used cache. */
static struct kafka_reader *reader_pick(struct kafka_worker *kw)
{
        struct kafka_reader *rd = NULL;
        for (int i = 0; i < KAFKA_READERS; i++) {
                struct kafka_reader *c = &kw->readers[i];
                if (c->busy)
                        continue;
                if (c->cache_pid == UINT32_MAX)
                        return c;
                if (!rd || c->cv.used < rd->cv.used)
                        rd = c;
        }
        return rd;
}

static bool read_run(struct kafka_worker *kw, struct kafka_pop *p, struct kafka_part *kp)
{
        struct kafka_reader *rd = reader_pick(kw);
        if (!rd)
                return false;
        reader_begin(rd, p, UINT32_MAX);
        rd->lr.by_time = p->op == KAFKA_POP_OFFSET;
        rd->lr.offset = p->offset;
        rd->lr.timestamp = p->timestamp;
        /* Read ahead: the whole buffer's worth of batches (storage caps the
         * read at buf_cap); batches_copy takes what this fetch may have. */
        rd->lr.max_bytes = rd->lr.by_time ? 1 : rd->cap;
        reader_submit(kp, rd);
        return true;
}

static void owner_exec(struct kafka_worker *kw, struct kafka_pop *p)
{
        struct kafka_part *kp = p->pid < CTL_KAFKA_PIDS_MAX ? kw->parts[p->pid] : NULL;
        if (!kp && (!kw->snap || kw->snap->gen < p->snap_gen)) {
                /* Routed by a newer topic snapshot than this worker has
                 * applied (just after start or a topic change): the
                 * partition is about to open here, so wait for it rather
                 * than call it unknown. Retried from the poller. */
                queue_push(&kw->retry_head, &kw->retry_tail, p);
                return;
        }
        if (!kp) {
                p->err = KERR_NOT_LEADER;
                owner_done(kw, p);
                return;
        }
        switch (p->op) {
        case KAFKA_POP_APPEND:
                /* Behind a retried append: keep the order (sequences). */
                if (kw->retry_head || !append_run(kw, p, kp))
                        queue_push(&kw->retry_head, &kw->retry_tail, p);
                return;
        case KAFKA_POP_READ: {
                p->hw = log_high_watermark(kp->log);
                p->lso = log_start_offset(kp->log);
                if (p->offset == p->hw || p->max == 0 || !p->dest) {
                        owner_done(kw, p);
                        return;
                }
                if (p->offset < p->lso || p->offset > p->hw) {
                        p->err = KERR_OFFSET_OUT_OF_RANGE;
                        owner_done(kw, p);
                        return;
                }
                if (log_partition_state(kp->log) != 0)
                        cache_forget(kw, p->pid, false);
                if (read_from_mem(kw, p, kp) || read_from_cache(kw, p, kp) ||
                    read_join_ahead(kw, p))
                        return;
                if (!read_run(kw, p, kp))
                        queue_push(&kw->retry_head, &kw->retry_tail, p);
                return;
        }
        case KAFKA_POP_OFFSET:
                if (p->timestamp == -1 || p->timestamp == -2 || p->timestamp == -3) {
                        p->base = p->timestamp == -2 ? log_start_offset(kp->log)
                                                     : log_high_watermark(kp->log);
                        p->hw = -1; /* the timestamp field of the answer */
                        owner_done(kw, p);
                        return;
                }
                if (!read_run(kw, p, kp))
                        queue_push(&kw->retry_head, &kw->retry_tail, p);
                return;
        default:
                p->err = KERR_INVALID_REQUEST;
                owner_done(kw, p);
        }
}

/* ---- remote long-poll waiters ------------------------------------------- */

static void waiter_reply(struct kafka_worker *kw, struct kafka_waiter *wt)
{
        struct sl_msg m = {.type = CTL_KAFKA_MSG_WAIT, .cookie = wt->cookie};
        m.a.u64[3] = wt->token;
        sl_mbox_reply(&kw->w->mb, wt->req_ep, &m);
        wt->active = false;
        wt->next_free = kw->free_waiters;
        kw->free_waiters = wt;
}

static void waiter_cb(struct log_wait *lw, int64_t hw)
{
        (void)hw;
        struct kafka_waiter *wt = lw->ctx;
        waiter_reply(wt->kw, wt);
}

static void on_wait(struct kafka_worker *kw, const struct sl_msg *m)
{
        struct kafka_waiter *wt = kw->free_waiters;
        uint32_t pid = (uint32_t)m->a.u64[0];
        struct kafka_part *kp = pid < CTL_KAFKA_PIDS_MAX ? kw->parts[pid] : NULL;
        if (!wt || !kp) {
                struct sl_msg r = {.type = CTL_KAFKA_MSG_WAIT, .cookie = m->cookie};
                r.a.u64[3] = m->a.u64[3];
                sl_mbox_reply(&kw->w->mb, m->src, &r);
                return;
        }
        kw->free_waiters = wt->next_free;
        wt->active = true;
        wt->kw = kw;
        wt->pid = pid;
        wt->req_ep = m->src;
        wt->cookie = m->cookie;
        wt->token = m->a.u64[3];
        wt->deadline_ms = m->a.u64[2];
        wt->lw = (struct log_wait){.offset = m->a.i64[1], .cb = waiter_cb, .ctx = wt};
        if (log_wait_add(kp->log, &wt->lw) == 1)
                waiter_reply(kw, wt);
}

static uint32_t waiters_expire(struct kafka_worker *kw)
{
        uint32_t n = 0;
        for (uint32_t i = 0; i < KAFKA_WAITERS; i++) {
                struct kafka_waiter *wt = &kw->waiters[i];
                if (!wt->active || wt->deadline_ms > kw->w->now_ms)
                        continue;
                struct kafka_part *kp = kw->parts[wt->pid];
                if (kp)
                        log_wait_cancel(kp->log, &wt->lw);
                waiter_reply(kw, wt);
                n++;
        }
        return n;
}

/* ---- snapshots ----------------------------------------------------------- */

/* A deleted topic's partition leaves this worker: waits on it are answered
 * (their fetches re-read and find it gone), its I/O is drained, and the log
 * is dropped without writing (its directory is removed next). */
static void part_drop(struct kafka_worker *kw, uint32_t pid)
{
        struct kafka_part *kp = kw->parts[pid];
        for (uint32_t i = 0; i < KAFKA_WAITERS; i++) {
                struct kafka_waiter *wt = &kw->waiters[i];
                if (wt->active && wt->pid == pid) {
                        log_wait_cancel(kp->log, &wt->lw);
                        waiter_reply(kw, wt);
                }
        }
        for (uint32_t i = 0; i < KAFKA_REQS_PER_WORKER; i++) {
                struct kafka_req *r = &kw->reqs[i];
                if (r->state != KAFKA_REQ_RUNNING || !r->waiting)
                        continue;
                for (uint32_t j = 0; j < r->npops; j++)
                        if (r->pops[j].lw_on && r->pops[j].pid == pid) {
                                log_wait_cancel(kp->log, &r->pops[j].lw);
                                r->pops[j].lw_on = false;
                        }
        }
        kw->parts[pid] = NULL;
        log_owner_drain(kw->owner); /* read-aheads finish, and cache nothing of it */
        cache_forget(kw, pid, true);
        log_partition_abandon(kp->log);
        free(kp);
}

struct replay_ctx {
        struct kafka_part *kp;
        uint64_t now_ms;
};

static void replay_visit(void *ctx, const uint8_t *hdr, int64_t base)
{
        struct replay_ctx *rc = ctx;
        kafka_producer_replay(&rc->kp->producers, hdr, base, rc->now_ms);
}

/* A retried batch after a restart must still be a duplicate: the producer
 * state is rebuilt from the batch headers of the log tail. */
static void producers_rebuild(struct kafka_worker *kw, struct kafka_part *kp, const char *topic,
                              uint32_t part)
{
        struct replay_ctx rc = {.kp = kp, .now_ms = kw->w->now_ms};
        int n = log_tail_scan(kp->log, KAFKA_PRODUCER_SCAN_BYTES, replay_visit, &rc);
        if (n < 0)
                SL_ERR("kafka: %s-%u: producer state not rebuilt: %s", topic, part, strerror(-n));
}

static void snap_apply(struct kafka_worker *kw, const struct ctl_kafka_snap *s)
{
        static _Thread_local bool live[CTL_KAFKA_PIDS_MAX];
        memset(live, 0, sizeof(live));
        for (uint32_t i = 0; s && i < s->ntopics; i++)
                for (uint32_t p = 0; p < s->topics[i].nparts; p++)
                        if (s->topics[i].parts[p].pid < CTL_KAFKA_PIDS_MAX)
                                live[s->topics[i].parts[p].pid] = true;
        for (uint32_t pid = 0; pid < CTL_KAFKA_PIDS_MAX; pid++)
                if (kw->parts[pid] && !live[pid])
                        part_drop(kw, pid);
        kw->snap = s;
        for (uint32_t i = 0; s && i < s->ntopics; i++) {
                const struct ctl_kafka_topic *t = &s->topics[i];
                for (uint32_t p = 0; p < t->nparts; p++) {
                        const struct ctl_kafka_part *cp = &t->parts[p];
                        if (cp->worker != kw->w->id || cp->pid >= CTL_KAFKA_PIDS_MAX ||
                            kw->parts[cp->pid])
                                continue;
                        struct meta_topic mt;
                        memcpy(mt.uuid, t->uuid, 16);
                        char name[64], dir[CTL_PATH_MAX + 128];
                        meta_partition_dirname(&mt, p, name, sizeof(name));
                        snprintf(dir, sizeof(dir), "%s/topics/%s", kw->data_dir, name);
                        struct kafka_part *kp = calloc(1, sizeof(*kp));
                        struct log_partition *lp = NULL;
                        int rc = kp ? log_partition_open(kw->owner, dir, &t->cfg,
                                                         KAFKA_LEADER_EPOCH, &lp)
                                    : -ENOMEM;
                        if (rc) {
                                SL_ERR("kafka: cannot open partition %s-%u in %s: %s", t->name, p,
                                       dir, strerror(-rc));
                                free(kp);
                                continue;
                        }
                        kp->log = lp;
                        kp->pid = cp->pid;
                        kafka_producers_init(&kp->producers, kw->producer_expiry_ms);
                        kp->log_append_time = t->log_append_time;
                        kafka_cache_part_init(&kp->cache);
                        offsets_publish(kp);
                        start_publish(kp);
                        producers_rebuild(kw, kp, t->name, p);
                        kw->parts[cp->pid] = kp;
                }
        }
}

void kafka_part_msg(struct sl_worker *w, const struct sl_msg *m)
{
        struct kafka_worker *kw = kafka_kw(w);
        bool req = m->flags & SL_MSG_F_REQUEST;
        if (!kw) {
                if (req) {
                        struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                        sl_mbox_reply(&w->mb, m->src, &r);
                }
                return;
        }
        switch (m->type) {
        case CTL_KAFKA_MSG_SNAP: {
                snap_apply(kw, m->a.ptr[0]);
                struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                sl_mbox_reply(&w->mb, m->src, &r);
                return;
        }
        case CTL_KAFKA_MSG_DELETE:
        case CTL_KAFKA_MSG_CREATE: {
                struct kafka_pop *p = (struct kafka_pop *)(uintptr_t)m->cookie;
                p->err = (int16_t)(uint16_t)m->u32;
                kafka_pop_complete(kw, p);
                return;
        }
        case CTL_KAFKA_MSG_GROUP: {
                struct kafka_pop *p = (struct kafka_pop *)(uintptr_t)m->cookie;
                kafka_pop_complete(kw, p);
                return;
        }
        case CTL_KAFKA_MSG_POP: {
                struct kafka_pop *p = (struct kafka_pop *)(uintptr_t)m->cookie;
                if (req)
                        owner_exec(kw, p);
                else
                        kafka_pop_complete(kw, p);
                return;
        }
        case CTL_KAFKA_MSG_WAIT:
                if (req) {
                        on_wait(kw, m);
                } else {
                        struct kafka_req *r = (struct kafka_req *)(uintptr_t)m->cookie;
                        if (r->state == KAFKA_REQ_RUNNING && r->waiting &&
                            r->wait_token == m->a.u64[3])
                                kafka_fetch_wake(kw, r);
                }
                return;
        default:
                if (req) {
                        struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                        sl_mbox_reply(&w->mb, m->src, &r);
                }
        }
}

/* ---- poll, init ---------------------------------------------------------- */

/* Retention (Kafka's log.retention.check.interval.ms): every partition of
 * this worker drops the whole segments its retention.ms / retention.bytes
 * no longer keeps, and publishes its new start for /metrics. A check is a
 * few comparisons per partition, the deletes go through the log's io_uring
 * (storage's unlink requests): no system call here, never per message.
 * Returns the segments deleted. */
static uint32_t retention_check(struct kafka_worker *kw)
{
        kw->retention_next_ms = kw->w->now_ms + kw->retention_interval_ms;
        uint64_t wall_ms = sl_realtime_ms(); /* retention.ms is against record timestamps */
        uint32_t deleted = 0;
        for (uint32_t pid = 0; pid < CTL_KAFKA_PIDS_MAX; pid++) {
                struct kafka_part *kp = kw->parts[pid];
                if (!kp)
                        continue;
                int n = log_retention_run(kp->log, wall_ms);
                if (n > 0)
                        deleted += (uint32_t)n;
                start_publish(kp);
        }
        return deleted;
}

uint32_t kafka_part_poll(struct kafka_worker *kw)
{
        uint32_t work = 0;
        int n = log_owner_poll(kw->owner);
        if (n > 0)
                work += (uint32_t)n;
        /* Owner retries (staging ring full, no free reader): once per step. */
        struct kafka_pop *list = kw->retry_head;
        kw->retry_head = kw->retry_tail = NULL;
        while (list) {
                struct kafka_pop *p = list;
                list = p->next;
                owner_exec(kw, p);
                work++;
        }
        /* Requester: sends that found no credit. */
        list = kw->send_head;
        kw->send_head = kw->send_tail = NULL;
        while (list) {
                struct kafka_pop *p = list;
                list = p->next;
                uint16_t dst = (uint16_t)p->appends_pending;
                if (pop_send(kw, p, dst)) {
                        p->appends_pending = 0;
                        work++;
                } else {
                        queue_push(&kw->send_head, &kw->send_tail, p);
                }
        }
        static _Thread_local uint64_t last_scan_ms;
        if (kw->w->now_ms - last_scan_ms >= 10) {
                last_scan_ms = kw->w->now_ms;
                work += waiters_expire(kw);
        }
        if (kw->w->now_ms >= kw->retention_next_ms)
                work += retention_check(kw);
        /* Storage I/O in flight is not work: its completions wake us. */
        if (log_owner_ready(kw->owner) || kw->retry_head || kw->send_head)
                work++;
        return work;
}

/* A cached block whose partition is gone or whose data retention removed
 * (the log starts after it) is reused before any live one. */
static bool cache_dead(void *ctx, uint32_t pid, int64_t last)
{
        struct kafka_worker *kw = ctx;
        struct kafka_part *kp = pid < CTL_KAFKA_PIDS_MAX ? kw->parts[pid] : NULL;
        return !kp || last < log_start_offset(kp->log);
}

/* [kafka] cache_bytes, "auto": an eighth of the RAM shared by the workers,
 * at most 1 GiB each (Redpanda's batch cache is also a share of memory). */
static uint64_t cache_budget(const struct ctl_config *cfg)
{
        if (cfg->kafka_cache_bytes != CTL_KAFKA_CACHE_AUTO)
                return cfg->kafka_cache_bytes;
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
        return SL_MIN(ram / 8 / SL_MAX(cfg->worker_count, 1u), 1ull << 30);
}

int kafka_part_init(struct kafka_worker *kw)
{
        uint64_t budget = cache_budget(kw->w->cfg);
        if (kafka_cache_init(&kw->cache, budget, cache_dead, kw) != 0)
                return -ENOMEM;
        kw->io = log_io_uring_create(NULL, 256, 0);
        if (!kw->io)
                return -ENOMEM;
        kw->owner = log_owner_create(kw->io);
        if (!kw->owner)
                return -ENOMEM;
        /* Completions wake the worker, so it sleeps while I/O is in flight;
         * without this it keeps polling until the I/O is done. */
        if (log_io_notify(kw->io, kw->w->mb.wake->eventfd) != 0)
                SL_WARN("worker %u: storage completions cannot wake it; it polls instead",
                        kw->w->id);
        /* Room for the largest batch past the read-ahead, plus the sparse
         * index's slack at both ends. */
        uint32_t cap =
            SL_MAX(kw->w->pool.bytes[SL_BUF_LARGE], KAFKA_READ_AHEAD_BYTES) + (64u << 10);
        for (int i = 0; i < KAFKA_READERS; i++) {
                kw->readers[i].kw = kw;
                kw->readers[i].cache_pid = UINT32_MAX;
                kw->readers[i].ahead_pid = UINT32_MAX;
                kw->readers[i].cap = cap;
                kw->readers[i].buf = aligned_alloc(4096, SL_ALIGN_UP(cap, 4096u));
                if (!kw->readers[i].buf)
                        return -ENOMEM;
        }
        for (uint32_t i = KAFKA_WAITERS; i-- > 0;) {
                kw->waiters[i].next_free = kw->free_waiters;
                kw->free_waiters = &kw->waiters[i];
        }
        return 0;
}

void kafka_part_fini(struct kafka_worker *kw)
{
        if (kw->owner) {
                log_owner_drain(kw->owner);
                for (uint32_t i = 0; i < CTL_KAFKA_PIDS_MAX; i++) {
                        if (!kw->parts[i])
                                continue;
                        log_partition_close(kw->parts[i]->log);
                        free(kw->parts[i]);
                        kw->parts[i] = NULL;
                }
                log_owner_destroy(kw->owner);
        }
        if (kw->io)
                kw->io->ops->destroy(kw->io);
        for (int i = 0; i < KAFKA_READERS; i++)
                free(kw->readers[i].buf);
        kafka_cache_fini(&kw->cache);
}
