/* The partition log's cold half: open and recovery (scan and truncate the
 * tail segment, zero what lies beyond, load or rebuild indexes, fence a
 * partition damaged beyond its tail), segment objects and index files.
 * Runs synchronously at open, before the partition serves anything. */
#include "log_internal.h"
#include "log_crc32c.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

#define IDX_END UINT32_MAX

/* ---- segments ------------------------------------------------------- */

struct log_seg *log_seg_new(struct log_partition *p, int64_t base)
{
        struct log_seg *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->p = p;
        s->base = s->next = base;
        s->fd = s->ix_fd[0] = s->ix_fd[1] = -1;
        s->spare_slot = -1;
        s->max_ts = -1;
        s->refs = 1;
        snprintf(s->name, sizeof(s->name), "%020lld", (long long)base);
        snprintf(s->unlink_name[0], sizeof(s->unlink_name[0]), "%s.log", s->name);
        snprintf(s->unlink_name[1], sizeof(s->unlink_name[1]), "%s.index", s->name);
        snprintf(s->unlink_name[2], sizeof(s->unlink_name[2]), "%s.timeindex", s->name);
        /* The first entry (offset base at position 0) must always exist:
         * lookups below every other entry answer position 0 from it. */
        if (log_seg_idx_reserve(s, LOG_IDX_CHUNK / 2) < 0) {
                free(s->idx_chunk);
                free(s);
                return NULL;
        }
        return s;
}

void log_seg_put(struct log_seg *s)
{
        SL_ASSERT(s->refs > 0);
        if (--s->refs)
                return;
        if (s->deleted) {
                struct log_seg **pp = &s->p->zombies;
                while (*pp && *pp != s)
                        pp = &(*pp)->zombie_next;
                if (*pp)
                        *pp = s->zombie_next;
        }
        if (s->fd >= 0)
                close(s->fd);
        for (int i = 0; i < 2; i++) {
                if (s->ix_fd[i] >= 0)
                        close(s->ix_fd[i]);
                free(s->ix_buf[i]);
        }
        for (uint32_t i = 0; i < s->nchunks; i++)
                free(s->idx_chunk[i]);
        free(s->idx_chunk);
        free(s);
}

int log_seg_idx_reserve(struct log_seg *s, uint32_t room)
{
        while ((uint64_t)s->nchunks * LOG_IDX_CHUNK < (uint64_t)s->nidx + room) {
                if (s->nchunks == s->chunks_cap) {
                        /* pointers only: a few hundred bytes per segment */
                        uint32_t cap = s->chunks_cap ? s->chunks_cap * 2 : 4;
                        struct log_idx **n = realloc(s->idx_chunk, sizeof(*n) * cap);
                        if (!n)
                                return -ENOMEM;
                        s->idx_chunk = n;
                        s->chunks_cap = cap;
                }
                struct log_idx *c = malloc(sizeof(*c) * LOG_IDX_CHUNK);
                if (!c)
                        return -ENOMEM;
                s->idx_chunk[s->nchunks++] = c;
        }
        return 0;
}

int log_seg_idx_push(struct log_seg *s, uint32_t rel, uint32_t pos, int64_t ts_before)
{
        int rc = log_seg_idx_reserve(s, 1);
        if (rc < 0)
                return rc;
        *log_seg_idx(s, s->nidx++) =
            (struct log_idx){.rel = rel, .pos = pos, .ts_before = ts_before};
        return 0;
}

int log_segs_push(struct log_partition *p, struct log_seg *s)
{
        if (p->nsegs == p->segs_cap) {
                uint32_t cap = p->segs_cap ? p->segs_cap * 2 : 16;
                struct log_seg **n = realloc(p->segs, sizeof(*n) * cap);
                if (!n)
                        return -ENOMEM;
                p->segs = n;
                p->segs_cap = cap;
        }
        p->segs[p->nsegs++] = s;
        return 0;
}

/* ---- index files ---------------------------------------------------- */
/* .index: (rel u32, pos u32) per entry, then (IDX_END, size).
 * .timeindex: (ts_before i64, rel u32) per entry, then (max_ts, next rel).
 * Both little-endian. They are hints rebuilt from the log when missing or
 * inconsistent, so they are written without an fsync. */

/* What an index file describes: the segment up to `size` bytes, holding
 * offsets below `next`. For a recovery point that is less than the whole
 * segment. */
struct ix_cut {
        uint64_t size;
        int64_t next, max_ts;
};

static size_t idx_encode(const struct log_seg *s, const struct ix_cut *c, int which, uint8_t **out)
{
        uint32_t k = 0;
        while (k < s->nidx && log_seg_idx(s, k)->pos < c->size)
                k++;
        size_t esz = which == 0 ? 8 : 12, n = (size_t)k + 1;
        uint8_t *b = malloc(esz * n);
        if (!b)
                return 0;
        for (size_t i = 0; i <= k; i++) {
                uint8_t *e = b + i * esz;
                bool end = i == k;
                const struct log_idx *x = end ? NULL : log_seg_idx(s, (uint32_t)i);
                uint32_t rel = end ? IDX_END : x->rel;
                if (which == 0) {
                        uint32_t pos = end ? (uint32_t)c->size : x->pos;
                        memcpy(e, &rel, 4);
                        memcpy(e + 4, &pos, 4);
                } else {
                        int64_t ts = end ? c->max_ts : x->ts_before;
                        uint32_t r = end ? (uint32_t)(c->next - s->base) : rel;
                        memcpy(e, &ts, 8);
                        memcpy(e + 8, &r, 4);
                }
        }
        *out = b;
        return esz * n;
}

/* An index file is an async openat, then one write from ix_buf (req->buf
 * and req->len carry it across). A failure anywhere only loses the file:
 * a lost index is rebuilt at open. */
static void ix_step(struct log_seg *s, int i, struct log_io_req *req, int res)
{
        if (req->op == LOG_IO_OPENAT && res >= 0) {
                s->ix_fd[i] = res;
                *req = (struct log_io_req){.op = LOG_IO_WRITE,
                                           .fd = res,
                                           .buf = req->buf,
                                           .len = req->len,
                                           .off = 0,
                                           .cb = req->cb};
                log_io_submit(s->p->o->io, req);
                return;
        }
        if (s->ix_fd[i] >= 0)
                close(s->ix_fd[i]);
        s->ix_fd[i] = -1;
        free(s->ix_buf[i]);
        s->ix_buf[i] = NULL;
        if (s->ix_full_pending && !s->ix_buf[0] && !s->ix_buf[1]) {
                /* before the put below: the new write holds its own refs */
                s->ix_full_pending = false;
                if (!s->deleted)
                        log_seg_write_index(s->p, s);
        }
        log_seg_put(s);
}

static void ix0_step(struct log_io_req *req, int res)
{
        ix_step(SL_CONTAINER_OF(req, struct log_seg, ix_req[0]), 0, req, res);
}

static void ix1_step(struct log_io_req *req, int res)
{
        ix_step(SL_CONTAINER_OF(req, struct log_seg, ix_req[1]), 1, req, res);
}

/* Both files of one index, or -EBUSY while the last ones are in flight (a
 * later write of the same file must not race it), or -ENOMEM. */
static int write_index_async(struct log_partition *p, struct log_seg *s, const struct ix_cut *c)
{
        struct log_io *io = p->o->io;
        if (s->ix_buf[0] || s->ix_buf[1])
                return -EBUSY;
        int rc = 0;
        for (int i = 0; i < 2; i++) {
                uint8_t *b;
                size_t n = idx_encode(s, c, i, &b);
                if (!n) {
                        rc = -ENOMEM; /* a lost index is rebuilt at open */
                        continue;
                }
                s->ix_buf[i] = b;
                s->refs++;
                /* no openat on the worker: the create runs in the ring too */
                s->ix_req[i] = (struct log_io_req){.op = LOG_IO_OPENAT,
                                                   .fd = p->dirfd,
                                                   .path = s->unlink_name[i + 1],
                                                   .open_flags = O_WRONLY | O_CREAT | O_TRUNC,
                                                   .open_mode = 0644,
                                                   .buf = b,
                                                   .len = (uint32_t)n,
                                                   .cb = i == 0 ? ix0_step : ix1_step};
                log_io_submit(io, &s->ix_req[i]);
        }
        return rc;
}

void log_seg_write_index(struct log_partition *p, struct log_seg *s)
{
        struct ix_cut c = {.size = s->size, .next = s->next, .max_ts = s->max_ts};
        if (write_index_async(p, s, &c) == -EBUSY)
                s->ix_full_pending = true; /* ix_step writes it next */
}

/* A recovery point for the tail: everything up to `size` (a batch boundary
 * covered by a completed fdatasync) is durable. max_ts is the segment's so
 * far, an upper bound. */
int log_seg_write_rp(struct log_partition *p, struct log_seg *s, uint64_t size, int64_t next)
{
        struct ix_cut c = {.size = size, .next = next, .max_ts = s->max_ts};
        return write_index_async(p, s, &c);
}

static int read_file(int dirfd, const char *name, uint8_t **out, size_t *len)
{
        int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_size > (64 << 20)) {
                close(fd);
                return -EINVAL;
        }
        uint8_t *b = malloc((size_t)st.st_size + 1);
        ssize_t n = b ? pread(fd, b, (size_t)st.st_size, 0) : -1;
        close(fd);
        if (n != st.st_size) {
                free(b);
                return -EIO;
        }
        *out = b;
        *len = (size_t)n;
        return 0;
}

/* Load a sealed segment's indexes; false when missing or inconsistent. */
static bool idx_load(struct log_partition *p, struct log_seg *s)
{
        uint8_t *a = NULL, *t = NULL;
        size_t alen, tlen;
        bool ok = false;
        if (read_file(p->dirfd, s->unlink_name[1], &a, &alen) < 0 ||
            read_file(p->dirfd, s->unlink_name[2], &t, &tlen) < 0)
                goto out;
        if (alen % 8 || tlen % 12 || alen / 8 != tlen / 12 || alen < 16)
                goto out;
        size_t n = alen / 8 - 1;
        uint32_t rel, pos, trel, size, next_rel;
        int64_t ts, max_ts;
        memcpy(&rel, a + n * 8, 4);
        memcpy(&size, a + n * 8 + 4, 4);
        memcpy(&max_ts, t + n * 12, 8);
        memcpy(&next_rel, t + n * 12 + 8, 4);
        if (rel != IDX_END || next_rel == 0)
                goto out;
        s->nidx = 0;
        for (size_t i = 0; i < n; i++) {
                memcpy(&rel, a + i * 8, 4);
                memcpy(&pos, a + i * 8 + 4, 4);
                memcpy(&ts, t + i * 12, 8);
                memcpy(&trel, t + i * 12 + 8, 4);
                if (trel != rel || pos >= size || rel >= next_rel)
                        goto out;
                const struct log_idx *prev = i ? log_seg_idx(s, (uint32_t)i - 1) : NULL;
                if (i == 0 ? (rel || pos) : (rel <= prev->rel || pos <= prev->pos))
                        goto out;
                if (log_seg_idx_push(s, rel, pos, ts) < 0)
                        goto out;
        }
        s->size = size;
        s->next = s->base + next_rel;
        s->max_ts = max_ts;
        ok = true;
out:
        free(a);
        free(t);
        if (!ok)
                s->nidx = 0;
        return ok;
}

void log_seg_write_index_sync(struct log_partition *p, struct log_seg *s, bool durable)
{
        for (int i = 0; i < 2; i++) {
                uint8_t *b;
                struct ix_cut c = {.size = s->size, .next = s->next, .max_ts = s->max_ts};
                size_t n = idx_encode(s, &c, i, &b);
                if (!n)
                        continue;
                int fd = openat(p->dirfd, s->unlink_name[i + 1],
                                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        /* a short or torn index is rejected at the next open */
                        if (write(fd, b, n) == (ssize_t)n && durable)
                                p->o->io->ops->fsync_now(p->o->io, fd);
                        close(fd);
                }
                free(b);
        }
        if (durable)
                p->o->io->ops->fsync_now(p->o->io, p->dirfd);
}

/* ---- scan ----------------------------------------------------------- */

struct scan_buf {
        uint8_t *b;
        size_t cap;
};

/* The one batch scanner, for recovery and for log_tail_scan: walk segment s
 * from a batch boundary with O_DIRECT reads into sb, and hand each batch to
 * `take` while its base offset continues the previous one (and, with
 * `validate`, its length, magic, CRC and lastOffsetDelta check out); stop
 * at the first that does not, at `end`, or when `take` says so. */
struct seg_walk {
        struct log_partition *p;
        struct log_seg *s;
        struct scan_buf *sb;
        uint64_t pos;   /* in: where to start; out: end of the last batch taken */
        uint64_t end;   /* bytes of the segment to look at (UINT64_MAX: all) */
        int64_t expect; /* base offset the next batch must carry */
        bool validate;  /* whole batches are checked (recovery), else headers only */
        bool (*take)(struct seg_walk *w, const uint8_t *b, uint32_t len);
        void *ctx;
        int err; /* a read error (-errno), 0 otherwise */
};

static void seg_walk(struct seg_walk *w)
{
        const uint32_t B = w->p->align;
        struct scan_buf *sb = w->sb;
        uint64_t chunk_from = 0, chunk_len = 0;
        for (;;) {
                uint64_t pos = w->pos;
                if (pos + LOG_BATCH_HEADER_BYTES > w->end)
                        break;
                /* the bytes this batch needs in the buffer */
                bool have_len = pos >= chunk_from && pos + 12 <= chunk_from + chunk_len;
                uint64_t need = !have_len     ? 12
                                : w->validate ? log_batch_len(sb->b + (pos - chunk_from))
                                              : LOG_BATCH_HEADER_BYTES;
                if (need < LOG_BATCH_HEADER_BYTES)
                        need = LOG_BATCH_HEADER_BYTES;
                if (!have_len || pos + need > chunk_from + chunk_len) {
                        uint64_t from = log_align_down(pos, B);
                        if (from == chunk_from && chunk_len == sb->cap)
                                break; /* batch larger than any we accept */
                        /* A small first read: after a clean close the scan
                         * starts at the recovery point and finds zeros.
                         * Then double: a crash leaves up to about
                         * recovery_point_bytes past the point, and a
                         * full-buffer read there would mostly fetch the
                         * preallocated zeros beyond the tail. */
                        size_t want = chunk_len ? SL_MIN(sb->cap, (size_t)chunk_len * 2)
                                                : SL_MIN(sb->cap, (size_t)65536);
                        ssize_t n = pread(w->s->fd, sb->b, want, (off_t)from);
                        if (n < 0)
                                w->err = -errno;
                        if (n <= 0)
                                break;
                        LOG_STAT_ADD(&w->p->o->m, recovery_scanned_bytes, (uint64_t)n);
                        bool same = from == chunk_from && chunk_len;
                        chunk_from = from;
                        chunk_len = (uint64_t)n;
                        if (pos + 12 > chunk_from + chunk_len)
                                break;
                        need = w->validate ? log_batch_len(sb->b + (pos - chunk_from))
                                           : LOG_BATCH_HEADER_BYTES;
                        if (pos + SL_MAX(need, (uint64_t)LOG_BATCH_HEADER_BYTES) >
                            chunk_from + chunk_len) {
                                if ((size_t)n < want)
                                        break; /* torn at end of file */
                                if (same && (size_t)n == sb->cap)
                                        break;
                                continue;
                        }
                }
                const uint8_t *b = sb->b + (pos - chunk_from);
                uint32_t len = log_batch_len(b);
                if (w->validate ? log_batch_validate(b, len, (uint32_t)(sb->cap - B)) < 0
                                : len < LOG_BATCH_HEADER_BYTES)
                        break;
                if (log_batch_base_offset(b) != w->expect || pos + len > w->end)
                        break;
                if (!w->take(w, b, len))
                        break;
                w->expect += log_batch_last_delta(b) + 1;
                w->pos = pos + len;
        }
}

/* Recovery: keep the batch, index it and track the segment's max timestamp. */
static bool scan_take(struct seg_walk *w, const uint8_t *b, uint32_t len)
{
        struct log_seg *s = w->s;
        (void)len;
        if (s->nidx == 0 ||
            w->pos - log_seg_idx(s, s->nidx - 1)->pos >= w->p->cfg.index_interval_bytes)
                if (log_seg_idx_push(s, (uint32_t)(w->expect - s->base), (uint32_t)w->pos,
                                     s->max_ts) < 0)
                        return false;
        int64_t ts = log_batch_max_timestamp(b);
        if (ts > s->max_ts)
                s->max_ts = ts;
        return true;
}

/* Walk s from position 0 (or its recovery point), keeping each batch that
 * checks out and stopping at the first that does not. Fills the index;
 * returns the logical end. */
static uint64_t seg_scan(struct log_partition *p, struct log_seg *s, struct scan_buf *sb,
                         bool resume)
{
        struct seg_walk w = {.p = p,
                             .s = s,
                             .sb = sb,
                             .end = UINT64_MAX,
                             .expect = s->base,
                             .validate = true,
                             .take = scan_take};
        if (resume) {
                /* from a recovery point: an index written once everything
                 * before it was durable */
                w.pos = s->size;
                w.expect = s->next;
        } else {
                s->nidx = 0;
                s->max_ts = -1;
        }
        seg_walk(&w);
        s->next = w.expect;
        s->size = w.pos;
        return w.pos;
}

/* Make sure nothing past `end` can ever be read back as a batch: rewrite
 * the tail block with zeros after `end`, zero-range the rest (cheap on
 * ext4: it becomes unwritten extents). Skipped when already clean. */
static int zero_beyond(struct log_partition *p, struct log_seg *s, uint8_t *blk)
{
        const uint32_t B = p->align;
        uint64_t end = s->size, b0 = log_align_down(end, B);
        bool dirty = false;
        struct stat st;
        if (fstat(s->fd, &st) < 0)
                return -errno;
        if (end % B) {
                ssize_t n = pread(s->fd, blk, B, (off_t)b0);
                if (n < 0)
                        return -errno;
                if ((uint64_t)n < B)
                        memset(blk + n, 0, B - (size_t)n);
                for (uint32_t i = (uint32_t)(end - b0); i < B; i++)
                        if (blk[i]) {
                                dirty = true;
                                break;
                        }
                if (dirty) {
                        memset(blk + (end - b0), 0, B - (end - b0));
                        if (pwrite(s->fd, blk, B, (off_t)b0) != (ssize_t)B)
                                return -EIO;
                }
        }
        uint64_t rest = log_align_up(end, B);
        if ((uint64_t)st.st_size > rest) {
                off_t d = lseek(s->fd, (off_t)rest, SEEK_DATA);
                if (d >= 0) {
                        if (fallocate(s->fd, FALLOC_FL_ZERO_RANGE, (off_t)rest,
                                      (off_t)((uint64_t)st.st_size - rest)) < 0)
                                return -errno;
                        dirty = true;
                }
        }
        if (dirty)
                return p->o->io->ops->fsync_now(p->o->io, s->fd);
        return 0;
}

/* ---- load / unload -------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

static uint32_t dio_align_of(int fd)
{
        struct statx stx;
        uint32_t mem = 0, off = 0;
        memset(&stx, 0, sizeof(stx));
        if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
            (stx.stx_mask & STATX_DIOALIGN)) {
                mem = stx.stx_dio_mem_align;
                off = stx.stx_dio_offset_align;
        }
        uint32_t a = SL_MAX(mem, off);
        if (!a || a > 4096 || (a & (a - 1)))
                a = 4096; /* unknown: the largest common logical block */
        /* statx gives the minimum (512 on this disk), but ext4 serialises
         * a DIO write not aligned to its block size and waits for it in the
         * submitter (measured: io_uring writes ran synchronously). Align
         * to the file system block when it is larger. */
        uint32_t blk = stx.stx_blksize;
        if (blk > a && blk <= 65536 && !(blk & (blk - 1)))
                a = blk;
        return SL_MAX(a, 512u);
}

static int mkdir_durable(struct log_partition *p)
{
        if (mkdir(p->dir, 0755) == 0) {
                char parent[PATH_MAX];
                snprintf(parent, sizeof(parent), "%s", p->dir);
                char *slash = strrchr(parent, '/');
                if (slash && slash != parent)
                        *slash = 0;
                else
                        snprintf(parent, sizeof(parent), "%s", slash ? "/" : ".");
                int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (pfd < 0)
                        return -errno;
                int rc = p->o->io->ops->fsync_now(p->o->io, pfd);
                close(pfd);
                return rc;
        }
        return errno == EEXIST ? 0 : -errno;
}

static int64_t start_load(struct log_partition *p)
{
        uint8_t b[16];
        int64_t v;
        uint32_t crc;
        if (pread(p->start_fd, b, sizeof(b), 0) != (ssize_t)sizeof(b) || memcmp(b, "SLST", 4))
                return -1;
        memcpy(&crc, b + 4, 4);
        memcpy(&v, b + 8, 8);
        return crc == log_crc32c(0, b + 8, 8) ? v : -1;
}

/* The base offset of the valid batch at a spare's start if it lies past
 * `after` (the last segment's base), else -1. Such a spare is a segment a
 * roll wrote to before its rename to the segment's name was durable (log.c,
 * roll): the spare's own name was, and its data may be acknowledged. A
 * spare's old life holds batches below the log start only, which never
 * qualify. */
static int64_t spare_next_base(struct log_partition *p, const char *name, int64_t after)
{
        struct log_io *io = p->o->io;
        int fd = io->ops->open(io, p->dirfd, name, O_RDONLY | O_DIRECT, 0);
        if (fd < 0)
                return -1;
        size_t cap = log_align_up((uint64_t)p->cfg.max_batch_bytes + 4096, 4096);
        uint8_t *b = aligned_alloc(4096, cap);
        ssize_t n = b ? pread(fd, b, cap, 0) : -1;
        int64_t base = -1;
        if (n >= LOG_BATCH_HEADER_BYTES && log_batch_len(b) <= (uint64_t)n &&
            log_batch_validate(b, log_batch_len(b), p->cfg.max_batch_bytes) == 0 &&
            log_batch_base_offset(b) > after)
                base = log_batch_base_offset(b);
        free(b);
        close(fd);
        return base;
}

static int bases_push(int64_t **bases, size_t *nb, size_t *capb, int64_t base)
{
        if (*nb == *capb) {
                size_t cap = *capb ? *capb * 2 : 16;
                int64_t *n = realloc(*bases, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                *bases = n;
                *capb = cap;
        }
        (*bases)[(*nb)++] = base;
        return 0;
}

/* Spare files looked at per open (more than LOG_RECYCLE_MAX: the setting
 * may have been lowered since); any beyond are unlinked. */
#define SPARES_SEEN_MAX 8

/* Spares found at open: one holding the log's next batches becomes the
 * segment it was (see spare_next_base), in base order; the rest are
 * unlinked (an old life, or a roll's that a crash cut short). The
 * continuity checks that follow treat an adopted segment like any other
 * in the last write window. */
static int spares_settle(struct log_partition *p, char (*names)[24], int n, int64_t **bases,
                         size_t *nb, size_t *capb)
{
        struct log_io *io = p->o->io;
        int64_t next[SPARES_SEEN_MAX];
        int order[SPARES_SEEN_MAX];
        int64_t last = *nb ? (*bases)[*nb - 1] : INT64_MAX;
        for (int i = 0; i < n; i++) {
                next[i] = spare_next_base(p, names[i], last);
                order[i] = i;
        }
        for (int i = 1; i < n; i++) /* by base: adopted ones join in order */
                for (int j = i; j > 0 && next[order[j]] < next[order[j - 1]]; j--) {
                        int t = order[j];
                        order[j] = order[j - 1];
                        order[j - 1] = t;
                }
        bool adopted = false;
        for (int k = 0; k < n; k++) {
                int i = order[k];
                char name[40];
                snprintf(name, sizeof(name), "%020lld.log", (long long)next[i]);
                if (next[i] < 0 || io->ops->rename_now(io, p->dirfd, names[i], name) < 0) {
                        (void)io->ops->unlink_now(io, p->dirfd, names[i]);
                        continue;
                }
                int rc = bases_push(bases, nb, capb, next[i]);
                if (rc < 0)
                        return rc;
                adopted = true;
                LOG_STAT_ADD(&p->o->m, segments_adopted, 1);
        }
        return adopted ? io->ops->fsync_now(io, p->dirfd) : 0;
}

/* When the tail segment's age (segment_ms) started: as Kafka's
 * rollingBasedTimestamp, the max timestamp of its first batch, so a restart
 * does not give an old segment a new life. Now when the segment is empty,
 * its first batch has no timestamp, or claims the future. blk: an aligned
 * block of scratch. */
static uint64_t tail_rolling_ms(struct log_partition *p, struct log_seg *tail, uint8_t *blk)
{
        uint64_t now = sl_realtime_ms();
        if (tail->size < LOG_BATCH_HEADER_BYTES ||
            pread(tail->fd, blk, p->align, 0) < (ssize_t)LOG_BATCH_HEADER_BYTES)
                return now;
        int64_t ts = log_batch_max_timestamp(blk);
        return ts >= 0 && (uint64_t)ts < now ? (uint64_t)ts : now;
}

int log_part_load(struct log_partition *p)
{
        struct log_io *io = p->o->io;
        int64_t *bases = NULL;
        size_t nb = 0, capb = 0;
        struct scan_buf sb = {0};
        int rc = mkdir_durable(p);
        if (rc < 0)
                return rc;
        p->dirfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (p->dirfd < 0)
                return -errno;
        p->start_fd = io->ops->open(io, p->dirfd, "log_start", O_RDWR | O_CREAT, 0644);
        if (p->start_fd < 0) {
                rc = p->start_fd;
                goto fail;
        }
        int64_t start = start_load(p);

        DIR *d = opendir(p->dir);
        if (!d) {
                rc = -errno;
                goto fail;
        }
        struct dirent *de;
        char spares[SPARES_SEEN_MAX][24];
        int nspares = 0;
        while ((de = readdir(d))) {
                long long base;
                char tail[16];
                /* A spare is never reused across opens (what a crash left
                 * in it is unknown), but it may be a segment: see below. */
                if (!strncmp(de->d_name, "recycle-", 8)) {
                        if (nspares < SPARES_SEEN_MAX && strlen(de->d_name) < sizeof(spares[0]))
                                snprintf(spares[nspares++], sizeof(spares[0]), "%s", de->d_name);
                        else
                                (void)io->ops->unlink_now(io, p->dirfd, de->d_name);
                        continue;
                }
                if (strlen(de->d_name) != 24 ||
                    sscanf(de->d_name, "%20lld%15s", &base, tail) != 2 || strcmp(tail, ".log"))
                        continue;
                if ((rc = bases_push(&bases, &nb, &capb, base)) < 0) {
                        closedir(d);
                        goto fail;
                }
        }
        closedir(d);
        if (nb)
                qsort(bases, nb, sizeof(*bases), cmp_i64);
        if (nspares && (rc = spares_settle(p, spares, nspares, &bases, &nb, &capb)) < 0)
                goto fail;
        /* Segments wholly below the durable start were deleted (their file
         * operations go only after the start is durable, see start_persist)
         * but a power cut may have kept some: drop them all, so no gap is
         * left between the segments kept. */
        size_t below = 0;
        while (start >= 0 && below + 1 < nb && bases[below + 1] <= start) {
                char name[40];
                for (int k = 0; k < 3; k++) {
                        static const char *const ext[3] = {"log", "index", "timeindex"};
                        snprintf(name, sizeof(name), "%020lld.%s", (long long)bases[below], ext[k]);
                        (void)io->ops->unlink_now(io, p->dirfd, name);
                }
                below++;
        }
        if (below) {
                memmove(bases, bases + below, (nb - below) * sizeof(*bases));
                nb -= below;
        }

        bool created = false;
        if (nb == 0) {
                struct log_seg *s = log_seg_new(p, start > 0 ? start : 0);
                if (!s) {
                        rc = -ENOMEM;
                        goto fail;
                }
                s->fd = io->ops->open(io, p->dirfd, s->unlink_name[0], O_RDWR | O_CREAT | O_DIRECT,
                                      0644);
                if (s->fd < 0 || (rc = log_segs_push(p, s)) < 0) {
                        rc = s->fd < 0 ? s->fd : rc;
                        log_seg_put(s);
                        goto fail;
                }
                created = true;
        }
        for (size_t i = 0; i < nb; i++) {
                struct log_seg *s = log_seg_new(p, bases[i]);
                if (!s) {
                        rc = -ENOMEM;
                        goto fail;
                }
                bool recent = i + LOG_WSEGS >= nb;
                s->fd = io->ops->open(io, p->dirfd, s->unlink_name[0],
                                      (recent ? O_RDWR : O_RDONLY) | O_DIRECT, 0);
                if (s->fd < 0 || (rc = log_segs_push(p, s)) < 0) {
                        rc = s->fd < 0 ? s->fd : rc;
                        log_seg_put(s);
                        goto fail;
                }
        }
        struct log_seg *tail = p->segs[p->nsegs - 1];
        p->align = dio_align_of(tail->fd);
        if (p->cfg.ring_bytes % 4096)
                p->cfg.ring_bytes = (uint32_t)log_align_up(p->cfg.ring_bytes, 4096);
        sb.cap = log_align_up((uint64_t)p->cfg.max_batch_bytes + (1u << 20), 4096);
        sb.b = aligned_alloc(4096, sb.cap);
        p->ring = sl_dio_alloc(p->cfg.ring_bytes);
        if (!sb.b || !p->ring) {
                rc = -ENOMEM;
                goto fail;
        }

        /* Indexes are written only once a segment's data is durable (at
         * retire, or for the tail at a clean close: a recovery point), so a
         * valid index is trusted and only what lies past it is scanned.
         * Segments in the last write window (LOG_WSEGS) may end in bytes a
         * crash never made durable, even while a later segment file exists:
         * a short one without an index becomes the tail (later ones can only
         * hold unacknowledged data). A short older segment, a file shorter
         * than its index, or a gap is damage: the partition is fenced. */
        uint32_t recent_from = p->nsegs > LOG_WSEGS ? p->nsegs - LOG_WSEGS : 0;
        for (uint32_t i = 0; i < p->nsegs; i++) {
                struct log_seg *s = p->segs[i];
                bool recent = i >= recent_from;
                struct stat st;
                bool had_index = idx_load(p, s);
                if (had_index && (fstat(s->fd, &st) < 0 || (uint64_t)st.st_size < s->size))
                        p->fenced = true; /* the index proves bytes the file lost */
                /* An index that stops short of the next segment (or any index
                 * of the tail) is a recovery point: scan on from it. */
                bool complete = had_index && s != tail && s->next == p->segs[i + 1]->base;
                if (complete) {
                        /* complete and durable when its index was written */
                } else {
                        uint64_t from = had_index ? s->size : 0;
                        if (s == tail || !had_index) {
                                io->ops->unlink_now(io, p->dirfd, s->unlink_name[1]);
                                io->ops->unlink_now(io, p->dirfd, s->unlink_name[2]);
                        }
                        seg_scan(p, s, &sb, had_index);
                        if (s != tail && s->next != p->segs[i + 1]->base) {
                                if (recent && (i == 0 || s->base == p->segs[i - 1]->next)) {
                                        for (uint32_t j = i + 1; j < p->nsegs; j++) {
                                                for (int k = 0; k < 3; k++)
                                                        io->ops->unlink_now(
                                                            io, p->dirfd,
                                                            p->segs[j]->unlink_name[k]);
                                                log_seg_put(p->segs[j]);
                                        }
                                        p->nsegs = i + 1;
                                        tail = s;
                                        if ((rc = io->ops->fsync_now(io, p->dirfd)) < 0)
                                                goto fail;
                                } else {
                                        p->fenced = true; /* damaged beyond the tail */
                                }
                        }
                        if (recent && (s->size > from || !had_index)) {
                                /* What a crashed process wrote may sit in the
                                 * device cache only: make it durable before
                                 * it is served or indexed, so an offset seen
                                 * once is never reused. */
                                if ((rc = io->ops->fsync_now(io, s->fd)) < 0)
                                        goto fail;
                        }
                        if (s != tail) {
                                log_seg_write_index_sync(p, s, false);
                        } else {
                                rc = zero_beyond(p, s, sb.b);
                                if (rc < 0)
                                        goto fail;
                        }
                }
                if (i > 0 && s->base != p->segs[i - 1]->next)
                        p->fenced = true;
                p->total_bytes += s->size;
        }
        tail->created_ms = tail_rolling_ms(p, tail, sb.b);
        struct stat tst;
        tail->alloc_end = fstat(tail->fd, &tst) == 0 ? (uint64_t)tst.st_size : 0;
        if (created || tail->size == 0) {
                uint64_t step = SL_MIN(log_prealloc_step(p, 0), p->cfg.segment_bytes);
                if (p->cfg.preallocate && tail->alloc_end < step &&
                    fallocate(tail->fd, 0, 0, (off_t)step) == 0)
                        tail->alloc_end = step;
                if (created) {
                        if ((rc = io->ops->fsync_now(io, tail->fd)) < 0 ||
                            (rc = io->ops->fsync_now(io, p->dirfd)) < 0)
                                goto fail;
                }
        }

        /* The stream starts at the tail's file offset 0; the partial tail
         * block goes into the ring to be rewritten by the next append. */
        p->ws_head = 0;
        p->nws = 1;
        p->ws[0] = (struct log_wseg){.seg = tail, .sbase = 0, .send = UINT64_MAX};
        p->s_end = p->s_sub = p->s_written = p->s_synced = tail->size;
        p->s_mem_low = log_align_down(tail->size, p->align);
        if (tail->size % p->align) {
                uint8_t *dst = p->ring + p->s_mem_low % p->cfg.ring_bytes;
                if (pread(tail->fd, dst, p->align, (off_t)p->s_mem_low) <
                    (ssize_t)(tail->size % p->align)) {
                        rc = -EIO;
                        goto fail;
                }
                memset(dst + tail->size % p->align, 0, p->align - tail->size % p->align);
        }
        p->nw = p->w_head = 0;
        p->tail_w = NULL;
        p->npend = p->pend_head = 0;
        p->nbdir = p->bdir_head = 0;
        p->sync_inflight = 0;
        p->sync_hold = 0;
        p->dir_dirty = false;
        p->next_offset = tail->next;
        p->hw = p->acked_next = p->next_offset;
        p->start_offset = p->segs[0]->base;
        if (start > p->start_offset)
                p->start_offset = SL_MIN(start, p->next_offset);
        free(bases);
        free(sb.b);
        return 0;
fail:
        free(bases);
        free(sb.b);
        log_part_unload(p);
        return rc;
}

void log_part_unload(struct log_partition *p)
{
        for (uint32_t i = 0; i < p->nsegs; i++)
                log_seg_put(p->segs[i]);
        free(p->segs);
        p->segs = NULL;
        p->nsegs = p->segs_cap = 0;
        p->total_bytes = 0;
        if (p->dirfd >= 0)
                close(p->dirfd);
        if (p->start_fd >= 0)
                close(p->start_fd);
        p->dirfd = p->start_fd = -1;
        sl_dio_free(p->ring, p->cfg.ring_bytes);
        p->ring = NULL;
        p->nws = 0;
        for (int i = 0; i < LOG_RECYCLE_MAX; i++) {
                if (p->spares[i].fd >= 0)
                        close(p->spares[i].fd);
                p->spares[i].fd = -1;
                p->spares[i].state = LOG_SPARE_FREE;
        }
        p->fenced = false;
}

/* ---- tail scan -------------------------------------------------------- */

struct tail_visit {
        log_batch_visit_fn visit;
        void *ctx;
        int visited;
};

static bool tail_take(struct seg_walk *w, const uint8_t *b, uint32_t len)
{
        struct tail_visit *t = w->ctx;
        (void)len;
        t->visit(t->ctx, b, log_batch_base_offset(b));
        t->visited++;
        return true;
}

/* Visit the headers of the batches in the last `bytes_max` bytes (at least
 * the whole last non-empty segment's share of it), oldest first, with the
 * recovery scanner: from the index entry (a batch boundary) at or before the
 * wanted position, headers only (recovery checked the batches). */
int log_tail_scan(struct log_partition *p, uint64_t bytes_max, log_batch_visit_fn visit, void *ctx)
{
        if (p->nsegs == 0)
                return 0;
        uint32_t first = p->nsegs - 1;
        uint64_t covered = p->segs[first]->size;
        while (first > 0 && covered < bytes_max) {
                first--;
                covered += p->segs[first]->size;
        }
        struct scan_buf sb = {.cap = 1u << 20};
        sb.b = aligned_alloc(4096, sb.cap);
        if (!sb.b)
                return -ENOMEM;
        struct tail_visit t = {.visit = visit, .ctx = ctx};
        int rc = 0;
        for (uint32_t i = first; i < p->nsegs && rc == 0; i++) {
                struct log_seg *s = p->segs[i];
                struct seg_walk w = {.p = p,
                                     .s = s,
                                     .sb = &sb,
                                     .end = s->size,
                                     .expect = s->base,
                                     .take = tail_take,
                                     .ctx = &t};
                if (i == first && covered > bytes_max && s->nidx) {
                        /* the last index entry at or before the wanted position */
                        uint64_t want = covered - bytes_max;
                        uint32_t lo = 0, hi = s->nidx;
                        while (hi - lo > 1) {
                                uint32_t mid = (lo + hi) / 2;
                                if (log_seg_idx(s, mid)->pos <= want)
                                        lo = mid;
                                else
                                        hi = mid;
                        }
                        w.pos = log_seg_idx(s, lo)->pos;
                        w.expect = s->base + log_seg_idx(s, lo)->rel;
                }
                seg_walk(&w);
                rc = w.err;
        }
        free(sb.b);
        return rc < 0 ? rc : t.visited;
}
