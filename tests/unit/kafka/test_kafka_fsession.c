/* KIP-227 fetch session state: partitions added and updated in place,
 * forgotten ones leave without disturbing the order of the rest, the
 * bounds hold, and "news" is what an incremental answer must carry. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "kafka_fsession.h"

static const uint8_t A[16] = {1}, B[16] = {2};

static void test_upsert_and_forget(void **state)
{
        (void)state;
        struct kafka_fsession *fs = kafka_fsession_new(42);
        assert_non_null(fs);
        assert_int_equal(fs->epoch, 1);
        assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, 0, 10, 100), 0);
        assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, 1, 20, 100), 1);
        assert_int_equal(kafka_fsession_upsert(fs, B, "b", 1, 0, 30, 100), 2);
        /* an update keeps its place */
        assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, 0, 11, 200), 0);
        assert_int_equal(fs->parts[0].offset, 11);
        assert_int_equal(fs->parts[0].max_bytes, 200);
        assert_int_equal(fs->ntopics, 2);
        kafka_fsession_forget(fs, A, 0);
        kafka_fsession_forget(fs, A, 7); /* not there: nothing happens */
        assert_int_equal(fs->nparts, 2);
        assert_int_equal(fs->parts[0].partition, 1);
        assert_int_equal(fs->parts[1].topic, 1);
        assert_int_equal(fs->parts[1].offset, 30);
        kafka_fsession_free(fs);
}

static void test_bounds(void **state)
{
        (void)state;
        struct kafka_fsession *fs = kafka_fsession_new(1);
        for (int32_t p = 0; p < KAFKA_FSESSION_PARTS_MAX; p++)
                assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, p, 0, 1), p);
        assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, KAFKA_FSESSION_PARTS_MAX, 0, 1),
                         -ENOSPC);
        /* updating one already in is still fine at the bound */
        assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, 5, 9, 1), 5);
        kafka_fsession_free(fs);
        fs = kafka_fsession_new(2);
        uint8_t id[16] = {0};
        for (uint32_t t = 0; t < KAFKA_FSESSION_TOPICS_MAX; t++) {
                memcpy(id, &t, sizeof(t));
                id[15] = 1;
                assert_true(kafka_fsession_upsert(fs, id, "t", 1, 0, 0, 1) >= 0);
        }
        assert_int_equal(kafka_fsession_upsert(fs, A, "a", 1, 0, 0, 1), -ENOSPC);
        kafka_fsession_free(fs);
}

/* The indexes: many topics and partitions (hash collisions included),
 * every upsert of one already in finds its entry, a forget keeps the
 * others' order and they stay found at their new places. */
static void test_index_after_forget(void **state)
{
        (void)state;
        struct kafka_fsession *fs = kafka_fsession_new(4);
        uint8_t id[16] = {0};
        const uint32_t topics = 200, per = 5;
        for (uint32_t t = 0; t < topics; t++)
                for (int32_t p = 0; p < (int32_t)per; p++) {
                        memcpy(id, &t, sizeof(t));
                        id[15] = 7;
                        assert_int_equal(kafka_fsession_upsert(fs, id, "t", 1, p, t, 1),
                                         (int)(t * per + (uint32_t)p));
                }
        /* drop topic 3's partition 2: everything after moves down by one */
        uint32_t t3 = 3;
        memcpy(id, &t3, sizeof(t3));
        kafka_fsession_forget(fs, id, 2);
        kafka_fsession_forget(fs, id, 2); /* absent: nothing happens */
        assert_int_equal(fs->nparts, topics * per - 1);
        uint32_t gone = 3 * per + 2;
        for (uint32_t t = 0; t < topics; t++)
                for (int32_t p = 0; p < (int32_t)per; p++) {
                        uint32_t was = t * per + (uint32_t)p;
                        if (was == gone)
                                continue;
                        memcpy(id, &t, sizeof(t));
                        int want = (int)(was < gone ? was : was - 1);
                        assert_int_equal(kafka_fsession_upsert(fs, id, "t", 1, p, 99, 2), want);
                        assert_int_equal(fs->parts[want].partition, p);
                        assert_int_equal(fs->parts[want].offset, 99);
                }
        assert_int_equal(fs->nparts, topics * per - 1);
        /* and the forgotten one comes back at the end */
        memcpy(id, &t3, sizeof(t3));
        assert_int_equal(kafka_fsession_upsert(fs, id, "t", 1, 2, 0, 1), (int)(topics * per - 1));
        assert_int_equal(fs->ntopics, topics);
        kafka_fsession_free(fs);
}

static void test_news(void **state)
{
        (void)state;
        struct kafka_fsession *fs = kafka_fsession_new(3);
        int i = kafka_fsession_upsert(fs, A, "a", 1, 0, 0, 1);
        struct kafka_fsess_part *sp = &fs->parts[i];
        /* never answered: always news */
        assert_true(kafka_fsession_news(sp, 0, 0, 5, 0));
        sp->hw_sent = 5;
        sp->lso_sent = 0;
        assert_false(kafka_fsession_news(sp, 0, 0, 5, 0));
        assert_true(kafka_fsession_news(sp, 0, 10, 5, 0)); /* records */
        assert_true(kafka_fsession_news(sp, 0, 0, 6, 0));  /* high watermark moved */
        assert_true(kafka_fsession_news(sp, 0, 0, 5, 1));  /* log start moved */
        assert_true(kafka_fsession_news(sp, 1, 0, 5, 0));  /* an error */
        kafka_fsession_free(fs);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_upsert_and_forget),
            cmocka_unit_test(test_bounds),
            cmocka_unit_test(test_index_after_forget),
            cmocka_unit_test(test_news),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
