/* AMQP 0-9-1 modes of sluice-bench: a minimal single-threaded client
 * (handshake, declare/bind, publish with or without confirms, consume with
 * manual or automatic acks) over non-blocking sockets that writes prebuilt
 * blocks of publish frames, so a run measures the broker and not the client. */
#ifndef BENCH_AMQP_H
#define BENCH_AMQP_H

#include "bench_util.h"

enum bench_amqp_mode {
        BENCH_AMQP_CONFIRM, /* persistent publish to a durable queue, confirms pipelined */
        BENCH_AMQP_CONSUME, /* publisher -> queue -> consumer with manual acks and prefetch */
        BENCH_AMQP_PUBSUB,  /* transient publish -> queue -> no-ack consumer */
        BENCH_AMQP_FANOUT,  /* transient publish -> fanout exchange -> n queues, n consumers */
};

/* Runs one mode against opts->host:port as guest/guest on vhost "/"; fills
 * *res. Returns 0 or -1 (reported). Declares its own uniquely named queues
 * and exchange and deletes them at the end. */
int bench_amqp_run(const struct bench_opts *opts, int mode, struct bench_result *res);

#endif
