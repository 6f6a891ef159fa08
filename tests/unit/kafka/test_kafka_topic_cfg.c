/* Kafka topic configs: CreateTopics values validated as Kafka 4.0 does
 * (INVALID_CONFIG for a bad one), and a topic's effective config = its own
 * values over the broker's [kafka] defaults, with each value's source. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ctl_config.h"
#include "ctl_kafka.h"

static int16_t parse(const char *k, const char *v, struct ctl_kafka_topic_cfg *c, uint32_t *flags)
{
        const char *msg = NULL;
        int16_t err = ctl_kafka_topic_config_parse(k, (int32_t)strlen(k), v,
                                                   v ? (int32_t)strlen(v) : -1, c, flags, &msg);
        if (err)
                assert_non_null(msg);
        return err;
}

static void test_valid_values_are_taken(void **state)
{
        (void)state;
        struct ctl_kafka_topic_cfg c = {0};
        uint32_t flags = 0;
        assert_int_equal(parse("retention.ms", "-1", &c, &flags), 0);
        assert_true(c.retention_ms == -1);
        assert_int_equal(parse("retention.ms", " 60000 ", &c, &flags), 0);
        assert_true(c.retention_ms == 60000);
        assert_int_equal(parse("retention.bytes", "9223372036854775807", &c, &flags), 0);
        assert_true(c.retention_bytes == INT64_MAX);
        assert_int_equal(parse("retention.bytes", "-5", &c, &flags), 0); /* Kafka: no limit */
        assert_int_equal(parse("segment.bytes", "1048576", &c, &flags), 0);
        assert_true(c.segment_bytes == 1048576);
        assert_int_equal(parse("segment.bytes", "2147483647", &c, &flags), 0);
        assert_int_equal(parse("segment.ms", "1", &c, &flags), 0);
        assert_true(c.segment_ms == 1);
        assert_int_equal(c.set, CTL_KAFKA_SET_RETENTION_MS | CTL_KAFKA_SET_RETENTION_BYTES |
                                    CTL_KAFKA_SET_SEGMENT_BYTES | CTL_KAFKA_SET_SEGMENT_MS);
        assert_int_equal(parse("message.timestamp.type", "LogAppendTime", &c, &flags), 0);
        assert_int_equal(flags, META_TOPIC_LOG_APPEND_TIME);
        assert_int_equal(parse("cleanup.policy", "delete", &c, &flags), 0);
        /* keys this broker does not act on are accepted */
        assert_int_equal(parse("min.insync.replicas", "2", &c, &flags), 0);
}

static void test_bad_values_are_invalid_config(void **state)
{
        (void)state;
        struct ctl_kafka_topic_cfg c = {0};
        uint32_t flags = 0;
        static const char *const bad[][2] = {
            {"retention.ms", "-2"},
            {"retention.ms", "abc"},
            {"retention.ms", ""},
            {"retention.ms", "1e6"},
            {"retention.ms", "9223372036854775808"},
            {"retention.bytes", "10k"},
            {"retention.bytes", "-"},
            {"segment.bytes", "1048575"}, /* Kafka 4.0's minimum is 1 MiB */
            {"segment.bytes", "2147483648"},
            {"segment.bytes", "-1"},
            {"segment.ms", "0"},
            {"segment.ms", "-1"},
            {"message.timestamp.type", "Now"},
            {"cleanup.policy", "compact"},
            {"cleanup.policy", "compact,delete"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(parse(bad[i][0], bad[i][1], &c, &flags), 40);
        assert_int_equal(parse("retention.ms", NULL, &c, &flags), 40); /* null value */
        assert_int_equal(parse("min.insync.replicas", NULL, &c, &flags), 40);
        assert_int_equal(c.set, 0);
}

static void test_resolve_own_over_broker_defaults(void **state)
{
        (void)state;
        struct ctl_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.kafka_retention_ms = CTL_KAFKA_RETENTION_MS_DEFAULT;
        cfg.kafka_retention_bytes = CTL_KAFKA_UNLIMITED;
        cfg.kafka_segment_bytes = CTL_KAFKA_SEGMENT_BYTES_DEFAULT;
        cfg.kafka_segment_ms = CTL_KAFKA_SEGMENT_MS_DEFAULT;
        struct log_config stored;
        log_config_default(&stored);
        stored.retention_ms = 1000;
        stored.retention_bytes = 5 << 20;
        stored.segment_bytes = 1 << 20;
        stored.segment_ms = 100;
        struct ctl_kafka_topic t;
        /* nothing of its own (also: a topic record from before these keys) */
        ctl_kafka_topic_resolve(&cfg, &stored, 0, &t);
        assert_true(t.cfg.retention_ms == (int64_t)CTL_KAFKA_RETENTION_MS_DEFAULT);
        assert_true(t.cfg.retention_bytes == -1);
        assert_true(t.cfg.segment_bytes == CTL_KAFKA_SEGMENT_BYTES_DEFAULT);
        assert_int_equal(t.src_retention_ms, CTL_KAFKA_SRC_DEFAULT);
        assert_int_equal(t.src_retention_bytes, CTL_KAFKA_SRC_DEFAULT);
        assert_int_equal(t.src_segment_bytes, CTL_KAFKA_SRC_DEFAULT);
        assert_true(t.cfg.segment_ms == CTL_KAFKA_SEGMENT_MS_DEFAULT);
        assert_int_equal(t.src_segment_ms, CTL_KAFKA_SRC_DEFAULT);
        assert_false(t.log_append_time);
        /* the broker file moved a default: the topic follows, source static */
        cfg.kafka_retention_bytes = 64 << 20;
        ctl_kafka_topic_resolve(&cfg, &stored, 0, &t);
        assert_true(t.cfg.retention_bytes == 64 << 20);
        assert_int_equal(t.src_retention_bytes, CTL_KAFKA_SRC_STATIC);
        /* its own values win, whatever the broker's */
        ctl_kafka_topic_resolve(&cfg, &stored,
                                CTL_KAFKA_SET_RETENTION_BYTES | CTL_KAFKA_SET_SEGMENT_BYTES |
                                    META_TOPIC_LOG_APPEND_TIME,
                                &t);
        assert_true(t.cfg.retention_bytes == 5 << 20);
        assert_true(t.cfg.segment_bytes == 1 << 20);
        assert_true(t.cfg.retention_ms == (int64_t)CTL_KAFKA_RETENTION_MS_DEFAULT);
        assert_int_equal(t.src_retention_bytes, CTL_KAFKA_SRC_TOPIC);
        assert_int_equal(t.src_segment_bytes, CTL_KAFKA_SRC_TOPIC);
        assert_int_equal(t.src_retention_ms, CTL_KAFKA_SRC_DEFAULT);
        assert_true(t.log_append_time);
        assert_int_equal(t.set, CTL_KAFKA_SET_RETENTION_BYTES | CTL_KAFKA_SET_SEGMENT_BYTES);
        cfg.kafka_retention_ms = CTL_KAFKA_UNLIMITED;
        ctl_kafka_topic_resolve(&cfg, &stored,
                                CTL_KAFKA_SET_RETENTION_MS | CTL_KAFKA_SET_SEGMENT_MS, &t);
        assert_true(t.cfg.retention_ms == 1000);
        assert_true(t.cfg.segment_ms == 100);
        assert_int_equal(t.src_segment_ms, CTL_KAFKA_SRC_TOPIC);
        ctl_kafka_topic_resolve(&cfg, &stored, 0, &t);
        assert_true(t.cfg.retention_ms == -1);
        assert_int_equal(t.src_retention_ms, CTL_KAFKA_SRC_STATIC);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_valid_values_are_taken),
            cmocka_unit_test(test_bad_values_are_invalid_config),
            cmocka_unit_test(test_resolve_own_over_broker_defaults),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
