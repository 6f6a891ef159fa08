/* KIP-227 fetch session state (see kafka_fsession.h). Arrays grow by
 * doubling up to their bounds: a session is built once and changes only
 * when the consumer's assignment does, never per fetched record. */
#include "kafka_fsession.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct kafka_fsession *kafka_fsession_new(int32_t id)
{
        struct kafka_fsession *fs = calloc(1, sizeof(*fs));
        if (fs) {
                fs->id = id;
                fs->epoch = 1;
        }
        return fs;
}

void kafka_fsession_free(struct kafka_fsession *fs)
{
        if (!fs)
                return;
        free(fs->topics);
        free(fs->parts);
        free(fs);
}

static int grow(void **arr, uint32_t *cap, uint32_t n, uint32_t max, size_t elem)
{
        if (n < *cap)
                return 0;
        if (n >= max)
                return -ENOSPC;
        uint32_t c = *cap ? *cap * 2 : 8;
        if (c > max)
                c = max;
        void *p = realloc(*arr, c * elem);
        if (!p)
                return -ENOMEM;
        *arr = p;
        *cap = c;
        return 0;
}

static uint32_t topic_hash(const uint8_t uuid[16])
{
        uint32_t h;
        memcpy(&h, uuid, 4); /* topic ids are random */
        uint32_t l;
        memcpy(&l, uuid + 12, 4);
        h ^= l * 0x9e3779b1u;
        return (h ^ h >> 16) & (KAFKA_FSESSION_TOPIC_SLOTS - 1);
}

static uint32_t part_hash(uint32_t ti, int32_t partition)
{
        uint32_t h = ti * 0x9e3779b1u ^ (uint32_t)partition * 0x85ebca77u;
        return (h ^ h >> 15) & (KAFKA_FSESSION_PART_SLOTS - 1);
}

/* The slot holding (ti, partition), or the empty slot where it goes. */
static uint16_t *part_slot(struct kafka_fsession *fs, uint32_t ti, int32_t partition)
{
        for (uint32_t h = part_hash(ti, partition);;
             h = (h + 1) & (KAFKA_FSESSION_PART_SLOTS - 1)) {
                uint16_t *slot = &fs->part_slots[h];
                if (!*slot)
                        return slot;
                const struct kafka_fsess_part *p = &fs->parts[*slot - 1];
                if (p->topic == ti && p->partition == partition)
                        return slot;
        }
}

static uint16_t *topic_slot(struct kafka_fsession *fs, const uint8_t uuid[16])
{
        for (uint32_t h = topic_hash(uuid);; h = (h + 1) & (KAFKA_FSESSION_TOPIC_SLOTS - 1)) {
                uint16_t *slot = &fs->topic_slots[h];
                if (!*slot || !memcmp(fs->topics[*slot - 1].uuid, uuid, 16))
                        return slot;
        }
}

static int topic_index(struct kafka_fsession *fs, const uint8_t uuid[16], const char *name,
                       uint16_t name_len)
{
        uint16_t *slot = topic_slot(fs, uuid);
        if (*slot)
                return *slot - 1;
        int rc = grow((void **)&fs->topics, &fs->topics_cap, fs->ntopics, KAFKA_FSESSION_TOPICS_MAX,
                      sizeof(*fs->topics));
        if (rc)
                return rc;
        struct kafka_fsess_topic *t = &fs->topics[fs->ntopics];
        memcpy(t->uuid, uuid, 16);
        t->name_len = name_len < sizeof(t->name) ? name_len : (uint16_t)sizeof(t->name);
        memcpy(t->name, name, t->name_len);
        *slot = (uint16_t)(fs->ntopics + 1);
        return (int)fs->ntopics++;
}

int kafka_fsession_upsert(struct kafka_fsession *fs, const uint8_t uuid[16], const char *name,
                          uint16_t name_len, int32_t partition, int64_t offset, int32_t max_bytes)
{
        int ti = topic_index(fs, uuid, name, name_len);
        if (ti < 0)
                return ti;
        uint16_t *slot = part_slot(fs, (uint32_t)ti, partition);
        if (*slot) {
                struct kafka_fsess_part *p = &fs->parts[*slot - 1];
                p->offset = offset;
                p->max_bytes = max_bytes;
                return *slot - 1;
        }
        int rc = grow((void **)&fs->parts, &fs->parts_cap, fs->nparts, KAFKA_FSESSION_PARTS_MAX,
                      sizeof(*fs->parts));
        if (rc)
                return rc;
        fs->parts[fs->nparts] = (struct kafka_fsess_part){.topic = (uint16_t)ti,
                                                          .partition = partition,
                                                          .offset = offset,
                                                          .max_bytes = max_bytes,
                                                          .hw_sent = -2,
                                                          .lso_sent = -2};
        *slot = (uint16_t)(fs->nparts + 1);
        return (int)fs->nparts++;
}

void kafka_fsession_forget(struct kafka_fsession *fs, const uint8_t uuid[16], int32_t partition)
{
        uint16_t ti = *topic_slot(fs, uuid);
        if (!ti)
                return;
        uint16_t at = *part_slot(fs, ti - 1u, partition);
        if (!at)
                return;
        /* keep the order of the rest (responses follow it); the indexes
         * after it moved, so the part index is rebuilt: a forget comes with
         * an assignment change, not with every fetch */
        memmove(&fs->parts[at - 1], &fs->parts[at], (fs->nparts - at) * sizeof(fs->parts[0]));
        fs->nparts--;
        memset(fs->part_slots, 0, sizeof(fs->part_slots));
        for (uint32_t i = 0; i < fs->nparts; i++)
                *part_slot(fs, fs->parts[i].topic, fs->parts[i].partition) = (uint16_t)(i + 1);
}

bool kafka_fsession_news(const struct kafka_fsess_part *sp, int16_t err, uint32_t got, int64_t hw,
                         int64_t lso)
{
        return err != 0 || got != 0 || hw != sp->hw_sent || lso != sp->lso_sent;
}
