/* Machine limits the Kafka bench compares sluiced against (bench_kafka.h):
 * loopback TCP bandwidth with a plain socket pair, and write(S)+fdatasync
 * the way tests/bench/bench_storage.c measures it (O_DIRECT into a
 * preallocated file, S rounded up to 4 KiB, payload bytes counted). */
#include "bench_kafka.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct writer {
        int fd;
        size_t chunk;
        uint64_t stop_ns;
        uint64_t writes;
};

static void *write_loop(void *arg)
{
        struct writer *w = arg;
        uint8_t *buf = calloc(1, w->chunk);
        while (buf && bench_now_ns() < w->stop_ns) {
                size_t off = 0;
                while (off < w->chunk) {
                        ssize_t k = write(w->fd, buf + off, w->chunk - off);
                        if (k <= 0)
                                goto out;
                        off += (size_t)k;
                }
                w->writes++;
        }
out:
        shutdown(w->fd, SHUT_WR);
        free(buf);
        return NULL;
}

/* A writer thread and this thread reading: two cores, like a broker and
 * its client; counts what the reader got. */
static int loopback(const struct bench_opts *o, struct bench_result *res)
{
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(a);
        if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1) ||
            getsockname(ls, (struct sockaddr *)&a, &al))
                return bench_fail("loopback listen: %s", strerror(errno));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
                return bench_fail("loopback connect: %s", strerror(errno));
        int s = accept(ls, NULL, NULL);
        close(ls);
        if (s < 0)
                return bench_fail("loopback accept: %s", strerror(errno));
        size_t chunk = o->size_bytes;
        uint8_t *buf = malloc(1 << 20);
        if (!buf)
                return bench_fail("out of memory");
        double cpu0 = bench_cpu_self_s();
        uint64_t t0 = bench_now_ns();
        struct writer w = {c, chunk, t0 + (uint64_t)(o->duration_s * 1e9), 0};
        pthread_t th;
        if (pthread_create(&th, NULL, write_loop, &w))
                return bench_fail("pthread_create failed");
        uint64_t got = 0;
        for (;;) {
                ssize_t k = read(s, buf, 1 << 20);
                if (k <= 0)
                        break;
                got += (uint64_t)k;
        }
        res->elapsed_s = (double)(bench_now_ns() - t0) / 1e9;
        pthread_join(th, NULL);
        res->client_cpu_s = bench_cpu_self_s() - cpu0;
        res->pub_msgs = got / chunk;
        close(s);
        close(c);
        free(buf);
        return 0;
}

static int fsync_loop(const struct bench_opts *o, struct bench_result *res)
{
        if (!o->dir)
                return bench_fail("sys fsync needs --dir DIR (on the broker's disk)");
        char path[4096];
        snprintf(path, sizeof(path), "%s/sluice-bench-rawsync.%d", o->dir, (int)getpid());
        const uint64_t total = 1ull << 30;
        uint64_t s_bytes = o->window_bytes;
        size_t w = (size_t)((s_bytes < 4096 ? 4096 : s_bytes) + 4095) / 4096 * 4096;
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
        if (fd < 0)
                return bench_fail("%s: %s", path, strerror(errno));
        unlink(path);
        if (fallocate(fd, 0, 0, (off_t)total) < 0) {
                close(fd);
                return bench_fail("fallocate: %s", strerror(errno));
        }
        uint8_t *buf = aligned_alloc(4096, w);
        if (!buf) {
                close(fd);
                return bench_fail("out of memory");
        }
        memset(buf, 0x33, w);
        uint64_t off = 0, n = 0;
        double cpu0 = bench_cpu_self_s();
        uint64_t t0 = bench_now_ns(), limit = (uint64_t)(o->duration_s * 1e9);
        while (bench_now_ns() - t0 < limit) {
                if (off + w > total)
                        off = 0;
                if (pwrite(fd, buf, w, (off_t)off) != (ssize_t)w || fdatasync(fd) < 0) {
                        close(fd);
                        free(buf);
                        return bench_fail("write+fdatasync: %s", strerror(errno));
                }
                off += w;
                n++;
        }
        res->elapsed_s = (double)(bench_now_ns() - t0) / 1e9;
        res->client_cpu_s = bench_cpu_self_s() - cpu0;
        /* Reported as messages of --size bytes, so MB/s = payload bytes/s. */
        res->pub_msgs = n * s_bytes / o->size_bytes;
        close(fd);
        free(buf);
        return 0;
}

int bench_sys_run(const struct bench_opts *o, int mode, struct bench_result *res)
{
        return mode == BENCH_SYS_LOOPBACK ? loopback(o, res) : fsync_loop(o, res);
}
