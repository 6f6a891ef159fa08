/* sluice-bench: load generator for sluiced and its peers. A table maps
 * "<protocol> <mode>" to a runner (NATS and AMQP today; Kafka adds rows);
 * this file parses the common options and prints one result as text or JSON. */
#include "bench_amqp.h"
#include "bench_kafka.h"
#include "bench_nats.h"
#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench_mode {
        const char *proto;
        const char *name;
        int (*run)(const struct bench_opts *opts, int variant, struct bench_result *res);
        int variant;
        bool uses_fanout; /* -n is meaningful */
        const char *help;
};

static const struct bench_mode bench_modes[] = {
    {"nats", "pub", bench_nats_run, BENCH_NATS_PUB, false, "publish only, no subscriber"},
    {"nats", "pubsub", bench_nats_run, BENCH_NATS_PUBSUB, false, "1 publisher -> 1 subscriber"},
    {"nats", "fanout", bench_nats_run, BENCH_NATS_FANOUT, true,
     "1 publisher -> N subscribers (each gets every message)"},
    {"nats", "queue", bench_nats_run, BENCH_NATS_QUEUE, true,
     "1 publisher -> N members of one queue group"},
    {"nats", "reqrep", bench_nats_run, BENCH_NATS_REQREP, false,
     "request/reply round trips, one in flight; latency percentiles"},
    {"amqp", "confirm", bench_amqp_run, BENCH_AMQP_CONFIRM, false,
     "persistent publish to a durable queue, pipelined confirms; confirm latency"},
    {"amqp", "consume", bench_amqp_run, BENCH_AMQP_CONSUME, false,
     "publisher -> queue -> consumer with manual acks and --prefetch"},
    {"amqp", "pubsub", bench_amqp_run, BENCH_AMQP_PUBSUB, false,
     "transient publish -> queue -> no-ack consumer"},
    {"amqp", "fanout", bench_amqp_run, BENCH_AMQP_FANOUT, true,
     "transient publish -> fanout exchange -> N queues, one no-ack consumer each"},
    {"kafka", "produce", bench_kafka_run, BENCH_KAFKA_PRODUCE, true,
     "-n connections, pipelined produce, acks=all; latency per request"},
    {"kafka", "consume", bench_kafka_run, BENCH_KAFKA_CONSUME, true,
     "fill a fresh topic, then -n connections fetch it all"},
    {"kafka", "e2e", bench_kafka_run, BENCH_KAFKA_E2E, false,
     "one record per produce, a long-polling consumer times each"},
    {"sys", "loopback", bench_sys_run, BENCH_SYS_LOOPBACK, false,
     "plain TCP socket pair on 127.0.0.1 (--size bytes per write)"},
    {"sys", "fsync", bench_sys_run, BENCH_SYS_FSYNC, false,
     "write(--window bytes) + fdatasync in a loop, in --dir"},
    {"sys", "dread", bench_sys_run, BENCH_SYS_DREAD, true,
     "-n threads each reading its own 256 MiB file in --dir, 4 MiB O_DIRECT reads"},
};

static void usage(FILE *f)
{
        fprintf(f, "usage: sluice-bench PROTOCOL MODE [options]\n\nmodes:\n");
        for (size_t i = 0; i < sizeof(bench_modes) / sizeof(bench_modes[0]); i++)
                fprintf(f, "  %-5s %-7s %s\n", bench_modes[i].proto, bench_modes[i].name,
                        bench_modes[i].help);
        fprintf(f,
                "\noptions:\n"
                "  --url HOST:PORT    broker address (default 127.0.0.1:4222, amqp :5672)\n"
                "  --size BYTES       payload size, %u..%u (default 128)\n"
                "  --duration SEC     run for SEC seconds (default 5)\n"
                "  --count N          send N messages / round trips instead\n"
                "  -n N               subscribers or queue members (default 4, max %u)\n"
                "  --window BYTES     publisher lead over the slowest reader (default 8 MiB)\n"
                "  --inflight N       amqp confirm: unconfirmed publishes at most (default 1000)\n"
                "  --prefetch N       amqp consume: basic.qos prefetch count (default 256)\n"
                "  --topic NAME       kafka: topic (default: a fresh one per run)\n"
                "  --dir DIR          sys fsync: where the test file goes\n"
                "  --json             one JSON object on stdout\n",
                BENCH_SIZE_MIN, BENCH_SIZE_MAX, BENCH_FANOUT_MAX);
}

/* Parses an unsigned number with an optional K/M suffix (binary). */
static int num_parse(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s)
                return -EINVAL;
        if (*end == 'K' || *end == 'k')
                v *= 1024, end++;
        else if (*end == 'M' || *end == 'm')
                v *= 1024 * 1024, end++;
        if (*end == 'i' && end[1] == 'B')
                end += 2;
        else if (*end == 'B')
                end++;
        if (*end)
                return -EINVAL;
        *out = v;
        return 0;
}

static char url_buf[256];

static int url_parse(const char *url, struct bench_opts *o)
{
        const char *s = strstr(url, "://");
        s = s ? s + 3 : url;
        if (strlen(s) >= sizeof(url_buf))
                return -EINVAL;
        strcpy(url_buf, s);
        char *colon = strrchr(url_buf, ':');
        if (!colon || colon == url_buf || !colon[1])
                return -EINVAL;
        *colon = '\0';
        o->host = url_buf;
        o->port = colon + 1;
        return 0;
}

static int opts_parse(int argc, char **argv, struct bench_opts *o)
{
        for (int i = 0; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                uint64_t n = 0;
                if (strcmp(a, "--json") == 0) {
                        o->json = true;
                        continue;
                }
                if (!v)
                        return bench_fail("%s: needs a value (or unknown option)", a);
                i++;
                if (strcmp(a, "--url") == 0) {
                        if (url_parse(v, o))
                                return bench_fail("--url %s: expected HOST:PORT", v);
                } else if (strcmp(a, "--size") == 0) {
                        if (num_parse(v, &n) || n < BENCH_SIZE_MIN || n > BENCH_SIZE_MAX)
                                return bench_fail("--size %s: expected %u..%u bytes", v,
                                                  BENCH_SIZE_MIN, BENCH_SIZE_MAX);
                        o->size_bytes = (uint32_t)n;
                } else if (strcmp(a, "--duration") == 0) {
                        char *end;
                        o->duration_s = strtod(v, &end);
                        if (*end || !(o->duration_s > 0 && o->duration_s < 86400))
                                return bench_fail("--duration %s: expected seconds", v);
                } else if (strcmp(a, "--count") == 0) {
                        if (num_parse(v, &n) || n == 0)
                                return bench_fail("--count %s: expected a positive number", v);
                        o->count = n;
                } else if (strcmp(a, "-n") == 0) {
                        if (num_parse(v, &n) || n == 0 || n > BENCH_FANOUT_MAX)
                                return bench_fail("-n %s: expected 1..%u", v, BENCH_FANOUT_MAX);
                        o->fanout = (uint32_t)n;
                } else if (strcmp(a, "--inflight") == 0 || strcmp(a, "--prefetch") == 0) {
                        if (num_parse(v, &n) || n == 0 || n > 65535)
                                return bench_fail("%s %s: expected 1..65535", a, v);
                        *(a[2] == 'i' ? &o->inflight : &o->prefetch) = (uint32_t)n;
                } else if (strcmp(a, "--topic") == 0) {
                        o->topic = v;
                } else if (strcmp(a, "--dir") == 0) {
                        o->dir = v;
                } else if (strcmp(a, "--window") == 0) {
                        if (num_parse(v, &n) || n == 0)
                                return bench_fail("--window %s: expected bytes", v);
                        o->window_bytes = n;
                } else {
                        return bench_fail("unknown option %s", a);
                }
        }
        return 0;
}

static void result_print(const struct bench_mode *m, const struct bench_opts *o,
                         const struct bench_result *r)
{
        double secs = r->elapsed_s > 0 ? r->elapsed_s : 1e-9;
        /* msgs/s counts what the broker delivered (published, for publish-only). */
        uint64_t msgs = r->recv_msgs ? r->recv_msgs : r->pub_msgs;
        double rate = (double)msgs / secs;
        double mbps = rate * o->size_bytes / 1e6;
        unsigned n = m->uses_fanout ? o->fanout : 0;
        if (o->json) {
                printf("{\"proto\":\"%s\",\"mode\":\"%s\",\"size\":%" PRIu32 ",\"n\":%u,"
                       "\"secs\":%.3f,\"pub_msgs\":%" PRIu64 ",\"recv_msgs\":%" PRIu64
                       ",\"lost_msgs\":%" PRIu64 ",\"msgs_per_s\":%.0f,\"pub_msgs_per_s\":%.0f,"
                       "\"mb_per_s\":%.2f,\"client_cpu_s\":%.3f",
                       m->proto, m->name, o->size_bytes, n, r->elapsed_s, r->pub_msgs, r->recv_msgs,
                       r->lost_msgs, rate, (double)r->pub_msgs / secs, mbps, r->client_cpu_s);
                if (r->has_latency)
                        printf(",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
                               "\"max_us\":%.1f,\"mean_us\":%.1f",
                               r->lat_p50_us, r->lat_p99_us, r->lat_p999_us, r->lat_max_us,
                               r->lat_mean_us);
                printf("}\n");
                return;
        }
        printf("%s %s size=%" PRIu32 "%s", m->proto, m->name, o->size_bytes, n ? " n=" : "");
        if (n)
                printf("%u", n);
        printf(": %.0f msgs/s, %.1f MB/s over %.2f s (published %" PRIu64 ", delivered %" PRIu64
               ", lost %" PRIu64 "; client CPU %.2f s)\n",
               rate, mbps, r->elapsed_s, r->pub_msgs, r->recv_msgs, r->lost_msgs, r->client_cpu_s);
        if (r->has_latency)
                printf("  round trip us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n",
                       r->lat_p50_us, r->lat_p99_us, r->lat_p999_us, r->lat_max_us, r->lat_mean_us);
}

int main(int argc, char **argv)
{
        if (argc < 3) {
                usage(argc > 1 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
                return argc > 1 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
        }
        const struct bench_mode *m = NULL;
        for (size_t i = 0; i < sizeof(bench_modes) / sizeof(bench_modes[0]); i++)
                if (strcmp(bench_modes[i].proto, argv[1]) == 0 &&
                    strcmp(bench_modes[i].name, argv[2]) == 0)
                        m = &bench_modes[i];
        if (!m) {
                bench_fail("unknown mode '%s %s'", argv[1], argv[2]);
                usage(stderr);
                return 2;
        }
        struct bench_opts o = {
            .host = "127.0.0.1",
            .port = strcmp(m->proto, "amqp") == 0 ? "5672" : "4222",
            .size_bytes = 128,
            .duration_s = 5,
            .fanout = 4,
            .window_bytes = 8u << 20,
            .inflight = 1000,
            .prefetch = 256,
        };
        if (opts_parse(argc - 3, argv + 3, &o))
                return 2;
        struct bench_result r = {0};
        if (m->run(&o, m->variant, &r))
                return 1;
        result_print(m, &o, &r);
        return r.lost_msgs ? 1 : 0;
}
