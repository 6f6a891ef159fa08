/* Partition log behaviour on the real io_uring backend and on the fake:
 * append and read back (memory and disk), segment roll, index lookups at
 * boundaries, lookups by time, visibility and wake-ups per policy,
 * retention, trim, the single-tail-write rule under reordered completions,
 * and I/O errors that must not harm acknowledged data. */
#include "st_harness.h"

#include <dirent.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

static struct log_io *uring(void)
{
        struct log_io *io = log_io_uring_create(NULL, 256, 0);
        assert_non_null(io);
        return io;
}

static int count_files(const char *dir, const char *suffix)
{
        DIR *d = opendir(dir);
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name), sl = strlen(suffix);
                if (l > sl && !strcmp(de->d_name + l - sl, suffix))
                        n++;
        }
        closedir(d);
        return n;
}

/* Every offset reads back as the batch holding it, from wherever it is. */
static void check_all_offsets(struct st_part *s)
{
        struct log_read r;
        int64_t end = s->b[s->nb - 1].base + s->b[s->nb - 1].count;
        for (int64_t off = log_start_offset(s->p); off < end; off++) {
                int rc = st_read(s, &r, off, false, 0, 1);
                assert_true(rc > 0);
                int i = st_find(s, off);
                assert_int_equal(r.offset_found, s->b[i].base);
                assert_int_equal(st_check_view(s, &r, off), 1);
        }
}

/* After a run: reopen (recovery), every appended batch is there at its
 * offset and nothing past the last one, then free. */
static void reopen_check_free(struct st_part *s)
{
        st_part_reopen(s);
        assert_int_equal(log_end_offset(s->p), s->b[s->nb - 1].base + s->b[s->nb - 1].count);
        check_all_offsets(s);
        st_part_free(s);
}

static void test_append_read(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 50; i++)
                st_append_ok(&s, 1 + i % 4, 100 + i, 1000 + i);
        /* fsync policy: nothing is visible before the sync round */
        assert_int_equal(log_high_watermark(s.p), 0);
        st_drain(s.o);
        int64_t end = log_end_offset(s.p);
        assert_int_equal(log_high_watermark(s.p), end);
        for (int i = 0; i < s.nb; i++)
                assert_true(s.b[i].acked);
        struct log_metrics *m = log_owner_metrics(s.o);
        assert_true(m->fsyncs >= 1);
        assert_int_equal(m->appends, 50);
        /* from memory: the whole log in one read */
        struct log_read r;
        int rc = st_read(&s, &r, 0, false, 0, 1 << 20);
        assert_true(rc > 0);
        assert_int_equal(st_check_view(&s, &r, 0), 50);
        assert_true(m->reads_mem >= 1);
        /* after a reopen everything comes from disk */
        st_part_reopen(&s);
        assert_int_equal(log_end_offset(s.p), end);
        assert_int_equal(log_high_watermark(s.p), end);
        rc = st_read(&s, &r, 0, false, 0, 1 << 20);
        assert_true(rc > 0);
        assert_int_equal(st_check_view(&s, &r, 0), 50);
        assert_true(m->reads_disk >= 1);
        check_all_offsets(&s);
        /* appends continue where the log ended, rewriting the tail block */
        st_append_ok(&s, 2, 10, 5000);
        st_drain(s.o);
        st_part_reopen(&s);
        check_all_offsets(&s);
        /* a corrupt batch is refused and nothing is stored */
        uint8_t bad[512];
        uint32_t n = st_batch(bad, 1, 50, 1, 1);
        bad[n - 2] ^= 1;
        assert_int_equal(log_append(s.p, bad, n, NULL, NULL, NULL), -EBADMSG);
        assert_int_equal(log_end_offset(s.p), end + 2);
        st_part_free(&s);
}

/* Roll by age (segment_ms) across a restart: the tail segment's age counts
 * from its first batch's max timestamp, as Kafka's rollingBasedTimestamp,
 * so a restart does not give an old segment a new life; a tail whose first
 * batch is recent stays. */
static void test_roll_by_age_survives_restart(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.segment_ms = 60000;
        st_part_open(&s);
        int64_t now = (int64_t)sl_realtime_ms();
        st_append_ok(&s, 1, 100, now - 120000);
        st_append_ok(&s, 1, 100, now - 120000);
        st_drain(s.o);
        /* live, the age runs from the segment's creation: no roll yet */
        assert_int_equal(count_files(s.dir, ".log"), 1);
        st_part_reopen(&s);
        st_append_ok(&s, 1, 100, now);
        st_drain(s.o);
        assert_int_equal(count_files(s.dir, ".log"), 2);
        st_part_reopen(&s);
        st_append_ok(&s, 1, 100, now);
        st_drain(s.o);
        assert_int_equal(count_files(s.dir, ".log"), 2);
        check_all_offsets(&s);
        st_part_free(&s);
}

static void test_roll_and_index_boundaries(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 400; i++)
                st_append_ok(&s, 1 + i % 3, 700, 10 * i);
        st_drain(s.o);
        int segs = count_files(s.dir, ".log");
        assert_true(segs >= 4);
        assert_true(log_owner_metrics(s.o)->segments_rolled >= 3);
        /* sealed segments got their index files; the tail may have a
         * recovery point too */
        assert_true(count_files(s.dir, ".index") >= segs - 1);
        assert_int_equal(count_files(s.dir, ".timeindex"), count_files(s.dir, ".index"));
        st_part_reopen(&s);
        check_all_offsets(&s);
        /* boundaries: first, last, past the end, before the start */
        struct log_read r;
        int64_t hw = log_high_watermark(s.p);
        assert_int_equal(st_read(&s, &r, hw, false, 0, 1), -ERANGE);
        assert_int_equal(st_read(&s, &r, -1, false, 0, 1), -ERANGE);
        assert_true(st_read(&s, &r, hw - 1, false, 0, 1) > 0);
        assert_int_equal(r.offset_found, s.b[s.nb - 1].base);
        /* a read spanning a segment end stops at it; the next starts there */
        assert_true(st_read(&s, &r, 0, false, 0, 1 << 20) > 0);
        int n = st_check_view(&s, &r, 0);
        assert_true(n > 1 && n < s.nb);
        int64_t next = s.b[n].base;
        assert_true(st_read(&s, &r, next, false, 0, 1 << 20) > 0);
        assert_int_equal(r.offset_found, next);
        /* damaged index files are rebuilt from the log */
        DIR *d = opendir(s.dir);
        struct dirent *de;
        int damaged = 0;
        while ((de = readdir(d))) {
                char path[600];
                snprintf(path, sizeof(path), "%s/%s", s.dir, de->d_name);
                if (strstr(de->d_name, ".timeindex") && damaged++ == 0)
                        truncate(path, 13);
                else if (strstr(de->d_name, ".index") && damaged++ == 1)
                        unlink(path);
        }
        closedir(d);
        st_part_reopen(&s);
        assert_int_equal(log_partition_state(s.p), 0);
        check_all_offsets(&s);
        st_part_free(&s);
}

/* The in-memory index grows by chunks that the poll step reserves ahead:
 * appends with a poll step between them never allocate; a burst with no
 * poll that outruns the reserve allocates a chunk (counted, never a copy).
 * Either way every offset reads back, from memory and from disk. */
static void test_index_grows_ahead_of_appends(void **state)
{
        (void)state;
        for (int burst = 0; burst < 2; burst++) {
                struct st_part s;
                st_part_init(&s, uring());
                s.cfg.index_interval_bytes = 1; /* an entry per batch */
                s.cfg.segment_bytes = 16 << 20;
                s.cfg.ring_bytes = 4 << 20;
                s.cfg.max_pending = 4096;
                st_part_open(&s);
                for (int i = 0; i < 3000; i++) {
                        assert_int_equal(st_append(&s, 1, 20, 1000 + i), 0);
                        if (!burst)
                                log_owner_poll(s.o);
                }
                st_drain(s.o);
                uint64_t grows = log_owner_metrics(s.o)->index_grows_on_append;
                if (burst)
                        assert_true(grows > 0);
                else
                        assert_int_equal(grows, 0);
                check_all_offsets(&s);
                st_part_reopen(&s);
                check_all_offsets(&s);
                st_part_free(&s);
        }
}

/* A roll never blocks the append on openat (hundreds of microseconds on
 * ext4 here): the new segment's file is created by an async request while
 * appends go on into the ring, and its writes wait for the fd; index files
 * are created the same way. A failed create is the partition's storage
 * error; what was acked stays readable. */
static void test_roll_opens_segment_async(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, log_io_fake_create(11));
        st_part_open(&s);
        struct log_io_fake_stats st0, st1;
        log_io_fake_stats(s.io, &st0);
        for (int i = 0; i < 400; i++)
                st_append_ok(&s, 1 + i % 3, 700, 10 * i);
        st_drain(s.o);
        log_io_fake_stats(s.io, &st1);
        uint64_t rolled = log_owner_metrics(s.o)->segments_rolled;
        assert_true(rolled >= 3);
        /* no openat on the worker while serving: segments and their
         * index files are all created through the ring */
        assert_int_equal(st1.opens_sync, st0.opens_sync);
        assert_true(st1.opens_async - st0.opens_async >= rolled + 2 * (rolled - 1));
        assert_int_equal(log_partition_state(s.p), 0);
        check_all_offsets(&s);
        /* creates fail from now on: the next roll's (index files only
         * lose their file) */
        int acked = s.nb;
        log_io_fake_fail(s.io, LOG_IO_OPENAT, EMFILE, 0, -1);
        int rc = 0;
        for (int i = 0; i < 400 && (rc == 0 || rc == -ENOBUFS); i++) {
                rc = st_append(&s, 1, 700, 5000 + i);
                log_owner_poll(s.o);
        }
        assert_int_equal(rc, -EMFILE);
        st_drain(s.o);
        assert_int_equal(log_partition_state(s.p), -EMFILE);
        assert_int_equal(st_append(&s, 1, 10, 1), -EMFILE);
        for (int i = 0; i < acked; i++)
                assert_true(s.b[i].acked);
        struct log_read r;
        assert_true(st_read(&s, &r, s.b[acked - 1].base, false, 0, 1) > 0);
        assert_int_equal(r.offset_found, s.b[acked - 1].base);
        log_io_fake_fail(s.io, 0, 0, 0, 0);
        st_part_free(&s);
}

/* A tail write in flight holds back only its own block: the full blocks
 * of a later append go at once, and the block's rewrite follows when the
 * tail write completes (never two writes on one block in flight). */
static void test_full_blocks_pass_a_tail_write_in_flight(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, log_io_fake_create(3));
        s.cfg.max_write_bytes = 1 << 20;
        st_part_open(&s);
        log_io_fake_set_order(s.io, 2);
        assert_int_equal(st_append(&s, 1, 100, 1), 0); /* ends mid-block */
        log_owner_poll(s.o);
        assert_int_equal(st_append(&s, 2, 6000, 2), 0); /* spans 3 more blocks */
        log_owner_poll(s.o);
        struct log_io_fake_stats st;
        log_io_fake_stats(s.io, &st);
        assert_int_equal(st.max_inflight_writes_per_fd, 2);
        st_drain(s.o);
        log_io_fake_stats(s.io, &st);
        assert_int_equal(st.overlap_violations, 0);
        assert_true(s.b[0].acked && s.b[1].acked);
        check_all_offsets(&s);
        st_part_reopen(&s);
        check_all_offsets(&s);
        st_part_free(&s);
}

/* With zero-fill off, appends land on preallocated space no write touched
 * yet. The block a batch ended in was written (partly) for its ack; the
 * next append fills it and goes on into fresh blocks. One write over both
 * is no overwrite to ext4 (no single extent maps it): it takes the inode
 * lock exclusively and io_uring punts it to io-wq (traced: 691 of 1423
 * writes in the 1 x 1 MiB fsync bench row). The block's rewrite must go as
 * its own write and the fresh blocks as another, in whatever order the
 * completions come. */
static void test_partial_block_rewrite_apart_from_fresh_blocks(void **state)
{
        (void)state;
        for (int order = 0; order < 2; order++) {
                struct st_part s;
                st_part_init(&s, log_io_fake_create(11));
                s.cfg.zero_ahead_bytes = 0;
                s.cfg.segment_bytes = 1 << 20;
                s.cfg.ring_bytes = 256 * 1024;
                s.cfg.max_batch_bytes = 64 * 1024;
                s.cfg.max_write_bytes = 64 * 1024;
                st_part_open(&s);
                log_io_fake_set_order(s.io, order);
                uint32_t sizes[] = {100, 6000, 20000, 300, 5000};
                for (int i = 0; i < 5; i++) {
                        assert_int_equal(st_append(&s, 1, sizes[i], (uint32_t)i), 0);
                        st_drain(s.o);
                        assert_true(s.b[s.nb - 1].acked);
                }
                struct log_io_fake_stats st;
                log_io_fake_stats(s.io, &st);
                assert_int_equal(st.writes_over_old_and_new, 0);
                assert_int_equal(st.overlap_violations, 0);
                /* one block rewrite more per append that ended mid-block */
                assert_true(st.writes >= 9);
                reopen_check_free(&s);
        }
}

/* A `fsync` round that becomes due when the oldest append's write
 * completes also waits for the writes already submitted then: they finish
 * about together, and an fdatasync issued at once would leave them to a
 * second round queued behind it (traced: twice the fdatasyncs at half the
 * bytes). Here the second append's writes are in flight when the first
 * one's completes: one fdatasync acks both. */
static void test_sync_round_covers_writes_in_flight(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, log_io_fake_create(5));
        s.cfg.zero_ahead_bytes = 0; /* a zero write in flight would hold the second append back */
        st_part_open(&s);
        st_append_ok(&s, 1, 100, 0); /* its round also syncs the new segment's directory */
        st_drain(s.o);
        log_io_fake_set_order(s.io, 2); /* a wait completes the oldest request only */
        struct log_io_fake_stats st0, st;
        log_io_fake_stats(s.io, &st0);
        assert_int_equal(st_append(&s, 1, 100, 1), 0);
        log_owner_poll(s.o);
        assert_int_equal(st_append(&s, 1, 6000, 2), 0);
        log_owner_poll(s.o);
        st_drain(s.o);
        log_io_fake_stats(s.io, &st);
        assert_true(s.b[1].acked && s.b[2].acked);
        assert_int_equal(st.fsyncs - st0.fsyncs, 1);
        reopen_check_free(&s);
}

/* A `none` partition under load writes whole blocks only: with a write in
 * flight, the block an append ended in waits for the next write instead of
 * going now and being rewritten by a 4 KiB write of its own (which kept the
 * block layer from merging the sequential writes). Same appends, same
 * completion order, with and without: far fewer block rewrites, no
 * overlap, every batch acked and read back. */
static void test_tail_block_waits_for_the_next_write(void **state)
{
        (void)state;
        uint64_t rewrites[2];
        for (int defer = 0; defer < 2; defer++) {
                struct st_part s;
                st_part_init(&s, log_io_fake_create(21));
                s.cfg.durability = LOG_DURABILITY_NONE;
                s.cfg.defer_tail_block = defer;
                s.cfg.segment_bytes = 1 << 20;
                s.cfg.ring_bytes = 256 * 1024;
                st_part_open(&s);
                log_io_fake_set_order(s.io, 2); /* a wait completes the oldest only */
                struct log_io_fake_stats st0, st;
                log_io_fake_stats(s.io, &st0);
                for (int i = 0; i < 12; i++) {
                        assert_int_equal(st_append(&s, 1, 6000, i), 0);
                        log_owner_poll(s.o); /* submits; completes nothing */
                        if (i % 3 == 2)
                                s.io->ops->wait(s.io); /* the oldest write completes */
                }
                st_drain(s.o);
                log_io_fake_stats(s.io, &st);
                for (int i = 0; i < s.nb; i++)
                        assert_true(s.b[i].acked);
                assert_int_equal(st.overlap_violations, 0);
                rewrites[defer] = st.block_rewrites - st0.block_rewrites;
                reopen_check_free(&s);
        }
        /* at once: a rewrite whenever the block was written with a write
         * still in flight; deferred: only after the partition was idle */
        assert_true(rewrites[0] >= 4); /* measured 4 */
        assert_true(rewrites[1] <= 1); /* the first write's tail, once */
}

/* A write's worth staged goes to the backend from log_append itself, not
 * at the next poll step: the device works while the caller copies its next
 * batches. Less than that waits for the step (one submission per step). */
static void test_full_write_staged_goes_at_once(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, log_io_fake_create(22));
        s.cfg.durability = LOG_DURABILITY_NONE;
        s.cfg.zero_ahead_bytes = 0;
        s.cfg.max_write_bytes = 8192;
        st_part_open(&s);
        st_drain(s.o);
        assert_int_equal(st_append(&s, 1, 1000, 0), 0);
        assert_int_equal(s.io->inflight, 0); /* small: waits for the step */
        assert_int_equal(st_append(&s, 1, 9000, 1), 0);
        assert_true(s.io->inflight > 0); /* a full write: submitted now */
        st_drain(s.o);
        assert_true(s.b[0].acked && s.b[1].acked);
        reopen_check_free(&s);
}

/* Acks run at the end of a poll step, after the step's writes went to the
 * backend: an ack's callback that appends (a closed-loop producer) must not
 * hold back writes already staged. Here a second batch is staged while the
 * first one's write is in flight; when that completes, the second one's
 * write is in flight by the time the first one's ack runs. */
struct ack_probe {
        struct st_part *s;
        unsigned inflight_at_ack;
        bool acked;
};

static void ack_probe_cb(void *ctx, int64_t base, int res)
{
        struct ack_probe *a = ctx;
        (void)base;
        a->acked = res == 0;
        a->inflight_at_ack = a->s->io->inflight;
}

static void test_acks_run_after_staged_writes_go(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, log_io_fake_create(23));
        s.cfg.durability = LOG_DURABILITY_NONE;
        s.cfg.zero_ahead_bytes = 0;
        st_part_open(&s);
        st_drain(s.o);
        log_io_fake_set_order(s.io, 2); /* a wait completes the oldest only */
        uint8_t *buf = malloc(16384);
        struct ack_probe a = {.s = &s};
        uint32_t n = st_batch(buf, 1, 4000, 0, 1);
        assert_int_equal(log_append(s.p, buf, n, ack_probe_cb, &a, NULL), 0);
        log_owner_poll(s.o); /* its write goes */
        assert_int_equal(s.io->inflight, 1);
        n = st_batch(buf, 1, 4000, 1, 2);
        assert_int_equal(log_append(s.p, buf, n, NULL, NULL, NULL), 0); /* staged */
        s.io->ops->wait(s.io); /* the first write completes */
        assert_false(a.acked); /* not inside the completion */
        log_owner_poll(s.o);
        assert_true(a.acked);
        assert_true(a.inflight_at_ack > 0); /* the second write went first */
        st_drain(s.o);
        free(buf);
        log_partition_close(s.p);
        s.p = NULL;
        st_part_free(&s);
}

static void test_by_time(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 300; i++)
                st_append_ok(&s, 2, 500, 1000 + 10 * i);
        st_drain(s.o);
        for (int pass = 0; pass < 2; pass++) { /* memory, then disk */
                struct log_read r;
                for (int i = 0; i < 300; i += 7) {
                        int64_t ts = 1000 + 10 * i;
                        assert_true(st_read(&s, &r, 0, true, ts, 1) > 0);
                        assert_int_equal(r.offset_found, s.b[i].base);
                        assert_true(st_read(&s, &r, 0, true, ts - 5, 1) > 0);
                        assert_int_equal(r.offset_found, s.b[i].base);
                }
                assert_true(st_read(&s, &r, 0, true, 0, 1) > 0);
                assert_int_equal(r.offset_found, 0);
                assert_int_equal(st_read(&s, &r, 0, true, 1000 + 10 * 300, 1), -ERANGE);
                st_part_reopen(&s);
        }
        st_part_free(&s);
}

/* ListOffsets by timestamp after the start offset moved forward (a trim
 * into the middle of a batch, segments still on disk below it): the answer
 * is never a trimmed offset. A timestamp below everything retained answers
 * the first retained offset, from memory and from disk alike. */
static void test_by_time_below_trim_point(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.ring_bytes = 1 << 20; /* pass 0 answers from memory */
        st_part_open(&s);
        for (int i = 0; i < 200; i++)
                st_append_ok(&s, 5, 500, 1000 + 10 * i); /* batch i: offsets 5i..5i+4 */
        st_drain(s.o);
        const int64_t trim = 5 * 150 + 2; /* inside batch 150, past whole segments */
        assert_int_equal(log_trim(s.p, trim), 0);
        st_drain(s.o);
        assert_int_equal(log_start_offset(s.p), trim);
        for (int pass = 0; pass < 2; pass++) { /* memory, then disk */
                struct log_read r;
                assert_true(st_read(&s, &r, 0, true, 0, 1) > 0);
                assert_int_equal(r.offset_found, trim);
                assert_true(st_read(&s, &r, 0, true, 1000 + 10 * 20, 1) > 0);
                assert_int_equal(r.offset_found, trim);
                assert_true(st_read(&s, &r, 0, true, 1000 + 10 * 149 + 5, 1) > 0);
                assert_int_equal(r.offset_found, trim);
                assert_true(st_read(&s, &r, 0, true, 1000 + 10 * 151, 1) > 0);
                assert_int_equal(r.offset_found, 5 * 151);
                assert_int_equal(st_read(&s, &r, 0, true, 1000 + 10 * 200, 1), -ERANGE);
                st_part_reopen(&s);
                assert_int_equal(log_start_offset(s.p), trim);
        }
        st_part_free(&s);
}

struct woke {
        int n;
        int64_t hw;
};

static void wake_cb(struct log_wait *w, int64_t hw)
{
        struct woke *k = w->ctx;
        k->n++;
        k->hw = hw;
}

static void test_visibility_and_waits(void **state)
{
        (void)state;
        for (int pol = 0; pol < 3; pol++) {
                struct st_part s;
                st_part_init(&s, uring());
                s.cfg.durability = (enum log_durability)pol;
                s.cfg.flush_interval_ms = 0;
                st_part_open(&s);
                struct woke k = {0}, k2 = {0};
                struct log_wait w = {.offset = 0, .cb = wake_cb, .ctx = &k};
                struct log_wait w2 = {.offset = 0, .cb = wake_cb, .ctx = &k2};
                assert_int_equal(log_wait_add(s.p, &w), 0);
                assert_int_equal(log_wait_add(s.p, &w2), 0);
                log_wait_cancel(s.p, &w2);
                st_append_ok(&s, 3, 10, 1);
                if (pol == LOG_DURABILITY_FSYNC)
                        assert_int_equal(log_high_watermark(s.p), 0); /* visible means durable */
                else
                        assert_int_equal(log_high_watermark(s.p), 3); /* log end */
                assert_int_equal(k.n, 0); /* callbacks run from the poll step */
                st_drain(s.o);
                assert_int_equal(k.n, 1);
                assert_int_equal(k.hw, 3);
                assert_int_equal(k2.n, 0);
                assert_true(s.b[0].acked);
                struct log_wait w3 = {.offset = 2, .cb = wake_cb, .ctx = &k};
                assert_int_equal(log_wait_add(s.p, &w3), 1); /* already visible */
                if (pol == LOG_DURABILITY_NONE)
                        assert_int_equal(log_owner_metrics(s.o)->fsyncs, 0);
                st_part_free(&s);
        }
}

/* `interval`: a sealed segment leaves the write window only once synced,
 * and a roll needs a free slot. Appending more than the window's segments
 * within one interval must not wait for the interval's sync (it did: 64 MiB
 * segments at a 1 s interval capped a partition at 268 MB/s). */
static void test_interval_rolls_without_waiting_for_the_interval(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.durability = LOG_DURABILITY_INTERVAL;
        s.cfg.flush_interval_ms = 600000;
        st_part_open(&s);
        uint64_t deadline = sl_time_ns() + 10ull * 1000000000;
        int appended = 0;
        while (appended < 600 && sl_time_ns() < deadline) {
                int rc = st_append(&s, 1, 900, 1);
                if (rc == 0)
                        appended++;
                else
                        assert_int_equal(rc, -ENOBUFS);
                log_owner_poll(s.o);
                if (rc && s.io->inflight)
                        s.io->ops->wait(s.io);
        }
        assert_int_equal(appended, 600); /* 10 segments of 64 KiB */
        assert_true(log_owner_metrics(s.o)->segments_rolled >= 8);
        st_part_free(&s);
}

static ino_t inode_of(const char *dir, const char *name)
{
        char path[512];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* The segment file whose inode is `ino`, or "" */
static const char *segment_with_inode(const char *dir, ino_t ino, char *out, size_t n)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        out[0] = 0;
        while (d && (de = readdir(d)))
                if (strlen(de->d_name) == 24 && !strcmp(de->d_name + 20, ".log") &&
                    inode_of(dir, de->d_name) == ino)
                        snprintf(out, n, "%s", de->d_name);
        if (d)
                closedir(d);
        return out;
}

/* Retention keeps a deleted segment's file as a spare and the next roll
 * writes over it (recycle_segments): same inode, every batch reads back,
 * and what its old life left past the appends (valid batches of lower
 * offsets) is never served, not after a crash either: recovery's
 * continuity check stops at the first of them. A spare found at open is
 * unlinked. */
static void test_retention_recycles_segment_files(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.retention_bytes = 150 * 1024;
        s.cfg.recycle_segments = 1; /* one spare: the rest are unlinked */
        st_part_open(&s);
        for (int i = 0; i < 400; i++)
                st_append_ok(&s, 1, 900, 1);
        st_drain(s.o);
        const struct log_metrics *m = log_owner_metrics(s.o);
        assert_true(log_retention_run(s.p, sl_realtime_ms()) > 1);
        st_drain(s.o);
        assert_int_equal(m->segments_recycled, 1); /* one spare: the rest unlinked */
        assert_int_equal(count_files(s.dir, ".seg"), 1);
        ino_t spare = inode_of(s.dir, "recycle-0.seg");
        assert_true(spare != 0);
        /* append into the next segment, a few batches only: the reused
         * file keeps most of its old batches past them */
        uint64_t rolled = m->segments_rolled;
        while (m->segments_rolled == rolled)
                st_append_ok(&s, 1, 900, 1);
        for (int i = 0; i < 3; i++)
                st_append_ok(&s, 1, 900, 1);
        st_drain(s.o);
        assert_int_equal(m->segments_reused, 1);
        assert_int_equal(count_files(s.dir, ".seg"), 0);
        char name[64];
        assert_string_not_equal(segment_with_inode(s.dir, spare, name, sizeof(name)), "");
        check_all_offsets(&s);
        /* a crash: no clean close, so no recovery point for the tail; the
         * scan runs into the stale batches */
        int64_t end = log_end_offset(s.p);
        log_partition_abandon(s.p);
        s.p = NULL;
        st_part_open(&s);
        assert_int_equal(log_partition_state(s.p), 0);
        assert_int_equal(log_end_offset(s.p), end);
        check_all_offsets(&s);
        /* a spare left at close is unlinked at open */
        assert_int_equal(log_trim(s.p, log_high_watermark(s.p) - 1), 0);
        st_drain(s.o);
        assert_int_equal(count_files(s.dir, ".seg"), 1);
        st_part_reopen(&s);
        assert_int_equal(count_files(s.dir, ".seg"), 0);
        check_all_offsets(&s);
        st_part_free(&s);
}

static void test_retention_and_trim(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.retention_bytes = 150 * 1024;
        st_part_open(&s);
        int64_t old = (int64_t)sl_realtime_ms() - 3600 * 1000;
        for (int i = 0; i < 400; i++)
                st_append_ok(&s, 1, 900, old);
        st_drain(s.o);
        int before = count_files(s.dir, ".log");
        int n = log_retention_run(s.p, sl_realtime_ms());
        st_drain(s.o);
        assert_true(n > 0);
        assert_int_equal(count_files(s.dir, ".log"), before - n);
        int64_t start = log_start_offset(s.p);
        assert_true(start > 0);
        struct log_read r;
        assert_int_equal(st_read(&s, &r, start - 1, false, 0, 1), -ERANGE);
        check_all_offsets(&s);
        /* what is left is at least the limit */
        assert_true(count_files(s.dir, ".log") * 64 * 1024 >= 150 * 1024);
        /* time retention: everything but the active segment is an hour old */
        s.cfg.retention_ms = 1000;
        st_part_reopen(&s);
        assert_int_equal(log_start_offset(s.p), start);
        assert_true(log_retention_run(s.p, sl_realtime_ms()) > 0);
        st_drain(s.o);
        assert_int_equal(count_files(s.dir, ".log"), 1);
        /* explicit trim: into the middle of the active segment, persisted */
        int64_t hw = log_high_watermark(s.p);
        int64_t t = log_start_offset(s.p) + (hw - log_start_offset(s.p)) / 2;
        assert_int_equal(log_trim(s.p, hw + 1), -ERANGE);
        assert_int_equal(log_trim(s.p, t), 0);
        assert_int_equal(log_start_offset(s.p), t);
        assert_int_equal(st_read(&s, &r, t - 1, false, 0, 1), -ERANGE);
        assert_true(st_read(&s, &r, t, false, 0, 1) > 0);
        st_part_reopen(&s);
        assert_int_equal(log_start_offset(s.p), t);
        /* trimming past whole segments deletes them */
        s.cfg.retention_ms = -1;
        st_part_reopen(&s);
        for (int i = 0; i < 200; i++)
                st_append_ok(&s, 1, 900, 1);
        st_drain(s.o);
        before = count_files(s.dir, ".log");
        assert_true(before > 2);
        assert_int_equal(log_trim(s.p, log_high_watermark(s.p) - 1), 0);
        st_drain(s.o);
        assert_int_equal(count_files(s.dir, ".log"), 1);
        st_part_reopen(&s);
        assert_int_equal(log_start_offset(s.p), log_high_watermark(s.p) - 1);
        st_part_free(&s);
}

/* The fake completes writes in random order and flags any two writes in
 * flight on one file that overlap: the tail block must be written by at
 * most one write at a time, later appends merging into the next one. */
static void test_single_tail_write_out_of_order(void **state)
{
        (void)state;
        for (uint64_t seed = 1; seed <= 4; seed++) {
                struct st_part s;
                st_part_init(&s, log_io_fake_create(seed));
                s.cfg.max_write_bytes = 4096; /* several writes in flight at once */
                st_part_open(&s);
                for (int i = 0; i < 600; i++) {
                        st_append_ok(&s, 1 + i % 5, (uint32_t)(37 + (i * 131) % 3000), i);
                        if (i % 3 == 0)
                                log_owner_poll(s.o);
                }
                st_drain(s.o);
                struct log_io_fake_stats st;
                log_io_fake_stats(s.io, &st);
                assert_int_equal(st.overlap_violations, 0);
                assert_true(st.max_inflight_writes_per_fd > 1);
                for (int i = 0; i < s.nb; i++)
                        assert_true(s.b[i].acked);
                reopen_check_free(&s);
        }
}

static void test_io_errors_keep_acked_data(void **state)
{
        (void)state;
        int errs[] = {EIO, ENOSPC, EROFS};
        for (int e = 0; e < 3; e++) {
                struct st_part s;
                st_part_init(&s, log_io_fake_create(7));
                st_part_open(&s);
                for (int i = 0; i < 40; i++)
                        st_append_ok(&s, 1, 300, i);
                st_drain(s.o);
                int acked = s.nb;
                /* the next write fails */
                log_io_fake_fail(s.io, LOG_IO_WRITE, errs[e], 0, -1);
                for (int i = 0; i < 5; i++)
                        st_append_ok(&s, 1, 300, i);
                st_drain(s.o);
                assert_int_equal(log_partition_state(s.p), -errs[e]);
                for (int i = acked; i < s.nb; i++)
                        assert_false(s.b[i].acked);
                assert_int_equal(log_high_watermark(s.p), s.b[acked - 1].base + 1);
                /* appends fail with the error; reads keep working */
                uint8_t b[1024];
                uint32_t n = st_batch(b, 1, 10, 1, 1);
                assert_int_equal(log_append(s.p, b, n, NULL, NULL, NULL), -errs[e]);
                struct log_read r;
                assert_true(st_read(&s, &r, 0, false, 0, 1 << 20) > 0);
                assert_int_equal(st_check_view(&s, &r, 0), acked);
                /* space is back: resume from the last acknowledged batch */
                log_io_fake_fail(s.io, 0, 0, 0, 0);
                assert_int_equal(log_partition_resume(s.p), 0);
                assert_true(log_end_offset(s.p) >= s.b[acked - 1].base + 1);
                s.nb = acked;
                for (int i = acked; i < acked + 5; i++)
                        free(s.b[i].bytes);
                /* unacked writes may or may not have reached the disk; drop
                 * them from the shadow and continue from the log's end */
                int64_t end = log_end_offset(s.p);
                while (s.nb && s.b[s.nb - 1].base >= end)
                        s.nb--;
                st_append_ok(&s, 1, 300, 99);
                st_drain(s.o);
                assert_true(s.b[s.nb - 1].acked);
                st_part_reopen(&s);
                assert_true(st_read(&s, &r, 0, false, 0, 1 << 20) > 0);
                assert_int_equal(st_check_view(&s, &r, 0), s.nb);
                /* fsync failure: same contract */
                log_io_fake_fail(s.io, LOG_IO_FDATASYNC, EIO, 0, -1);
                st_append_ok(&s, 1, 300, 100);
                st_drain(s.o);
                assert_false(s.b[s.nb - 1].acked);
                assert_int_equal(log_partition_state(s.p), -EIO);
                log_io_fake_fail(s.io, 0, 0, 0, 0);
                st_part_free(&s);
        }
}

/* Worker mode: the ring belongs to the worker, which submits it and hands
 * our CQEs (tagged in user_data) back through log_io_uring_complete(). */
static void test_borrowed_ring(void **state)
{
        (void)state;
        struct io_uring ring;
        assert_int_equal(io_uring_queue_init(64, &ring, 0), 0);
        struct log_io *io = log_io_uring_create(&ring, 0, 3);
        assert_non_null(io);
        assert_null(log_io_uring_create(&ring, 0, 0)); /* tag must be 1..7 */
        struct st_part s;
        st_part_init(&s, io);
        st_part_open(&s);
        for (int i = 0; i < 80; i++)
                assert_int_equal(st_append(&s, 1, 500, i), 0);
        int foreign = 0;
        while (log_owner_busy(s.o)) {
                log_owner_poll(s.o); /* queues SQEs, does not submit */
                /* the worker's own request, with its own tag (0) */
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_nop(sqe);
                io_uring_sqe_set_data64(sqe, 0x1000);
                io_uring_submit_and_wait(&ring, 1);
                struct io_uring_cqe *cqe;
                while (io_uring_peek_cqe(&ring, &cqe) == 0) {
                        if (!log_io_uring_complete(io, cqe)) {
                                assert_int_equal(cqe->user_data, 0x1000);
                                foreign++;
                        }
                        io_uring_cqe_seen(&ring, cqe);
                }
        }
        assert_true(foreign > 0);
        for (int i = 0; i < s.nb; i++)
                assert_true(s.b[i].acked);
        assert_int_equal(log_high_watermark(s.p), log_end_offset(s.p));
        log_partition_close(s.p);
        s.p = NULL;
        log_owner_destroy(s.o);
        s.o = NULL;
        s.io = log_io_uring_create(NULL, 64, 0);
        st_part_open(&s);
        check_all_offsets(&s);
        st_part_free(&s);
        io->ops->destroy(io);
        io_uring_queue_exit(&ring);
}

static uint64_t woke_ns;

static void wake_time_cb(struct log_wait *w, int64_t hw)
{
        (void)w, (void)hw;
        woke_ns = sl_time_ns();
}

/* A long-polling reader is woken by the append's sync round, not by its
 * timeout: the bound is the fsync latency (milliseconds). */
static void test_wake_latency(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        uint64_t worst = 0;
        for (int i = 0; i < 20; i++) {
                struct log_wait w = {.offset = log_end_offset(s.p), .cb = wake_time_cb};
                assert_int_equal(log_wait_add(s.p, &w), 0);
                woke_ns = 0;
                uint64_t t0 = sl_time_ns();
                st_append_ok(&s, 1, 100, i);
                while (!woke_ns) {
                        log_owner_poll(s.o);
                        if (!woke_ns && s.io->inflight)
                                s.io->ops->wait(s.io);
                }
                if (woke_ns - t0 > worst)
                        worst = woke_ns - t0;
        }
        printf("append -> wake-up (fsync policy), worst of 20: %.3f ms\n", worst / 1e6);
        assert_true(worst < 200 * 1000000ull);
        st_part_free(&s);
}

/* A worker's sleep with storage I/O in flight: with completions signalling
 * its eventfd, I/O in flight is not "ready" work, and whenever the owner
 * would sleep (nothing ready, nothing reaped since its last poll) the
 * eventfd must become readable, or the worker would sleep through its own
 * acks. The eventfd is read only after waking, as sl_mbox_sleep_end does. */
static void test_completions_signal_eventfd(void **state)
{
        (void)state;
        int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        assert_true(efd >= 0);
        struct log_io *io = uring();
        assert_int_equal(log_io_notify(io, efd), 0);
        assert_true(io->notifies);
        struct st_part s;
        st_part_init(&s, io);
        st_part_open(&s);
        int sleeps = 0;
        for (int i = 0; i < 50; i++) {
                st_append_ok(&s, 2, 3000, i);
                uint64_t deadline = sl_time_ns() + 10 * 1000000000ull;
                while (!s.b[s.nb - 1].acked) {
                        assert_true(sl_time_ns() < deadline);
                        log_owner_poll(s.o);
                        if (log_owner_ready(s.o) || s.b[s.nb - 1].acked)
                                continue;
                        /* Nothing a poll can move: only a completion can. */
                        assert_true(log_owner_busy(s.o));
                        struct pollfd pfd = {.fd = efd, .events = POLLIN};
                        assert_int_equal(poll(&pfd, 1, 5000), 1);
                        uint64_t v;
                        assert_int_equal(read(efd, &v, sizeof(v)), (ssize_t)sizeof(v));
                        sleeps++;
                }
        }
        assert_true(sleeps > 0);
        assert_int_equal(log_owner_drain(s.o), 0);
        assert_false(log_owner_ready(s.o));
        for (int i = 0; i < s.nb; i++)
                assert_true(s.b[i].acked);
        st_part_free(&s);
        close(efd);
}

/* Backends that cannot signal (the fake, a borrowed ring: the worker's own
 * ring wakes it) say so, and then I/O in flight keeps the owner polling. */
static void test_no_notify_keeps_polling(void **state)
{
        (void)state;
        int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct io_uring ring;
        assert_int_equal(io_uring_queue_init(8, &ring, 0), 0);
        struct log_io *borrowed = log_io_uring_create(&ring, 0, 2);
        assert_int_equal(log_io_notify(borrowed, efd), -EOPNOTSUPP);
        assert_false(borrowed->notifies);
        borrowed->ops->destroy(borrowed);
        io_uring_queue_exit(&ring);

        struct log_io *io = log_io_fake_create(7);
        assert_int_equal(log_io_notify(io, efd), -EOPNOTSUPP);
        log_io_fake_set_order(io, 2); /* held: nothing completes in a poll */
        struct st_part s;
        st_part_init(&s, io);
        st_part_open(&s);
        st_append_ok(&s, 1, 100, 0);
        log_owner_poll(s.o);
        assert_true(io->inflight > 0);
        assert_true(log_owner_ready(s.o));
        assert_int_equal(log_owner_drain(s.o), 0);
        assert_false(log_owner_ready(s.o));
        st_part_free(&s);
        close(efd);
}

static uint64_t file_size(const char *dir, int64_t base)
{
        char path[512];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%020lld.log", dir, (long long)base);
        return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Preallocation runs a step ahead of the writes: 1,000 partitions must not
 * claim 1,000 whole segments of disk up front. */
static void test_prealloc_steps(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.segment_bytes = 1 << 20;
        s.cfg.prealloc_bytes = 64 * 1024;
        s.cfg.zero_ahead_bytes = 0; /* the steps alone (zero-fill adds its window) */
        st_part_open(&s);
        assert_int_equal(file_size(s.dir, 0), 64 * 1024);
        for (int i = 0; i < 10; i++)
                st_append_ok(&s, 1, 1000, i);
        st_drain(s.o);
        assert_int_equal(file_size(s.dir, 0), 64 * 1024);
        for (int i = 0; i < 40; i++)
                st_append_ok(&s, 1, 1000, i);
        st_drain(s.o);
        assert_int_equal(file_size(s.dir, 0), 128 * 1024);
        for (int i = 0; i < 1000; i++)
                st_append_ok(&s, 1, 1000, i);
        st_drain(s.o);
        assert_true(file_size(s.dir, 0) <= 1 << 20); /* never past the segment */
        st_part_reopen(&s);
        check_all_offsets(&s);
        st_part_free(&s);
}

/* A partition of 64 MiB segments preallocated in `prealloc_bytes` steps,
 * as the preallocation and zero-fill tests use it. */
static void open_stepped(struct st_part *s, uint32_t prealloc_bytes, bool zero_fill)
{
        st_part_init(s, uring());
        s->cfg.segment_bytes = 64 << 20;
        s->cfg.prealloc_bytes = prealloc_bytes;
        s->cfg.max_batch_bytes = 64 * 1024;
        s->cfg.max_write_bytes = 1 << 20;
        s->cfg.ring_bytes = 4 << 20;
        /* the steps by size alone: appends from memory look like a fast
         * partition (test_prealloc_follows_append_rate) */
        s->cfg.prealloc_ahead_ms = 0;
        if (!zero_fill)
                s->cfg.zero_ahead_bytes = 0;
        st_part_open(s);
}

/* n batches of just under 64 KiB from a producer that waits for its acks
 * every fourth one, so asynchronous fallocates and zero writes complete
 * between appends. Returns the bytes appended. */
static uint64_t append_64k(struct st_part *s, int n)
{
        uint64_t appended = 0;
        for (int i = 0; i < n; i++) {
                st_append_ok(s, 1, 64 * 1024 - 200, i);
                appended += s->b[s->nb - 1].len;
                log_owner_poll(s->o);
                if (i % 4 == 3)
                        st_drain(s->o);
        }
        log_owner_poll(s->o);
        st_drain(s->o);
        return appended;
}

/* An idle partition claims one small first step of disk, not a whole
 * prealloc_bytes step; steps then double as the segment fills. */
static void test_prealloc_starts_small(void **state)
{
        (void)state;
        struct st_part s;
        open_stepped(&s, 8 << 20, false); /* the steps alone (zero-fill adds its window) */
        assert_int_equal(file_size(s.dir, 0), 1 << 20);
        append_64k(&s, 48); /* about 3 MiB */
        uint64_t sz = file_size(s.dir, 0);
        assert_true(sz >= 4 << 20 && sz <= 8 << 20); /* 1 + 1 + 2 (+ 4) MiB */
        append_64k(&s, 400);                         /* 25 MiB more: full 8 MiB steps */
        sz = file_size(s.dir, 0);
        assert_true(sz >= 28 << 20 && sz <= 40 << 20);
        st_part_reopen(&s);
        check_all_offsets(&s);
        st_part_free(&s);
}

/* A partition filling its steps fast gets steps of prealloc_ahead_ms of
 * its append rate, beyond prealloc_bytes but never more than doubling the
 * file (each fallocate drains the file's writes in flight): fewer, larger
 * fallocates than 1 MiB steps would make, and the file never more than
 * twice what it holds plus the first step. */
static void test_prealloc_follows_append_rate(void **state)
{
        (void)state;
        uint64_t size[2], appended[2];
        for (int k = 0; k < 2; k++) {
                struct st_part s;
                open_stepped(&s, 1 << 20, false);
                /* an hour: every append rate is fast against it */
                s.cfg.prealloc_ahead_ms = k ? 3600 * 1000 : 0;
                st_part_reopen(&s);
                appended[k] = append_64k(&s, 400); /* 25 MiB */
                size[k] = file_size(s.dir, 0);
                st_part_reopen(&s);
                check_all_offsets(&s);
                st_part_free(&s);
        }
        /* 1 MiB steps: the data and a step or two */
        assert_true(size[0] <= appended[0] + (2 << 20));
        /* rate steps: doubling, 1 + 1 + 2 + 4 + 8 + 16 (+ 32) MiB */
        assert_true(size[1] >= 32 << 20);
        assert_true(size[1] <= 2 * appended[1] + (1 << 20) + (32 << 20));
}

/* Bytes of [from, to) of the segment file at `base` that sit in extents
 * already written (not unwritten, not holes): what an append there
 * overwrites. */
static uint64_t written_bytes(const char *dir, int64_t base, uint64_t from, uint64_t to)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/%020lld.log", dir, (long long)base);
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        struct {
                struct fiemap fm;
                struct fiemap_extent ext[64];
        } q;
        memset(&q, 0, sizeof(q));
        q.fm.fm_start = from;
        q.fm.fm_length = to - from;
        q.fm.fm_flags = FIEMAP_FLAG_SYNC;
        q.fm.fm_extent_count = 64;
        assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, &q.fm), 0);
        close(fd);
        uint64_t n = 0;
        for (uint32_t i = 0; i < q.fm.fm_mapped_extents; i++) {
                const struct fiemap_extent *e = &q.ext[i];
                if (e->fe_flags & FIEMAP_EXTENT_UNWRITTEN)
                        continue;
                uint64_t a = SL_MAX(e->fe_logical, from);
                uint64_t b = SL_MIN(e->fe_logical + e->fe_length, to);
                if (b > a)
                        n += b - a;
        }
        return n;
}

/* A `fsync` partition's tail is zero-filled ahead of its appends, so they
 * land on written blocks (their fdatasync then commits no extent
 * conversion); `interval` is not (bandwidth-bound: zeros would double its
 * device writes), unless zero_fill_all says so. */
static void test_zero_fill_ahead_of_appends(void **state)
{
        (void)state;
        enum log_durability pol[] = {LOG_DURABILITY_FSYNC, LOG_DURABILITY_INTERVAL,
                                     LOG_DURABILITY_INTERVAL};
        for (int k = 0; k < 3; k++) {
                struct st_part s;
                st_part_init(&s, uring());
                s.cfg.durability = pol[k];
                s.cfg.zero_fill_all = k == 2;
                s.cfg.segment_bytes = 16 << 20;
                s.cfg.ring_bytes = 4 << 20;
                s.cfg.max_batch_bytes = 64 * 1024;
                s.cfg.max_write_bytes = 1 << 20;
                s.cfg.zero_ahead_bytes = 2 << 20;
                st_part_open(&s);
                struct log_metrics *m = log_owner_metrics(s.o);
                uint64_t appended = 0;
                for (int i = 0; i < 64; i++) { /* 4 MiB, acked as it goes */
                        st_append_ok(&s, 1, 64 * 1024 - 200, i);
                        appended += s.b[s.nb - 1].len;
                        log_owner_poll(s.o);
                        if (i % 4 == 3)
                                st_drain(s.o);
                }
                st_drain(s.o);
                /* the poll after the last append refills the window */
                log_owner_poll(s.o);
                st_drain(s.o);
                uint64_t tail = (appended + 4095) / 4096 * 4096;
                uint64_t ahead = written_bytes(s.dir, 0, tail, tail + (1 << 20));
                if (k == 1) {
                        assert_int_equal(m->zero_writes, 0);
                        assert_int_equal(ahead, 0);
                } else {
                        assert_true(m->zero_writes > 0);
                        assert_true(m->zero_bytes >= appended);
                        /* most of what was appended overwrote zeros, and
                         * at least a chunk past the tail is written */
                        assert_true(written_bytes(s.dir, 0, 1 << 20, tail) == tail - (1 << 20));
                        assert_int_equal(ahead, 1 << 20);
                }
                reopen_check_free(&s);
        }
}

/* With a window smaller than the appends' pace, appends keep running into
 * the zero write in flight: they must stop at its start (the fake counts
 * overlapping writes in flight) and never lose a byte, whatever order the
 * completions come in. */
static void test_zero_fill_never_overlaps_appends(void **state)
{
        (void)state;
        for (uint64_t seed = 1; seed <= 4; seed++) {
                struct st_part s;
                st_part_init(&s, log_io_fake_create(seed));
                s.cfg.max_write_bytes = 4096;
                s.cfg.zero_ahead_bytes = 8192; /* 4 KiB zero writes */
                st_part_open(&s);
                for (int i = 0; i < 600; i++) {
                        st_append_ok(&s, 1 + i % 5, (uint32_t)(37 + (i * 131) % 3000), i);
                        if (i % 3 == 0)
                                log_owner_poll(s.o);
                }
                st_drain(s.o);
                struct log_io_fake_stats st;
                log_io_fake_stats(s.io, &st);
                assert_int_equal(st.overlap_violations, 0);
                assert_true(log_owner_metrics(s.o)->zero_writes > 10);
                for (int i = 0; i < s.nb; i++)
                        assert_true(s.b[i].acked);
                reopen_check_free(&s);
        }
}

/* The window never runs further ahead than preallocation steps: a log
 * opened with small steps (AMQP queues: 1 MiB) keeps its disk footprint. */
static void test_zero_fill_within_prealloc_steps(void **state)
{
        (void)state;
        struct st_part s;
        open_stepped(&s, 1 << 20, true);
        uint64_t appended = append_64k(&s, 48); /* about 3 MiB */
        assert_true(log_owner_metrics(s.o)->zero_writes > 0);
        /* the data, a 1 MiB window, one 1 MiB step (and one more in flight) */
        assert_true(file_size(s.dir, 0) <= appended + (3 << 20));
        st_part_reopen(&s);
        check_all_offsets(&s);
        st_part_free(&s);
}

/* Zero-fill runs while a partition's fdatasyncs carry less than
 * zero_fill_max_sync_bytes each (the default, 512 KiB) and pauses above:
 * there the zeros' extra device writes cost more than the extent
 * conversions they save (RESULTS.md). One sync per 256 KiB append keeps it
 * going; one per two 384 KiB appends stops it after the first few. */
static void test_zero_fill_pauses_for_large_fdatasyncs(void **state)
{
        (void)state;
        uint32_t value[] = {256 * 1024 - 100, 384 * 1024 - 100};
        int per_sync[] = {1, 2}; /* 256 KiB and 768 KiB per fdatasync */
        uint64_t zeros[2];
        for (int k = 0; k < 2; k++) {
                struct st_part s;
                st_part_init(&s, uring());
                s.cfg.segment_bytes = 64 << 20;
                s.cfg.ring_bytes = 4 << 20;
                s.cfg.max_batch_bytes = 512 * 1024;
                s.cfg.max_write_bytes = 1 << 20;
                s.cfg.zero_ahead_bytes = 4 << 20;
                st_part_open(&s);
                struct log_metrics *m = log_owner_metrics(s.o);
                uint64_t appended = 0;
                for (int i = 0; i < 48; i++) { /* one fdatasync each */
                        for (int j = 0; j < per_sync[k]; j++) {
                                st_append_ok(&s, 1, value[k], i);
                                appended += s.b[s.nb - 1].len;
                        }
                        /* polls, not a drain: a drain stops zero-fill */
                        while (!s.b[s.nb - 1].acked) {
                                log_owner_poll(s.o);
                                if (s.io->inflight)
                                        s.io->ops->wait(s.io);
                        }
                }
                zeros[k] = m->zero_bytes;
                if (k == 0)
                        assert_true(zeros[k] >= appended); /* kept ahead all along */
                else
                        assert_true(zeros[k] <= appended / 2); /* the first steps only */
                reopen_check_free(&s);
        }
}

/* Every sealed segment gets its complete index, even when its last
 * recovery point's index write was still in flight when it was sealed (one
 * index write per segment at a time: the complete one follows when that
 * one finishes). A complete index ends at the next segment's base. */
static int cmp_ll(const void *a, const void *b)
{
        long long x = *(const long long *)a, y = *(const long long *)b;
        return x < y ? -1 : x > y;
}

static void test_sealed_index_follows_recovery_point_in_flight(void **state)
{
        (void)state;
        for (uint64_t seed = 1; seed <= 6; seed++) {
                struct st_part s;
                st_part_init(&s, log_io_fake_create(seed));
                s.cfg.segment_bytes = 16 * 1024;
                s.cfg.recovery_point_bytes = 2048;
                st_part_open(&s);
                for (int i = 0; i < 200; i++) {
                        st_append_ok(&s, 1, 300 + (uint32_t)(i * 37) % 700, i);
                        if (i % 2)
                                log_owner_poll(s.o);
                }
                st_drain(s.o);
                long long bases[64];
                int n = 0;
                DIR *d = opendir(s.dir);
                struct dirent *de;
                while ((de = readdir(d)))
                        if (strstr(de->d_name, ".log") && n < 64)
                                bases[n++] = atoll(de->d_name);
                closedir(d);
                qsort(bases, (size_t)n, sizeof(bases[0]), cmp_ll);
                assert_true(n >= 6);
                for (int k = 0; k + 1 < n; k++) { /* all but the tail are sealed */
                        char ix[600];
                        snprintf(ix, sizeof(ix), "%s/%020lld.timeindex", s.dir, bases[k]);
                        FILE *fp = fopen(ix, "rb");
                        assert_non_null(fp);
                        uint8_t end[12];
                        assert_int_equal(fseek(fp, -12, SEEK_END), 0);
                        assert_int_equal(fread(end, 1, 12, fp), 12);
                        fclose(fp);
                        uint32_t next_rel;
                        memcpy(&next_rel, end + 8, 4);
                        assert_int_equal(bases[k] + next_rel, bases[k + 1]);
                }
                st_part_free(&s);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_append_read),
            cmocka_unit_test(test_roll_and_index_boundaries),
            cmocka_unit_test(test_roll_by_age_survives_restart),
            cmocka_unit_test(test_index_grows_ahead_of_appends),
            cmocka_unit_test(test_roll_opens_segment_async),
            cmocka_unit_test(test_full_blocks_pass_a_tail_write_in_flight),
            cmocka_unit_test(test_partial_block_rewrite_apart_from_fresh_blocks),
            cmocka_unit_test(test_sync_round_covers_writes_in_flight),
            cmocka_unit_test(test_tail_block_waits_for_the_next_write),
            cmocka_unit_test(test_full_write_staged_goes_at_once),
            cmocka_unit_test(test_acks_run_after_staged_writes_go),
            cmocka_unit_test(test_by_time),
            cmocka_unit_test(test_by_time_below_trim_point),
            cmocka_unit_test(test_visibility_and_waits),
            cmocka_unit_test(test_retention_and_trim),
            cmocka_unit_test(test_retention_recycles_segment_files),
            cmocka_unit_test(test_interval_rolls_without_waiting_for_the_interval),
            cmocka_unit_test(test_single_tail_write_out_of_order),
            cmocka_unit_test(test_io_errors_keep_acked_data),
            cmocka_unit_test(test_borrowed_ring),
            cmocka_unit_test(test_wake_latency),
            cmocka_unit_test(test_completions_signal_eventfd),
            cmocka_unit_test(test_no_notify_keeps_polling),
            cmocka_unit_test(test_prealloc_steps),
            cmocka_unit_test(test_prealloc_starts_small),
            cmocka_unit_test(test_prealloc_follows_append_rate),
            cmocka_unit_test(test_zero_fill_ahead_of_appends),
            cmocka_unit_test(test_zero_fill_never_overlaps_appends),
            cmocka_unit_test(test_zero_fill_within_prealloc_steps),
            cmocka_unit_test(test_zero_fill_pauses_for_large_fdatasyncs),
            cmocka_unit_test(test_sealed_index_follows_recovery_point_in_flight),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
