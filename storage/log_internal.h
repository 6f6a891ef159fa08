/* Private state of the partition log, shared by log.c (append, write path,
 * group commit, reads) and log_recovery.c (open, scan, index load). Only the
 * owning worker touches any of it. */
#ifndef LOG_INTERNAL_H
#define LOG_INTERNAL_H

#include "log.h"
#include "sl_common.h"

#include <limits.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "index files are little-endian host structs"
#endif

#define LOG_WSEGS 4 /* segments that may still have writes or syncs pending */
/* Index entries per chunk: the in-memory index grows by whole chunks,
 * reserved by the poll step ahead of need, so an append never allocates or
 * copies it. */
#define LOG_IDX_CHUNK 1024
#define LOG_WRITES    16 /* writes in flight per partition: the raw baseline peaks at QD16 */
/* Largest zero-fill write: each one costs one extent conversion (its
 * metadata written by some fdatasync), and the fdatasync after it flushes
 * its bytes too, so larger ones spread the conversion over more appends
 * but make that one fdatasync slower. */
#define LOG_ZERO_WRITE_BYTES (8u << 20)

struct log_idx {
        uint32_t rel;      /* offset - segment base */
        uint32_t pos;      /* byte position of the batch holding it */
        int64_t ts_before; /* max timestamp of every batch before pos */
};

struct log_seg {
        struct log_partition *p;
        int64_t base, next; /* offsets [base, next) */
        uint64_t size;      /* logical bytes (the file may be preallocated) */
        int fd;
        int64_t max_ts;
        uint64_t created_ms;
        struct log_idx **idx_chunk; /* entry i: idx_chunk[i / LOG_IDX_CHUNK][i % ...] */
        uint32_t nidx, nchunks, chunks_cap;
        uint32_t refs; /* the segment list, plus reads, index writes, unlinks in flight */
        bool deleted;
        char name[24]; /* 20-digit base offset */
        struct log_io_req falloc_req, seal_sync_req, open_req;
        uint64_t alloc_end; /* bytes fallocated so far */
        /* the spare slot this segment's file is moving to (retention) or
         * from (roll); -1 = none */
        int8_t spare_slot;
        /* when the last fallocate was issued and the segment's size then:
         * the append rate that sizes a fast partition's next step */
        uint64_t falloc_t_ns, falloc_size;
        uint64_t rp_size; /* last recovery point written */
        bool alloc_inflight;
        /* Zero-fill: file bytes [.., zero_end) were written (zeros or data)
         * by this log; one zero write at most is in flight (zero_req);
         * UINT64_MAX = stopped for this segment. */
        uint64_t zero_end;
        bool zero_inflight;
        struct log_io_req zero_req;
        struct log_io_req ix_req[2];
        void *ix_buf[2];
        int ix_fd[2];
        /* The complete index was asked for while a recovery point's was in
         * flight: it is written when that one finishes. */
        bool ix_full_pending;
        struct log_io_req unlink_req[3];
        char unlink_name[3][40];
        /* deleted but still referenced (unlinks, reads in flight): listed
         * on the partition so an abandon can free it */
        struct log_seg *zombie_next;
        struct log_seg *doom_next; /* queued for its file operations (start_persist) */
};

struct log_wseg {
        struct log_seg *seg;
        uint64_t sbase; /* stream position of file offset 0 */
        uint64_t send;  /* stream end of its data; UINT64_MAX while active */
};

struct log_write {
        struct log_io_req req;
        struct log_partition *p;
        uint64_t s_from, s_data_end;
        int res;
        bool done;
};

struct log_sync {
        struct log_io_req req;
        struct log_partition *p;
};

struct log_pending {
        int64_t base, last;
        uint64_t s_end;
        uint64_t t_ns;
        uint32_t bytes;
        log_append_cb cb;
        void *ctx;
};

struct log_bdir {
        int64_t base, last, max_ts;
        uint64_t s;
        uint32_t len;
};

/* A segment file retention kept for a later roll to write over
 * (cfg.recycle_segments; log.c, "recycling"). */
enum log_spare_state {
        LOG_SPARE_FREE = 0,
        LOG_SPARE_MOVING, /* a rename to or from its name, or its directory
                             fsync and open, is in flight */
        LOG_SPARE_READY,  /* its name is durable and fd is open */
};
struct log_spare {
        uint8_t state;
        int fd;           /* open while READY: a roll writes to it at once */
        uint64_t written; /* file bytes [0, written) were written in its old life */
        uint64_t alloc;   /* its size (allocated in its old life) */
        char name[24];    /* "recycle-<slot>.seg": not a segment name */
};

struct log_partition {
        struct log_owner *o;
        struct log_config cfg;
        int32_t leader_epoch;
        char dir[PATH_MAX];
        int dirfd;
        uint32_t align; /* O_DIRECT offset/length/buffer alignment */
        int err;        /* sticky I/O error */
        bool fenced;

        struct log_seg **segs;
        uint32_t nsegs, segs_cap;
        struct log_seg *zombies; /* deleted segments with requests in flight */
        uint64_t total_bytes;
        int64_t start_offset, next_offset, hw, acked_next;

        /* stream positions, see log.c */
        uint8_t *ring;
        uint64_t s_end, s_sub, s_written, s_synced, s_mem_low;
        struct log_wseg ws[LOG_WSEGS];
        uint32_t ws_head, nws;
        struct log_write w[LOG_WRITES];
        uint32_t w_head, nw;
        struct log_write *tail_w; /* in-flight write ending in a partial block */
        /* The rewrite of a tail write's last block, queued (in order) but
         * held until that write (held_after) completes, so the full blocks
         * after it need not wait. tail_w may move on to a later block. */
        struct log_write *held_w, *held_after;
        struct log_sync syncs[LOG_WSEGS + 1];
        uint32_t sync_inflight;
        uint64_t sync_target;
        /* `fsync`: the round waits until the writes submitted when it
         * became due (up to here) are written too; 0 = not yet due */
        uint64_t sync_hold;
        uint64_t sync_bytes_avg; /* bytes per fdatasync round, moving average */
        int sync_err;
        bool dir_dirty;
        struct log_spare spares[LOG_RECYCLE_MAX];
        uint64_t last_sync_ns;

        struct log_pending *pend;
        uint32_t pend_head, npend;
        struct log_bdir *bdir;
        uint32_t bdir_cap, bdir_head, nbdir;

        struct log_wait *waiters;
        bool hw_dirty;

        int start_fd;
        struct log_io_req start_req;
        uint8_t start_buf[16];
        bool start_inflight, start_dirty;
        /* deleted segments whose unlinks/renames wait for a durable start:
         * doomed for the next log_start round, dooming for the one in flight */
        struct log_seg *doomed, *doomed_tail, *dooming;

        struct log_partition *work_next, *all_next, *all_prev, *ack_next;
        bool in_work;
        bool ack_due; /* writes or a sync completed: acks run at the step's end */
};

struct log_owner {
        struct log_io *io;
        struct log_metrics m;
        struct log_partition *work;
        struct log_partition *all;
        uint64_t next_retention_ms;
        bool draining;
        /* Source of every zero-fill write: a read-only anonymous mapping,
         * all of it the kernel's shared zero page (no memory of its own). */
        void *zero_buf;
};

static inline uint64_t log_align_down(uint64_t x, uint32_t a)
{
        return x / a * a;
}

static inline uint64_t log_align_up(uint64_t x, uint32_t a)
{
        return (x + a - 1) / a * a;
}

/* log_recovery.c */
int log_part_load(struct log_partition *p);
void log_part_unload(struct log_partition *p);
struct log_seg *log_seg_new(struct log_partition *p, int64_t base);
void log_seg_put(struct log_seg *s);
static inline struct log_idx *log_seg_idx(const struct log_seg *s, uint32_t i)
{
        return &s->idx_chunk[i / LOG_IDX_CHUNK][i % LOG_IDX_CHUNK];
}

/* Append an index entry, allocating a chunk when full (cold paths). */
int log_seg_idx_push(struct log_seg *s, uint32_t rel, uint32_t pos, int64_t ts_before);
/* Make sure at least `room` more entries fit without allocating. */
int log_seg_idx_reserve(struct log_seg *s, uint32_t room);
/* A sealed segment's complete index, once its data is durable; when an
 * index write of the segment is still in flight it follows that one. */
void log_seg_write_index(struct log_partition *p, struct log_seg *s);
/* A recovery point for the tail. -EBUSY while an index write of the
 * segment is in flight (retry at a later sync round), -ENOMEM, or 0. */
int log_seg_write_rp(struct log_partition *p, struct log_seg *s, uint64_t size, int64_t next);
void log_seg_write_index_sync(struct log_partition *p, struct log_seg *s, bool durable);
int log_segs_push(struct log_partition *p, struct log_seg *s);

/* log.c */
/* The next preallocation step for a segment allocated up to alloc_end. */
#define LOG_PREALLOC_FIRST_BYTES (1u << 20)
uint64_t log_prealloc_step(const struct log_partition *p, uint64_t alloc_end);
void log_seg_prealloc(struct log_partition *p, struct log_seg *s);
void log_seg_falloc_done(struct log_io_req *req, int res);

#endif
