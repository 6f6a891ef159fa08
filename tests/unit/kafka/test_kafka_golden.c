/* Golden byte-for-byte tests of the generated Kafka codec: requests a client
 * sends and responses it expects, written out from RECORDS.md and the schemas,
 * so a generator or runtime change that alters a single byte fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kafka_codec.h"

static uint8_t arena_mem[64 * 1024];
static struct kafka_arena arena;

/* RECORDS.md worked example: one record, key "k", value "v", header h=1. */
static const uint8_t batch[74] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* baseOffset */
    0x00, 0x00, 0x00, 0x3e,                         /* batchLength 62 */
    0xff, 0xff, 0xff, 0xff,                         /* partitionLeaderEpoch */
    0x02,                                           /* magic */
    0x67, 0x5a, 0x95, 0xfd,                         /* crc32c */
    0x00, 0x00,                                     /* attributes */
    0x00, 0x00, 0x00, 0x00,                         /* lastOffsetDelta */
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, /* baseTimestamp */
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, /* maxTimestamp */
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* producerId */
    0xff, 0xff,                                     /* producerEpoch */
    0xff, 0xff, 0xff, 0xff,                         /* baseSequence */
    0x00, 0x00, 0x00, 0x01,                         /* recordsCount */
    0x18, 0x00, 0x00, 0x00, 0x02, 0x6b, 0x02, 0x76, 0x02, 0x02, 0x68, 0x02, 0x31,
};

static int setup(void **state)
{
        (void)state;
        kafka_arena_init(&arena, arena_mem, sizeof(arena_mem));
        return 0;
}

static void assert_str(struct kafka_str s, const char *want)
{
        assert_int_equal(s.len, strlen(want));
        assert_memory_equal(s.ptr, want, strlen(want));
}

/* Decode body, check it consumed everything, re-encode it byte for byte. */
static void decode_reencode(struct kafka_msg *m, int16_t key, int16_t ver, enum kafka_dir dir,
                            const uint8_t *body, size_t len)
{
        uint8_t out[512];
        assert_int_equal(kafka_msg_decode(m, &arena, key, ver, dir, body, len), len);
        assert_int_equal(kafka_msg_size(m), len);
        assert_int_equal(kafka_msg_encode(m, out, sizeof(out)), len);
        assert_memory_equal(out, body, len);
}

static void test_api_versions_request_v3(void **state)
{
        (void)state;
        static const uint8_t frame[] = {
            0x00, 0x00, 0x00, 0x1b, 0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00,
            0x07, 0x00, 0x02, 0x63, 0x31, 0x00, 0x09, 0x6d, 0x79, 0x63, 0x6c,
            0x69, 0x65, 0x6e, 0x74, 0x04, 0x31, 0x2e, 0x30, 0x00,
        };
        assert_int_equal(kafka_frame_size(frame, 3, 1 << 20), 0); /* AGAIN */
        assert_int_equal(kafka_frame_size(frame, sizeof(frame), 1 << 20), sizeof(frame));
        /* frame_max bounds the payload: 27 passes, 26 is refused before buffering. */
        assert_int_equal(kafka_frame_size(frame, sizeof(frame), 27), sizeof(frame));
        assert_int_equal(kafka_frame_size(frame, sizeof(frame), 26), -EMSGSIZE);
        static const uint8_t negative[] = {0x80, 0x00, 0x00, 0x00};
        assert_int_equal(kafka_frame_size(negative, 4, 1 << 20), -EBADMSG);

        struct kafka_req_header h;
        const uint8_t *p = frame + 4;
        ssize_t hn = kafka_req_header_decode(&h, p, sizeof(frame) - 4);
        assert_int_equal(hn, 13);
        assert_int_equal(h.api_key, KAFKA_API_API_VERSIONS);
        assert_int_equal(h.api_version, 3);
        assert_int_equal(h.correlation_id, 7);
        assert_int_equal(h.header_version, 2);
        assert_str(h.client_id, "c1");

        uint8_t hdr[32];
        assert_int_equal(kafka_req_header_encode(&h, hdr, sizeof(hdr)), hn);
        assert_memory_equal(hdr, p, (size_t)hn);

        struct kafka_msg m;
        decode_reencode(&m, h.api_key, h.api_version, KAFKA_REQUEST, p + hn,
                        sizeof(frame) - 4 - (size_t)hn);
        assert_str(kafka_val_get_str(m.root, KAFKA_API_VERSIONS_REQ_CLIENT_SOFTWARE_NAME),
                   "myclient");
        assert_str(kafka_val_get_str(m.root, KAFKA_API_VERSIONS_REQ_CLIENT_SOFTWARE_VERSION),
                   "1.0");
}

/* An unknown tag in the body trailer is skipped, not an error. */
static void test_api_versions_request_unknown_tag(void **state)
{
        (void)state;
        static const uint8_t body[] = {0x02, 0x61, 0x02, 0x62, 0x01, 0x07, 0x02, 0xaa, 0xbb};
        struct kafka_msg m;
        assert_int_equal(kafka_msg_decode(&m, &arena, KAFKA_API_API_VERSIONS, 3, KAFKA_REQUEST,
                                          body, sizeof(body)),
                         sizeof(body));
        assert_str(kafka_val_get_str(m.root, KAFKA_API_VERSIONS_REQ_CLIENT_SOFTWARE_NAME), "a");
}

static void build_api_versions(struct kafka_msg *m, int16_t ver, int16_t err, int n,
                               const int16_t (*keys)[3])
{
        assert_int_equal(kafka_msg_init(m, &arena, KAFKA_API_API_VERSIONS, ver, KAFKA_RESPONSE), 0);
        kafka_val_set_int16(m->root, KAFKA_API_VERSIONS_RESP_ERROR_CODE, err);
        struct kafka_val *e =
            kafka_val_array_init(&arena, m->root, KAFKA_API_VERSIONS_RESP_API_KEYS, n);
        assert_non_null(e);
        const struct kafka_val *arr = kafka_val_array(m->root, KAFKA_API_VERSIONS_RESP_API_KEYS);
        for (int i = 0; i < n; i++) {
                struct kafka_val *k = kafka_val_array_elem(arr, i);
                kafka_val_set_int16(k, KAFKA_API_VERSIONS_RESP_API_KEYS_API_KEY, keys[i][0]);
                kafka_val_set_int16(k, KAFKA_API_VERSIONS_RESP_API_KEYS_MIN_VERSION, keys[i][1]);
                kafka_val_set_int16(k, KAFKA_API_VERSIONS_RESP_API_KEYS_MAX_VERSION, keys[i][2]);
        }
}

static void test_api_versions_response_v3(void **state)
{
        (void)state;
        static const uint8_t want[] = {
            0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00,
            0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x0b, 0x00, 0x00, 0x12,
            0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        };
        static const int16_t keys[2][3] = {{0, 3, 11}, {18, 0, 4}};
        struct kafka_msg m;
        build_api_versions(&m, 3, 0, 2, keys);
        uint8_t out[64];
        assert_int_equal(kafka_response_encode(&m, 7, out, sizeof(out)), sizeof(want));
        assert_memory_equal(out, want, sizeof(want));
        /* Header v0 even though v3 is flexible (KIP-511). */
        assert_int_equal(kafka_resp_header_version(KAFKA_API_API_VERSIONS, 3), 0);
        for (size_t cap = 0; cap < sizeof(want); cap++)
                assert_int_equal(kafka_response_encode(&m, 7, out, cap), -ENOSPC);

        /* A set tagged field goes in the body trailer: tag 1, 8 bytes. */
        kafka_val_set_int64(m.root, KAFKA_API_VERSIONS_RESP_FINALIZED_FEATURES_EPOCH, 5);
        static const uint8_t tail[] = {0x01, 0x01, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x05};
        ssize_t n = kafka_msg_encode(&m, out, sizeof(out));
        assert_int_equal(n, sizeof(want) - 8 - 1 + sizeof(tail));
        assert_memory_equal(out + n - sizeof(tail), tail, sizeof(tail));
        struct kafka_msg d;
        assert_int_equal(
            kafka_msg_decode(&d, &arena, KAFKA_API_API_VERSIONS, 3, KAFKA_RESPONSE, out, (size_t)n),
            n);
        assert_true(kafka_val_is_set(d.root, KAFKA_API_VERSIONS_RESP_FINALIZED_FEATURES_EPOCH));
        assert_int_equal(
            kafka_val_get_int64(d.root, KAFKA_API_VERSIONS_RESP_FINALIZED_FEATURES_EPOCH), 5);
}

/* The answer to an ApiVersions version we do not support: v0, error 35
 * (UNSUPPORTED_VERSION), listing ApiVersions itself so the client retries. */
static void test_api_versions_response_v0_unsupported(void **state)
{
        (void)state;
        static const uint8_t want[] = {
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x07, 0x00, 0x23,
            0x00, 0x00, 0x00, 0x01, 0x00, 0x12, 0x00, 0x00, 0x00, 0x04,
        };
        static const int16_t keys[1][3] = {{18, 0, 4}};
        struct kafka_msg m;
        build_api_versions(&m, 0, 35, 1, keys);
        uint8_t out[64];
        assert_int_equal(kafka_response_encode(&m, 7, out, sizeof(out)), sizeof(want));
        assert_memory_equal(out, want, sizeof(want));

        /* The request that triggers it: v9 parses as far as the header. */
        static const uint8_t req[] = {0x00, 0x12, 0x00, 0x09, 0x00, 0x00,
                                      0x00, 0x07, 0xff, 0xff, 0x00, 0x00};
        struct kafka_req_header h;
        assert_int_equal(kafka_req_header_decode(&h, req, sizeof(req)), 11);
        assert_int_equal(h.client_id.len, -1);
        struct kafka_msg d;
        assert_int_equal(
            kafka_msg_decode(&d, &arena, h.api_key, h.api_version, KAFKA_REQUEST, req + 11, 1),
            -ENOTSUP);
}

static void test_metadata_request_v1(void **state)
{
        (void)state;
        static const uint8_t body[] = {0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x66, 0x6f, 0x6f};
        static const uint8_t all[] = {0xff, 0xff, 0xff, 0xff}; /* null = every topic */
        struct kafka_msg m;
        decode_reencode(&m, KAFKA_API_METADATA, 1, KAFKA_REQUEST, body, sizeof(body));
        assert_int_equal(kafka_val_array_len(m.root, KAFKA_METADATA_REQ_TOPICS), 1);
        const struct kafka_val *t =
            kafka_val_array_elem(kafka_val_array(m.root, KAFKA_METADATA_REQ_TOPICS), 0);
        assert_str(kafka_val_get_str(t, KAFKA_METADATA_REQ_TOPICS_NAME), "foo");
        /* Absent before v4: the schema default (true). */
        assert_true(kafka_val_get_bool(m.root, KAFKA_METADATA_REQ_ALLOW_AUTO_TOPIC_CREATION));

        decode_reencode(&m, KAFKA_API_METADATA, 1, KAFKA_REQUEST, all, sizeof(all));
        assert_int_equal(kafka_val_array_len(m.root, KAFKA_METADATA_REQ_TOPICS), -1);
        /* v0 has no null topics array. */
        assert_int_equal(
            kafka_msg_decode(&m, &arena, KAFKA_API_METADATA, 0, KAFKA_REQUEST, all, sizeof(all)),
            -EBADMSG);
}

static void test_metadata_request_v9(void **state)
{
        (void)state;
        static const uint8_t frame[] = {
            0x00, 0x00, 0x00, 0x17,                         /* size 23 */
            0x00, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x2a, /* Metadata v9, corr 42 */
            0x00, 0x02, 0x63, 0x31, 0x00,                   /* "c1", header tags */
            0x02, 0x04, 0x66, 0x6f, 0x6f, 0x00,             /* [ "foo" ] */
            0x01, 0x00, 0x00, 0x00,                         /* auto create, no ops, tags */
        };
        struct kafka_req_header h;
        assert_int_equal(kafka_frame_size(frame, sizeof(frame), 100), sizeof(frame));
        ssize_t hn = kafka_req_header_decode(&h, frame + 4, sizeof(frame) - 4);
        assert_int_equal(hn, 13);
        assert_int_equal(h.header_version, 2);
        assert_int_equal(h.correlation_id, 42);
        struct kafka_msg m;
        decode_reencode(&m, h.api_key, h.api_version, KAFKA_REQUEST, frame + 4 + hn,
                        sizeof(frame) - 4 - (size_t)hn);
        const struct kafka_val *t =
            kafka_val_array_elem(kafka_val_array(m.root, KAFKA_METADATA_REQ_TOPICS), 0);
        assert_str(kafka_val_get_str(t, KAFKA_METADATA_REQ_TOPICS_NAME), "foo");
        assert_true(kafka_val_get_bool(m.root, KAFKA_METADATA_REQ_ALLOW_AUTO_TOPIC_CREATION));
}

static void check_produce(const struct kafka_msg *m, const uint8_t *body, size_t batch_off)
{
        assert_int_equal(kafka_val_get_str(m->root, KAFKA_PRODUCE_REQ_TRANSACTIONAL_ID).len, -1);
        assert_int_equal(kafka_val_get_int16(m->root, KAFKA_PRODUCE_REQ_ACKS), -1);
        assert_int_equal(kafka_val_get_int32(m->root, KAFKA_PRODUCE_REQ_TIMEOUT_MS), 30000);
        const struct kafka_val *t =
            kafka_val_array_elem(kafka_val_array(m->root, KAFKA_PRODUCE_REQ_TOPIC_DATA), 0);
        assert_str(kafka_val_get_str(t, KAFKA_PRODUCE_REQ_TOPIC_DATA_NAME), "test");
        const struct kafka_val *p = kafka_val_array_elem(
            kafka_val_array(t, KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA), 0);
        assert_int_equal(kafka_val_get_int32(p, KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA_INDEX),
                         0);
        struct kafka_str rec =
            kafka_val_get_str(p, KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA_RECORDS);
        /* Zero copy: the records are a view into the request buffer. */
        assert_ptr_equal(rec.ptr, body + batch_off);
        assert_int_equal(rec.len, sizeof(batch));
}

static void test_produce_request_v3(void **state)
{
        (void)state;
        uint8_t body[128];
        static const uint8_t head[] = {
            0xff, 0xff,                                               /* transactional_id null */
            0xff, 0xff,                                               /* acks -1 */
            0x00, 0x00, 0x75, 0x30,                                   /* timeout 30000 */
            0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 't',  'e',  's', 't', /* [ "test" */
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,           /* [ partition 0 */
            0x00, 0x00, 0x00, 0x4a,                                   /* records: 74 bytes */
        };
        memcpy(body, head, sizeof(head));
        memcpy(body + sizeof(head), batch, sizeof(batch));
        size_t len = sizeof(head) + sizeof(batch);
        struct kafka_msg m;
        decode_reencode(&m, KAFKA_API_PRODUCE, 3, KAFKA_REQUEST, body, len);
        check_produce(&m, body, sizeof(head));
        for (size_t cut = 0; cut < len; cut++)
                assert_int_equal(
                    kafka_msg_decode(&m, &arena, KAFKA_API_PRODUCE, 3, KAFKA_REQUEST, body, cut),
                    -EBADMSG);
}

static void test_produce_request_v9(void **state)
{
        (void)state;
        uint8_t body[128];
        static const uint8_t head[] = {
            0x00,                              /* transactional_id null (compact) */
            0xff, 0xff,                        /* acks -1 */
            0x00, 0x00, 0x75, 0x30,            /* timeout 30000 */
            0x02, 0x05, 't',  'e',  's',  't', /* [ "test" */
            0x02, 0x00, 0x00, 0x00, 0x00,      /* [ partition 0 */
            0x4b,                              /* records: compact 74 + 1 */
        };
        static const uint8_t tail[] = {0x00, 0x00, 0x00}; /* partition, topic, body tags */
        memcpy(body, head, sizeof(head));
        memcpy(body + sizeof(head), batch, sizeof(batch));
        memcpy(body + sizeof(head) + sizeof(batch), tail, sizeof(tail));
        size_t len = sizeof(head) + sizeof(batch) + sizeof(tail);
        struct kafka_msg m;
        decode_reencode(&m, KAFKA_API_PRODUCE, 9, KAFKA_REQUEST, body, len);
        check_produce(&m, body, sizeof(head));
        for (size_t cut = 0; cut < len; cut++)
                assert_int_equal(
                    kafka_msg_decode(&m, &arena, KAFKA_API_PRODUCE, 9, KAFKA_REQUEST, body, cut),
                    -EBADMSG);

        /* A fixed arena that cannot hold the tree is an error, not a crash. */
        uint8_t small[64];
        struct kafka_arena a;
        kafka_arena_init(&a, small, sizeof(small));
        assert_int_equal(kafka_msg_decode(&m, &a, KAFKA_API_PRODUCE, 9, KAFKA_REQUEST, body, len),
                         -ENOMEM);
}

static void test_fetch_response_v4(void **state)
{
        (void)state;
        static const uint8_t head[] = {
            0x00, 0x00, 0x00, 0x7e, /* size 126 */
            0x00, 0x00, 0x00, 0x05, /* correlation id (header v0) */
            0x00, 0x00, 0x00, 0x00, /* throttle_time_ms */
            0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 't',  'e',  's', 't', /* [ "test" */
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,           /* [ partition 0 */
            0x00, 0x00,                                               /* error_code */
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,           /* high_watermark 1 */
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,           /* last_stable_offset 1 */
            0xff, 0xff, 0xff, 0xff, /* aborted_transactions null */
            0x00, 0x00, 0x00, 0x4a, /* records: 74 bytes */
        };
        uint8_t want[160];
        memcpy(want, head, sizeof(head));
        memcpy(want + sizeof(head), batch, sizeof(batch));
        size_t len = sizeof(head) + sizeof(batch);

        struct kafka_msg m;
        assert_int_equal(kafka_msg_init(&m, &arena, KAFKA_API_FETCH, 4, KAFKA_RESPONSE), 0);
        struct kafka_val *t = kafka_val_array_init(&arena, m.root, KAFKA_FETCH_RESP_RESPONSES, 1);
        kafka_val_set_cstr(t, KAFKA_FETCH_RESP_RESPONSES_TOPIC, "test");
        struct kafka_val *p =
            kafka_val_array_init(&arena, t, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS, 1);
        kafka_val_set_int64(p, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_HIGH_WATERMARK, 1);
        kafka_val_set_int64(p, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_LAST_STABLE_OFFSET, 1);
        p[KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_ABORTED_TRANSACTIONS].len = -1;
        kafka_val_set_str(p, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_RECORDS, batch, sizeof(batch));

        uint8_t out[160];
        assert_int_equal(kafka_response_encode(&m, 5, out, sizeof(out)), len);
        assert_memory_equal(out, want, len);
        assert_int_equal(len, 130);

        struct kafka_msg d;
        decode_reencode(&d, KAFKA_API_FETCH, 4, KAFKA_RESPONSE, want + 8, len - 8);
}

/* Joins what kafka_response_encode_segs wrote and the pieces it left out. */
static size_t join_segs(uint8_t *dst, const uint8_t *out, size_t n, const struct kafka_seg *seg,
                        int nseg)
{
        size_t at = 0, k = 0;
        for (int i = 0; i < nseg; i++) {
                memcpy(dst + k, out + at, seg[i].at - at);
                k += seg[i].at - at;
                memcpy(dst + k, seg[i].ptr, seg[i].len);
                k += seg[i].len;
                at = seg[i].at;
        }
        memcpy(dst + k, out + at, n - at);
        return k + n - at;
}

/* Fetch records sent as separate pieces must make the very bytes of the
 * copied encoding: big values left out (in order, at their places), small
 * ones and those past seg_max inline; the size prefix counts everything. */
static void test_fetch_response_segs(void **state)
{
        (void)state;
        static uint8_t recs[3][1500];
        static const uint32_t lens[3] = {600, 100, 1500};
        for (int i = 0; i < 3; i++)
                for (uint32_t j = 0; j < lens[i]; j++)
                        recs[i][j] = (uint8_t)(i * 31 + j);
        for (int16_t v = 4; v <= 12; v += 8) {
                struct kafka_msg m;
                assert_int_equal(kafka_msg_init(&m, &arena, KAFKA_API_FETCH, v, KAFKA_RESPONSE), 0);
                struct kafka_val *t =
                    kafka_val_array_init(&arena, m.root, KAFKA_FETCH_RESP_RESPONSES, 1);
                kafka_val_set_cstr(t, KAFKA_FETCH_RESP_RESPONSES_TOPIC, "test");
                kafka_val_array_init(&arena, t, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS, 3);
                for (int i = 0; i < 3; i++) {
                        struct kafka_val *p = kafka_val_array_elem(
                            kafka_val_array(t, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS), i);
                        kafka_val_set_int32(
                            p, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_PARTITION_INDEX, i);
                        kafka_val_array_init(
                            &arena, p, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_ABORTED_TRANSACTIONS,
                            0);
                        kafka_val_set_str(p, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_RECORDS, recs[i],
                                          (int32_t)lens[i]);
                }
                static uint8_t want[4096], out[4096], got[4096];
                ssize_t wn = kafka_response_encode(&m, 7, want, sizeof(want));
                assert_true(wn > 2200);
                for (int max = 0; max <= 3; max++) {
                        struct kafka_seg seg[3];
                        int nseg = -1;
                        ssize_t n =
                            kafka_response_encode_segs(&m, 7, out, sizeof(out), seg, max, &nseg);
                        assert_true(n > 0);
                        /* 600 and 1500 are over KAFKA_SEG_MIN_BYTES, 100 is not */
                        assert_int_equal(nseg, max < 2 ? max : 2);
                        if (nseg >= 1)
                                assert_ptr_equal(seg[0].ptr, recs[0]);
                        if (nseg == 2)
                                assert_ptr_equal(seg[1].ptr, recs[2]);
                        assert_int_equal(join_segs(got, out, (size_t)n, seg, nseg), wn);
                        assert_memory_equal(got, want, (size_t)wn);
                }
        }
}

/* Writing null where the version forbids it is the caller's bug: refused. */
static void test_encode_rejects_bad_null(void **state)
{
        (void)state;
        struct kafka_msg m;
        assert_int_equal(kafka_msg_init(&m, &arena, KAFKA_API_METADATA, 0, KAFKA_REQUEST), 0);
        m.root[KAFKA_METADATA_REQ_TOPICS].len = -1;
        uint8_t out[16];
        assert_int_equal(kafka_msg_encode(&m, out, sizeof(out)), -EINVAL);
        assert_int_equal(kafka_msg_init(&m, &arena, KAFKA_API_METADATA, 99, KAFKA_REQUEST),
                         -ENOTSUP);
}

static void test_header_versions(void **state)
{
        (void)state;
        assert_int_equal(kafka_req_header_version(KAFKA_API_PRODUCE, 8), 1);
        assert_int_equal(kafka_req_header_version(KAFKA_API_PRODUCE, 9), 2);
        assert_int_equal(kafka_req_header_version(KAFKA_API_FETCH, 11), 1);
        assert_int_equal(kafka_req_header_version(KAFKA_API_FETCH, 12), 2);
        assert_int_equal(kafka_resp_header_version(KAFKA_API_FETCH, 11), 0);
        assert_int_equal(kafka_resp_header_version(KAFKA_API_FETCH, 12), 1);
        assert_int_equal(kafka_resp_header_version(KAFKA_API_API_VERSIONS, 4), 0);
        assert_int_equal(kafka_req_header_version(4, 0), -ENOTSUP); /* LeaderAndIsr: not ours */
        static const uint8_t req[] = {0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09};
        struct kafka_req_header h;
        assert_int_equal(kafka_req_header_decode(&h, req, sizeof(req)), -ENOTSUP);
        assert_int_equal(h.correlation_id, 9);
        assert_int_equal(kafka_req_header_decode(&h, req, 7), -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup(test_api_versions_request_v3, setup),
            cmocka_unit_test_setup(test_api_versions_request_unknown_tag, setup),
            cmocka_unit_test_setup(test_api_versions_response_v3, setup),
            cmocka_unit_test_setup(test_api_versions_response_v0_unsupported, setup),
            cmocka_unit_test_setup(test_metadata_request_v1, setup),
            cmocka_unit_test_setup(test_metadata_request_v9, setup),
            cmocka_unit_test_setup(test_produce_request_v3, setup),
            cmocka_unit_test_setup(test_produce_request_v9, setup),
            cmocka_unit_test_setup(test_fetch_response_v4, setup),
            cmocka_unit_test_setup(test_fetch_response_segs, setup),
            cmocka_unit_test_setup(test_encode_rejects_bad_null, setup),
            cmocka_unit_test_setup(test_header_versions, setup),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
