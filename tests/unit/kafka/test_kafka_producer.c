/* The idempotent producer state machine of one partition: duplicates get
 * their original offset, gaps and fenced epochs get Kafka's errors, state
 * rebuilt from the log tail answers a retry after a restart, and memory is
 * bounded by expiry and the per-partition cap. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kafka_producer.h"

enum { OUT_OF_ORDER = 45, INVALID_EPOCH = 47 };

static void put32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* A v2 batch header with `records` records from sequence `first`. */
static const uint8_t *hdr(int64_t pid, int16_t epoch, int32_t first, int32_t records)
{
        static uint8_t b[61];
        memset(b, 0, sizeof(b));
        put32(b + 23, (uint32_t)(records - 1));
        put32(b + 43, (uint32_t)((uint64_t)pid >> 32));
        put32(b + 47, (uint32_t)pid);
        b[51] = (uint8_t)((uint16_t)epoch >> 8);
        b[52] = (uint8_t)epoch;
        put32(b + 53, (uint32_t)first);
        return b;
}

/* Check and, when accepted, note at `base`: what the append path does. */
static int produce(struct kafka_producers *ps, const uint8_t *b, int64_t base, uint64_t now,
                   int64_t *dup_base)
{
        struct kafka_producer *st = NULL;
        int rc = kafka_producer_check(ps, b, now, &st, dup_base);
        if (rc == 0 && st)
                kafka_producer_note(st, b, base, now);
        return rc;
}

static void test_duplicate_answers_original_offset(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        int64_t dup = -1;
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 10), 100, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(7, 0, 10, 5), 110, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 10), 999, 1, &dup), 1);
        assert_int_equal(dup, 100);
        assert_int_equal(produce(&ps, hdr(7, 0, 10, 5), 999, 1, &dup), 1);
        assert_int_equal(dup, 110);
}

static void test_gap_and_old_sequence_are_out_of_order(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        int64_t dup;
        for (int i = 0; i < 7; i++)
                assert_int_equal(produce(&ps, hdr(7, 0, i, 1), i, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(7, 0, 9, 1), 9, 1, &dup), OUT_OF_ORDER);
        /* sequence 0 fell out of the five cached batches */
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 1), 0, 1, &dup), OUT_OF_ORDER);
        assert_int_equal(produce(&ps, hdr(7, 0, 2, 1), 0, 1, &dup), 1);
        assert_int_equal(dup, 2);
        assert_int_equal(produce(&ps, hdr(7, 0, 7, 1), 7, 1, &dup), 0);
}

static void test_epochs(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        int64_t dup;
        assert_int_equal(produce(&ps, hdr(7, 3, 0, 2), 0, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(7, 2, 2, 1), 2, 1, &dup), INVALID_EPOCH);
        /* a bumped epoch (KIP-360) must start over at sequence 0 */
        assert_int_equal(produce(&ps, hdr(7, 4, 5, 1), 2, 1, &dup), OUT_OF_ORDER);
        assert_int_equal(produce(&ps, hdr(7, 4, 0, 1), 2, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(7, 3, 2, 1), 3, 1, &dup), INVALID_EPOCH);
}

static void test_unknown_producer_adopted_at_any_sequence(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        int64_t dup;
        assert_int_equal(produce(&ps, hdr(9, 1, 42, 3), 0, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(9, 1, 45, 1), 3, 1, &dup), 0);
        /* not idempotent: never checked */
        struct kafka_producer *st = (void *)1;
        assert_int_equal(kafka_producer_check(&ps, hdr(-1, -1, -1, 1), 1, &st, &dup), 0);
        assert_null(st);
}

static void test_sequence_wraps_at_int32_max(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        int64_t dup;
        assert_int_equal(produce(&ps, hdr(7, 0, INT32_MAX - 1, 2), 0, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 1), 2, 1, &dup), 0);
}

static void test_replay_makes_retry_after_restart_a_duplicate(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        /* the log tail: producer 7 wrote seqs 0..9 at 0 and 10..14 at 10;
         * an old epoch-0 batch of producer 8 before its epoch-1 batches */
        kafka_producer_replay(&ps, hdr(8, 0, 0, 1), 0, 1);
        kafka_producer_replay(&ps, hdr(7, 0, 0, 10), 1, 1);
        kafka_producer_replay(&ps, hdr(-1, -1, -1, 4), 11, 1);
        kafka_producer_replay(&ps, hdr(7, 0, 10, 5), 15, 1);
        kafka_producer_replay(&ps, hdr(8, 1, 0, 1), 20, 1);
        int64_t dup = -1;
        assert_int_equal(produce(&ps, hdr(7, 0, 10, 5), 99, 2, &dup), 1);
        assert_int_equal(dup, 15);
        assert_int_equal(produce(&ps, hdr(7, 0, 16, 1), 99, 2, &dup), OUT_OF_ORDER);
        assert_int_equal(produce(&ps, hdr(7, 0, 15, 1), 21, 2, &dup), 0);
        assert_int_equal(produce(&ps, hdr(8, 0, 1, 1), 22, 2, &dup), INVALID_EPOCH);
        assert_int_equal(produce(&ps, hdr(8, 1, 0, 1), 22, 2, &dup), 1);
        assert_int_equal(dup, 20);
}

static void test_expiry_forgets_idle_producers(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 1000);
        int64_t dup;
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 1), 0, 100, &dup), 0);
        assert_int_equal(kafka_producers_live(&ps, 1100), 1);
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 1), 0, 1100, &dup), 1);
        assert_int_equal(kafka_producers_live(&ps, 2101), 0);
        /* forgotten: a retry is adopted as new, as Kafka after expiry */
        assert_int_equal(produce(&ps, hdr(7, 0, 0, 1), 5, 2101, &dup), 0);
}

static void test_cap_evicts_least_recently_used(void **state)
{
        (void)state;
        struct kafka_producers ps;
        kafka_producers_init(&ps, 0);
        int64_t dup;
        for (int64_t id = 0; id < KAFKA_PRODUCERS_PER_PART; id++)
                assert_int_equal(produce(&ps, hdr(id, 0, 0, 1), id, 1, &dup), 0);
        /* producer 0 is used again, so 1 is the least recently used */
        assert_int_equal(produce(&ps, hdr(0, 0, 1, 1), 100, 1, &dup), 0);
        assert_int_equal(produce(&ps, hdr(1000, 0, 0, 1), 101, 1, &dup), 0);
        assert_int_equal(kafka_producers_live(&ps, 1), KAFKA_PRODUCERS_PER_PART);
        assert_int_equal(produce(&ps, hdr(0, 0, 1, 1), 0, 1, &dup), 1);
        assert_int_equal(dup, 100);
        /* 1 was evicted: its retry is adopted, not a duplicate */
        assert_int_equal(produce(&ps, hdr(1, 0, 0, 1), 102, 1, &dup), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_duplicate_answers_original_offset),
            cmocka_unit_test(test_gap_and_old_sequence_are_out_of_order),
            cmocka_unit_test(test_epochs),
            cmocka_unit_test(test_unknown_producer_adopted_at_any_sequence),
            cmocka_unit_test(test_sequence_wraps_at_int32_max),
            cmocka_unit_test(test_replay_makes_retry_after_restart_a_duplicate),
            cmocka_unit_test(test_expiry_forgets_idle_producers),
            cmocka_unit_test(test_cap_evicts_least_recently_used),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
