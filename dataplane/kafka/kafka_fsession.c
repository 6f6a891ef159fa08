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

static int topic_index(struct kafka_fsession *fs, const uint8_t uuid[16], const char *name,
                       uint16_t name_len)
{
        for (uint32_t i = 0; i < fs->ntopics; i++)
                if (!memcmp(fs->topics[i].uuid, uuid, 16))
                        return (int)i;
        int rc = grow((void **)&fs->topics, &fs->topics_cap, fs->ntopics, KAFKA_FSESSION_TOPICS_MAX,
                      sizeof(*fs->topics));
        if (rc)
                return rc;
        struct kafka_fsess_topic *t = &fs->topics[fs->ntopics];
        memcpy(t->uuid, uuid, 16);
        t->name_len = name_len < sizeof(t->name) ? name_len : (uint16_t)sizeof(t->name);
        memcpy(t->name, name, t->name_len);
        return (int)fs->ntopics++;
}

int kafka_fsession_upsert(struct kafka_fsession *fs, const uint8_t uuid[16], const char *name,
                          uint16_t name_len, int32_t partition, int64_t offset, int32_t max_bytes)
{
        int ti = topic_index(fs, uuid, name, name_len);
        if (ti < 0)
                return ti;
        for (uint32_t i = 0; i < fs->nparts; i++) {
                struct kafka_fsess_part *p = &fs->parts[i];
                if (p->topic == ti && p->partition == partition) {
                        p->offset = offset;
                        p->max_bytes = max_bytes;
                        return (int)i;
                }
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
        return (int)fs->nparts++;
}

void kafka_fsession_forget(struct kafka_fsession *fs, const uint8_t uuid[16], int32_t partition)
{
        for (uint32_t i = 0; i < fs->nparts; i++) {
                struct kafka_fsess_part *p = &fs->parts[i];
                if (p->partition == partition && !memcmp(fs->topics[p->topic].uuid, uuid, 16)) {
                        /* keep the order of the rest: responses follow it */
                        memmove(p, p + 1, (fs->nparts - i - 1) * sizeof(*p));
                        fs->nparts--;
                        return;
                }
        }
}

bool kafka_fsession_news(const struct kafka_fsess_part *sp, int16_t err, uint32_t got, int64_t hw,
                         int64_t lso)
{
        return err != 0 || got != 0 || hw != sp->hw_sent || lso != sp->lso_sent;
}
