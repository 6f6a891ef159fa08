/* Storage benchmark (issue 4), all runs on one file system: raw O_DIRECT
 * sequential write bandwidth; raw write(S)+fdatasync where S is what the log
 * committed per fsync in the compared run; the log's append throughput per
 * durability policy with 1 and 64 closed-loop appenders and 1 KiB..1 MiB
 * batches, plus one pipelined appender that keeps up to 5 batches in flight
 * (a Kafka producer with max.in.flight.requests.per.connection=5); and
 * start-up (recovery) time with many partitions. Prints markdown.
 *
 *   bench_storage DIR [seconds_per_run]        throughput table
 *   bench_storage DIR --startup PARTS MIB_EACH  recovery time
 *   bench_storage --crc                        CRC-32C GB/s (check, check+copy)
 *   bench_storage DIR --extents [ROUNDS]        fresh vs written space, 1 MiB */
#include "log.h"
#include "log_crc32c.h"
#include "sl_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_APPENDERS 64
#define MAX_DEPTH     8 /* batches in flight per appender */
#define MAX_LAT       (4u << 20)

static double run_secs = 1.0;
static const char *base_dir;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb, (void)flag, (void)ftw;
        return remove(p);
}

static void rmrf(const char *p)
{
        nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* One batch of `bytes` total (one record: the value fills the rest). */
static uint32_t make_batch(uint8_t *b, uint32_t bytes)
{
        uint32_t value = bytes > 80 ? bytes - 80 : 1;
        memset(b, 0, 61);
        b[12] = b[13] = b[14] = b[15] = 0xff;
        b[16] = 2;
        uint8_t *p = b + 61;
        /* record: length, attrs, tsDelta 0, offsetDelta 0, key -1, value */
        uint8_t hdr[16];
        size_t n = 0;
        hdr[n++] = 0;
        hdr[n++] = 0;
        hdr[n++] = 0;
        hdr[n++] = 1; /* key -1 */
        uint64_t z = (uint64_t)value << 1;
        while (z >= 0x80) {
                hdr[n++] = (uint8_t)(z | 0x80);
                z >>= 7;
        }
        hdr[n++] = (uint8_t)z;
        uint64_t len = n + value + 1;
        z = len << 1;
        while (z >= 0x80) {
                *p++ = (uint8_t)(z | 0x80);
                z >>= 7;
        }
        *p++ = (uint8_t)z;
        memcpy(p, hdr, n);
        p += n;
        for (uint32_t i = 0; i < value; i++)
                p[i] = (uint8_t)(i * 13);
        p += value;
        *p++ = 0; /* headers */
        uint32_t total = (uint32_t)(p - b);
        uint32_t bl = total - 12;
        b[8] = bl >> 24, b[9] = bl >> 16, b[10] = bl >> 8, b[11] = (uint8_t)bl;
        int64_t ts = (int64_t)sl_realtime_ms();
        for (int i = 0; i < 8; i++)
                b[27 + i] = b[35 + i] = (uint8_t)(ts >> (56 - 8 * i));
        memset(b + 43, 0xff, 14);
        b[60] = 1; /* recordsCount */
        uint32_t crc = log_crc32c(0, b + 21, total - 21);
        b[17] = crc >> 24, b[18] = crc >> 16, b[19] = crc >> 8, b[20] = (uint8_t)crc;
        return total;
}

static int cmp_u32(const void *x, const void *y)
{
        uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
        return a < b ? -1 : a > b;
}

/* ---- raw baselines -------------------------------------------------- */

/* Sequential O_DIRECT writes at queue depth qd over a fallocated file;
 * overwrite = true times a second pass, over blocks the first wrote (what
 * a log writing into recycled segments does). */
static double raw_odirect_mbs(uint32_t wsize, unsigned qd, uint64_t total, bool overwrite)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/raw.dat", base_dir);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
        if (fd < 0 || fallocate(fd, 0, 0, (off_t)total) < 0)
                return -1;
        struct io_uring ring;
        io_uring_queue_init(qd * 2, &ring, 0);
        uint8_t *buf = sl_dio_alloc(wsize);
        memset(buf, 0x5a, wsize);
        uint64_t t0 = 0;
        for (int pass = 0; pass <= (int)overwrite; pass++) {
                uint64_t off = 0, done = 0;
                unsigned inflight = 0;
                if (pass == (int)overwrite)
                        t0 = sl_time_ns();
                while (done < total) {
                        while (inflight < qd && off < total) {
                                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                                io_uring_prep_write(sqe, fd, buf, wsize, off);
                                off += wsize;
                                inflight++;
                        }
                        io_uring_submit_and_wait(&ring, 1);
                        struct io_uring_cqe *cqe;
                        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
                                if (cqe->res < 0) {
                                        fprintf(stderr, "raw write: %s\n", strerror(-cqe->res));
                                        exit(1);
                                }
                                done += (uint64_t)cqe->res;
                                inflight--;
                                io_uring_cqe_seen(&ring, cqe);
                        }
                }
                fdatasync(fd);
        }
        double s = (double)(sl_time_ns() - t0) / 1e9;
        io_uring_queue_exit(&ring);
        close(fd);
        unlink(path);
        sl_dio_free(buf, wsize);
        return (double)total / s / 1e6;
}

/* write(S) + fdatasync in a loop, S rounded up to the block: the best a
 * log can do when it commits S bytes per fsync. The 1 GiB file is written
 * once before the timed part, so every write overwrites blocks already
 * written, which ext4 commits without converting extents (see extents()). fresh = true is the extra
 * baseline that never wraps: at the end of the file it is truncated and preallocated again, outside
 * the timed part, so every write lands on never-written (unwritten-extent) space, as a log's
 * appends into a new segment do. */
static double raw_write_fsync_mbs(uint64_t s_bytes, double *fsyncs_per_s, bool fresh)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/rawsync.dat", base_dir);
        uint64_t total = 1ull << 30;
        uint32_t w = (uint32_t)SL_ALIGN_UP(SL_MAX(s_bytes, 4096ull), 4096ull);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
        if (fd < 0 || fallocate(fd, 0, 0, (off_t)total) < 0)
                return -1;
        uint8_t *buf = sl_dio_alloc(w);
        memset(buf, 0x33, w);
        /* Not fresh: every lap over blocks written before (untimed fill),
         * the best write(S)+fdatasync does on this disk. */
        for (uint64_t o = 0; !fresh && o + w <= total; o += w)
                if (pwrite(fd, buf, w, (off_t)o) != (ssize_t)w) {
                        perror("raw fill");
                        exit(1);
                }
        if (!fresh)
                fdatasync(fd);
        uint64_t off = 0, n = 0, paused = 0;
        uint64_t t0 = sl_time_ns(), limit = (uint64_t)(run_secs * 1e9);
        while (sl_time_ns() - t0 - paused < limit) {
                if (off + w > total) {
                        off = 0;
                        if (fresh) {
                                uint64_t p0 = sl_time_ns();
                                if (ftruncate(fd, 0) < 0 || fallocate(fd, 0, 0, (off_t)total) < 0 ||
                                    fdatasync(fd) < 0) {
                                        perror("raw re-preallocate");
                                        exit(1);
                                }
                                paused += sl_time_ns() - p0;
                        }
                }
                if (pwrite(fd, buf, w, (off_t)off) != (ssize_t)w || fdatasync(fd) < 0) {
                        perror("raw write+fdatasync");
                        exit(1);
                }
                off += w;
                n++;
        }
        double s = (double)(sl_time_ns() - t0 - paused) / 1e9;
        close(fd);
        unlink(path);
        sl_dio_free(buf, w);
        *fsyncs_per_s = (double)n / s;
        return (double)n * (double)s_bytes / s / 1e6; /* payload bytes, like the log */
}

/* Where a fsync'd append's time goes on this file system: pwrite(S) and
 * fdatasync timed apart, over never-written preallocated space (what a new
 * segment is) and over blocks already written once (what the raw
 * baseline's second lap is), rounds interleaved so load drifts hit both. */
static void extents(uint32_t w, int rounds)
{
        char path[2][512];
        int fd[2];
        uint64_t total = (uint64_t)w * (uint64_t)rounds;
        uint8_t *buf = sl_dio_alloc(w);
        memset(buf, 0x33, w);
        for (int k = 0; k < 2; k++) {
                snprintf(path[k], sizeof(path[k]), "%s/extents-%d.dat", base_dir, k);
                fd[k] = open(path[k], O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
                if (fd[k] < 0 || fallocate(fd[k], 0, 0, (off_t)total) < 0) {
                        perror("extents: open/fallocate");
                        exit(1);
                }
        }
        /* file 1: every block written once (and committed) before timing */
        for (uint64_t o = 0; o < total; o += w)
                if (pwrite(fd[1], buf, w, (off_t)o) != (ssize_t)w) {
                        perror("extents: fill");
                        exit(1);
                }
        fdatasync(fd[1]);
        uint32_t *lat = malloc(sizeof(uint32_t) * 4 * (size_t)rounds);
        uint32_t *wr[2] = {lat, lat + rounds}, *sy[2] = {lat + 2 * rounds, lat + 3 * rounds};
        for (int i = 0; i < rounds; i++)
                for (int k = 0; k < 2; k++) {
                        uint64_t a = sl_time_ns();
                        if (pwrite(fd[k], buf, w, (off_t)i * w) != (ssize_t)w) {
                                perror("extents: write");
                                exit(1);
                        }
                        uint64_t b = sl_time_ns();
                        fdatasync(fd[k]);
                        wr[k][i] = (uint32_t)((b - a) / 1000);
                        sy[k][i] = (uint32_t)((sl_time_ns() - b) / 1000);
                }
        printf("pwrite(%u KiB, O_DIRECT) + fdatasync, %d interleaved rounds (us):\n\n", w >> 10,
               rounds);
        printf("| space | write p50 | write p90 | fdatasync p50 | fdatasync p90 |\n"
               "|---|---|---|---|---|\n");
        const char *name[2] = {"never written (fallocate, unwritten extents)",
                               "written before (overwrite)"};
        for (int k = 0; k < 2; k++) {
                qsort(wr[k], (size_t)rounds, sizeof(uint32_t), cmp_u32);
                qsort(sy[k], (size_t)rounds, sizeof(uint32_t), cmp_u32);
                printf("| %s | %u | %u | %u | %u |\n", name[k], wr[k][rounds / 2],
                       wr[k][rounds * 9 / 10], sy[k][rounds / 2], sy[k][rounds * 9 / 10]);
                close(fd[k]);
                unlink(path[k]);
        }
        free(lat);
        sl_dio_free(buf, w);
}

/* ---- log runs ------------------------------------------------------- */

/* Acks of one partition come in append order, so an appender's send
 * times form a FIFO. */
struct appender {
        struct bench *b;
        uint64_t t_ns[MAX_DEPTH];
        uint32_t head, inflight;
};

struct bench {
        struct log_partition *p;
        struct appender a[MAX_APPENDERS];
        uint64_t acks, bytes, errors;
        uint32_t len;
        uint32_t *lat_us;
        uint64_t nlat;
        uint8_t *batch;
};

static void on_ack(void *ctx, int64_t base, int res)
{
        struct appender *a = ctx;
        struct bench *b = a->b;
        (void)base;
        uint64_t t_ns = a->t_ns[a->head];
        a->head = (a->head + 1) % MAX_DEPTH;
        a->inflight--;
        if (res) {
                b->errors++;
                return;
        }
        b->acks++;
        b->bytes += b->len;
        if (b->nlat < MAX_LAT)
                b->lat_us[b->nlat++] = (uint32_t)((sl_time_ns() - t_ns) / 1000);
}

struct result {
        double mbs, appends_s, fsyncs_s, bytes_per_fsync, appends_per_fsync, p50_us, p99_us;
        double cpu_us_per_mib; /* the appending thread, user + system */
};

static uint64_t thread_cpu_us(void)
{
        struct rusage ru;
        getrusage(RUSAGE_THREAD, &ru);
        return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
               (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* Appenders send until `limit_ns` passes or `stop_bytes` are acked;
 * with `retention`, retention runs every poll step. */
static void append_loop(struct bench *b, struct log_owner *o, int appenders, uint32_t depth,
                        bool retention, uint64_t limit_ns, uint64_t stop_bytes)
{
        uint8_t *batch = b->batch;
        uint64_t t0 = sl_time_ns();
        while (sl_time_ns() - t0 < limit_ns && b->bytes < stop_bytes) {
                /* every appender with room sends its next batches: closed
                 * loop at depth 1, pipelined above */
                bool full = false;
                for (int i = 0; i < appenders && !full; i++) {
                        struct appender *a = &b->a[i];
                        while (a->inflight < depth) {
                                a->t_ns[(a->head + a->inflight) % MAX_DEPTH] = sl_time_ns();
                                int rc = log_append(b->p, batch, b->len, on_ack, a, NULL);
                                if (rc == -ENOBUFS) {
                                        full = true;
                                        break;
                                }
                                if (rc < 0) {
                                        fprintf(stderr, "append: %s\n", strerror(-rc));
                                        exit(1);
                                }
                                a->inflight++;
                        }
                }
                if (retention)
                        log_retention_run(b->p, sl_realtime_ms());
                /* one io_uring_enter: submit what the step queued and wait */
                log_owner_poll_wait(o);
        }
}

static struct result log_run(enum log_durability pol, int appenders, uint32_t depth, uint32_t bsize)
{
        struct result r = {0};
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/part-%d-%d-%u-%u", base_dir, pol, appenders, depth, bsize);
        rmrf(dir);
        struct log_io *io = log_io_uring_create(NULL, 512, 0);
        struct log_owner *o = log_owner_create(io);
        struct log_config cfg;
        log_config_default(&cfg);
        cfg.durability = pol;
        cfg.flush_interval_ms = 1000;
        cfg.ring_bytes = 32u << 20;
        cfg.max_batch_bytes = 2u << 20;
        cfg.max_pending = 1024;
        cfg.retention_ms = -1;
        /* BENCH_ZERO_AHEAD=bytes overrides the zero-fill window (0 = off)
         * for A/B runs of the same build */
        if (getenv("BENCH_ZERO_AHEAD"))
                cfg.zero_ahead_bytes = strtoull(getenv("BENCH_ZERO_AHEAD"), NULL, 0);
        /* BENCH_ZERO_ALL=1: zero-fill interval/none too, with no limit on
         * the bytes per fdatasync (what it costs a bandwidth-bound row) */
        /* BENCH_MAX_WRITE=bytes: the largest single write (A/B runs) */
        if (getenv("BENCH_MAX_WRITE"))
                cfg.max_write_bytes = (uint32_t)strtoul(getenv("BENCH_MAX_WRITE"), NULL, 0);
        /* BENCH_PREALLOC=bytes: the largest preallocation step, and
         * BENCH_PREALLOC_AHEAD_MS=ms the append rate a fast partition's
         * steps cover instead (0 = off), for A/B runs */
        if (getenv("BENCH_PREALLOC"))
                cfg.prealloc_bytes = strtoull(getenv("BENCH_PREALLOC"), NULL, 0);
        if (getenv("BENCH_PREALLOC_AHEAD_MS"))
                cfg.prealloc_ahead_ms =
                    (uint32_t)strtoul(getenv("BENCH_PREALLOC_AHEAD_MS"), NULL, 0);
        /* BENCH_TAIL_NOW=1: write the partly filled tail block at once (A/B) */
        if (getenv("BENCH_TAIL_NOW"))
                cfg.defer_tail_block = false;
        if (getenv("BENCH_ZERO_ALL")) {
                cfg.zero_fill_all = true;
                cfg.zero_fill_max_sync_bytes = 0;
        }
        /* BENCH_STEADY=1: a log in its steady state under retention, as a
         * broker is once it has run longer than its retention: 64 MiB
         * segments, 64 MiB retained, retention run every poll step, so
         * each roll writes over the spare retention kept (recycling).
         * 3 segments are appended before the timed part. BENCH_SEG=bytes
         * sets the segment (and retained) size. */
        bool steady = getenv("BENCH_STEADY") != NULL;
        if (steady) {
                cfg.segment_bytes =
                    getenv("BENCH_SEG") ? strtoull(getenv("BENCH_SEG"), 0, 0) : 64u << 20;
                cfg.retention_bytes = (int64_t)cfg.segment_bytes;
        }
        static struct bench b;
        memset(&b, 0, sizeof(b));
        b.lat_us = malloc(sizeof(uint32_t) * MAX_LAT);
        if (log_partition_open(o, dir, &cfg, 0, &b.p) < 0) {
                fprintf(stderr, "open %s failed\n", dir);
                exit(1);
        }
        uint8_t *batch = malloc(bsize + 128);
        b.len = make_batch(batch, bsize);
        b.batch = batch;
        for (int i = 0; i < appenders; i++)
                b.a[i].b = &b;
        struct log_metrics *m = log_owner_metrics(o);
        if (steady) {
                append_loop(&b, o, appenders, depth, true, 60ull * 1000000000,
                            3 * cfg.segment_bytes);
                log_owner_drain(o); /* every ack in: each appender is idle */
                b.acks = b.bytes = b.errors = b.nlat = 0;
        }
        uint64_t f0 = m->fsyncs, sb0 = m->synced_bytes, sa0 = m->synced_appends;
        uint64_t zb0 = m->zero_bytes, zw0 = m->zero_writes, ru0 = m->segments_reused,
                 rl0 = m->segments_rolled;
        uint64_t t0 = sl_time_ns(), limit = (uint64_t)(run_secs * 1e9), stop_bytes = 3ull << 30;
        uint64_t cpu0 = thread_cpu_us();
        append_loop(&b, o, appenders, depth, steady, limit, stop_bytes);
        double secs = (double)(sl_time_ns() - t0) / 1e9;
        if (steady && m->segments_rolled > rl0)
                fprintf(stderr,
                        "rolls: %llu, %llu of them over a recycled file (spares kept: %llu)\n",
                        (unsigned long long)(m->segments_rolled - rl0),
                        (unsigned long long)(m->segments_reused - ru0),
                        (unsigned long long)m->segments_recycled);
        r.cpu_us_per_mib =
            b.bytes ? (double)(thread_cpu_us() - cpu0) / ((double)b.bytes / (1 << 20)) : 0;
        uint64_t fs = m->fsyncs - f0;
        r.mbs = (double)b.bytes / secs / 1e6;
        r.appends_s = (double)b.acks / secs;
        r.fsyncs_s = (double)fs / secs;
        r.bytes_per_fsync = fs ? (double)(m->synced_bytes - sb0) / (double)fs : 0;
        r.appends_per_fsync = fs ? (double)(m->synced_appends - sa0) / (double)fs : 0;
        if (m->zero_writes > zw0)
                fprintf(stderr, "zero-fill: %llu writes, %.0f MiB (%.2f per MiB appended)\n",
                        (unsigned long long)(m->zero_writes - zw0),
                        (double)(m->zero_bytes - zb0) / (1 << 20),
                        b.bytes ? (double)(m->zero_bytes - zb0) / (double)b.bytes : 0);
        if (b.nlat) {
                qsort(b.lat_us, b.nlat, sizeof(uint32_t), cmp_u32);
                r.p50_us = b.lat_us[b.nlat / 2];
                r.p99_us = b.lat_us[b.nlat * 99 / 100];
        }
        log_owner_drain(o);
        log_partition_close(b.p);
        log_owner_destroy(o);
        io->ops->destroy(io);
        free(batch);
        free(b.lat_us);
        rmrf(dir);
        return r;
}

static const char *pol_name[] = {"fsync", "interval", "none"};

static void throughput(void)
{
        printf("File system: %s (one run each, %.1f s per log run)\n\n", base_dir, run_secs);
        double raw = 0;
        uint32_t wsizes[] = {256u << 10, 1u << 20};
        /* BENCH_SKIP_RAW=1 skips the raw O_DIRECT runs while iterating
         * (the "of raw O_DIRECT" ratios then mean nothing) */
        int nraw = getenv("BENCH_SKIP_RAW") ? 0 : 2;
        /* the best the device does: fresh space (a new segment) and
         * written blocks (a recycled one), one baseline for both tables */
        for (int ow = 0; ow < 2 && nraw; ow++)
                for (int i = 0; i < nraw; i++)
                        for (unsigned qd = 4; qd <= 16; qd *= 4) {
                                double v = raw_odirect_mbs(wsizes[i], qd, 1ull << 30, ow);
                                printf("raw O_DIRECT sequential write, %s, %u KiB x QD%u: %.0f "
                                       "MB/s\n",
                                       ow ? "over written blocks" : "fresh space", wsizes[i] >> 10,
                                       qd, v);
                                if (v > raw)
                                        raw = v;
                        }
        printf("\nraw O_DIRECT bandwidth (best of the above): **%.0f MB/s**\n\n", raw);
        printf("| policy | appenders | in flight each | batch | MB/s | appends/s | fsyncs/s | "
               "bytes/fsync | appends/fsync | ack p50 us | ack p99 us | CPU us/MiB | ratio |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        uint32_t sizes[] = {1u << 10, 16u << 10, 256u << 10, 1u << 20};
        /* closed loop (1 in flight) with 1 and 64 appenders, then one
         * pipelined appender with 5 in flight */
        int apps[] = {1, 64, 1};
        uint32_t depths[] = {1, 1, 5};
        for (int pol = 0; pol < 3; pol++)
                for (int ai = 0; ai < 3; ai++)
                        for (int si = 0; si < 4; si++) {
                                /* BENCH_ONLY="fsync 1 1024" (or "fsync 1x5 1024") runs
                                 * one row */
                                const char *only = getenv("BENCH_ONLY");
                                char me[64];
                                if (depths[ai] > 1)
                                        snprintf(me, sizeof(me), "%s %dx%u %u", pol_name[pol],
                                                 apps[ai], depths[ai], sizes[si] >> 10);
                                else
                                        snprintf(me, sizeof(me), "%s %d %u", pol_name[pol],
                                                 apps[ai], sizes[si] >> 10);
                                if (only && strcmp(only, me))
                                        continue;
                                struct result r = log_run((enum log_durability)pol, apps[ai],
                                                          depths[ai], sizes[si]);
                                char ratio[160];
                                if (pol == LOG_DURABILITY_FSYNC && r.bytes_per_fsync > 0 &&
                                    getenv("BENCH_SKIP_RAW")) {
                                        snprintf(ratio, sizeof(ratio), "(raw skipped)");
                                } else if (pol == LOG_DURABILITY_FSYNC && r.bytes_per_fsync > 0) {
                                        double fps;
                                        double rs = raw_write_fsync_mbs((uint64_t)r.bytes_per_fsync,
                                                                        &fps, false);
                                        double rf = raw_write_fsync_mbs((uint64_t)r.bytes_per_fsync,
                                                                        &fps, true);
                                        snprintf(ratio, sizeof(ratio),
                                                 "%.2f of raw write(S)+fdatasync (%.0f MB/s); "
                                                 "%.2f of fresh-space raw (%.0f MB/s)",
                                                 r.mbs / rs, rs, r.mbs / rf, rf);
                                } else {
                                        snprintf(ratio, sizeof(ratio), "%.2f of raw O_DIRECT",
                                                 r.mbs / raw);
                                }
                                printf(
                                    "| %s | %d | %u | %u KiB | %.0f | %.0f | %.0f | %.0f | %.1f | "
                                    "%.0f | %.0f | %.0f | %s |\n",
                                    pol_name[pol], apps[ai], depths[ai], sizes[si] >> 10, r.mbs,
                                    r.appends_s, r.fsyncs_s, r.bytes_per_fsync, r.appends_per_fsync,
                                    r.p50_us, r.p99_us, r.cpu_us_per_mib, ratio);
                                fflush(stdout);
                        }
}

/* ---- start-up -------------------------------------------------------- */

static void startup(int parts, uint64_t mib_each)
{
        struct log_io *io = log_io_uring_create(NULL, 512, 0);
        struct log_owner *o = log_owner_create(io);
        struct log_config cfg;
        log_config_default(&cfg);
        cfg.durability = LOG_DURABILITY_NONE;
        cfg.ring_bytes = 4u << 20;
        cfg.retention_ms = -1;
        struct log_partition **p = calloc((size_t)parts, sizeof(*p));
        uint8_t *batch = malloc(1u << 20);
        uint32_t len = make_batch(batch, 256u << 10);
        char dir[512];
        uint64_t t0 = sl_time_ns();
        for (int i = 0; i < parts; i++) {
                snprintf(dir, sizeof(dir), "%s/startup/p%05d", base_dir, i);
                if (i == 0) {
                        snprintf(dir, sizeof(dir), "%s/startup", base_dir);
                        mkdir(dir, 0755);
                        snprintf(dir, sizeof(dir), "%s/startup/p%05d", base_dir, i);
                }
                if (log_partition_open(o, dir, &cfg, 0, &p[i]) < 0) {
                        fprintf(stderr, "open failed (fd limit? ulimit -n)\n");
                        exit(1);
                }
                uint64_t want = mib_each << 20, done = 0;
                while (done < want) {
                        int rc = log_append(p[i], batch, len, NULL, NULL, NULL);
                        if (rc == -ENOBUFS) {
                                log_owner_poll_wait(o);
                                continue;
                        }
                        if (rc < 0) {
                                fprintf(stderr, "append: %s\n", strerror(-rc));
                                exit(1);
                        }
                        done += len;
                }
                log_owner_drain(o);
        }
        double fill = (double)(sl_time_ns() - t0) / 1e9;
        for (int i = 0; i < parts; i++)
                log_partition_close(p[i]);
        sync();
        int dc = open("/proc/sys/vm/drop_caches", O_WRONLY);
        if (dc >= 0) {
                if (write(dc, "3", 1) != 1) {
                        /* not fatal: O_DIRECT reads bypass the cache anyway */
                }
                close(dc);
        }
        t0 = sl_time_ns();
        for (int i = 0; i < parts; i++) {
                snprintf(dir, sizeof(dir), "%s/startup/p%05d", base_dir, i);
                if (log_partition_open(o, dir, &cfg, 0, &p[i]) < 0) {
                        fprintf(stderr, "reopen failed\n");
                        exit(1);
                }
        }
        double open_s = (double)(sl_time_ns() - t0) / 1e9;
        /* now as after a crash: no recovery points, every tail rescanned */
        for (int i = 0; i < parts; i++)
                log_partition_abandon(p[i]);
        t0 = sl_time_ns();
        for (int i = 0; i < parts; i++) {
                snprintf(dir, sizeof(dir), "%s/startup/p%05d", base_dir, i);
                if (log_partition_open(o, dir, &cfg, 0, &p[i]) < 0) {
                        fprintf(stderr, "reopen failed\n");
                        exit(1);
                }
        }
        double crash_s = (double)(sl_time_ns() - t0) / 1e9;
        double gib = (double)parts * (double)mib_each / 1024.0;
        printf("start-up with %d partitions x %llu MiB (%.2f GiB, 1 GiB segments, fill took %.1f "
               "s):\n\n",
               parts, (unsigned long long)mib_each, gib, fill);
        printf("- after a clean shutdown (recovery points): **%.2f s** (%.2f ms per partition)\n",
               open_s, open_s * 1000.0 / parts);
        printf("- after a crash (tails scanned from their last recovery point): **%.2f s** (%.2f "
               "ms per "
               "partition, %.0f MB/s scanned)\n",
               crash_s, crash_s * 1000.0 / parts,
               (double)parts * (double)(mib_each << 20) / crash_s / 1e6);
        for (int i = 0; i < parts; i++)
                log_partition_close(p[i]);
        log_owner_destroy(o);
        io->ops->destroy(io);
        snprintf(dir, sizeof(dir), "%s/startup", base_dir);
        rmrf(dir);
        free(p);
        free(batch);
}

/* ---- CRC-32C ----------------------------------------------------------- */

/* CPU cost of the append path's one pass over a batch: the CRC alone, and
 * the check-while-copy into a ring far larger than the caches (as the
 * staging ring is), for 1 KiB and 1 MiB batches. */
static void crc_bench(void)
{
        const size_t ring = 32u << 20;
        uint8_t *dst = aligned_alloc(4096, ring), *src = aligned_alloc(4096, 1u << 20);
        memset(dst, 0, ring);
        for (size_t i = 0; i < (1u << 20); i++)
                src[i] = (uint8_t)(i * 13);
        const size_t sizes[] = {1u << 10, 1u << 20};
        for (int i = 0; i < 2; i++) {
                size_t n = sizes[i], total = 2ull << 30;
                uint32_t sink = 0;
                uint64_t t0 = sl_time_ns();
                for (size_t done = 0; done < total; done += n)
                        sink ^= log_crc32c(0, src, n);
                double crc_s = (double)(sl_time_ns() - t0) / 1e9;
                t0 = sl_time_ns();
                size_t at = 0;
                for (size_t done = 0; done < total; done += n) {
                        if (at + n > ring)
                                at = 0;
                        sink ^= log_crc32c_copy(0, dst + at, src, n);
                        at += n;
                }
                double copy_s = (double)(sl_time_ns() - t0) / 1e9;
                printf("crc32c %zu KiB: check %.2f GB/s, check+copy %.2f GB/s (%s, sink %08x)\n",
                       n >> 10, (double)total / crc_s / 1e9, (double)total / copy_s / 1e9,
                       log_crc32c_hw() ? "sse4.2" : "table", sink);
        }
        free(dst);
        free(src);
}

int main(int argc, char **argv)
{
        if (argc < 2) {
                fprintf(stderr,
                        "usage: %s DIR [secs] | DIR --startup PARTS MIB_EACH | DIR --extents "
                        "[ROUNDS] | --crc\n",
                        argv[0]);
                return 2;
        }
        if (!strcmp(argv[1], "--crc")) {
                crc_bench();
                return 0;
        }
        base_dir = argv[1];
        mkdir(base_dir, 0755);
        if (argc >= 5 && !strcmp(argv[2], "--startup")) {
                startup(atoi(argv[3]), strtoull(argv[4], NULL, 10));
                return 0;
        }
        if (argc >= 3 && !strcmp(argv[2], "--extents")) {
                extents(1u << 20, argc >= 4 ? atoi(argv[3]) : 300);
                return 0;
        }
        if (argc >= 3)
                run_secs = atof(argv[2]);
        throughput();
        return 0;
}
