/* Credits, publishing and the sleep/wake handshake of sl_mbox.h. The
 * handshake is Dekker's: the sleeper stores `sleeping` then reads ring
 * tails; a sender stores a tail then reads `sleeping`; seq_cst fences on
 * both sides guarantee at least one of them sees the other. */
#include "sl_mbox.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

int sl_fabric_init(struct sl_fabric *f, uint16_t count, uint32_t slots)
{
        memset(f, 0, sizeof(*f));
        f->count = count;
        f->slots = slots;
        f->rings = calloc((size_t)count * count, sizeof(*f->rings));
        f->wakes = aligned_alloc(SL_CACHELINE, sizeof(*f->wakes) * count);
        if (!f->rings || !f->wakes)
                goto fail;
        for (uint16_t i = 0; i < count; i++) {
                atomic_init(&f->wakes[i].sleeping, 0);
                f->wakes[i].eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
                if (f->wakes[i].eventfd < 0)
                        goto fail;
        }
        for (uint16_t i = 0; i < count; i++)
                for (uint16_t j = 0; j < count; j++) {
                        if (i == j)
                                continue;
                        f->rings[i * count + j] = sl_ring_create(slots, sizeof(struct sl_msg));
                        if (!f->rings[i * count + j])
                                goto fail;
                }
        return 0;
fail:
        sl_fabric_fini(f);
        return -ENOMEM;
}

void sl_fabric_fini(struct sl_fabric *f)
{
        if (f->rings)
                for (size_t i = 0; i < (size_t)f->count * f->count; i++)
                        sl_ring_destroy(f->rings[i]);
        if (f->wakes)
                for (uint16_t i = 0; i < f->count; i++)
                        if (f->wakes[i].eventfd > 0)
                                close(f->wakes[i].eventfd);
        free(f->rings);
        free(f->wakes);
        memset(f, 0, sizeof(*f));
}

int sl_mbox_init(struct sl_mbox *mb, struct sl_fabric *f, uint16_t self)
{
        memset(mb, 0, sizeof(*mb));
        mb->self = self;
        mb->count = f->count;
        mb->wake = &f->wakes[self];
        mb->links = calloc(f->count, sizeof(*mb->links));
        if (!mb->links)
                return -ENOMEM;
        for (uint16_t p = 0; p < f->count; p++) {
                if (p == self)
                        continue;
                struct sl_link *l = &mb->links[p];
                l->out = f->rings[self * f->count + p];
                l->in = f->rings[p * f->count + self];
                l->peer_wake = &f->wakes[p];
                l->credits_max = f->slots / 4;
                l->credits = l->credits_max;
        }
        return 0;
}

void sl_mbox_fini(struct sl_mbox *mb)
{
        free(mb->links);
        mb->links = NULL;
}

static inline void mbox_push(struct sl_mbox *mb, struct sl_link *l, struct sl_msg *m)
{
        m->src = mb->self;
        memcpy(sl_ring_slot(l->out), m, sizeof(*m));
        sl_counter_add(&mb->stats.msgs_out, 1);
}

bool sl_mbox_can_send(struct sl_mbox *mb, uint16_t dst, uint32_t n)
{
        struct sl_link *l = &mb->links[dst];
        return sl_ring_free(l->out, l->owed_replies + n) >= l->owed_replies + n;
}

int sl_mbox_send(struct sl_mbox *mb, uint16_t dst, struct sl_msg *m)
{
        SL_DASSERT(dst < mb->count && dst != mb->self);
        struct sl_link *l = &mb->links[dst];
        if (sl_ring_free(l->out, l->owed_replies + 1) < l->owed_replies + 1) {
                sl_counter_add(&mb->stats.ring_full, 1);
                return -EAGAIN;
        }
        m->flags &= ~(SL_MSG_F_REQUEST | SL_MSG_F_REPLY);
        mbox_push(mb, l, m);
        return 0;
}

int sl_mbox_request(struct sl_mbox *mb, uint16_t dst, struct sl_msg *m)
{
        SL_DASSERT(dst < mb->count && dst != mb->self);
        struct sl_link *l = &mb->links[dst];
        if (l->credits == 0) {
                sl_counter_add(&mb->stats.credit_stall, 1);
                return -EAGAIN;
        }
        if (sl_ring_free(l->out, l->owed_replies + 1) < l->owed_replies + 1) {
                sl_counter_add(&mb->stats.ring_full, 1);
                return -EAGAIN;
        }
        l->credits--;
        m->flags = (m->flags & ~SL_MSG_F_REPLY) | SL_MSG_F_REQUEST;
        mbox_push(mb, l, m);
        return 0;
}

void sl_mbox_reply(struct sl_mbox *mb, uint16_t dst, struct sl_msg *m)
{
        SL_DASSERT(dst < mb->count && dst != mb->self);
        struct sl_link *l = &mb->links[dst];
        /* The reserve guarantees this slot; running out means a reply without
         * a request, a bug that would otherwise deadlock. */
        SL_ASSERT(l->owed_replies > 0);
        SL_ASSERT(sl_ring_free(l->out, 1) >= 1);
        l->owed_replies--;
        m->flags = (m->flags & ~SL_MSG_F_REQUEST) | SL_MSG_F_REPLY;
        mbox_push(mb, l, m);
}

void sl_wake_poke(struct sl_wake *w, _Atomic uint64_t *counter)
{
        if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) &&
            atomic_exchange_explicit(&w->sleeping, 0, memory_order_acq_rel)) {
                uint64_t one = 1;
                ssize_t n = write(w->eventfd, &one, sizeof(one));
                (void)n; /* EAGAIN means a wake-up is already pending */
                if (counter)
                        sl_counter_add(counter, 1);
        }
}

void sl_mbox_flush(struct sl_mbox *mb)
{
        bool any = false;
        for (uint16_t p = 0; p < mb->count; p++) {
                if (p == mb->self)
                        continue;
                struct sl_link *l = &mb->links[p];
                if (!sl_ring_publish(l->out))
                        continue;
                if (!any) {
                        /* Order the tail stores before reading `sleeping`. */
                        atomic_thread_fence(memory_order_seq_cst);
                        any = true;
                }
                sl_wake_poke(l->peer_wake, &mb->stats.wakeups_sent);
        }
}

uint32_t sl_mbox_drain(struct sl_mbox *mb, sl_msg_fn fn, void *ctx, uint32_t budget)
{
        uint32_t done = 0;
        for (uint16_t p = 0; p < mb->count && done < budget; p++) {
                if (p == mb->self)
                        continue;
                struct sl_link *l = &mb->links[p];
                uint32_t n = sl_ring_count(l->in);
                if (n > budget - done)
                        n = budget - done;
                for (uint32_t i = 0; i < n; i++) {
                        struct sl_msg m;
                        memcpy(&m, sl_ring_peek(l->in, i), sizeof(m));
                        if (m.flags & SL_MSG_F_REQUEST)
                                l->owed_replies++;
                        if (m.flags & SL_MSG_F_REPLY) {
                                SL_ASSERT(l->credits < l->credits_max);
                                l->credits++;
                        }
                        fn(ctx, &m);
                }
                if (n)
                        sl_ring_consume(l->in, n);
                done += n;
        }
        if (done)
                sl_counter_add(&mb->stats.msgs_in, done);
        return done;
}

bool sl_mbox_sleep_begin(struct sl_mbox *mb)
{
        atomic_store_explicit(&mb->wake->sleeping, 1, memory_order_seq_cst);
        atomic_thread_fence(memory_order_seq_cst);
        for (uint16_t p = 0; p < mb->count; p++) {
                if (p == mb->self)
                        continue;
                if (!sl_ring_empty_acquire(mb->links[p].in)) {
                        atomic_store_explicit(&mb->wake->sleeping, 0, memory_order_relaxed);
                        return false;
                }
        }
        return true;
}

void sl_mbox_sleep_end(struct sl_mbox *mb)
{
        atomic_store_explicit(&mb->wake->sleeping, 0, memory_order_relaxed);
        uint64_t v;
        ssize_t n = read(mb->wake->eventfd, &v, sizeof(v));
        (void)n; /* EAGAIN: no pending wake-up */
}
