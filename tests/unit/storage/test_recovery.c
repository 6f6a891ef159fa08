/* Recovery at open: a torn tail cut at every byte of the last batch, a CRC
 * mismatch, a stale but valid batch beyond the cut (offset continuity and
 * zeroing), and damage beyond the tail segment fencing the partition. */
#include "st_harness.h"

#include <fcntl.h>
#include <sys/stat.h>

static struct log_io *uring(void)
{
        struct log_io *io = log_io_uring_create(NULL, 64, 0);
        assert_non_null(io);
        return io;
}

static void seg_path(const struct st_part *s, int64_t base, char *buf, size_t n)
{
        snprintf(buf, n, "%s/%020lld.log", s->dir, (long long)base);
}

/* Close as a crash would: no recovery point (the tail's index that a clean
 * close writes) is left behind. */
static void crash_close(struct st_part *s)
{
        char path[512];
        st_part_close(s);
        int64_t tail = 0;
        for (int i = 0; i < s->nb; i++) {
                seg_path(s, s->b[i].base, path, sizeof(path));
                if (access(path, F_OK) == 0)
                        tail = s->b[i].base;
        }
        snprintf(path, sizeof(path), "%s/%020lld.index", s->dir, (long long)tail);
        unlink(path);
        snprintf(path, sizeof(path), "%s/%020lld.timeindex", s->dir, (long long)tail);
        unlink(path);
}

/* Byte position of batch i in its (single) segment. */
static uint64_t batch_pos(const struct st_part *s, int i)
{
        uint64_t pos = 0;
        for (int k = 0; k < i; k++)
                pos += s->b[k].len;
        return pos;
}

static void check_prefix(struct st_part *s, int valid)
{
        assert_int_equal(log_end_offset(s->p),
                         valid ? s->b[valid - 1].base + s->b[valid - 1].count : 0);
        assert_int_equal(log_high_watermark(s->p), log_end_offset(s->p));
        if (!valid)
                return;
        /* a read stops at a segment's end: go on from there */
        int seen = 0;
        while (seen < valid) {
                struct log_read r;
                int64_t off = s->b[seen].base;
                assert_true(st_read(s, &r, off, false, 0, 1 << 20) > 0);
                seen += st_check_view(s, &r, off);
        }
        assert_int_equal(seen, valid);
}

static bool all_zero_from(const char *path, uint64_t from, uint64_t to)
{
        int fd = open(path, O_RDONLY);
        uint8_t buf[4096];
        bool z = true;
        for (uint64_t off = from; off < to && z; off += sizeof(buf)) {
                ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
                for (ssize_t i = 0; i < n && off + (uint64_t)i < to; i++)
                        if (buf[i])
                                z = false;
        }
        close(fd);
        return z;
}

static void test_tail_cut_every_byte(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.preallocate = false;
        st_part_open(&s);
        for (int i = 0; i < 12; i++)
                st_append_ok(&s, 1 + i % 3, 40 + i, i);
        st_drain(s.o);
        crash_close(&s);
        char path[512];
        seg_path(&s, 0, path, sizeof(path));
        int last = s.nb - 1;
        uint64_t from = batch_pos(&s, last), to = from + s.b[last].len;
        uint8_t *orig = malloc(to);
        int fd = open(path, O_RDONLY);
        assert_int_equal(pread(fd, orig, to, 0), (ssize_t)to);
        close(fd);
        for (uint64_t cut = from; cut < to; cut++) {
                /* half the cuts lose the bytes, half leave garbage behind */
                fd = open(path, O_WRONLY | O_TRUNC);
                assert_int_equal(pwrite(fd, orig, cut, 0), (ssize_t)cut);
                if (cut & 1) {
                        uint8_t junk[256];
                        memset(junk, 0xA5, sizeof(junk));
                        assert_true(pwrite(fd, junk, to - cut, (off_t)cut) > 0);
                }
                close(fd);
                st_part_open(&s);
                assert_int_equal(log_partition_state(s.p), 0);
                check_prefix(&s, last);
                crash_close(&s);
                assert_true(all_zero_from(path, from, to));
        }
        /* and the log goes on from the cut */
        st_part_open(&s);
        free(s.b[last].bytes);
        s.nb = last;
        st_append_ok(&s, 2, 10, 99);
        st_drain(s.o);
        st_part_reopen(&s);
        check_prefix(&s, s.nb);
        free(orig);
        st_part_free(&s);
}

static void test_crc_mismatch_truncates(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 20; i++)
                st_append_ok(&s, 2, 100, i);
        st_drain(s.o);
        crash_close(&s);
        char path[512];
        seg_path(&s, 0, path, sizeof(path));
        uint64_t pos = batch_pos(&s, 13) + 70; /* inside batch 13's records */
        int fd = open(path, O_RDWR);
        uint8_t c;
        assert_int_equal(pread(fd, &c, 1, (off_t)pos), 1);
        c ^= 0x40;
        assert_int_equal(pwrite(fd, &c, 1, (off_t)pos), 1);
        close(fd);
        st_part_open(&s);
        check_prefix(&s, 13);
        crash_close(&s);
        assert_true(all_zero_from(path, batch_pos(&s, 13), batch_pos(&s, 20)));
        st_part_free(&s);
}

/* Old batch 10 survives past a torn batch 9. After recovery a new batch 9
 * of exactly the old length is written: if the old bytes beyond the cut
 * had not been zeroed, old batch 10 would follow it with the right offset
 * and come back from the dead. */
static void test_stale_valid_batch_beyond_cut(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 11; i++)
                st_append_ok(&s, 1, 200, i);
        st_drain(s.o);
        crash_close(&s);
        char path[512];
        seg_path(&s, 0, path, sizeof(path));
        int fd = open(path, O_RDWR);
        uint64_t pos = batch_pos(&s, 9) + 100;
        uint8_t c = 0xFF;
        assert_int_equal(pwrite(fd, &c, 1, (off_t)pos), 1);
        close(fd);
        st_part_open(&s);
        check_prefix(&s, 9);
        for (int i = 9; i < 11; i++)
                free(s.b[i].bytes);
        s.nb = 9;
        st_append_ok(&s, 1, 200, 9); /* same length as the old batch 9 */
        st_drain(s.o);
        st_part_reopen(&s);
        check_prefix(&s, 10);
        assert_int_equal(log_end_offset(s.p), 10);

        /* continuity alone: a valid batch right after the end, carrying an
         * offset the log already used, is not taken */
        crash_close(&s);
        fd = open(path, O_RDWR);
        uint8_t *old = s.b[3].bytes; /* valid CRC, base offset 3 */
        assert_int_equal(pwrite(fd, old, s.b[3].len, (off_t)batch_pos(&s, 10)),
                         (ssize_t)s.b[3].len);
        close(fd);
        st_part_open(&s);
        check_prefix(&s, 10);
        st_part_free(&s);
}

/* A recycled segment file (or one zero-filled ahead that a power cut took
 * back to an older state) holds valid-looking batches of an older life past
 * the tail: whole batches with good CRCs but offsets the log passed long
 * ago. Recovery cuts at the first one (offset continuity), zeroes them all,
 * and they never come back after later appends and another crash. */
static void test_recycled_file_stale_batches_beyond_cut(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 10; i++)
                st_append_ok(&s, 1, 300, i);
        st_drain(s.o);
        crash_close(&s);
        /* 20 batches of an older life, offsets 5..24, right at the end */
        char path[512];
        seg_path(&s, 0, path, sizeof(path));
        uint64_t end = batch_pos(&s, 10), stale_end = end;
        uint8_t buf[2048];
        int fd = open(path, O_RDWR);
        for (int k = 0; k < 20; k++) {
                uint32_t n = st_batch(buf, 1, 900, 1000 + k, (uint32_t)k);
                st_be64(buf, (uint64_t)(5 + k));
                assert_int_equal(log_batch_validate(buf, n, 1 << 20), 0);
                assert_int_equal(pwrite(fd, buf, n, (off_t)stale_end), (ssize_t)n);
                stale_end += n;
        }
        close(fd);
        st_part_open(&s);
        check_prefix(&s, 10);
        assert_true(all_zero_from(path, end, stale_end));
        /* new appends overwrite part of that space; a crash after them must
         * find exactly them */
        for (int i = 10; i < 15; i++)
                st_append_ok(&s, 1, 300, i);
        st_drain(s.o);
        crash_close(&s);
        st_part_open(&s);
        check_prefix(&s, 15);
        assert_true(all_zero_from(path, batch_pos(&s, 15), stale_end));
        st_part_free(&s);
}

/* A roll writes to a spare (a recycled file) before its rename to the new
 * segment's name is durable; a power cut may take the rename back and
 * leave the newest batches, acknowledged ones too, under the spare's name.
 * Recovery adopts a spare whose first batch is valid and past the last
 * segment's base, under the segment's name; a spare of an older life
 * (batches below the start) is unlinked. */
static void test_spare_holding_the_next_segment_is_adopted(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 200; i++)
                st_append_ok(&s, 1, 1500, i); /* five 64 KiB segments */
        st_drain(s.o);
        crash_close(&s);
        /* the tail segment's rename "taken back" */
        int64_t tail = 0;
        char path[512], spare[512];
        for (int i = 0; i < s.nb; i++) {
                seg_path(&s, s.b[i].base, path, sizeof(path));
                if (access(path, F_OK) == 0)
                        tail = s.b[i].base;
        }
        assert_true(tail > 0);
        seg_path(&s, tail, path, sizeof(path));
        snprintf(spare, sizeof(spare), "%s/recycle-1.seg", s.dir);
        assert_int_equal(rename(path, spare), 0);
        /* and a spare of an older life: a copy of the first segment */
        char first[512], old[512], cmd[1200];
        seg_path(&s, 0, first, sizeof(first));
        snprintf(old, sizeof(old), "%s/recycle-0.seg", s.dir);
        snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", first, old);
        assert_int_equal(system(cmd), 0);
        unlink(first); /* below the start now, as retention leaves it */
        snprintf(cmd, sizeof(cmd), "%s/%020lld.index", s.dir, 0ll);
        unlink(cmd);
        snprintf(cmd, sizeof(cmd), "%s/%020lld.timeindex", s.dir, 0ll);
        unlink(cmd);
        st_part_open(&s);
        struct log_metrics *m = log_owner_metrics(s.o);
        assert_int_equal(m->segments_adopted, 1);
        assert_int_equal(log_partition_state(s.p), 0); /* not fenced */
        assert_int_equal(log_end_offset(s.p), s.b[s.nb - 1].base + 1);
        assert_int_equal(access(path, F_OK), 0);   /* under its segment name */
        assert_int_equal(access(spare, F_OK), -1); /* adopted */
        assert_int_equal(access(old, F_OK), -1);   /* older life: unlinked */
        /* every batch from the start reads back */
        int from = st_find(&s, log_start_offset(s.p));
        for (int i = from; i < s.nb; i++) {
                struct log_read r;
                assert_true(st_read(&s, &r, s.b[i].base, false, 0, 1) > 0);
                assert_int_equal(st_check_view(&s, &r, s.b[i].base), 1);
        }
        st_part_free(&s);
}

static int64_t nth_segment_base(const struct st_part *s, int n)
{
        char path[512];
        int seen = 0;
        for (int i = 0; i < s->nb; i++) {
                seg_path(s, s->b[i].base, path, sizeof(path));
                if (access(path, F_OK) == 0 && seen++ == n)
                        return s->b[i].base;
        }
        return -1;
}

static void flip_byte(const char *path, off_t pos)
{
        int fd = open(path, O_RDWR);
        uint8_t c;
        assert_int_equal(pread(fd, &c, 1, pos), 1);
        c ^= 0x5A;
        assert_int_equal(pwrite(fd, &c, 1, pos), 1);
        close(fd);
}

static void fill(struct st_part *s, int n)
{
        st_part_init(s, uring());
        st_part_open(s);
        for (int i = 0; i < n; i++)
                st_append_ok(s, 1, 700, (int64_t)sl_realtime_ms());
        st_drain(s->o);
        st_part_close(s);
}

static void test_damage_beyond_tail_fences(void **state)
{
        (void)state;
        char path[512];
        uint8_t b[512];
        uint32_t n = st_batch(b, 1, 10, 1, 1);
        struct log_read r;

        /* an old sealed segment (beyond the write window) found short by
         * a rescan (its index lost): fenced, not served, not a crash */
        struct st_part s;
        fill(&s, 700);
        seg_path(&s, 0, path, sizeof(path));
        flip_byte(path, 5000);
        snprintf(path, sizeof(path), "%s/%020d.index", s.dir, 0);
        unlink(path);
        st_part_open(&s);
        assert_int_equal(log_partition_state(s.p), -EUCLEAN);
        assert_int_equal(log_append(s.p, b, n, NULL, NULL, NULL), -EUCLEAN);
        assert_int_equal(st_read(&s, &r, 0, false, 0, 1), -EUCLEAN);
        st_part_free(&s);

        /* a segment whose index proves more bytes than its file holds */
        fill(&s, 300);
        int64_t base1 = nth_segment_base(&s, 1);
        assert_true(base1 > 0);
        seg_path(&s, base1, path, sizeof(path));
        assert_int_equal(truncate(path, 3000), 0);
        st_part_open(&s);
        assert_int_equal(log_partition_state(s.p), -EUCLEAN);
        st_part_free(&s);

        /* a missing segment in the middle breaks continuity */
        fill(&s, 700);
        seg_path(&s, nth_segment_base(&s, 1), path, sizeof(path));
        unlink(path);
        st_part_open(&s);
        assert_int_equal(log_partition_state(s.p), -EUCLEAN);
        st_part_free(&s);
}

/* The crash case that looks like damage but is not: a recent segment with
 * no index yet (its data was never synced) is short while later segment
 * files exist. It becomes the tail; the later files, which can only hold
 * unacknowledged data, go. */
static void test_short_unindexed_recent_segment_is_a_crash(void **state)
{
        (void)state;
        char path[512];
        struct st_part s;
        fill(&s, 300);
        int64_t base1 = nth_segment_base(&s, 1);
        seg_path(&s, base1, path, sizeof(path));
        flip_byte(path, 3000);
        snprintf(path, sizeof(path), "%s/%020lld.index", s.dir, (long long)base1);
        unlink(path);
        st_part_open(&s);
        assert_int_equal(log_partition_state(s.p), 0);
        int64_t end = log_end_offset(s.p);
        assert_true(end > base1 && end < s.b[s.nb - 1].base);
        int i = st_find(&s, end);
        assert_int_equal(s.b[i].base, end); /* cut at a batch boundary */
        for (int k = i; k < s.nb; k++)
                free(s.b[k].bytes);
        s.nb = i;
        check_prefix(&s, s.nb);
        st_append_ok(&s, 1, 100, (int64_t)sl_realtime_ms());
        st_drain(s.o);
        st_part_reopen(&s);
        assert_int_equal(log_partition_state(s.p), 0);
        check_prefix(&s, s.nb);
        st_part_free(&s);
}

/* After a crash (no clean close) only what lies past the last recovery
 * point is scanned, and everything acknowledged is there. */
static void test_recovery_point_bounds_scan(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.segment_bytes = 8 << 20;
        s.cfg.ring_bytes = 1 << 20;
        s.cfg.recovery_point_bytes = 64 * 1024;
        st_part_open(&s);
        /* Drained every 16 batches: a sync round then covers at most
         * 16 KiB, so the tail past the last recovery point is bounded by
         * recovery_point_bytes plus a round or two (a point skipped while
         * the previous index write is in flight), whatever the disk's
         * speed. Undrained, one round on a slow disk may cover most of the
         * 1 MiB ring and the bound below would measure the disk. */
        for (int i = 0; i < 1000; i++) {
                st_append_ok(&s, 1, 1000, (int64_t)sl_realtime_ms());
                if (i % 16 == 15)
                        st_drain(s.o);
        }
        st_drain(s.o);
        log_partition_abandon(s.p); /* a crash: no recovery point at close */
        s.p = NULL;
        log_owner_destroy(s.o);
        s.o = NULL;
        st_part_open(&s);
        uint64_t scanned = log_owner_metrics(s.o)->recovery_scanned_bytes;
        printf("recovered %d batches (%u KiB) scanning %llu KiB\n", s.nb,
               (unsigned)(s.nb * s.b[0].len / 1024), (unsigned long long)scanned / 1024);
        assert_true(scanned < 256 * 1024);
        check_prefix(&s, s.nb);
        st_append_ok(&s, 1, 1000, (int64_t)sl_realtime_ms());
        st_drain(s.o);
        st_part_reopen(&s);
        check_prefix(&s, s.nb);
        st_part_free(&s);
}

struct tail_seen {
        int n;
        int64_t base[ST_MAX_BATCHES];
};

static void tail_visit(void *ctx, const uint8_t *hdr, int64_t base)
{
        struct tail_seen *ts = ctx;
        assert_int_equal(log_batch_base_offset(hdr), base);
        ts->base[ts->n++] = base;
}

/* The tail scan (Kafka rebuilds producer state from it) visits the last
 * batches oldest first, across a segment roll, after a crash and after a
 * clean close, and stays near the byte budget it is given. */
static void test_tail_scan_visits_last_batches(void **state)
{
        (void)state;
        static struct tail_seen ts;
        struct st_part s;
        st_part_init(&s, uring());
        s.cfg.segment_bytes = 64 * 1024;
        s.cfg.index_interval_bytes = 4096;
        st_part_open(&s);
        for (int i = 0; i < 300; i++)
                st_append_ok(&s, 1, 700, (int64_t)sl_realtime_ms());
        st_drain(s.o);
        for (int round = 0; round < 2; round++) {
                if (round == 0)
                        crash_close(&s);
                else
                        st_part_close(&s);
                st_part_open(&s);
                ts.n = 0;
                assert_int_equal(log_tail_scan(s.p, 1 << 30, tail_visit, &ts), s.nb);
                for (int i = 0; i < s.nb; i++)
                        assert_int_equal(ts.base[i], s.b[i].base);
                ts.n = 0;
                uint32_t budget = 100 * s.b[0].len;
                int n = log_tail_scan(s.p, budget, tail_visit, &ts);
                assert_true(n >= 100 && n <= 100 + 4096 / (int)s.b[0].len + 2);
                for (int i = 0; i < n; i++)
                        assert_int_equal(ts.base[i], s.b[s.nb - n + i].base);
        }
        st_part_free(&s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_tail_cut_every_byte),
            cmocka_unit_test(test_crc_mismatch_truncates),
            cmocka_unit_test(test_stale_valid_batch_beyond_cut),
            cmocka_unit_test(test_recycled_file_stale_batches_beyond_cut),
            cmocka_unit_test(test_spare_holding_the_next_segment_is_adopted),
            cmocka_unit_test(test_damage_beyond_tail_fences),
            cmocka_unit_test(test_short_unindexed_recent_segment_is_a_crash),
            cmocka_unit_test(test_recovery_point_bounds_scan),
            cmocka_unit_test(test_tail_scan_visits_last_batches),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
