/* Kafka modes of sluice-bench: a minimal Kafka client speaking the wire
 * protocol directly (ApiVersions v0, Metadata v4, Produce v8 with v2 record
 * batches and CRC-32C, Fetch v11), every connection in one thread around
 * poll(), requests pipelined, acks=all. Also the machine-limit modes the
 * Kafka bench compares against (loopback TCP, write+fdatasync). */
#ifndef BENCH_KAFKA_H
#define BENCH_KAFKA_H

#include "bench_util.h"

enum bench_kafka_mode {
        BENCH_KAFKA_PRODUCE, /* -n connections, pipelined produce; latency = request round trip */
        BENCH_KAFKA_CONSUME, /* fill the topic (untimed), then -n connections fetch it all */
        BENCH_KAFKA_E2E,     /* producer -> long-polling consumer; latency = produce to delivery */
};

enum bench_sys_mode {
        BENCH_SYS_LOOPBACK, /* a plain TCP socket pair over 127.0.0.1: bytes/s */
        BENCH_SYS_FSYNC,    /* write(size) + fdatasync in a loop on a file in --dir */
        BENCH_SYS_DREAD,    /* 4 MiB O_DIRECT reads, -n files/threads in --dir: bytes/s */
};

/* For tests/fuzz: parses one response frame (after its 4-byte size: the
 * correlation id first) of Produce (0), Fetch (1) or Metadata (3) the way
 * the runs do. Returns what the run would see (Kafka error, partition
 * count) or -1 for a malformed answer; never reads outside [frame, +len). */
int bench_kafka_parse(int16_t api, const uint8_t *frame, size_t len);

int bench_kafka_run(const struct bench_opts *opts, int mode, struct bench_result *res);
int bench_sys_run(const struct bench_opts *opts, int mode, struct bench_result *res);

#endif
