/* libFuzzer target for the Kafka request path: frame size, request header
 * and generated body decoders for every api/version, then re-encode of what
 * decoded. Input byte 0 picks the mode:
 *   even: the rest is a size-prefixed request frame, decoded as the broker does;
 *   odd:  byte 1 picks a generated message (requests and responses), byte 2
 *         its version, the rest is the body. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kafka_codec.h"

#define FRAME_MAX (1u << 20)

static uint8_t arena_mem[256 * 1024];
static uint8_t out1[1 << 18], out2[1 << 18];

/* Anything that decoded must encode back to canonical bytes that decode and
 * encode to the very same bytes. */
static void check_reencode(const struct kafka_msg *m, struct kafka_arena *a)
{
        ssize_t n = kafka_msg_encode(m, out1, sizeof(out1));
        if (n < 0)
                return; /* e.g. a compact string longer than a classic one may be */
        struct kafka_msg again;
        enum kafka_dir dir = m->desc->is_response ? KAFKA_RESPONSE : KAFKA_REQUEST;
        ssize_t got =
            kafka_msg_decode(&again, a, m->desc->api_key, m->version, dir, out1, (size_t)n);
        if (got == -ENOMEM)
                return;
        if (got != n)
                __builtin_trap();
        if (kafka_msg_encode(&again, out2, sizeof(out2)) != n || memcmp(out1, out2, (size_t)n))
                __builtin_trap();
}

static void fuzz_frame(const uint8_t *data, size_t size, struct kafka_arena *a)
{
        ssize_t fn = kafka_frame_size(data, size, FRAME_MAX);
        if (fn <= 0 || (size_t)fn > size)
                return;
        const uint8_t *p = data + KAFKA_FRAME_PREFIX;
        size_t len = (size_t)fn - KAFKA_FRAME_PREFIX;
        struct kafka_req_header h;
        ssize_t hn = kafka_req_header_decode(&h, p, len);
        if (hn < 0)
                return;
        struct kafka_msg m;
        if (kafka_msg_decode(&m, a, h.api_key, h.api_version, KAFKA_REQUEST, p + hn,
                             len - (size_t)hn) >= 0)
                check_reencode(&m, a);
}

static void fuzz_body(const uint8_t *data, size_t size, struct kafka_arena *a)
{
        if (size < 3)
                return;
        const struct kafka_msg_desc *d = &kafka_msgs[data[1] % KAFKA_NUM_MSGS];
        int16_t ver = (int16_t)(d->ver_min + data[2] % (d->ver_max - d->ver_min + 1));
        struct kafka_msg m;
        enum kafka_dir dir = d->is_response ? KAFKA_RESPONSE : KAFKA_REQUEST;
        if (kafka_msg_decode(&m, a, d->api_key, ver, dir, data + 3, size - 3) >= 0)
                check_reencode(&m, a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct kafka_arena a;
        kafka_arena_init(&a, arena_mem, sizeof(arena_mem));
        if (size < 1)
                return 0;
        if (data[0] & 1)
                fuzz_body(data, size, &a);
        else
                fuzz_frame(data + 1, size - 1, &a);
        return 0;
}
