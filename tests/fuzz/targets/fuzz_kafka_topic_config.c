/* CreateTopics' topic config values (control/ctl_kafka_cfg.c): any bytes as
 * a value of each key the broker acts on, and as a key. A value accepted
 * must be inside Kafka's bounds; anything else must be INVALID_CONFIG with
 * a message. Input: first byte picks the key, the rest is the value; with
 * the first byte's top bit set the input is split into key and value at
 * the first NUL. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_kafka.h"

static const char *const keys[] = {"retention.ms",           "retention.bytes", "segment.bytes",
                                   "message.timestamp.type", "cleanup.policy",  "segment.ms"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1 || size > 4096)
                return 0;
        struct ctl_kafka_topic_cfg cfg = {0};
        uint32_t flags = 0;
        const char *msg = NULL;
        const char *key, *val;
        int32_t key_len, val_len;
        if (data[0] & 0x80) {
                const uint8_t *nul = memchr(data + 1, 0, size - 1);
                key = (const char *)data + 1;
                key_len = nul ? (int32_t)(nul - (data + 1)) : (int32_t)(size - 1);
                val = nul ? (const char *)nul + 1 : NULL;
                val_len = nul ? (int32_t)(size - 1 - (size_t)key_len - 1) : -1;
        } else {
                key = keys[data[0] % (sizeof(keys) / sizeof(keys[0]))];
                key_len = (int32_t)strlen(key);
                val = (const char *)data + 1;
                val_len = (int32_t)(size - 1);
        }
        int16_t err = ctl_kafka_topic_config_parse(key, key_len, val, val_len, &cfg, &flags, &msg);
        if (err) {
                if (err != 40 || !msg)
                        abort();
                return 0;
        }
        if ((cfg.set & CTL_KAFKA_SET_RETENTION_MS) && cfg.retention_ms < -1)
                abort();
        if ((cfg.set & CTL_KAFKA_SET_SEGMENT_BYTES) &&
            (cfg.segment_bytes < (1 << 20) || cfg.segment_bytes > INT32_MAX))
                abort();
        if ((cfg.set & CTL_KAFKA_SET_SEGMENT_MS) && cfg.segment_ms < 1)
                abort();
        if (cfg.set & ~CTL_KAFKA_SET_MASK)
                abort();
        return 0;
}
