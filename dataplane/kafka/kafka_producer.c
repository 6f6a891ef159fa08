/* Idempotent producer state per partition: sequence checks on append and
 * the rebuild from the log tail. Batch header offsets from RECORDS.md:
 * lastOffsetDelta @23, producerId @43, producerEpoch @51, baseSequence @53. */
#include "kafka_producer.h"

#include <stdbool.h>
#include <string.h>

#include "kafka_internal.h" /* KERR_* */
#include "log.h"            /* log_batch_last_delta */

static int64_t be64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return (int64_t)v;
}

static int32_t be32(const uint8_t *p)
{
        return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
}

static int64_t batch_pid(const uint8_t *b)
{
        return be64(b + 43);
}

static int16_t batch_epoch(const uint8_t *b)
{
        return (int16_t)((uint16_t)b[51] << 8 | b[52]);
}

static int32_t batch_first(const uint8_t *b)
{
        return be32(b + 53);
}

/* Sequences wrap at INT32_MAX to 0 (KIP-98). */
static int32_t seq_add(int32_t s, int32_t n)
{
        return (int32_t)(((uint32_t)s + (uint32_t)n) & INT32_MAX);
}

static int32_t batch_last(const uint8_t *b)
{
        return seq_add(batch_first(b), log_batch_last_delta(b));
}

void kafka_producers_init(struct kafka_producers *ps, uint64_t expiry_ms)
{
        memset(ps, 0, sizeof(*ps));
        ps->expiry_ms = expiry_ms;
        for (int i = 0; i < KAFKA_PRODUCERS_PER_PART; i++)
                ps->p[i].id = -1;
}

static bool expired(const struct kafka_producers *ps, const struct kafka_producer *x,
                    uint64_t now_ms)
{
        return ps->expiry_ms && now_ms > x->last_ms && now_ms - x->last_ms > ps->expiry_ms;
}

/* The live state of id, or NULL and *slot = where a new one goes: a free
 * or expired slot first, else the least recently used. */
static struct kafka_producer *find(struct kafka_producers *ps, int64_t id, uint64_t now_ms,
                                   struct kafka_producer **slot)
{
        struct kafka_producer *lru = &ps->p[0], *free_slot = NULL;
        for (int i = 0; i < KAFKA_PRODUCERS_PER_PART; i++) {
                struct kafka_producer *x = &ps->p[i];
                if (x->id >= 0 && expired(ps, x, now_ms))
                        x->id = -1; /* forgotten, as Kafka's expiration does */
                if (x->id == id && id >= 0)
                        return x;
                if (x->id < 0 && !free_slot)
                        free_slot = x;
                if (x->used < lru->used)
                        lru = x;
        }
        *slot = free_slot ? free_slot : lru;
        return NULL;
}

static void reset(struct kafka_producer *st, int64_t id, int16_t epoch, int32_t first)
{
        *st = (struct kafka_producer){.id = id, .epoch = epoch, .last_seq = seq_add(first, -1)};
}

int kafka_producer_check(struct kafka_producers *ps, const uint8_t *b, uint64_t now_ms,
                         struct kafka_producer **out, int64_t *base)
{
        int64_t id = batch_pid(b);
        *out = NULL;
        if (id < 0)
                return 0;
        int16_t epoch = batch_epoch(b);
        int32_t first = batch_first(b), last = batch_last(b);
        struct kafka_producer *slot = NULL, *st = find(ps, id, now_ms, &slot);
        ps->clock++;
        if (!st) {
                st = slot;
                reset(st, id, epoch, first);
        } else if (epoch < st->epoch) {
                return KERR_INVALID_PRODUCER_EPOCH;
        } else if (epoch > st->epoch) {
                /* A bumped epoch (KIP-360) starts its sequences over. */
                if (first != 0)
                        return KERR_OUT_OF_ORDER_SEQUENCE;
                reset(st, id, epoch, first);
        } else {
                for (int i = 0; i < st->n; i++)
                        if (st->b[i].first == first && st->b[i].last == last) {
                                *base = st->b[i].base;
                                st->used = ps->clock;
                                st->last_ms = now_ms;
                                return 1;
                        }
                if (first != seq_add(st->last_seq, 1))
                        return KERR_OUT_OF_ORDER_SEQUENCE;
        }
        st->used = ps->clock;
        st->last_ms = now_ms;
        *out = st;
        return 0;
}

void kafka_producer_note(struct kafka_producer *st, const uint8_t *b, int64_t base, uint64_t now_ms)
{
        int32_t last = batch_last(b);
        st->b[st->next].first = batch_first(b);
        st->b[st->next].last = last;
        st->b[st->next].base = base;
        st->next = (uint8_t)((st->next + 1) % KAFKA_PRODUCER_BATCHES);
        if (st->n < KAFKA_PRODUCER_BATCHES)
                st->n++;
        st->last_seq = last;
        st->last_ms = now_ms;
}

void kafka_producer_replay(struct kafka_producers *ps, const uint8_t *b, int64_t base,
                           uint64_t now_ms)
{
        int64_t id = batch_pid(b);
        if (id < 0)
                return;
        int16_t epoch = batch_epoch(b);
        struct kafka_producer *slot = NULL, *st = find(ps, id, now_ms, &slot);
        ps->clock++;
        if (!st || epoch > st->epoch) {
                st = st ? st : slot;
                reset(st, id, epoch, batch_first(b));
        } else if (epoch < st->epoch) {
                return; /* fenced batches are history, not state */
        }
        st->used = ps->clock;
        kafka_producer_note(st, b, base, now_ms);
}

uint32_t kafka_producers_live(const struct kafka_producers *ps, uint64_t now_ms)
{
        uint32_t n = 0;
        for (int i = 0; i < KAFKA_PRODUCERS_PER_PART; i++)
                if (ps->p[i].id >= 0 && !expired(ps, &ps->p[i], now_ms))
                        n++;
        return n;
}
