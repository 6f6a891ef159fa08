/* Crash test: a child process appends with `fsync` durability on the real
 * io_uring backend and reports every acknowledged batch (offset, length,
 * CRC of the stored bytes) through a pipe; the parent SIGKILLs it after a
 * random number of acks, 20 times. After each kill the log is reopened:
 * every acknowledged batch is there byte-identical and nothing is served
 * beyond the recovered end. */
#include "st_harness.h"

#include <signal.h>
#include <sys/wait.h>

#define ROUNDS 20

struct ackrec {
        int64_t base;
        uint32_t len, crc;
};

struct slot {
        struct ackrec a;
        int fd;
};

static void child_ack(void *ctx, int64_t base, int res)
{
        struct slot *s = ctx;
        (void)base;
        if (res == 0 && write(s->fd, &s->a, sizeof(s->a)) != sizeof(s->a))
                _exit(3);
}

/* Odd rounds run without zero-fill: appends then land on space no write
 * touched, so a partly written block's rewrite goes apart from the fresh
 * blocks after it, and the kills fall among both shapes. */
static void child(const char *dir, int fd, uint32_t seed, bool zero_fill)
{
        struct log_io *io = log_io_uring_create(NULL, 256, 0);
        struct log_owner *o = log_owner_create(io);
        struct log_config cfg;
        log_config_default(&cfg);
        cfg.segment_bytes = 4 << 20;
        cfg.ring_bytes = 2 << 20;
        cfg.max_pending = 512;
        cfg.recovery_point_bytes = 256 * 1024;
        if (!zero_fill)
                cfg.zero_ahead_bytes = 0;
        struct log_partition *p;
        if (!io || !o || log_partition_open(o, dir, &cfg, 3, &p) < 0)
                _exit(2);
        static struct slot slots[512];
        static uint8_t buf[128 * 1024]; /* 8 records x 8000 bytes at most */
        uint32_t k = 0;
        for (;;) {
                seed = seed * 1103515245u + 12345u;
                uint32_t n = st_batch(buf, 1 + (int)(seed >> 29), (seed >> 8) % 8000,
                                      (int64_t)sl_realtime_ms(), seed);
                struct slot *s = &slots[k % 512];
                int64_t base;
                int rc = log_append(p, buf, n, child_ack, s, &base);
                if (rc == -ENOBUFS) {
                        log_owner_poll(o);
                        if (io->inflight)
                                io->ops->wait(io);
                        continue;
                }
                if (rc < 0)
                        _exit(4);
                st_be64(buf, (uint64_t)base);
                st_be32(buf + 12, 3);
                s->a = (struct ackrec){.base = base, .len = n, .crc = log_crc32c(0, buf, n)};
                s->fd = fd;
                k++;
                if (k % 4 == 0)
                        log_owner_poll(o);
        }
}

static void verify(struct st_part *s, const struct ackrec *a, int n)
{
        for (int i = 0; i < n; i++) {
                struct log_read r;
                int rc = st_read(s, &r, a[i].base, false, 0, 1);
                if (rc <= 0)
                        fail_msg(
                            "acked batch at %lld (len %u) unreadable: %d (start %lld end %lld)",
                            (long long)a[i].base, a[i].len, rc, (long long)log_start_offset(s->p),
                            (long long)log_end_offset(s->p));
                assert_int_equal(r.offset_found, a[i].base);
                const uint8_t *v = (const uint8_t *)r.buf + r.data_off;
                assert_int_equal(log_batch_len(v), a[i].len);
                assert_int_equal(log_crc32c(0, v, a[i].len), a[i].crc);
        }
}

static void test_sigkill_20_times(void **state)
{
        (void)state;
        struct st_part s;
        st_part_init(&s, log_io_uring_create(NULL, 64, 0));
        static struct ackrec acks[200000];
        int nacks = 0;
        uint64_t rng = 0x12345;
        for (int round = 0; round < ROUNDS; round++) {
                int pfd[2];
                assert_int_equal(pipe(pfd), 0);
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                int target = 1 + (int)((rng >> 33) % 1500);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        close(pfd[0]);
                        child(s.dir, pfd[1], (uint32_t)(rng >> 20), round % 2 == 0);
                }
                close(pfd[1]);
                int first = nacks, got = 0;
                bool killed = false;
                for (;;) {
                        ssize_t r = read(pfd[0], &acks[nacks], sizeof(acks[0]));
                        if (r <= 0)
                                break;
                        assert_int_equal(r, sizeof(acks[0]));
                        nacks++;
                        if (++got >= target && !killed) {
                                kill(pid, SIGKILL); /* acks already in the pipe still count */
                                killed = true;
                        }
                        assert_true(nacks < (int)(sizeof(acks) / sizeof(acks[0])));
                }
                close(pfd[0]);
                int st;
                waitpid(pid, &st, 0);
                assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
                st_part_open(&s);
                assert_int_equal(log_partition_state(s.p), 0);
                int64_t end = log_end_offset(s.p);
                for (int i = first; i < nacks; i++)
                        assert_true(acks[i].base < end);
                verify(&s, acks + first, nacks - first);
                struct log_read r;
                assert_int_equal(st_read(&s, &r, end, false, 0, 1), -ERANGE);
                st_part_close(&s);
        }
        st_part_open(&s);
        verify(&s, acks, nacks);
        printf("crash test: %d rounds, %d acknowledged batches verified, end offset %lld\n", ROUNDS,
               nacks, (long long)log_end_offset(s.p));
        st_part_free(&s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_sigkill_20_times),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
