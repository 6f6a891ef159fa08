/* The partition side of the Kafka front-end: the worker's storage owner and
 * open partition logs, partition operations run for local or remote
 * requests, long-poll waiters, and the ring messages that carry them. */
#ifndef KAFKA_PART_H
#define KAFKA_PART_H

#include "kafka_internal.h"

int kafka_part_init(struct kafka_worker *kw);
void kafka_part_fini(struct kafka_worker *kw);
/* Poller step: storage I/O, retries, waiter deadlines. Returns work done
 * (non-zero while storage has I/O in flight, so the worker does not sleep
 * through a completion it is not woken for). */
uint32_t kafka_part_poll(struct kafka_worker *kw);
/* ring messages of the Kafka range */
void kafka_part_msg(struct sl_worker *w, const struct sl_msg *m);
/* Runs p on worker dst (the partition's owner, or the control thread for
 * CREATE); kafka_pop_complete() follows on this worker, possibly before
 * this returns. */
void kafka_pop_submit(struct kafka_worker *kw, struct kafka_pop *p, uint16_t dst);

/* kafka_server.c */
void kafka_pop_complete(struct kafka_worker *kw, struct kafka_pop *p);
void kafka_fetch_wake(struct kafka_worker *kw, struct kafka_req *r);
void kafka_conn_flush(struct kafka_worker *kw, struct sl_conn *c);
void kafka_req_done(struct kafka_worker *kw, struct kafka_req *r);

#endif
