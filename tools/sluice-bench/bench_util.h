/* Shared helpers for sluice-bench, independent of any protocol: monotonic
 * time, a log-linear latency histogram, TCP sockets and CPU accounting.
 * Protocol modes (bench_nats.c, later Kafka/AMQP) build on these. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Options common to every mode; filled by main.c from the command line. */
struct bench_opts {
        const char *host;
        const char *port;
        uint32_t size_bytes;   /* payload size, BENCH_SIZE_MIN..BENCH_SIZE_MAX */
        double duration_s;     /* used when count == 0 */
        uint64_t count;        /* messages (or round trips) to send; 0: by time */
        uint32_t fanout;       /* -n: subscribers / queue members */
        uint64_t window_bytes; /* publisher may run this far ahead of the slowest reader */
        uint32_t inflight;     /* AMQP confirm: unconfirmed publishes at most */
        uint32_t prefetch;     /* AMQP consume: basic.qos prefetch count */
        const char *topic;     /* kafka: NULL = a fresh topic per run */
        const char *dir;       /* sys fsync: directory for the test file */
        bool json;
};

#define BENCH_SIZE_MIN   16u
#define BENCH_SIZE_MAX   (64u * 1024u)
#define BENCH_FANOUT_MAX 64u

/* What a run measured; main.c prints it as text or JSON. */
struct bench_result {
        uint64_t pub_msgs;   /* messages the publisher(s) completed */
        uint64_t recv_msgs;  /* deliveries counted by all subscribers */
        uint64_t lost_msgs;  /* expected deliveries that never came */
        double elapsed_s;    /* from first publish to last delivery */
        double client_cpu_s; /* user+sys of this process during the run */
        bool has_latency;    /* reqrep: percentiles below are valid */
        double lat_p50_us, lat_p99_us, lat_p999_us, lat_max_us, lat_mean_us;
};

/* ---- time ---- */
uint64_t bench_now_ns(void);
double bench_cpu_self_s(void);

/* ---- histogram: 2^BENCH_HIST_SUB_BITS linear sub-buckets per power of two,
 * so every recorded value is kept within ~3% (HdrHistogram's layout). ---- */
#define BENCH_HIST_SUB_BITS 5
#define BENCH_HIST_BUCKETS  ((64 - BENCH_HIST_SUB_BITS + 2) << (BENCH_HIST_SUB_BITS - 1))

struct bench_hist {
        uint64_t counts[BENCH_HIST_BUCKETS];
        uint64_t total;
        uint64_t sum;
        uint64_t max;
};

void bench_hist_record(struct bench_hist *h, uint64_t value);
/* Value at quantile q (0..1): the upper edge of its bucket, at most max. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);

/* ---- sockets ---- */
/* Blocking TCP connect to host:port with TCP_NODELAY; returns fd or -errno. */
int bench_tcp_connect(const char *host, const char *port);
int bench_fd_nonblock_set(int fd);

/* Prints "sluice-bench: <msg>" to stderr; returns -1 for `return bench_fail(..)`. */
int bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
