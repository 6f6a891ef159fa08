/* Shared helpers for sluice-bench: monotonic clock, process CPU time, the
 * log-linear histogram and blocking-connect TCP sockets. Nothing here knows
 * a protocol. */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_cpu_self_s(void)
{
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) != 0)
                return 0;
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static unsigned hist_index(uint64_t v)
{
        const unsigned half = 1u << (BENCH_HIST_SUB_BITS - 1);
        if (v < 2 * half)
                return (unsigned)v;
        unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
        unsigned shift = msb - BENCH_HIST_SUB_BITS + 1;
        /* v >> shift is in [half, 2 * half): the top half of a linear range. */
        return shift * half + (unsigned)(v >> shift);
}

/* Largest value that maps to bucket i (inverse of hist_index). */
static uint64_t hist_upper(unsigned i)
{
        const unsigned half = 1u << (BENCH_HIST_SUB_BITS - 1);
        if (i < 2 * half)
                return i;
        unsigned shift = i / half - 1;
        uint64_t mant = i - shift * half;
        if (shift + BENCH_HIST_SUB_BITS > 64)
                return UINT64_MAX;
        return ((mant + 1) << shift) - 1;
}

void bench_hist_record(struct bench_hist *h, uint64_t value)
{
        unsigned i = hist_index(value);
        if (i >= BENCH_HIST_BUCKETS)
                i = BENCH_HIST_BUCKETS - 1;
        h->counts[i]++;
        h->total++;
        h->sum += value;
        if (value > h->max)
                h->max = value;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
        if (h->total == 0)
                return 0;
        uint64_t rank = (uint64_t)(q * (double)h->total);
        if (rank >= h->total)
                rank = h->total - 1;
        uint64_t seen = 0;
        for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
                seen += h->counts[i];
                if (seen > rank) {
                        uint64_t up = hist_upper(i);
                        return up < h->max ? up : h->max;
                }
        }
        return h->max;
}

int bench_tcp_connect(const char *host, const char *port)
{
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, port, &hints, &res);
        if (rc != 0)
                return -EHOSTUNREACH;
        int err = -ECONNREFUSED;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
                if (fd < 0) {
                        err = -errno;
                        continue;
                }
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                        int one = 1;
                        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                        freeaddrinfo(res);
                        return fd;
                }
                err = -errno;
                close(fd);
        }
        freeaddrinfo(res);
        return err;
}

int bench_fd_nonblock_set(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

int bench_fail(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fputs("sluice-bench: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        return -1;
}
