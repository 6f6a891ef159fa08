/* The storage engine's public face: partition logs owned by one worker and
 * driven through the I/O seam (log_io.h), with group commit across the
 * owner's partitions. Record batches are Kafka v2, stored verbatim. */
#ifndef LOG_H
#define LOG_H

#include <stdint.h>
#include <stdbool.h>
#include <stdatomic.h>

#include "log_io.h"

/* Errors returned besides -errno from the I/O (-ENOSPC, -EIO, -EROFS):
 *   -EBADMSG   corrupt batch (Kafka CORRUPT_MESSAGE)
 *   -EMSGSIZE  batch larger than max_batch_bytes (MESSAGE_TOO_LARGE)
 *   -ENOBUFS   staging ring or ack queue full: retry after a poll step
 *   -ERANGE    offset outside [log start, high watermark] (OFFSET_OUT_OF_RANGE)
 *   -EUCLEAN   partition fenced: damaged beyond its tail segment
 * Any I/O error maps to Kafka KAFKA_STORAGE_ERROR. */

enum log_durability {
        LOG_DURABILITY_FSYNC = 0, /* ack after fdatasync; HW = last synced offset */
        LOG_DURABILITY_INTERVAL,  /* ack after write; fdatasync every N ms / bytes */
        LOG_DURABILITY_NONE,      /* ack after write; never fdatasync */
};

#define LOG_BATCH_HEADER_BYTES 61

struct log_config {
        enum log_durability durability;
        uint32_t flush_interval_ms;    /* interval policy */
        uint64_t flush_interval_bytes; /* interval policy; 0 = by time only */
        uint64_t segment_bytes;        /* roll when the next batch would pass this */
        uint64_t segment_ms;           /* roll by age (0 = never) */
        int64_t retention_bytes;       /* -1 = unlimited */
        int64_t retention_ms;          /* -1 = unlimited */
        uint32_t index_interval_bytes; /* sparse index: one entry per this many bytes */
        uint32_t ring_bytes;           /* staging ring = in-memory read window */
        uint32_t max_batch_bytes;      /* at most ring_bytes / 2 */
        uint32_t max_write_bytes;      /* largest single write */
        uint32_t max_pending;          /* appends waiting for their ack */
        bool preallocate;              /* fallocate segments ahead of the writes */
        uint64_t prealloc_bytes;       /* how far ahead, in steps (0 = whole segment) */
        /* A partition appending fast gets steps of this much of its recent
         * append rate when that is more than prealloc_bytes (never more than
         * doubling the file): every fallocate waits for the file's O_DIRECT
         * writes in flight to drain and stalls the ones issued meanwhile, so
         * a fast partition should pay a few per second, not one per
         * prealloc_bytes. 0 = steps of prealloc_bytes at most. */
        uint32_t prealloc_ahead_ms;
        uint64_t recovery_point_bytes; /* durable tail bytes between recovery points (0 = off) */
        /* Zero-fill the tail segment this far ahead of the appends (large
         * O_DIRECT writes of zeros off the hot path), so appends overwrite
         * blocks already written and their fdatasync need not write an
         * extent conversion's metadata (a journal commit) each time.
         * 0 = off. Needs `preallocate`; at most `prealloc_bytes`. */
        uint64_t zero_ahead_bytes;
        /* ... only while the partition's fdatasyncs cover less than this
         * many bytes each (a moving average): above it the metadata write
         * is spread over enough data already, and the zeros' extra device
         * writes cost more than they save. 0 = no limit. */
        uint64_t zero_fill_max_sync_bytes;
        /* Zero-fill `interval` and `none` partitions too. Off by default:
         * they are bandwidth-bound and zero-filling doubles their device
         * writes, while they gain nothing per fdatasync. */
        bool zero_fill_all;
        /* Segment files retention keeps for the next rolls to write over
         * instead of unlinking them (at most LOG_RECYCLE_MAX; 0 = unlink).
         * Their blocks are written, so appends into them are plain
         * overwrites: no extent conversion per write and an fdatasync that
         * only flushes, measured ~2x the fresh-space rate here
         * (RESULTS.md). Costs up to this many segments of disk beyond
         * retention. Default 2: a deletion often comes one roll late (the
         * sealed segment is still in the write window when the next roll
         * happens), then two go at once. At open, a spare holding the log's
         * next batches (a roll whose rename a crash took back) is adopted as
         * that segment; other spares are unlinked. */
        uint32_t recycle_segments;
        /* While a write of the partition is in flight, a write stops at the
         * last full block and the partly filled one waits for the next
         * (see issue_writes). false = write it at once (A/B runs). */
        bool defer_tail_block;
};
#define LOG_RECYCLE_MAX 4
void log_config_default(struct log_config *cfg);

/* Plain counters written by the owning worker, read by the control thread
 * (relaxed loads; no lock prefix on the writer side). */
#define LOG_LAT_BUCKETS 32
struct log_metrics {
        _Atomic uint64_t appends, append_bytes, append_rejects, append_errors, corrupt_batches;
        _Atomic uint64_t writes, write_bytes;
        _Atomic uint64_t fsyncs, fsync_rounds, synced_bytes, synced_appends;
        _Atomic uint64_t reads_mem, reads_disk, read_bytes;
        _Atomic uint64_t io_errors, segments_rolled, segments_deleted, waits_woken;
        /* deleted segments kept as spares, and rolls that wrote over one */
        _Atomic uint64_t segments_recycled, segments_reused;
        /* spares found at open holding the log's next batches (a roll's
         * rename a crash took back), kept as the segments they were */
        _Atomic uint64_t segments_adopted;
        _Atomic uint64_t recovery_scanned_bytes; /* read by recovery scans and log_tail_scan */
        /* index chunks an append had to allocate (the poll step reserves
         * them ahead; nonzero means a burst outran it) */
        _Atomic uint64_t index_grows_on_append;
        /* zero-fill ahead of the tail (zero_ahead_bytes) */
        _Atomic uint64_t zero_writes, zero_bytes;
        /* ack latency: bucket i counts acks in [2^i, 2^(i+1)) microseconds */
        _Atomic uint64_t ack_latency_us[LOG_LAT_BUCKETS];
};
#define LOG_STAT_ADD(m, field, n)                                                                  \
        atomic_store_explicit(&(m)->field,                                                         \
                              atomic_load_explicit(&(m)->field, memory_order_relaxed) + (n),       \
                              memory_order_relaxed)

struct log_owner;
struct log_partition;

/* One per worker (or per tool). The io backend is borrowed; it must outlive
 * the owner. */
struct log_owner *log_owner_create(struct log_io *io);
void log_owner_destroy(struct log_owner *o);
struct log_metrics *log_owner_metrics(struct log_owner *o);
/* The worker's storage step, once per loop iteration; never blocks:
 * reap completions (acks, read callbacks, wake-ups run from here), issue
 * writes for what was appended since, one round of fdatasyncs for every
 * dirty partition, retention when due, and hand the SQEs to the kernel.
 * Returns the number of completions handled. */
int log_owner_poll(struct log_owner *o);
/* Tools, tests and owners of their own ring: the same step, then block
 * until at least one request completes (its callback has run), submitting
 * and waiting in one io_uring_enter. */
int log_owner_poll_wait(struct log_owner *o);
/* True while any partition has I/O in flight or data not yet written. */
bool log_owner_busy(const struct log_owner *o);
/* True while a poll now would make progress without waiting for a
 * completion: what a worker checks before it may sleep. With a backend
 * that signals completions (log_io_notify) I/O in flight does not count;
 * without one this is log_owner_busy(). */
bool log_owner_ready(const struct log_owner *o);
/* Tools and tests: poll until nothing is in flight, blocking in the io. */
int log_owner_drain(struct log_owner *o);

/* Open (creating when absent) the partition in `dir`: recovery runs here,
 * synchronously. leader_epoch is stamped into every appended batch. */
int log_partition_open(struct log_owner *o, const char *dir, const struct log_config *cfg,
                       int32_t leader_epoch, struct log_partition **out);
/* Close after log_owner_drain(); writes the tail index. */
void log_partition_close(struct log_partition *p);
/* Drop without any I/O (after a simulated power cut). */
void log_partition_abandon(struct log_partition *p);

/* Ack: res 0 when durable per policy, else -errno; base_offset assigned. */
typedef void (*log_append_cb)(void *ctx, int64_t base_offset, int res);
/* Append one v2 batch. The batch is borrowed for the call only: it is
 * validated and copied (with baseOffset and partitionLeaderEpoch stamped)
 * before return. Returns 0 and the base offset, or a negative error above;
 * cb runs later from log_owner_poll, never from inside log_append. */
int log_append(struct log_partition *p, const void *batch, uint32_t len, log_append_cb cb,
               void *ctx, int64_t *base_offset);

int64_t log_start_offset(const struct log_partition *p);
int64_t log_end_offset(const struct log_partition *p);
int64_t log_high_watermark(const struct log_partition *p);
int log_partition_state(const struct log_partition *p); /* 0, -EUCLEAN or sticky I/O error */
uint32_t log_dio_align(const struct log_partition *p);

/* Read: whole batches from the one holding `offset`, up to max_bytes and the
 * high watermark. buf is lent until the result: it must be aligned to
 * log_dio_align() and hold max_bytes + 2 * index_interval_bytes + 2 *
 * align for disk reads. by_time: find the first batch whose maxTimestamp >=
 * timestamp instead (Kafka ListOffsets); its offset is in `offset_found`. */
struct log_read;
typedef void (*log_read_cb)(struct log_read *r, int res);
struct log_read {
        int64_t offset;
        int64_t timestamp;
        bool by_time;
        /* Answer only from the in-memory window: -EAGAIN instead of a disk
         * read, so buf needs no alignment (a caller copies straight into
         * its response buffer and reads disk with its own aligned one). */
        bool mem_only;
        uint32_t max_bytes;
        void *buf;
        uint32_t buf_cap;
        log_read_cb cb;
        void *ctx;
        /* results: the batches are buf[data_off .. data_off + data_len) */
        uint32_t data_off, data_len;
        int64_t offset_found, hw;
        /* private */
        struct log_io_req req;
        struct log_partition *p;
        void *seg;
        uint64_t pos;
        int tries;
};
/* Returns >0 when served from memory right away (bytes; cb not called),
 * 0 when a disk read is in flight (cb runs from log_owner_poll), or a
 * negative error (-ERANGE past the watermark or before the start; -EAGAIN
 * for mem_only when memory cannot answer). A read by time past the newest
 * batch returns -ERANGE too. */
int log_read_submit(struct log_partition *p, struct log_read *r);

/* Wait registry: "tell me when offset `offset` is visible" (offset < HW).
 * The waiter is borrowed until its callback runs or it is cancelled; cb
 * runs from log_owner_poll (or returns 1 right away if already visible). */
struct log_wait;
typedef void (*log_wait_cb)(struct log_wait *w, int64_t hw);
struct log_wait {
        int64_t offset;
        log_wait_cb cb;
        void *ctx;
        struct log_wait *prev, *next;
};
int log_wait_add(struct log_partition *p, struct log_wait *w);
void log_wait_cancel(struct log_partition *p, struct log_wait *w);

/* Move the start offset forward (queues trim what is acknowledged); whole
 * segments below it are deleted. Returns 0 or -errno. */
int log_trim(struct log_partition *p, int64_t new_start);
/* Apply retention by size and time now (now_ms: wall clock); the owner
 * also runs it from its poll step about once a second. Returns the number
 * of segments deleted. */
int log_retention_run(struct log_partition *p, uint64_t now_ms);
/* Retry appends after a sticky I/O error (e.g. space freed after ENOSPC):
 * rewinds to the last durable batch. Requires no I/O in flight. */
int log_partition_resume(struct log_partition *p);

/* Visit the batch headers (LOG_BATCH_HEADER_BYTES, stamped) of about the
 * last bytes_max bytes of the log, oldest first: rebuilds state a protocol
 * keeps per batch (Kafka idempotent producers). Synchronous; right after
 * log_partition_open, before any append. Returns the batches visited or
 * -errno. */
typedef void (*log_batch_visit_fn)(void *ctx, const uint8_t *hdr, int64_t base_offset);
int log_tail_scan(struct log_partition *p, uint64_t bytes_max, log_batch_visit_fn visit, void *ctx);

/* Batch helpers (log_batch.c). */
int log_batch_validate(const void *batch, uint32_t len, uint32_t max_bytes);
/* Everything log_batch_validate checks but the CRC (the append path checks
 * it while copying). */
int log_batch_check_header(const void *batch, uint32_t len, uint32_t max_bytes);
uint32_t log_batch_crc(const void *batch); /* the stored CRC field */
int64_t log_batch_base_offset(const void *batch);
int32_t log_batch_last_delta(const void *batch);
int64_t log_batch_max_timestamp(const void *batch);
uint32_t log_batch_len(const void *batch); /* total bytes from its header */

#endif
