/* Machine limits the Kafka bench compares sluiced against (bench_kafka.h):
 * loopback TCP bandwidth with a plain socket pair, and write(S)+fdatasync
 * the way tests/bench/bench_storage.c measures it (O_DIRECT into a
 * preallocated file, S rounded up to 4 KiB, payload bytes counted). */
#include "bench_kafka.h"
#include "sl_common.h"

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
        uint8_t *buf = sl_dio_alloc(w); /* the memory the log writes from */
        if (!buf) {
                close(fd);
                return bench_fail("out of memory");
        }
        memset(buf, 0x33, w);
        /* untimed: write the file once, so every timed write overwrites
         * written blocks (the best write(S)+fdatasync does here; into
         * fresh space it is about half as fast on this disk) */
        for (uint64_t at = 0; at + w <= total; at += w)
                if (pwrite(fd, buf, w, (off_t)at) != (ssize_t)w) {
                        close(fd);
                        sl_dio_free(buf, w);
                        return bench_fail("fill: %s", strerror(errno));
                }
        fdatasync(fd);
        uint64_t off = 0, n = 0;
        double cpu0 = bench_cpu_self_s();
        uint64_t t0 = bench_now_ns(), limit = (uint64_t)(o->duration_s * 1e9);
        while (bench_now_ns() - t0 < limit) {
                if (off + w > total)
                        off = 0;
                if (pwrite(fd, buf, w, (off_t)off) != (ssize_t)w || fdatasync(fd) < 0) {
                        close(fd);
                        sl_dio_free(buf, w);
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
        sl_dio_free(buf, w);
        return 0;
}

/* What consume can get from this disk when the data is no longer in the
 * broker's memory: sluiced's Kafka readers read a partition 4 MiB at a time
 * with O_DIRECT, one read in flight per partition. Here one file per
 * reader thread (-n; kafka.sh passes 2, its two partitions) is written
 * (untimed, O_DIRECT, then fdatasync), then read from the start over and
 * over for --duration seconds in 4 MiB O_DIRECT reads. */
#define DREAD_FILE_BYTES  (256ull << 20)
#define DREAD_CHUNK_BYTES (4u << 20)

struct dreader {
        int fd;
        uint64_t stop_ns;
        uint64_t bytes;
        int err;
};

static void *dread_loop(void *arg)
{
        struct dreader *d = arg;
        uint8_t *buf = sl_dio_alloc(DREAD_CHUNK_BYTES);
        if (!buf) {
                d->err = ENOMEM;
                return NULL;
        }
        uint64_t off = 0;
        while (bench_now_ns() < d->stop_ns) {
                ssize_t k = pread(d->fd, buf, DREAD_CHUNK_BYTES, (off_t)off);
                if (k <= 0) {
                        d->err = k < 0 ? errno : EIO;
                        break;
                }
                d->bytes += (uint64_t)k;
                off = off + (uint64_t)k >= DREAD_FILE_BYTES ? 0 : off + (uint64_t)k;
        }
        sl_dio_free(buf, DREAD_CHUNK_BYTES);
        return NULL;
}

static int dread(const struct bench_opts *o, struct bench_result *res)
{
        if (!o->dir)
                return bench_fail("sys dread needs --dir DIR (on the broker's disk)");
        unsigned n = o->fanout ? o->fanout : 1;
        if (n > 16)
                return bench_fail("sys dread: -n at most 16");
        struct dreader d[16] = {0};
        pthread_t th[16];
        uint8_t *buf = aligned_alloc(4096, DREAD_CHUNK_BYTES);
        if (!buf)
                return bench_fail("out of memory");
        memset(buf, 0x5a, DREAD_CHUNK_BYTES);
        int rc = 0;
        unsigned opened = 0;
        for (; opened < n && !rc; opened++) {
                char path[4096];
                snprintf(path, sizeof(path), "%s/sluice-bench-dread.%d.%u", o->dir, (int)getpid(),
                         opened);
                d[opened].fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
                if (d[opened].fd < 0) {
                        rc = bench_fail("%s: %s", path, strerror(errno));
                        break;
                }
                unlink(path);
                for (uint64_t off = 0; off < DREAD_FILE_BYTES && !rc; off += DREAD_CHUNK_BYTES)
                        if (pwrite(d[opened].fd, buf, DREAD_CHUNK_BYTES, (off_t)off) !=
                            (ssize_t)DREAD_CHUNK_BYTES)
                                rc = bench_fail("dread fill: %s", strerror(errno));
                if (!rc && fdatasync(d[opened].fd) < 0)
                        rc = bench_fail("dread fdatasync: %s", strerror(errno));
        }
        free(buf);
        double cpu0 = bench_cpu_self_s();
        uint64_t t0 = bench_now_ns();
        unsigned started = 0;
        for (; !rc && started < n; started++) {
                d[started].stop_ns = t0 + (uint64_t)(o->duration_s * 1e9);
                if (pthread_create(&th[started], NULL, dread_loop, &d[started]))
                        rc = bench_fail("pthread_create failed");
        }
        uint64_t bytes = 0;
        for (unsigned i = 0; i < started; i++) {
                pthread_join(th[i], NULL);
                bytes += d[i].bytes;
                if (d[i].err && !rc)
                        rc = bench_fail("dread: %s", strerror(d[i].err));
        }
        res->elapsed_s = (double)(bench_now_ns() - t0) / 1e9;
        res->client_cpu_s = bench_cpu_self_s() - cpu0;
        res->recv_msgs = bytes / o->size_bytes;
        res->pub_msgs = res->recv_msgs; /* MB/s = bytes read per second */
        for (unsigned i = 0; i < opened; i++)
                if (d[i].fd > 0)
                        close(d[i].fd);
        return rc;
}

int bench_sys_run(const struct bench_opts *o, int mode, struct bench_result *res)
{
        switch (mode) {
        case BENCH_SYS_LOOPBACK:
                return loopback(o, res);
        case BENCH_SYS_DREAD:
                return dread(o, res);
        default:
                return fsync_loop(o, res);
        }
}
