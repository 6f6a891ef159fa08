/* The recent-data cache: appended batches are found by offset with the
 * log's stamps, blocks hold whole batches with continuous offsets, the
 * budget is never exceeded (least recently used block reused), retention
 * and forget drop what the log no longer has, and memory comes only on use. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kafka_cache.h"
#include "log.h"

static void put32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* A v2 batch of len bytes with `records` records, client base offset 0 and
 * a recognisable fill byte. */
static uint8_t *batch(uint32_t len, int32_t records, uint8_t fill)
{
        uint8_t *b = malloc(len);
        memset(b, fill, len);
        memset(b, 0, 61);
        put32(b + 8, len - 12);
        put32(b + 12, 0xffffffffu); /* partitionLeaderEpoch as a client sends it */
        b[16] = 2;
        put32(b + 23, (uint32_t)(records - 1));
        return b;
}

static int64_t be64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return (int64_t)v;
}

static void test_off_without_budget(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part cp;
        assert_int_equal(kafka_cache_init(&c, KAFKA_CACHE_BLOCK_BYTES - 1, NULL, NULL), 0);
        kafka_cache_part_init(&cp);
        uint8_t *b = batch(1000, 10, 1);
        kafka_cache_append(&c, &cp, 3, b, 1000, 0, 0);
        assert_null(kafka_cache_find(&c, &cp, 3, 0, true));
        assert_int_equal(c.bytes, 0);
        free(b);
        kafka_cache_fini(&c);
}

static void test_append_then_find_stamped(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part cp;
        assert_int_equal(kafka_cache_init(&c, 4 * KAFKA_CACHE_BLOCK_BYTES, NULL, NULL), 0);
        kafka_cache_part_init(&cp);
        assert_int_equal(c.bytes, 0); /* nothing allocated at start */
        uint8_t *b = batch(1000, 10, 7);
        kafka_cache_append(&c, &cp, 3, b, 1000, 100, 0);
        kafka_cache_append(&c, &cp, 3, b, 1000, 110, 0);
        assert_int_equal(c.bytes, KAFKA_CACHE_BLOCK_BYTES);
        struct kafka_cblock *hit = kafka_cache_find(&c, &cp, 3, 115, true);
        assert_non_null(hit);
        assert_int_equal(hit->cv.first, 100);
        assert_int_equal(hit->cv.last, 119);
        assert_int_equal(hit->cv.len, 2000);
        assert_int_equal(be64(hit->cv.data), 100);
        assert_int_equal(be64(hit->cv.data + 1000), 110);
        assert_int_equal(hit->cv.data[12], 0); /* leader epoch 0, as storage stamps */
        assert_memory_equal(hit->cv.data + 61, b + 61, 1000 - 61);
        assert_null(kafka_cache_find(&c, &cp, 3, 120, true));
        assert_null(kafka_cache_find(&c, &cp, 3, 99, true));
        assert_null(kafka_cache_find(&c, &cp, 4, 115, true)); /* another partition */
        assert_int_equal(c.hits, 1);
        free(b);
        kafka_cache_fini(&c);
}

static void test_blocks_hold_whole_batches_and_continuous_offsets(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part cp;
        assert_int_equal(kafka_cache_init(&c, 8 * KAFKA_CACHE_BLOCK_BYTES, NULL, NULL), 0);
        kafka_cache_part_init(&cp);
        uint32_t len = 600u << 10; /* three fit in a block, not four */
        uint8_t *b = batch(len, 1, 9);
        for (int64_t off = 0; off < 4; off++)
                kafka_cache_append(&c, &cp, 1, b, len, off, 0);
        struct kafka_cblock *first = kafka_cache_find(&c, &cp, 1, 0, true);
        struct kafka_cblock *second = kafka_cache_find(&c, &cp, 1, 3, true);
        assert_non_null(first);
        assert_non_null(second);
        assert_ptr_not_equal(first, second);
        assert_int_equal(first->cv.last, 2);
        assert_int_equal(first->cv.len, 3 * len);
        assert_int_equal(second->cv.first, 3);
        /* a gap in offsets starts a new block */
        kafka_cache_append(&c, &cp, 1, b, 1000, 10, 0);
        struct kafka_cblock *third = kafka_cache_find(&c, &cp, 1, 10, true);
        assert_non_null(third);
        assert_ptr_not_equal(third, second);
        assert_int_equal(second->cv.last, 3);
        assert_null(kafka_cache_find(&c, &cp, 1, 5, true));
        /* a batch larger than a block is not cached */
        uint8_t *big = batch(KAFKA_CACHE_BLOCK_BYTES + 1, 1, 1);
        kafka_cache_append(&c, &cp, 1, big, KAFKA_CACHE_BLOCK_BYTES + 1, 11, 0);
        assert_null(kafka_cache_find(&c, &cp, 1, 11, true));
        free(big);
        free(b);
        kafka_cache_fini(&c);
}

static void test_budget_evicts_least_recently_used(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part a, z;
        assert_int_equal(kafka_cache_init(&c, 2 * KAFKA_CACHE_BLOCK_BYTES, NULL, NULL), 0);
        kafka_cache_part_init(&a);
        kafka_cache_part_init(&z);
        uint32_t len = KAFKA_CACHE_BLOCK_BYTES; /* one batch per block */
        uint8_t *b = batch(len, 1, 5);
        kafka_cache_append(&c, &a, 1, b, len, 0, 0);           /* block A0 */
        kafka_cache_append(&c, &z, 2, b, len, 0, 0);           /* block Z0 */
        assert_non_null(kafka_cache_find(&c, &a, 1, 0, true)); /* A0 now more recent than Z0 */
        kafka_cache_append(&c, &a, 1, b, len, 1, 0);           /* over budget: Z0 goes */
        assert_int_equal(c.bytes, 2 * KAFKA_CACHE_BLOCK_BYTES);
        assert_int_equal(c.evictions, 1);
        assert_null(kafka_cache_find(&c, &z, 2, 0, true));
        assert_non_null(kafka_cache_find(&c, &a, 1, 0, true));
        assert_non_null(kafka_cache_find(&c, &a, 1, 1, true));
        free(b);
        kafka_cache_fini(&c);
}

/* A partition's tail block taken by another partition: its next append
 * must not land in the other's block (the generation tells). */
static void test_stolen_tail_block_is_not_written(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part a, z;
        assert_int_equal(kafka_cache_init(&c, KAFKA_CACHE_BLOCK_BYTES, NULL, NULL), 0);
        kafka_cache_part_init(&a);
        kafka_cache_part_init(&z);
        uint8_t *b = batch(1000, 10, 5);
        kafka_cache_append(&c, &a, 1, b, 1000, 0, 0); /* A's tail: the only block */
        /* Z evicts it, at offsets A continues from (only the generation
         * tells A the block is no longer its tail) */
        kafka_cache_append(&c, &z, 2, b, 1000, 0, 0);
        assert_int_equal(c.evictions, 1);
        assert_null(kafka_cache_find(&c, &a, 1, 0, true));
        kafka_cache_append(&c, &a, 1, b, 1000, 10, 0); /* A evicts Z, starts afresh */
        assert_null(kafka_cache_find(&c, &z, 2, 0, true));
        struct kafka_cblock *hit = kafka_cache_find(&c, &a, 1, 10, true);
        assert_non_null(hit);
        assert_int_equal(hit->cv.first, 10);
        assert_int_equal(hit->cv.len, 1000);
        assert_int_equal(hit->pid, 1);
        free(b);
        kafka_cache_fini(&c);
}

static int64_t dead_below;
static bool dead_fn(void *ctx, uint32_t pid, int64_t last)
{
        (void)ctx;
        (void)pid;
        return last < dead_below;
}

static void test_retention_reuses_dead_blocks_first(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part a;
        assert_int_equal(kafka_cache_init(&c, 3 * KAFKA_CACHE_BLOCK_BYTES, dead_fn, NULL), 0);
        kafka_cache_part_init(&a);
        uint32_t len = KAFKA_CACHE_BLOCK_BYTES;
        uint8_t *b = batch(len, 1, 5);
        dead_below = -1;
        for (int64_t off = 0; off < 3; off++)
                kafka_cache_append(&c, &a, 1, b, len, off, 0);
        assert_non_null(kafka_cache_find(&c, &a, 1, 0, true)); /* 0 most recent, 1 least */
        dead_below = 1;                                        /* retention removed offset 0 */
        kafka_cache_append(&c, &a, 1, b, len, 3, 0);
        assert_int_equal(c.evictions, 0); /* a dead block, not an eviction */
        assert_null(kafka_cache_find(&c, &a, 1, 0, true));
        assert_non_null(kafka_cache_find(&c, &a, 1, 1, true));
        free(b);
        kafka_cache_fini(&c);
}

static void test_forget_and_release(void **state)
{
        (void)state;
        struct kafka_cache c;
        struct kafka_cache_part a, z;
        assert_int_equal(kafka_cache_init(&c, 4 * KAFKA_CACHE_BLOCK_BYTES, NULL, NULL), 0);
        kafka_cache_part_init(&a);
        kafka_cache_part_init(&z);
        uint8_t *b = batch(1000, 1, 5);
        kafka_cache_append(&c, &a, 1, b, 1000, 0, 0);
        kafka_cache_append(&c, &z, 2, b, 1000, 0, 0);
        kafka_cache_forget(&c, &a, 1, false); /* kept for reuse */
        assert_null(kafka_cache_find(&c, &a, 1, 0, true));
        assert_int_equal(c.bytes, 2 * KAFKA_CACHE_BLOCK_BYTES);
        /* appends go on in a fresh block, never in the forgotten one's range */
        kafka_cache_append(&c, &a, 1, b, 1000, 1, 0);
        struct kafka_cblock *hit = kafka_cache_find(&c, &a, 1, 1, true);
        assert_non_null(hit);
        assert_int_equal(hit->cv.first, 1);
        kafka_cache_forget(&c, &z, 2, true); /* topic deleted: memory back */
        assert_int_equal(c.bytes, KAFKA_CACHE_BLOCK_BYTES);
        assert_null(kafka_cache_find(&c, &z, 2, 0, true));
        free(b);
        kafka_cache_fini(&c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_off_without_budget),
            cmocka_unit_test(test_append_then_find_stamped),
            cmocka_unit_test(test_blocks_hold_whole_batches_and_continuous_offsets),
            cmocka_unit_test(test_budget_evicts_least_recently_used),
            cmocka_unit_test(test_stolen_tail_block_is_not_written),
            cmocka_unit_test(test_retention_reuses_dead_blocks_first),
            cmocka_unit_test(test_forget_and_release),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
