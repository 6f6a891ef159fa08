/* Kafka topic configs: the values CreateTopics may set (validated as Kafka
 * validates them) and a topic's effective log config, its own values over
 * the broker's [kafka] defaults. Pure functions: the worker parses, the
 * control thread resolves when it builds a topic snapshot. */
#include "ctl_kafka.h"

#include <string.h>

#include "ctl_config.h"

#define KERR_INVALID_CONFIG 40

/* Kafka 4.0 (KIP-1030): segment.bytes is an int of at least 1 MiB. */
#define SEGMENT_BYTES_MIN (1ll << 20)
#define SEGMENT_BYTES_MAX INT32_MAX

static bool is(const char *s, int32_t len, const char *lit)
{
        return len >= 0 && (size_t)len == strlen(lit) && memcmp(s, lit, (size_t)len) == 0;
}

/* A Java Long.parseLong of the trimmed value (Kafka trims config values):
 * optional sign, decimal digits, no overflow. */
static bool parse_long(const char *s, int32_t len, int64_t *out)
{
        while (len > 0 && (*s == ' ' || *s == '\t')) {
                s++;
                len--;
        }
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                len--;
        bool neg = len > 0 && s[0] == '-';
        int32_t i = len > 0 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
        if (i == len)
                return false;
        uint64_t v = 0;
        uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                uint64_t d = (uint64_t)(s[i] - '0');
                if (v > (lim - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *out = neg ? (int64_t)(0 - v) : (int64_t)v;
        return true;
}

int16_t ctl_kafka_topic_config_parse(const char *name, int32_t name_len, const char *value,
                                     int32_t value_len, struct ctl_kafka_topic_cfg *cfg,
                                     uint32_t *flags, const char **msg)
{
        int64_t v;
        if (!value || value_len < 0) {
                *msg = "Null value not supported for topic configs.";
                return KERR_INVALID_CONFIG;
        }
        if (is(name, name_len, "retention.ms")) {
                if (!parse_long(value, value_len, &v) || v < -1) {
                        *msg = "Invalid value for configuration retention.ms: a long of at "
                               "least -1 (-1 = unlimited).";
                        return KERR_INVALID_CONFIG;
                }
                cfg->retention_ms = v;
                cfg->set |= CTL_KAFKA_SET_RETENTION_MS;
        } else if (is(name, name_len, "retention.bytes")) {
                /* Any long, as in Kafka: a negative one means no limit. */
                if (!parse_long(value, value_len, &v)) {
                        *msg = "Invalid value for configuration retention.bytes: a long.";
                        return KERR_INVALID_CONFIG;
                }
                cfg->retention_bytes = v;
                cfg->set |= CTL_KAFKA_SET_RETENTION_BYTES;
        } else if (is(name, name_len, "segment.bytes")) {
                if (!parse_long(value, value_len, &v) || v < SEGMENT_BYTES_MIN ||
                    v > SEGMENT_BYTES_MAX) {
                        *msg = "Invalid value for configuration segment.bytes: an int of at "
                               "least 1048576.";
                        return KERR_INVALID_CONFIG;
                }
                cfg->segment_bytes = v;
                cfg->set |= CTL_KAFKA_SET_SEGMENT_BYTES;
        } else if (is(name, name_len, "segment.ms")) {
                if (!parse_long(value, value_len, &v) || v < 1) {
                        *msg = "Invalid value for configuration segment.ms: a long of at least 1.";
                        return KERR_INVALID_CONFIG;
                }
                cfg->segment_ms = v;
                cfg->set |= CTL_KAFKA_SET_SEGMENT_MS;
        } else if (is(name, name_len, "message.timestamp.type")) {
                if (is(value, value_len, "LogAppendTime")) {
                        *flags |= META_TOPIC_LOG_APPEND_TIME;
                } else if (is(value, value_len, "CreateTime")) {
                        *flags &= ~META_TOPIC_LOG_APPEND_TIME;
                } else {
                        *msg = "Invalid value for configuration message.timestamp.type: "
                               "CreateTime or LogAppendTime.";
                        return KERR_INVALID_CONFIG;
                }
                cfg->set |= CTL_KAFKA_SET_TIMESTAMP_TYPE;
        } else if (is(name, name_len, "cleanup.policy")) {
                /* Retention by time and size is all this broker does:
                 * refusing compact beats silently keeping every key. */
                if (!is(value, value_len, "delete")) {
                        *msg = "This broker supports only cleanup.policy=delete (no "
                               "compaction).";
                        return KERR_INVALID_CONFIG;
                }
        }
        /* Other keys (min.insync.replicas, compression.type, ...) are
         * accepted and not acted on. */
        return 0;
}

static int64_t limit(uint64_t v)
{
        return v == CTL_KAFKA_UNLIMITED ? -1 : (int64_t)v;
}

void ctl_kafka_log_config(const struct ctl_config *c, struct log_config *out)
{
        log_config_default(out);
        out->segment_bytes = c->kafka_segment_bytes;
        out->segment_ms = c->kafka_segment_ms;
        out->retention_ms = limit(c->kafka_retention_ms);
        out->retention_bytes = limit(c->kafka_retention_bytes);
        /* Less preallocation than storage's default: a broker with many
         * small topics should not claim GiBs up front. */
        out->prealloc_bytes = 16ull << 20;
        out->recycle_segments = c->recycle_segments;
}

void ctl_kafka_topic_resolve(const struct ctl_config *c, const struct log_config *stored,
                             uint32_t flags, struct ctl_kafka_topic *t)
{
        ctl_kafka_log_config(c, &t->cfg);
        t->set = flags & CTL_KAFKA_SET_MASK;
        t->log_append_time = flags & META_TOPIC_LOG_APPEND_TIME;
        /* Each config: the topic's own value when it set one, else the
         * broker's, which is "static" when the file moved it off the
         * built-in default, as Kafka tells server.properties apart. */
#define RESOLVE(field, set_flag, broker_value, builtin)                                            \
        do {                                                                                       \
                t->src_##field =                                                                   \
                    (broker_value) != (builtin) ? CTL_KAFKA_SRC_STATIC : CTL_KAFKA_SRC_DEFAULT;    \
                if (flags & (set_flag)) {                                                          \
                        t->cfg.field = stored->field;                                              \
                        t->src_##field = CTL_KAFKA_SRC_TOPIC;                                      \
                }                                                                                  \
        } while (0)
        RESOLVE(retention_ms, CTL_KAFKA_SET_RETENTION_MS, c->kafka_retention_ms,
                CTL_KAFKA_RETENTION_MS_DEFAULT);
        RESOLVE(retention_bytes, CTL_KAFKA_SET_RETENTION_BYTES, c->kafka_retention_bytes,
                CTL_KAFKA_UNLIMITED);
        RESOLVE(segment_bytes, CTL_KAFKA_SET_SEGMENT_BYTES, c->kafka_segment_bytes,
                CTL_KAFKA_SEGMENT_BYTES_DEFAULT);
        RESOLVE(segment_ms, CTL_KAFKA_SET_SEGMENT_MS, c->kafka_segment_ms,
                CTL_KAFKA_SEGMENT_MS_DEFAULT);
#undef RESOLVE
}
