/* Cross-thread behaviour: ordered delivery through a ring under load,
 * buffers returned to their owner's pool from another thread, and the
 * sleep/wake handshake stressed for lost wake-ups (a lost one hangs the
 * consumer, caught by the timeout). Also built under ThreadSanitizer. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sl_buf.h"
#include "sl_mbox.h"

#define MSGS 200000

struct pair {
        struct sl_fabric f;
        struct sl_mbox mb[2];
        uint64_t received;
        uint64_t next_expected;
        uint64_t order_errors;
        uint64_t sleeps;
        uint64_t stuck;
};

static void on_msg(void *ctx, const struct sl_msg *m)
{
        struct pair *p = ctx;
        if (m->a.u64[0] != p->next_expected)
                p->order_errors++;
        p->next_expected = m->a.u64[0] + 1;
        p->received++;
}

/* Consumer sleeps whenever its ring is empty; every message must still
 * arrive. A lost wake-up shows as a poll() that times out with messages
 * waiting. */
static void *consumer(void *arg)
{
        struct pair *p = arg;
        struct sl_mbox *mb = &p->mb[1];
        while (p->received < MSGS) {
                if (sl_mbox_drain(mb, on_msg, p, 256))
                        continue;
                if (!sl_mbox_sleep_begin(mb))
                        continue;
                p->sleeps++;
                struct pollfd pfd = {.fd = mb->wake->eventfd, .events = POLLIN};
                int n = poll(&pfd, 1, 2000);
                if (n == 0 && sl_ring_count(mb->links[0].in))
                        p->stuck++; /* slept through a published message */
                sl_mbox_sleep_end(mb);
                if (n == 0 && p->stuck)
                        break;
        }
        return NULL;
}

static void no_lost_wakeups_and_order_kept(void **state)
{
        (void)state;
        struct pair *p = calloc(1, sizeof(*p));
        assert_int_equal(sl_fabric_init(&p->f, 2, 64), 0);
        sl_mbox_init(&p->mb[0], &p->f, 0);
        sl_mbox_init(&p->mb[1], &p->f, 1);
        pthread_t t;
        pthread_create(&t, NULL, consumer, p);
        uint64_t seq = 0;
        while (seq < MSGS) {
                /* Bursts of random length so the consumer keeps falling asleep
                 * and being woken at different points. */
                uint32_t burst = 1 + (uint32_t)(seq * 2654435761u >> 7) % 8;
                for (uint32_t i = 0; i < burst && seq < MSGS; i++) {
                        struct sl_msg m = {.type = 1};
                        m.a.u64[0] = seq;
                        if (sl_mbox_send(&p->mb[0], 1, &m) != 0)
                                break;
                        seq++;
                }
                sl_mbox_flush(&p->mb[0]);
        }
        pthread_join(t, NULL);
        assert_int_equal(p->stuck, 0);
        assert_int_equal(p->received, MSGS);
        assert_int_equal(p->order_errors, 0);
        assert_true(p->sleeps > 0); /* the handshake was really exercised */
        sl_mbox_fini(&p->mb[0]);
        sl_mbox_fini(&p->mb[1]);
        sl_fabric_fini(&p->f);
        free(p);
}

struct bufs {
        struct sl_fabric f;
        struct sl_mbox mb[2];
        struct sl_buf_pool pool; /* owned by endpoint 0 */
        _Atomic int done;
        _Atomic uint32_t
            corrupt; /* checked on the main thread: cmocka asserts are not thread-safe */
};

/* Endpoint 1 receives buffers and sends them home in chains. */
static void *remote_user(void *arg)
{
        struct bufs *b = arg;
        struct sl_buf_chain chain = {0};
        uint32_t got = 0;
        /* The chain is part of the exit test: `done` can turn true between
         * the send check below and this one, and leaving with a partial
         * chain would keep those buffers from ever going home. */
        while (!atomic_load(&b->done) || sl_ring_count(b->mb[1].links[0].in) || chain.n) {
                struct sl_msg m;
                while (sl_ring_pop_burst(b->mb[1].links[0].in, &m, 1)) {
                        struct sl_buf *buf = m.a.ptr[0];
                        if (buf->data[0] != (uint8_t)m.a.u64[1] || buf->owner != 0)
                                atomic_fetch_add(&b->corrupt, 1);
                        if (sl_buf_unref(buf))
                                sl_buf_chain_push(&chain, buf);
                        got++;
                }
                if (chain.n >= 8 || (chain.n && atomic_load(&b->done))) {
                        struct sl_msg r = {.type = 0, .u32 = chain.n};
                        r.a.ptr[0] = chain.head;
                        if (sl_mbox_send(&b->mb[1], 0, &r) == 0) {
                                memset(&chain, 0, sizeof(chain));
                                sl_mbox_flush(&b->mb[1]);
                        }
                }
        }
        return NULL;
}

static uint32_t returned;
static void give_back(void *ctx, const struct sl_msg *m)
{
        struct bufs *b = ctx;
        uint32_t n = 0;
        for (struct sl_buf *x = m->a.ptr[0], *next; x; x = next, n++) {
                next = x->next;
                sl_buf_pool_give(&b->pool, x);
        }
        assert_int_equal(n, m->u32);
        returned += n;
}

static void buffers_return_to_owner_across_threads(void **state)
{
        (void)state;
        struct bufs *b = calloc(1, sizeof(*b));
        sl_fabric_init(&b->f, 2, 256);
        sl_mbox_init(&b->mb[0], &b->f, 0);
        sl_mbox_init(&b->mb[1], &b->f, 1);
        uint32_t counts[SL_BUF_CLASSES] = {32, 0};
        uint32_t sizes[SL_BUF_CLASSES] = {1024, 0};
        assert_int_equal(sl_buf_pool_init(&b->pool, 0, counts, sizes), 0);
        pthread_t t;
        pthread_create(&t, NULL, remote_user, b);
        uint32_t sent = 0, exhausted = 0;
        while (sent < 20000) {
                struct sl_buf *buf = sl_buf_alloc(&b->pool, SL_BUF_CHUNK);
                if (!buf) {
                        exhausted++;
                        sl_mbox_drain(&b->mb[0], give_back, b, 64);
                        continue;
                }
                buf->data[0] = (uint8_t)sent;
                struct sl_msg m = {.type = 1};
                m.a.ptr[0] = buf;
                m.a.u64[1] = (uint8_t)sent;
                while (sl_mbox_send(&b->mb[0], 1, &m) != 0) {
                        sl_mbox_flush(&b->mb[0]);
                        sl_mbox_drain(&b->mb[0], give_back, b, 64);
                }
                sl_mbox_flush(&b->mb[0]);
                sent++;
        }
        atomic_store(&b->done, 1);
        pthread_join(t, NULL);
        while (returned < sent)
                sl_mbox_drain(&b->mb[0], give_back, b, 64);
        assert_int_equal(returned, sent);
        assert_int_equal(atomic_load(&b->corrupt), 0);

        assert_int_equal(atomic_load(&b->pool.stats.in_use[SL_BUF_CHUNK]), 0);
        /* All 32 are back on the free list. */
        int free_count = 0;
        for (struct sl_buf *x = b->pool.free[SL_BUF_CHUNK]; x; x = x->next)
                free_count++;
        assert_int_equal(free_count, 32);
        assert_true(exhausted > 0); /* exhaustion was hit and handled */
        sl_buf_pool_fini(&b->pool);
        sl_mbox_fini(&b->mb[0]);
        sl_mbox_fini(&b->mb[1]);
        sl_fabric_fini(&b->f);
        free(b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(no_lost_wakeups_and_order_kept),
            cmocka_unit_test(buffers_return_to_owner_across_threads),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
