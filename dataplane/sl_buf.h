/* Per-worker pools of fixed-size, reference-counted buffers, carved out of
 * one mapping at startup. A buffer always goes back to the pool of the
 * worker that owns it: a reference dropped elsewhere is queued on the
 * dropping thread and travels home over the ring (SL_MSG_BUF_RETURN) in
 * batches, so pools need no locks. Running out is a counted, handled event. */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stdatomic.h>

#include "sl_common.h"

enum sl_buf_class {
        SL_BUF_CHUNK, /* I/O chunk: tx queues, batches to other workers */
        SL_BUF_LARGE, /* one whole maximum-size frame or message */
        SL_BUF_CLASSES,
};

/* A tx chunk that carries no bytes of its own: data[] holds a struct
 * sl_buf_ref naming bytes inside another buffer, which it holds a reference
 * on until they are sent (sl_conn_sendv_ref). */
#define SL_BUF_F_REF 0x01

struct sl_buf {
        struct sl_buf *next; /* free list, tx chains, return chains */
        uint16_t owner;      /* worker whose pool it belongs to */
        uint8_t cls;
        uint8_t flags; /* SL_BUF_F_* */
        _Atomic uint32_t refs;
        uint32_t cap; /* bytes in data[] */
        uint32_t len; /* bytes filled */
        uint32_t off; /* bytes already consumed (tx progress) */
        uint32_t pad;
        uint8_t data[] __attribute__((aligned(16)));
};

struct sl_buf_pool_stats {
        _Atomic uint64_t exhausted[SL_BUF_CLASSES]; /* allocation refused */
        _Atomic uint64_t in_use[SL_BUF_CLASSES];
        _Atomic uint64_t returned_remote; /* buffers that came home over a ring */
};

struct sl_buf_pool {
        uint16_t owner;
        struct sl_buf *free[SL_BUF_CLASSES];
        /* Buffers are carved from the mapping on first use, so memory is
         * touched in proportion to peak use, not to the configured maximum. */
        uint8_t *base[SL_BUF_CLASSES];
        size_t stride[SL_BUF_CLASSES];
        uint32_t carved[SL_BUF_CLASSES];
        uint32_t count[SL_BUF_CLASSES];
        uint32_t bytes[SL_BUF_CLASSES];
        void *mem;
        size_t mem_bytes;
        struct sl_buf_pool_stats stats;
};

/* Allocates counts[c] buffers of bytes[c] data bytes for each class. */
int sl_buf_pool_init(struct sl_buf_pool *p, uint16_t owner, const uint32_t counts[SL_BUF_CLASSES],
                     const uint32_t bytes[SL_BUF_CLASSES]);
void sl_buf_pool_fini(struct sl_buf_pool *p);

/* Owner only. Returns a buffer with refs = 1, len = off = 0, or NULL
 * (counted) when the class is exhausted. */
static inline bool sl_buf_available(const struct sl_buf_pool *p, enum sl_buf_class c)
{
        return p->free[c] || p->carved[c] < p->count[c];
}

static inline struct sl_buf *sl_buf_alloc(struct sl_buf_pool *p, enum sl_buf_class c)
{
        struct sl_buf *b = p->free[c];
        if (sl_likely(b)) {
                p->free[c] = b->next;
        } else if (p->carved[c] < p->count[c]) {
                b = (struct sl_buf *)(p->base[c] + (size_t)p->carved[c]++ * p->stride[c]);
                b->owner = p->owner;
                b->cls = (uint8_t)c;
                b->cap = p->bytes[c];
        } else {
                sl_counter_add(&p->stats.exhausted[c], 1);
                return NULL;
        }
        b->next = NULL;

        b->len = b->off = 0;
        atomic_store_explicit(&b->refs, 1, memory_order_relaxed);
        sl_counter_add(&p->stats.in_use[c], 1);
        return b;
}

/* Owner only: puts a buffer whose last reference is gone back. */
static inline void sl_buf_pool_give(struct sl_buf_pool *p, struct sl_buf *b)
{
        SL_DASSERT(b->owner == p->owner);
        b->next = p->free[b->cls];
        p->free[b->cls] = b;
        sl_counter_add(&p->stats.in_use[b->cls], -1);
}

static inline void sl_buf_ref(struct sl_buf *b)
{
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

/* Drops one reference; true when it was the last (the caller then returns
 * the buffer to its owner: sl_worker_buf_put does this). */
static inline bool sl_buf_unref(struct sl_buf *b)
{
        return atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1;
}

struct sl_buf_ref {
        struct sl_buf *target;
        const uint8_t *ptr; /* len bytes (the chunk's len) inside target */
};

/* Queue of buffers waiting to go home to one owner: an intrusive list, so
 * it is bounded by the number of buffers in existence and needs no memory. */
struct sl_buf_chain {
        struct sl_buf *head, *tail;
        uint32_t n;
};

static inline void sl_buf_chain_push(struct sl_buf_chain *c, struct sl_buf *b)
{
        b->next = NULL;
        if (c->tail)
                c->tail->next = b;
        else
                c->head = b;
        c->tail = b;
        c->n++;
}

#endif
