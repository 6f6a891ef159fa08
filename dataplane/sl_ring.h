/* Bounded single-producer single-consumer ring of fixed-size slots: the only
 * way two threads talk. Producer and consumer indexes live on their own cache
 * lines and each side caches the other's index, so a steady stream costs one
 * release store per published batch, not per slot. */
#ifndef SL_RING_H
#define SL_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "sl_common.h"

struct sl_ring {
        /* Written by the producer only. */
        struct {
                _Atomic uint32_t tail; /* published: consumer may read up to here */
                uint32_t tail_local;   /* pushed but not yet published */
                uint32_t head_cache;   /* last head seen */
        } prod sl_cacheline_aligned;
        /* Written by the consumer only. */
        struct {
                _Atomic uint32_t head;
                uint32_t tail_cache;
        } cons sl_cacheline_aligned;
        uint32_t slots; /* power of two */
        uint32_t slot_bytes;
        uint8_t *data;
} sl_cacheline_aligned;

/* Allocates a ring of slots (power of two) of slot_bytes each. NULL on
 * failure. Done at startup only. */
struct sl_ring *sl_ring_create(uint32_t slots, uint32_t slot_bytes);
void sl_ring_destroy(struct sl_ring *r);

/* Producer: slots free for pushing, counting pushed-but-unpublished ones.
 * Refreshes the cached head only when the cache says "full". */
static inline uint32_t sl_ring_free(struct sl_ring *r, uint32_t want)
{
        uint32_t used = r->prod.tail_local - r->prod.head_cache;
        if (r->slots - used < want) {
                r->prod.head_cache = atomic_load_explicit(&r->cons.head, memory_order_acquire);
                used = r->prod.tail_local - r->prod.head_cache;
        }
        return r->slots - used;
}

/* Producer: returns the next slot to fill; the caller has checked
 * sl_ring_free() >= 1. Invisible to the consumer until sl_ring_publish(). */
static inline void *sl_ring_slot(struct sl_ring *r)
{
        SL_DASSERT(r->prod.tail_local - r->prod.head_cache < r->slots);
        void *slot = r->data + (size_t)(r->prod.tail_local & (r->slots - 1)) * r->slot_bytes;
        r->prod.tail_local++;
        return slot;
}

static inline int sl_ring_push(struct sl_ring *r, const void *item)
{
        if (sl_ring_free(r, 1) < 1)
                return -EAGAIN;
        memcpy(sl_ring_slot(r), item, r->slot_bytes);
        return 0;
}

/* Producer: makes everything pushed so far visible. Returns true when it
 * published something (the caller then checks whether to wake the consumer). */
static inline bool sl_ring_publish(struct sl_ring *r)
{
        uint32_t cur = atomic_load_explicit(&r->prod.tail, memory_order_relaxed);
        if (cur == r->prod.tail_local)
                return false;
        atomic_store_explicit(&r->prod.tail, r->prod.tail_local, memory_order_release);
        return true;
}

/* Consumer: number of published slots waiting. */
static inline uint32_t sl_ring_count(struct sl_ring *r)
{
        uint32_t head = atomic_load_explicit(&r->cons.head, memory_order_relaxed);
        if (r->cons.tail_cache == head)
                r->cons.tail_cache = atomic_load_explicit(&r->prod.tail, memory_order_acquire);
        return r->cons.tail_cache - head;
}

/* Consumer: pointer to the i-th waiting slot (i < sl_ring_count()). */
static inline const void *sl_ring_peek(struct sl_ring *r, uint32_t i)
{
        uint32_t head = atomic_load_explicit(&r->cons.head, memory_order_relaxed);
        return r->data + (size_t)((head + i) & (r->slots - 1)) * r->slot_bytes;
}

/* Consumer: releases n slots back to the producer. */
static inline void sl_ring_consume(struct sl_ring *r, uint32_t n)
{
        uint32_t head = atomic_load_explicit(&r->cons.head, memory_order_relaxed);
        atomic_store_explicit(&r->cons.head, head + n, memory_order_release);
}

/* Consumer: pops up to n items into out (n * slot_bytes). Returns the count. */
static inline uint32_t sl_ring_pop_burst(struct sl_ring *r, void *out, uint32_t n)
{
        uint32_t avail = sl_ring_count(r);
        if (n > avail)
                n = avail;
        for (uint32_t i = 0; i < n; i++)
                memcpy((uint8_t *)out + (size_t)i * r->slot_bytes, sl_ring_peek(r, i),
                       r->slot_bytes);
        if (n)
                sl_ring_consume(r, n);
        return n;
}

/* Either side, approximate: used for "is anything pending" checks before
 * sleeping (with a seq_cst fence around it, see sl_wake.h). */
static inline bool sl_ring_empty_acquire(struct sl_ring *r)
{
        return atomic_load_explicit(&r->prod.tail, memory_order_acquire) ==
               atomic_load_explicit(&r->cons.head, memory_order_relaxed);
}

#endif
