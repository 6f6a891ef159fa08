/* Disk full mid-stream, on a small loop-mounted ext4 image (O_DIRECT works
 * there, unlike tmpfs): appends fail with ENOSPC, nothing acknowledged is
 * harmed, reads keep working, and once space is freed the partition
 * resumes. Skipped with a message only when mounting is impossible. */
#include "st_harness.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>

static char img[64], mnt[64];
static bool mounted;

static int run(const char *cmd)
{
        int st = system(cmd);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **state)
{
        (void)state;
        char cmd[2048];
        snprintf(img, sizeof(img), "/var/tmp/sluice-full-XXXXXX");
        int fd = mkstemp(img);
        if (fd < 0)
                return 0;
        close(fd);
        snprintf(mnt, sizeof(mnt), "/var/tmp/sluice-mnt-XXXXXX");
        if (!mkdtemp(mnt))
                return 0;
        snprintf(cmd, sizeof(cmd),
                 "truncate -s 48M %s && mkfs.ext4 -q -F -O ^has_journal %s >/dev/null 2>&1 && "
                 "mount -o loop %s %s 2>/dev/null",
                 img, img, img, mnt);
        mounted = run(cmd) == 0;
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        if (mounted && umount2(mnt, 0) < 0)
                umount2(mnt, MNT_DETACH); /* mount -o loop releases the loop device */
        rmdir(mnt);
        unlink(img);
        return 0;
}

static void test_disk_full(void **state)
{
        (void)state;
        if (!mounted) {
                print_message(
                    "SKIP: cannot loop-mount an ext4 image here (need root and loop devices)\n");
                skip();
        }
        struct st_part s;
        memset(&s, 0, sizeof(s));
        snprintf(s.dir, sizeof(s.dir), "%s/p0", mnt);
        s.io = log_io_uring_create(NULL, 64, 0);
        st_cfg(&s.cfg);
        s.cfg.segment_bytes = 4 << 20;
        s.cfg.ring_bytes = 1 << 20;
        s.cfg.max_batch_bytes = 64 * 1024;
        s.cfg.max_write_bytes = 256 * 1024;
        /* a filler file to delete later, to get space back */
        char filler[300];
        snprintf(filler, sizeof(filler), "%s/filler", mnt);
        int fd = open(filler, O_CREAT | O_WRONLY, 0644);
        assert_int_equal(fallocate(fd, 0, 0, 8 << 20), 0);
        close(fd);
        st_part_open(&s);
        int rc = 0, steps = 0;
        while (rc == 0 && log_partition_state(s.p) == 0 && steps++ < 100000) {
                rc = st_append(&s, 4, 8000, (int64_t)sl_realtime_ms());
                if (rc == -ENOBUFS) {
                        rc = 0;
                        log_owner_poll(s.o);
                        if (s.io->inflight)
                                s.io->ops->wait(s.io);
                }
        }
        st_drain(s.o);
        int err = log_partition_state(s.p);
        printf("disk full after %d batches: state %d, append rc %d\n", s.nb, err, rc);
        assert_int_equal(err, -ENOSPC);
        int acked = 0;
        for (int i = 0; i < s.nb; i++)
                if (s.b[i].acked)
                        acked = i + 1;
        assert_true(acked > 100);
        for (int i = 0; i < acked; i++)
                assert_true(s.b[i].acked);
        /* appends fail with the error the protocol maps to
         * KAFKA_STORAGE_ERROR; reads keep working */
        uint8_t b[512];
        uint32_t n = st_batch(b, 1, 10, 1, 1);
        assert_int_equal(log_append(s.p, b, n, NULL, NULL, NULL), -ENOSPC);
        struct log_read r;
        for (int i = 0; i < acked; i += 17) {
                assert_true(st_read(&s, &r, s.b[i].base, false, 0, 1) > 0);
                assert_int_equal(st_check_view(&s, &r, s.b[i].base), 1);
        }
        /* space comes back: resume and go on */
        unlink(filler);
        assert_int_equal(log_partition_resume(s.p), 0);
        int64_t end = log_end_offset(s.p);
        assert_true(end >= s.b[acked - 1].base + s.b[acked - 1].count);
        for (int i = acked; i < s.nb; i++)
                free(s.b[i].bytes);
        s.nb = acked;
        while (s.nb && s.b[s.nb - 1].base >= end)
                s.nb--;
        int before = s.nb;
        for (int i = 0; i < 20; i++)
                st_append_ok(&s, 1, 1000, (int64_t)sl_realtime_ms());
        st_drain(s.o);
        for (int i = before; i < s.nb; i++)
                assert_true(s.b[i].acked);
        st_part_close(&s);
        /* after a restart too, every acked batch is there */
        st_part_open(&s);
        for (int i = 0; i < acked; i += 7) {
                assert_true(st_read(&s, &r, s.b[i].base, false, 0, 1) > 0);
                assert_int_equal(st_check_view(&s, &r, s.b[i].base), 1);
        }
        st_part_close(&s);
        log_owner_destroy(s.o);
        s.io->ops->destroy(s.io);
        for (int i = 0; i < s.nb; i++)
                free(s.b[i].bytes);
        free(s.rbuf);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_disk_full),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
