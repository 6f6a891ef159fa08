/* Recent-data cache: see kafka_cache.h and dataplane/kafka/README.md. */
#include "kafka_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "sl_common.h"

static void put_be(uint8_t *p, uint64_t v, int n)
{
        for (int i = 0; i < n; i++)
                p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

int kafka_cache_init(struct kafka_cache *c, uint64_t budget_bytes, kafka_cache_dead_fn dead,
                     void *dead_ctx)
{
        memset(c, 0, sizeof(*c));
        c->dead = dead;
        c->dead_ctx = dead_ctx;
        uint64_t n = budget_bytes / KAFKA_CACHE_BLOCK_BYTES;
        if (n == 0)
                return 0;
        if (n > UINT32_MAX / 2)
                n = UINT32_MAX / 2;
        /* Descriptors only (a few bytes per 2 MiB): block memory comes on
         * first use. */
        c->blocks = calloc(n, sizeof(*c->blocks));
        if (!c->blocks)
                return -ENOMEM;
        c->nblocks = (uint32_t)n;
        for (uint32_t i = 0; i < c->nblocks; i++)
                c->blocks[i].pid = KAFKA_CACHE_NONE;
        return 0;
}

void kafka_cache_fini(struct kafka_cache *c)
{
        for (uint32_t i = 0; i < c->nblocks; i++)
                free(c->blocks[i].mem);
        free(c->blocks);
        c->blocks = NULL;
        c->nblocks = 0;
}

void kafka_cache_part_init(struct kafka_cache_part *cp)
{
        cp->fill = KAFKA_CACHE_NONE;
        cp->fill_gen = 0;
        cp->hint = KAFKA_CACHE_NONE;
}

static void block_drop(struct kafka_cache *c, struct kafka_cblock *b, bool release)
{
        b->pid = KAFKA_CACHE_NONE;
        b->filling = false;
        b->cv.len = 0;
        b->gen++;
        if (release && b->mem) {
                free(b->mem);
                b->mem = NULL;
                b->cv.data = NULL;
                atomic_fetch_sub_explicit(&c->bytes, KAFKA_CACHE_BLOCK_BYTES, memory_order_relaxed);
        }
}

/* A block for a new tail: one holding nothing (memory first), else one
 * whose data the log no longer has, else the least recently used. */
static struct kafka_cblock *block_get(struct kafka_cache *c)
{
        struct kafka_cblock *empty = NULL, *unalloc = NULL, *lru = NULL;
        for (uint32_t i = 0; i < c->nblocks; i++) {
                struct kafka_cblock *b = &c->blocks[i];
                if (b->pid == KAFKA_CACHE_NONE) {
                        if (b->mem) {
                                empty = b;
                                break;
                        }
                        if (!unalloc)
                                unalloc = b;
                        continue;
                }
                if (c->dead && c->dead(c->dead_ctx, b->pid, b->cv.last)) {
                        block_drop(c, b, false);
                        empty = b;
                        break;
                }
                if (!lru || b->cv.used < lru->cv.used)
                        lru = b;
        }
        if (empty)
                return empty;
        if (unalloc) {
                void *m = aligned_alloc(KAFKA_CACHE_BLOCK_BYTES, KAFKA_CACHE_BLOCK_BYTES);
                if (m) {
                        /* Pages in one call instead of 512 faults on the
                         * produce path: 0.74 -> 0.61 s of sluiced CPU per
                         * 256 MiB first fill (kafka_cache_cost.sh; without
                         * the cache 0.47 s). MADV_HUGEPAGE was 0.49-1.09 s:
                         * this kernel compacts synchronously (defrag =
                         * madvise). Advice only: on failure pages fault in. */
                        (void)madvise(m, KAFKA_CACHE_BLOCK_BYTES, MADV_POPULATE_WRITE);
                        unalloc->mem = m;
                        unalloc->cv.data = m;
                        atomic_fetch_add_explicit(&c->bytes, KAFKA_CACHE_BLOCK_BYTES,
                                                  memory_order_relaxed);
                        return unalloc;
                }
        }
        if (lru) {
                block_drop(c, lru, false);
                atomic_fetch_add_explicit(&c->evictions, 1, memory_order_relaxed);
        }
        return lru;
}

void kafka_cache_append(struct kafka_cache *c, struct kafka_cache_part *cp, uint32_t pid,
                        const uint8_t *batch, uint32_t len, int64_t base, int32_t leader_epoch)
{
        if (c->nblocks == 0 || len < LOG_BATCH_HEADER_BYTES)
                return;
        struct kafka_cblock *b = NULL;
        if (cp->fill < c->nblocks && c->blocks[cp->fill].gen == cp->fill_gen)
                b = &c->blocks[cp->fill];
        /* Whole batches, continuous offsets: a batch that does not fit or
         * does not follow (nothing in between should, but the invariant is
         * what makes a block servable) closes the block. */
        if (b && (b->cv.len + len > KAFKA_CACHE_BLOCK_BYTES || base != b->cv.last + 1)) {
                b->filling = false;
                b = NULL;
        }
        cp->fill = KAFKA_CACHE_NONE;
        if (len > KAFKA_CACHE_BLOCK_BYTES)
                return;
        if (!b) {
                b = block_get(c);
                if (!b)
                        return;
                b->pid = pid;
                b->filling = true;
                b->cv.len = 0;
                b->cv.first = base;
        }
        uint8_t *d = b->mem + b->cv.len;
        /* Blocks are read when a consumer falls behind, long after they
         * left the CPU's caches: no point pulling each line in first. */
        sl_copy_stream(d, batch, len);
        put_be(d, (uint64_t)base, 8);
        put_be(d + 12, (uint32_t)leader_epoch, 4);
        b->cv.len += len;
        b->cv.last = base + log_batch_last_delta(d);
        b->cv.used = ++c->clock;
        cp->fill = (uint32_t)(b - c->blocks);
        cp->fill_gen = b->gen;
}

static bool block_holds(const struct kafka_cblock *b, uint32_t pid, int64_t offset)
{
        return b->pid == pid && b->cv.len && b->cv.first <= offset && offset <= b->cv.last;
}

struct kafka_cblock *kafka_cache_find(struct kafka_cache *c, struct kafka_cache_part *cp,
                                      uint32_t pid, int64_t offset, bool count)
{
        struct kafka_cblock *hit = NULL;
        if (cp->hint < c->nblocks && block_holds(&c->blocks[cp->hint], pid, offset))
                hit = &c->blocks[cp->hint];
        for (uint32_t i = 0; !hit && i < c->nblocks; i++)
                if (block_holds(&c->blocks[i], pid, offset))
                        hit = &c->blocks[i];
        if (!hit || !count)
                return hit;
        cp->hint = (uint32_t)(hit - c->blocks);
        hit->cv.used = ++c->clock;
        atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
        return hit;
}

void kafka_cache_forget(struct kafka_cache *c, struct kafka_cache_part *cp, uint32_t pid,
                        bool release)
{
        for (uint32_t i = 0; i < c->nblocks; i++)
                if (c->blocks[i].pid == pid)
                        block_drop(c, &c->blocks[i], release);
        if (cp)
                kafka_cache_part_init(cp);
}
