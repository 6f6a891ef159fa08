/* NATS modes of sluice-bench: a minimal single-threaded NATS client (CONNECT,
 * PUB, SUB, PING/PONG, MSG parsing) over non-blocking sockets that batches
 * writes, so a run measures the broker and not the client. */
#ifndef BENCH_NATS_H
#define BENCH_NATS_H

#include "bench_util.h"

enum bench_nats_mode {
        BENCH_NATS_PUB,    /* publish only, no subscriber */
        BENCH_NATS_PUBSUB, /* 1 publisher -> 1 subscriber */
        BENCH_NATS_FANOUT, /* 1 publisher -> n subscribers, each gets every message */
        BENCH_NATS_QUEUE,  /* 1 publisher -> n members of one queue group */
        BENCH_NATS_REQREP, /* requester <-> responder, one request in flight */
};

/* Runs one mode against opts->host:port; fills *res. Returns 0 or -1 (reported). */
int bench_nats_run(const struct bench_opts *opts, int mode, struct bench_result *res);

#endif
