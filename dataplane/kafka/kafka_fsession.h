/* KIP-227 fetch sessions, one per connection: the partitions a consumer
 * fetches, with the offsets it last asked for and what it was last told,
 * so an incremental Fetch names only what changed and its response carries
 * only partitions with news. Pure state, owned by the connection's worker. */
#ifndef KAFKA_FSESSION_H
#define KAFKA_FSESSION_H

#include <stdbool.h>
#include <stdint.h>

/* Bounds per session (Kafka bounds the number of sessions instead; one per
 * connection here, freed with it). */
#define KAFKA_FSESSION_PARTS_MAX  1000
#define KAFKA_FSESSION_TOPICS_MAX 256
/* Open-addressing indexes (entry index + 1, 0 = empty): powers of two more
 * than twice the bounds, so a probe stays short. */
#define KAFKA_FSESSION_PART_SLOTS  2048
#define KAFKA_FSESSION_TOPIC_SLOTS 512

struct kafka_fsess_topic {
        uint8_t uuid[16];
        uint16_t name_len;
        char name[250];
};

struct kafka_fsess_part {
        uint16_t topic; /* index into topics */
        int32_t partition;
        int64_t offset; /* the fetch offset last asked for */
        int32_t max_bytes;
        int64_t hw_sent; /* -2: never answered */
        int64_t lso_sent;
};

struct kafka_fsession {
        int32_t id;
        int32_t epoch; /* the epoch the next incremental request must carry */
        uint32_t ntopics, nparts;
        uint32_t topics_cap, parts_cap;
        struct kafka_fsess_topic *topics;
        struct kafka_fsess_part *parts;
        /* (topic index, partition) -> parts index + 1; topic id -> topics
         * index + 1: an upsert or forget is one probe, not a scan */
        uint16_t part_slots[KAFKA_FSESSION_PART_SLOTS];
        uint16_t topic_slots[KAFKA_FSESSION_TOPIC_SLOTS];
};

/* NULL when out of memory. */
struct kafka_fsession *kafka_fsession_new(int32_t id);
void kafka_fsession_free(struct kafka_fsession *fs);
/* Add or update (topic, partition). Returns its index, or -ENOSPC past the
 * bounds, -ENOMEM. */
int kafka_fsession_upsert(struct kafka_fsession *fs, const uint8_t uuid[16], const char *name,
                          uint16_t name_len, int32_t partition, int64_t offset, int32_t max_bytes);
/* Drop (topic, partition) if present (forgotten_topics_data). */
void kafka_fsession_forget(struct kafka_fsession *fs, const uint8_t uuid[16], int32_t partition);
/* Whether a partition read with this outcome goes into an incremental
 * response: records, an error, or a watermark the client has not seen. */
bool kafka_fsession_news(const struct kafka_fsess_part *sp, int16_t err, uint32_t got, int64_t hw,
                         int64_t lso);

#endif
