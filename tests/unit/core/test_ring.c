/* SPSC ring and mailbox credits: full/empty/wrap, publish visibility,
 * credit exhaustion and return, the reply reserve. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sl_mbox.h"
#include "sl_ring.h"

static void ring_full_empty_and_wrap(void **state)
{
        (void)state;
        struct sl_ring *r = sl_ring_create(8, sizeof(uint64_t));
        assert_non_null(r);
        assert_int_equal(sl_ring_count(r), 0);
        uint64_t v = 0;
        for (int round = 0; round < 5; round++) { /* 5 x 8 pushes: indexes wrap */
                for (uint64_t i = 0; i < 8; i++) {
                        uint64_t x = round * 100 + i;
                        assert_int_equal(sl_ring_push(r, &x), 0);
                }
                assert_int_equal(sl_ring_push(r, &v), -EAGAIN); /* full */
                assert_int_equal(sl_ring_count(r), 0);          /* not yet published */
                assert_true(sl_ring_publish(r));
                assert_false(sl_ring_publish(r)); /* nothing new */
                assert_int_equal(sl_ring_count(r), 8);
                uint64_t out[8];
                assert_int_equal(sl_ring_pop_burst(r, out, 3), 3);
                assert_int_equal(out[0], round * 100 + 0);
                assert_int_equal(out[2], round * 100 + 2);
                assert_int_equal(sl_ring_free(r, 1), 3);
                assert_int_equal(sl_ring_pop_burst(r, out, 8), 5);
                assert_int_equal(out[4], round * 100 + 7);
                assert_int_equal(sl_ring_pop_burst(r, out, 8), 0); /* empty */
        }
        sl_ring_destroy(r);
}

static void ring_rejects_bad_sizes(void **state)
{
        (void)state;
        assert_null(sl_ring_create(6, 8)); /* not a power of two */
        assert_null(sl_ring_create(1, 8));
        assert_null(sl_ring_create(8, 0));
}

struct seen {
        int n;
        struct sl_msg last;
};

static void record(void *ctx, const struct sl_msg *m)
{
        struct seen *s = ctx;
        s->n++;
        s->last = *m;
}

static void credits_exhaust_and_return(void **state)
{
        (void)state;
        struct sl_fabric f;
        assert_int_equal(sl_fabric_init(&f, 2, 16), 0);
        struct sl_mbox a, b;
        assert_int_equal(sl_mbox_init(&a, &f, 0), 0);
        assert_int_equal(sl_mbox_init(&b, &f, 1), 0);
        uint32_t credits = a.links[1].credits;
        assert_int_equal(credits, 4); /* slots / 4 */
        struct sl_msg m = {.type = 7};
        for (uint32_t i = 0; i < credits; i++) {
                m.cookie = i;
                assert_int_equal(sl_mbox_request(&a, 1, &m), 0);
        }
        assert_int_equal(sl_mbox_request(&a, 1, &m), -EAGAIN); /* out of credit */
        assert_int_equal(atomic_load(&a.stats.credit_stall), 1);
        sl_mbox_flush(&a);
        struct seen s = {0};
        assert_int_equal(sl_mbox_drain(&b, record, &s, 100), credits);
        assert_int_equal(b.links[0].owed_replies, credits);
        assert_true(s.last.flags & SL_MSG_F_REQUEST);
        assert_int_equal(s.last.src, 0);
        struct sl_msg r = {.type = 7, .cookie = 3};
        sl_mbox_reply(&b, 0, &r);
        sl_mbox_flush(&b);
        struct seen s2 = {0};
        assert_int_equal(sl_mbox_drain(&a, record, &s2, 100), 1);
        assert_true(s2.last.flags & SL_MSG_F_REPLY);
        assert_int_equal(s2.last.cookie, 3);
        assert_int_equal(a.links[1].credits, 1); /* one came back */
        assert_int_equal(sl_mbox_request(&a, 1, &m), 0);
        sl_mbox_fini(&a);
        sl_mbox_fini(&b);
        sl_fabric_fini(&f);
}

static void reply_reserve_holds_under_one_way_flood(void **state)
{
        (void)state;
        struct sl_fabric f;
        assert_int_equal(sl_fabric_init(&f, 2, 16), 0);
        struct sl_mbox a, b;
        sl_mbox_init(&a, &f, 0);
        sl_mbox_init(&b, &f, 1);
        /* a sends 4 requests to b; b owes 4 replies. */
        struct sl_msg m = {.type = 1};
        for (int i = 0; i < 4; i++)
                assert_int_equal(sl_mbox_request(&a, 1, &m), 0);
        sl_mbox_flush(&a);
        struct seen s = {0};
        sl_mbox_drain(&b, record, &s, 100);
        /* b floods a with one-way messages: they stop 4 slots short. */
        int sent = 0;
        while (sl_mbox_send(&b, 0, &m) == 0)
                sent++;
        assert_int_equal(sent, 16 - 4);
        assert_false(sl_mbox_can_send(&b, 0, 1));
        assert_true(atomic_load(&b.stats.ring_full) >= 1);
        /* ... so every reply still fits. */
        for (int i = 0; i < 4; i++)
                sl_mbox_reply(&b, 0, &m);
        sl_mbox_flush(&b);
        struct seen s2 = {0};
        assert_int_equal(sl_mbox_drain(&a, record, &s2, 100), 16);
        assert_int_equal(a.links[1].credits, a.links[1].credits_max);
        sl_mbox_fini(&a);
        sl_mbox_fini(&b);
        sl_fabric_fini(&f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(ring_full_empty_and_wrap),
            cmocka_unit_test(ring_rejects_bad_sizes),
            cmocka_unit_test(credits_exhaust_and_return),
            cmocka_unit_test(reply_reserve_holds_under_one_way_flood),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
