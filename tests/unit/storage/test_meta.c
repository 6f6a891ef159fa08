/* Metadata log: replay after reopen, group commit, a torn tail cut at
 * open, snapshot + log replay (and a crash between the snapshot's steps),
 * unknown record types skipped, and partition directories named by topic
 * UUID created idempotently with garbage removed. */
#include "st_util.h"
#include "meta.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static int acks;

static void ack(void *ctx, int res)
{
        (void)ctx;
        if (res == 0)
                acks++;
}

static struct meta_log *open_ok(const char *dir)
{
        int err = 0;
        struct meta_log *m = meta_open(dir, NULL, &err);
        if (!m)
                fail_msg("meta_open: %d", err);
        return m;
}

static void populate(struct meta_log *m, uint8_t uuids[3][16])
{
        struct log_config cfg;
        log_config_default(&cfg);
        for (int i = 0; i < 3; i++) {
                char name[16];
                snprintf(name, sizeof(name), "t%d", i);
                cfg.durability = (enum log_durability)i;
                cfg.retention_bytes = 1000 * (i + 1);
                const struct meta_topic *t;
                assert_int_equal(meta_topic_create(m, name, 2 + i, &cfg, ack, NULL, &t), 0);
                memcpy(uuids[i], t->uuid, 16);
                assert_int_equal(meta_placement_set(m, t->uuid, 1, 5 + i, ack, NULL), 0);
        }
        assert_int_equal(meta_topic_create(m, "t0", 1, &cfg, ack, NULL, NULL), -EEXIST);
        for (int k = 0; k < 100; k++)
                assert_int_equal(meta_offset_commit(m, k % 2 ? "ga" : "gb", uuids[k % 3],
                                                    (uint32_t)(k % 2), k, ack, NULL),
                                 0);
}

static void check_state(struct meta_log *m, uint8_t uuids[3][16])
{
        for (int i = 0; i < 3; i++) {
                char name[16];
                snprintf(name, sizeof(name), "t%d", i);
                const struct meta_topic *t = meta_topic_find(m, name);
                assert_non_null(t);
                assert_memory_equal(t->uuid, uuids[i], 16);
                assert_int_equal(t->partitions, 2 + i);
                assert_int_equal(t->cfg.durability, i);
                assert_int_equal(t->cfg.retention_bytes, 1000 * (i + 1));
                assert_int_equal(t->worker[0], -1);
                assert_int_equal(t->worker[1], 5 + i);
        }
        /* the last commit of each key wins */
        int64_t v;
        assert_int_equal(meta_offset_get(m, "ga", uuids[99 % 3], 1, &v), 0);
        assert_int_equal(v, 99);
        assert_int_equal(meta_offset_get(m, "gb", uuids[98 % 3], 0, &v), 0);
        assert_int_equal(v, 98);
        assert_int_equal(meta_offset_get(m, "nope", uuids[0], 0, &v), -ENOENT);
}

static void test_replay(void **state)
{
        (void)state;
        char dir[256];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        uint8_t uuids[3][16];
        struct meta_log *m = open_ok(dir);
        acks = 0;
        populate(m, uuids);
        assert_int_equal(acks, 0); /* only durable records are acked */
        assert_int_equal(meta_drain(m), 0);
        assert_int_equal(acks, 106);
        check_state(m, uuids);
        meta_close(m);
        m = open_ok(dir);
        check_state(m, uuids);
        /* delete survives too */
        assert_int_equal(meta_topic_delete(m, uuids[2], ack, NULL), 0);
        assert_null(meta_topic_find(m, "t2"));
        assert_int_equal(meta_drain(m), 0);
        meta_close(m);
        m = open_ok(dir);
        assert_null(meta_topic_find(m, "t2"));
        assert_non_null(meta_topic_find(m, "t1"));
        meta_close(m);
        st_rmrf(dir);
}

static void test_torn_tail_and_unknown_types(void **state)
{
        (void)state;
        char dir[256], path[512];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        uint8_t uuids[3][16];
        struct meta_log *m = open_ok(dir);
        populate(m, uuids);
        assert_int_equal(meta_drain(m), 0);
        uint64_t good = meta_log_bytes(m);
        meta_close(m);
        snprintf(path, sizeof(path), "%s/meta-0.log", dir);
        /* a record of a type from the future (valid CRC) is skipped; then a
         * torn record */
        int fd = open(path, O_WRONLY | O_APPEND);
        uint8_t rec[12 + 5] = {0};
        uint32_t len = 4 + 5;
        uint16_t type = 99, ver = 1;
        memcpy(rec, &len, 4);
        memcpy(rec + 8, &type, 2);
        memcpy(rec + 10, &ver, 2);
        memcpy(rec + 12, "hello", 5);
        uint32_t crc = log_crc32c(0, rec + 8, 9);
        memcpy(rec + 4, &crc, 4);
        assert_int_equal(write(fd, rec, sizeof(rec)), (ssize_t)sizeof(rec));
        rec[14] ^= 1; /* corrupt: CRC mismatch */
        assert_int_equal(write(fd, rec, 10), 10);
        close(fd);
        m = open_ok(dir);
        check_state(m, uuids);
        assert_int_equal(meta_log_bytes(m), good + sizeof(rec)); /* torn part cut */
        meta_close(m);
        st_rmrf(dir);
}

static void test_snapshot(void **state)
{
        (void)state;
        char dir[256], path[512];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        uint8_t uuids[3][16];
        struct meta_log *m = open_ok(dir);
        acks = 0;
        populate(m, uuids);
        assert_int_equal(acks, 0);
        /* records not yet written are part of the snapshot, and acked by it */
        assert_true(meta_log_bytes(m) > 0);
        assert_int_equal(meta_snapshot(m), 0);
        assert_int_equal(acks, 106);
        assert_int_equal(meta_log_bytes(m), 0);
        assert_int_equal(meta_drain(m), 0);
        /* while a round is in flight: busy */
        assert_int_equal(meta_offset_commit(m, "ga", uuids[0], 1, 7, ack, NULL), 0);
        assert_true(meta_poll(m) >= 0);
        assert_int_equal(meta_snapshot(m), -EBUSY);
        assert_int_equal(meta_drain(m), 0);
        assert_int_equal(meta_snapshot(m), 0);
        /* records after the snapshot go to the new log */
        assert_int_equal(meta_offset_commit(m, "ga", uuids[0], 1, 1000, ack, NULL), 0);
        assert_int_equal(meta_drain(m), 0);
        meta_close(m);
        snprintf(path, sizeof(path), "%s/meta-0.log", dir);
        assert_int_equal(access(path, F_OK), -1); /* old log gone */
        m = open_ok(dir);
        int64_t v;
        assert_int_equal(meta_offset_get(m, "ga", uuids[0], 1, &v), 0);
        assert_int_equal(v, 1000);
        assert_int_equal(meta_offset_commit(m, "ga", uuids[0], 1, 99, ack, NULL), 0);
        assert_int_equal(meta_drain(m), 0);
        check_state(m, uuids);
        /* second snapshot, then simulate a crash after the temp file was
         * written but before the rename: the stale temp is ignored */
        assert_int_equal(meta_snapshot(m), 0);
        meta_close(m);
        snprintf(path, sizeof(path), "%s/meta.snap.tmp", dir);
        int fd = open(path, O_WRONLY | O_CREAT, 0644);
        assert_int_equal(write(fd, "garbage", 7), 7);
        close(fd);
        snprintf(path, sizeof(path), "%s/meta-7.log", dir); /* a future log, never named */
        fd = open(path, O_WRONLY | O_CREAT, 0644);
        close(fd);
        m = open_ok(dir);
        check_state(m, uuids);
        meta_close(m);
        assert_int_equal(access(path, F_OK), -1);
        snprintf(path, sizeof(path), "%s/meta.snap.tmp", dir);
        assert_int_equal(access(path, F_OK), -1);
        /* a damaged snapshot is not a torn tail: refuse, do not guess */
        snprintf(path, sizeof(path), "%s/meta.snap", dir);
        fd = open(path, O_RDWR);
        uint8_t c;
        assert_int_equal(pread(fd, &c, 1, 30), 1);
        c ^= 0xff;
        assert_int_equal(pwrite(fd, &c, 1, 30), 1);
        close(fd);
        int err = 0;
        assert_null(meta_open(dir, NULL, &err));
        assert_int_equal(err, -EUCLEAN);
        st_rmrf(dir);
}

static int count_dirs(const char *dir)
{
        DIR *d = opendir(dir);
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        closedir(d);
        return n;
}

/* The producer id high-water mark survives a reopen and a snapshot, and
 * never goes down (a late smaller reservation replays harmlessly). */
static void test_producer_id_hwm(void **state)
{
        (void)state;
        char dir[256];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        struct meta_log *m = open_ok(dir);
        assert_int_equal(meta_producer_id_hwm(m), 0);
        acks = 0;
        assert_int_equal(meta_producer_id_reserve(m, 1024, ack, NULL), 0);
        assert_int_equal(meta_producer_id_reserve(m, 2048, ack, NULL), 0);
        assert_int_equal(meta_producer_id_reserve(m, 1024, ack, NULL), 0);
        assert_int_equal(meta_producer_id_hwm(m), 2048);
        assert_int_equal(meta_drain(m), 0);
        assert_int_equal(acks, 3);
        meta_close(m);
        m = open_ok(dir);
        assert_int_equal(meta_producer_id_hwm(m), 2048);
        assert_int_equal(meta_snapshot(m), 0);
        meta_close(m);
        m = open_ok(dir);
        assert_int_equal(meta_producer_id_hwm(m), 2048);
        meta_close(m);
        st_rmrf(dir);
}

/* A grown topic keeps its placement and gets unplaced new partitions; a
 * deleted group's offsets are gone and others stay; both survive a reopen
 * and a snapshot. */
static void test_topic_grow_and_group_delete(void **state)
{
        (void)state;
        char dir[256];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        uint8_t uuids[3][16];
        struct meta_log *m = open_ok(dir);
        populate(m, uuids);
        assert_int_equal(meta_topic_grow(m, uuids[0], 2, ack, NULL), -EINVAL);
        assert_int_equal(meta_topic_grow(m, uuids[0], 5, ack, NULL), 0);
        assert_int_equal(meta_placement_set(m, uuids[0], 4, 9, ack, NULL), 0);
        assert_true(meta_group_has_offsets(m, "ga"));
        assert_int_equal(meta_group_delete(m, "ga", ack, NULL), 0);
        assert_false(meta_group_has_offsets(m, "ga"));
        assert_int_equal(meta_drain(m), 0);
        for (int round = 0; round < 3; round++) {
                const struct meta_topic *t = meta_topic_find(m, "t0");
                assert_int_equal(t->partitions, 5);
                assert_int_equal(t->worker[1], 5);
                assert_int_equal(t->worker[2], -1);
                assert_int_equal(t->worker[4], 9);
                int64_t v;
                assert_int_equal(meta_offset_get(m, "ga", uuids[99 % 3], 1, &v), -ENOENT);
                assert_int_equal(meta_offset_get(m, "gb", uuids[98 % 3], 0, &v), 0);
                assert_int_equal(v, 98);
                uint32_t n = 0;
                for (uint32_t i = 0; i < meta_offset_slots(m); i++) {
                        const char *g;
                        const uint8_t *u;
                        uint32_t p;
                        if (meta_offset_at(m, i, &g, &u, &p, &v) == 0) {
                                assert_string_equal(g, "gb");
                                n++;
                        }
                }
                assert_int_equal(n, 3); /* gb: partition 0 of each topic */
                if (round == 1)
                        assert_int_equal(meta_snapshot(m), 0);
                meta_close(m);
                m = open_ok(dir);
        }
        meta_close(m);
        st_rmrf(dir);
}

static void test_partition_dirs(void **state)
{
        (void)state;
        char dir[256], topics[300], path[600];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        snprintf(topics, sizeof(topics), "%s/topics", dir);
        uint8_t uuids[3][16];
        struct meta_log *m = open_ok(dir);
        populate(m, uuids);
        assert_int_equal(meta_drain(m), 0);
        /* record first, then directories; idempotent */
        assert_int_equal(meta_dirs_sync(m, topics), 0);
        assert_int_equal(count_dirs(topics), 2 + 3 + 4);
        assert_int_equal(meta_dirs_sync(m, topics), 0);
        const struct meta_topic *t = meta_topic_find(m, "t1");
        char name[64];
        meta_partition_dirname(t, 2, name, sizeof(name));
        assert_int_equal(strlen(name), 34);
        snprintf(path, sizeof(path), "%s/%s", topics, name);
        assert_int_equal(access(path, F_OK), 0);
        /* a directory no record names (e.g. created before a crash lost its
         * record, or left by a deleted topic) is garbage */
        snprintf(path, sizeof(path), "%s/deadbeef-0", topics);
        mkdir(path, 0755);
        snprintf(path, sizeof(path), "%s/deadbeef-0/00000000000000000000.log", topics);
        close(open(path, O_CREAT | O_WRONLY, 0644));
        assert_int_equal(meta_topic_delete(m, uuids[0], ack, NULL), 0);
        assert_int_equal(meta_drain(m), 0);
        assert_int_equal(meta_dirs_sync(m, topics), 1 + 2);
        assert_int_equal(count_dirs(topics), 3 + 4);
        /* a re-created topic gets a new UUID: it never meets old segments */
        struct log_config cfg;
        log_config_default(&cfg);
        const struct meta_topic *t0;
        assert_int_equal(meta_topic_create(m, "t0", 2, &cfg, ack, NULL, &t0), 0);
        assert_memory_not_equal(t0->uuid, uuids[0], 16);
        assert_int_equal(meta_drain(m), 0);
        meta_close(m);
        st_rmrf(dir);
}

static const char *def_get(struct meta_log *m, const char *key, uint32_t *len)
{
        for (uint32_t i = 0; i < meta_def_count(m); i++) {
                const uint8_t *v;
                const char *k = meta_def_at(m, i, &v, len);
                if (k && strcmp(k, key) == 0)
                        return (const char *)v;
        }
        return NULL;
}

/* Definitions (AMQP's durable objects): put, overwrite, delete; replayed
 * from the log and carried by a snapshot. */
static void test_definitions(void **state)
{
        (void)state;
        char dir[256];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        struct meta_log *m = open_ok(dir);
        assert_int_equal(meta_def_put(m, "q:71", "one", 3, ack, NULL), 0);
        assert_int_equal(meta_def_put(m, "e:65", "ex", 2, ack, NULL), 0);
        assert_int_equal(meta_def_put(m, "q:71", "two!", 4, ack, NULL), 0);
        assert_int_equal(meta_def_put(m, "b:65:q71:", "b", 1, ack, NULL), 0);
        assert_int_equal(meta_def_put(m, "b:65:q71:", NULL, 0, ack, NULL), 0);
        assert_int_equal(meta_def_put(m, "missing", NULL, 0, ack, NULL), 0);
        assert_int_equal(meta_drain(m), 0);
        meta_close(m);
        for (int round = 0; round < 2; round++) {
                m = open_ok(dir);
                uint32_t len = 0;
                const char *v = def_get(m, "q:71", &len);
                assert_non_null(v);
                assert_int_equal(len, 4);
                assert_memory_equal(v, "two!", 4);
                assert_non_null(def_get(m, "e:65", &len));
                assert_null(def_get(m, "b:65:q71:", &len));
                /* the second round reads them from the snapshot */
                assert_int_equal(meta_snapshot(m), 0);
                meta_close(m);
        }
}

/* meta_poll snapshots by itself once the log passes the threshold, so a
 * broker that commits offsets all day keeps a bounded log: every record is
 * acked exactly once, the state after reopen is the same, and the 4x rule
 * spaces snapshots out as the state grows. */
static void test_automatic_snapshot(void **state)
{
        (void)state;
        char dir[256];
        assert_non_null(st_tmpdir(dir, sizeof(dir)));
        uint8_t uuids[3][16];
        struct meta_log *m = open_ok(dir);
        meta_set_snapshot_bytes(m, 8192);
        acks = 0;
        populate(m, uuids);
        assert_int_equal(meta_drain(m), 0);
        int expect = 106;
        uint64_t peak = 0;
        for (int k = 0; k < 20000; k++) {
                char group[32];
                snprintf(group, sizeof(group), "g%d", k % 50); /* the state grows too */
                assert_int_equal(
                    meta_offset_commit(m, group, uuids[k % 3], (uint32_t)(k % 2), k, ack, NULL), 0);
                expect++;
                if (k % 7 == 0)
                        assert_true(meta_poll(m) >= 0);
                if (k % 100 == 99) /* a round boundary at a known point */
                        assert_int_equal(meta_drain(m), 0);
                if (meta_log_bytes(m) > peak)
                        peak = meta_log_bytes(m);
        }
        assert_int_equal(meta_drain(m), 0);
        assert_int_equal(acks, expect);
        uint64_t snaps = meta_snapshot_count(m);
        assert_true(snaps >= 10);
        assert_true(peak < 128 * 1024); /* bounded, not 20000 records long */
        int64_t v;
        assert_int_equal(meta_offset_get(m, "g49", uuids[19999 % 3], 1, &v), 0);
        assert_int_equal(v, 19999);
        meta_close(m);
        m = open_ok(dir);
        check_state(m, uuids);
        assert_int_equal(meta_offset_get(m, "g49", uuids[19999 % 3], 1, &v), 0);
        assert_int_equal(v, 19999);
        assert_int_equal(meta_offset_get(m, "g0", uuids[19950 % 3], 0, &v), 0);
        assert_int_equal(v, 19950);
        meta_close(m);
        st_rmrf(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_replay),
            cmocka_unit_test(test_torn_tail_and_unknown_types),
            cmocka_unit_test(test_snapshot),
            cmocka_unit_test(test_automatic_snapshot),
            cmocka_unit_test(test_partition_dirs),
            cmocka_unit_test(test_producer_id_hwm),
            cmocka_unit_test(test_topic_grow_and_group_delete),
            cmocka_unit_test(test_definitions),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
