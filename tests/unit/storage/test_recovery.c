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
        struct log_read r;
        assert_true(st_read(s, &r, 0, false, 0, 1 << 20) > 0);
        assert_int_equal(st_check_view(s, &r, 0), valid);
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
        st_part_close(&s);
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
                st_part_close(&s);
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
        st_part_close(&s);
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
        st_part_close(&s);
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
        st_part_close(&s);
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
        st_part_close(&s);
        fd = open(path, O_RDWR);
        uint8_t *old = s.b[3].bytes; /* valid CRC, base offset 3 */
        assert_int_equal(pwrite(fd, old, s.b[3].len, (off_t)batch_pos(&s, 10)),
                         (ssize_t)s.b[3].len);
        close(fd);
        st_part_open(&s);
        check_prefix(&s, 10);
        st_part_free(&s);
}

static void test_damage_beyond_tail_fences(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, uring());
        st_part_open(&s);
        for (int i = 0; i < 300; i++)
                st_append_ok(&s, 1, 700, i);
        st_drain(s.o);
        st_part_close(&s);
        /* corrupt a batch in the first (sealed) segment and drop its index so
         * the scan finds it */
        char path[512];
        seg_path(&s, 0, path, sizeof(path));
        int fd = open(path, O_RDWR);
        uint8_t c = 0x5A;
        assert_int_equal(pwrite(fd, &c, 1, 5000), 1);
        close(fd);
        snprintf(path, sizeof(path), "%s/%020d.index", s.dir, 0);
        unlink(path);
        st_part_open(&s);
        assert_int_equal(log_partition_state(s.p), -EUCLEAN);
        uint8_t b[512];
        uint32_t n = st_batch(b, 1, 10, 1, 1);
        assert_int_equal(log_append(s.p, b, n, NULL, NULL, NULL), -EUCLEAN);
        struct log_read r;
        assert_int_equal(st_read(&s, &r, 0, false, 0, 1), -EUCLEAN);
        st_part_close(&s);

        /* a missing segment in the middle breaks continuity: fenced too */
        struct st_part t;
        st_part_init(&t, uring());
        st_part_open(&t);
        for (int i = 0; i < 300; i++)
                st_append_ok(&t, 1, 700, i);
        st_drain(t.o);
        st_part_close(&t);
        /* segments hold ~89 batches of 728 bytes: find the second file */
        int64_t base2 = -1;
        for (int i = 1; i < t.nb && base2 < 0; i++) {
                snprintf(path, sizeof(path), "%s/%020lld.log", t.dir, (long long)t.b[i].base);
                if (access(path, F_OK) == 0)
                        base2 = t.b[i].base;
        }
        assert_true(base2 > 0);
        snprintf(path, sizeof(path), "%s/%020lld.log", t.dir, (long long)base2);
        unlink(path);
        st_part_open(&t);
        assert_int_equal(log_partition_state(t.p), -EUCLEAN);
        st_part_free(&t);
        st_part_free(&s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_tail_cut_every_byte),
            cmocka_unit_test(test_crc_mismatch_truncates),
            cmocka_unit_test(test_stale_valid_batch_beyond_cut),
            cmocka_unit_test(test_damage_beyond_tail_fences),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
