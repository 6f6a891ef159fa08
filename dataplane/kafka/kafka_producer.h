/* Idempotent producer state of one partition (KIP-98): the last five batch
 * sequences of each producer id/epoch, so a retried batch is answered with
 * its original offset instead of being stored twice. Pure state, owned by
 * the partition's worker; rebuilt from the log tail at open. */
#ifndef KAFKA_PRODUCER_H
#define KAFKA_PRODUCER_H

#include <stdint.h>

/* Hard cap per partition: memory is fixed; the least recently used (or an
 * expired) producer gives its slot to a new one. */
#define KAFKA_PRODUCERS_PER_PART 32
/* Kafka keeps five: max.in.flight.requests.per.connection <= 5. */
#define KAFKA_PRODUCER_BATCHES 5

struct kafka_producer {
        int64_t id; /* -1: free */
        int16_t epoch;
        int32_t last_seq;
        uint64_t used;    /* LRU clock */
        uint64_t last_ms; /* monotonic ms of the last append (expiry) */
        uint8_t next;
        uint8_t n;
        struct {
                int32_t first, last;
                int64_t base;
        } b[KAFKA_PRODUCER_BATCHES];
};

struct kafka_producers {
        uint64_t clock;
        uint64_t expiry_ms; /* producer.id.expiration.ms; 0 = never */
        struct kafka_producer p[KAFKA_PRODUCERS_PER_PART];
};

void kafka_producers_init(struct kafka_producers *ps, uint64_t expiry_ms);

/* Check the v2 batch header `b` (at least 61 bytes) before it is appended.
 * Returns 0 to append (*out: the state to note the batch in after the
 * append, NULL for a non-idempotent batch), 1 for a duplicate of one of the
 * last five batches (*base: its first offset), or a Kafka error code:
 * INVALID_PRODUCER_EPOCH (older epoch) or OUT_OF_ORDER_SEQUENCE_NUMBER (a
 * gap, a sequence older than the cache, or a new epoch not starting at 0).
 * A producer the partition does not know is adopted at any sequence, as
 * Kafka 3.x does since KIP-360. */
int kafka_producer_check(struct kafka_producers *ps, const uint8_t *b, uint64_t now_ms,
                         struct kafka_producer **out, int64_t *base);
/* The batch b was appended at offset base. */
void kafka_producer_note(struct kafka_producer *st, const uint8_t *b, int64_t base,
                         uint64_t now_ms);
/* Rebuild: batch b stored at base, visited oldest first at open. */
void kafka_producer_replay(struct kafka_producers *ps, const uint8_t *b, int64_t base,
                           uint64_t now_ms);
/* Producers with state (for tests and metrics). */
uint32_t kafka_producers_live(const struct kafka_producers *ps, uint64_t now_ms);

#endif
