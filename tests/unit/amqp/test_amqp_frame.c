/* The frame parser gives the same frames whatever the chunking: whole input,
 * one byte at a time, and every two-chunk split; malformed input fails with
 * 501 (or a bad protocol header) at the offending byte, at every chunking. */
#include <errno.h>
#include <stdlib.h>

#include "amqp_codec.h"
#include "amqp_frame.h"
#include "amqp_test.h"
#include "amqp_golden.h"

#define REC_MAX 32

struct rec {
        unsigned n;
        struct {
                uint8_t type;
                uint16_t channel;
                uint32_t size;
                uint8_t payload[1024];
        } f[REC_MAX];
        int rc; /* final status: AGAIN, or the error */
        uint64_t err_offset;
        unsigned protocol; /* AMQP_PARSE_PROTOCOL events */
        unsigned views;    /* frames delivered without a copy */
};

/* Feeds in[0..n) as chunks cut at cuts[0..ncuts), lending a buffer only when
 * the parser asks for one (lazy) or from the start. Chunks are copied into a
 * fresh allocation each, so a view that outlives its chunk trips ASan. */
static void run(const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts, bool lazy,
                uint32_t frame_max, struct rec *r)
{
        static uint8_t asm_buf[8192];
        struct amqp_parser p;
        memset(r, 0, sizeof(*r));
        amqp_parser_init(&p, frame_max, true);
        if (!lazy)
                assert_int_equal(amqp_parser_set_buffer(&p, asm_buf, sizeof(asm_buf)), 0);
        size_t start = 0;
        for (size_t c = 0; c <= ncuts; c++) {
                size_t end = c < ncuts ? cuts[c] : n;
                size_t len = end - start;
                uint8_t *chunk = malloc(len ? len : 1);
                memcpy(chunk, in + start, len);
                const uint8_t *d = chunk;
                for (;;) {
                        struct amqp_frame f;
                        size_t used;
                        int rc = amqp_parser_feed(&p, d, len, &used, &f);
                        assert_true(used <= len);
                        d += used;
                        len -= used;
                        if (rc == AMQP_PARSE_FRAME) {
                                assert_true(r->n < REC_MAX);
                                assert_true(f.size <= sizeof(r->f[0].payload));
                                r->f[r->n].type = f.type;
                                r->f[r->n].channel = f.channel;
                                r->f[r->n].size = f.size;
                                memcpy(r->f[r->n].payload, f.payload, f.size);
                                r->views += !f.assembled;
                                r->n++;
                                if (lazy && f.assembled)
                                        assert_ptr_equal(amqp_parser_take_buffer(&p), asm_buf);
                                continue;
                        }
                        if (rc == AMQP_PARSE_PROTOCOL) {
                                r->protocol++;
                                continue;
                        }
                        if (rc == AMQP_PARSE_NEED_BUFFER) {
                                assert_true(lazy);
                                assert_null(amqp_parser_take_buffer(&p));
                                assert_int_equal(
                                    amqp_parser_set_buffer(&p, asm_buf, sizeof(asm_buf)), 0);
                                continue;
                        }
                        r->rc = rc;
                        if (rc < 0) {
                                r->err_offset = p.err_offset;
                                /* Errors are sticky. */
                                assert_int_equal(amqp_parser_feed(&p, d, len, &used, &f), rc);
                                free(chunk);
                                return;
                        }
                        assert_int_equal(rc, AMQP_PARSE_AGAIN);
                        assert_int_equal(len, 0);
                        break;
                }
                free(chunk);
                start = end;
        }
}

static void assert_same(const struct rec *a, const struct rec *b)
{
        assert_int_equal(a->rc, b->rc);
        assert_int_equal(a->err_offset, b->err_offset);
        assert_int_equal(a->protocol, b->protocol);
        assert_int_equal(a->n, b->n);
        for (unsigned i = 0; i < a->n; i++) {
                assert_int_equal(a->f[i].type, b->f[i].type);
                assert_int_equal(a->f[i].channel, b->f[i].channel);
                assert_bytes_equal(a->f[i].payload, a->f[i].size, b->f[i].payload, b->f[i].size);
        }
}

/* Whole, 1 byte at a time (lazy and lent buffer), and every split point. */
static void check_all_chunkings(const uint8_t *in, size_t n, uint32_t frame_max, struct rec *whole)
{
        static struct rec other;
        run(in, n, NULL, 0, true, frame_max, whole);
        assert_int_equal(whole->views, whole->n); /* one chunk: nothing copied */

        size_t *cuts = malloc(n * sizeof(*cuts));
        for (size_t i = 0; i + 1 < n; i++)
                cuts[i] = i + 1;
        for (int lazy = 0; lazy < 2; lazy++) {
                run(in, n, cuts, n ? n - 1 : 0, lazy, frame_max, &other);
                assert_same(whole, &other);
        }
        free(cuts);
        for (size_t k = 0; k <= n; k++) {
                run(in, n, &k, 1, true, frame_max, &other);
                assert_same(whole, &other);
        }
}

static const uint8_t stream[] = AMQP_PROTOCOL_HEADER GOLDEN_CONNECTION_START GOLDEN_CONNECTION_TUNE
    GOLDEN_BASIC_PUBLISH GOLDEN_HEADER_TEXT GOLDEN_BODY_HELLO GOLDEN_HEARTBEAT GOLDEN_BASIC_DELIVER
        GOLDEN_HEADER_PERSISTENT GOLDEN_BASIC_ACK;

static void test_stream_every_chunking(void **state)
{
        (void)state;
        static struct rec whole;
        size_t n = sizeof(stream) - 1;
        check_all_chunkings(stream, n, AMQP_FRAME_MIN_SIZE, &whole);
        assert_int_equal(whole.rc, AMQP_PARSE_AGAIN);
        assert_int_equal(whole.protocol, 1);
        assert_int_equal(whole.n, 9);
        static const uint8_t types[] = {1, 1, 1, 2, 3, 8, 1, 2, 1};
        for (unsigned i = 0; i < whole.n; i++)
                assert_int_equal(whole.f[i].type, types[i]);
        assert_int_equal(whole.f[4].size, 5);
        assert_memory_equal(whole.f[4].payload, "hello", 5);
        assert_int_equal(whole.f[5].size, 0);
        assert_int_equal(whole.f[2].channel, 1);
        /* Each frame's payload decodes as what it is. */
        struct amqp_method m;
        struct amqp_header h;
        assert_int_equal(amqp_method_decode(whole.f[0].payload, whole.f[0].size, &m), 0);
        assert_int_equal(m.key, AMQP_CONNECTION_START);
        assert_int_equal(amqp_header_decode(whole.f[7].payload, whole.f[7].size, &h), 0);
        assert_int_equal(amqp_method_decode(whole.f[8].payload, whole.f[8].size, &m), 0);
        assert_int_equal(m.key, AMQP_BASIC_ACK);
}

/* A header split from its payload still yields a view into the next chunk. */
static void test_split_header_payload_view(void **state)
{
        (void)state;
        static const uint8_t ack[] = GOLDEN_BASIC_ACK;
        struct amqp_parser p;
        struct amqp_frame f;
        size_t used;
        amqp_parser_init(&p, 4096, false);
        assert_int_equal(amqp_parser_feed(&p, ack, 3, &used, &f), AMQP_PARSE_AGAIN);
        assert_int_equal(amqp_parser_feed(&p, ack + 3, 4, &used, &f), AMQP_PARSE_AGAIN);
        assert_int_equal(amqp_parser_feed(&p, ack + 7, sizeof(ack) - 8, &used, &f),
                         AMQP_PARSE_FRAME);
        assert_false(f.assembled);
        assert_ptr_equal(f.payload, ack + 7);
        assert_int_equal(used, sizeof(ack) - 8);
}

static struct rec bad_whole;

static void check_error(const uint8_t *in, size_t n, uint32_t frame_max, int rc, uint64_t at)
{
        check_all_chunkings(in, n, frame_max, &bad_whole);
        assert_int_equal(bad_whole.rc, rc);
        assert_int_equal(bad_whole.err_offset, at);
}

static void test_bad_frame_end(void **state)
{
        (void)state;
        uint8_t in[] = AMQP_PROTOCOL_HEADER GOLDEN_BASIC_ACK;
        size_t n = sizeof(in) - 1;
        in[n - 1] = 0x00;
        check_error(in, n, 4096, -AMQP_FRAME_ERROR, n - 1);
        /* Missing frame-end: the next frame's type byte is where it should be. */
        static const uint8_t missing[] =
            AMQP_PROTOCOL_HEADER "\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50\x00\x00\x00\x00\x00"
                                 "\x00\x00\x64\x00" GOLDEN_HEARTBEAT;
        check_error(missing, sizeof(missing) - 1, 4096, -AMQP_FRAME_ERROR, 8 + 20);
        assert_int_equal(bad_whole.n, 0);
}

static void test_unknown_frame_type(void **state)
{
        (void)state;
        static const uint8_t in[] =
            AMQP_PROTOCOL_HEADER GOLDEN_HEARTBEAT "\x04\x00\x00\x00\x00\x00\x00\xce";
        check_error(in, sizeof(in) - 1, 4096, -AMQP_FRAME_ERROR, 16);
        assert_int_equal(bad_whole.n, 1); /* the heartbeat before it got through */
}

/* frame_max counts the 8 overhead bytes: payload frame_max - 8 passes, one
 * more byte fails at the size field, before any payload is read. */
static void test_frame_max_boundary(void **state)
{
        (void)state;
        static uint8_t in[8 + 8 + 600], body[600];
        const uint32_t frame_max = 512;
        for (uint32_t size = frame_max - 9; size <= frame_max - 7; size++) {
                memcpy(in, AMQP_PROTOCOL_HEADER, 8);
                int n = amqp_frame_encode(AMQP_FRAME_BODY, 1, body, size, in + 8, sizeof(in) - 8);
                assert_int_equal(n, size + 8);
                struct rec r;
                run(in, 8 + (size_t)n, NULL, 0, true, frame_max, &r);
                if (size <= frame_max - 8) {
                        assert_int_equal(r.rc, AMQP_PARSE_AGAIN);
                        assert_int_equal(r.n, 1);
                } else {
                        check_error(in, 8 + (size_t)n, frame_max, -AMQP_FRAME_ERROR, 8 + 3);
                }
        }
}

static void test_protocol_headers(void **state)
{
        (void)state;
        static const uint8_t http[] = "GET / HTTP/1.1\r\n";
        check_error(http, sizeof(http) - 1, 4096, AMQP_PARSE_BAD_PROTOCOL, 0);
        static const uint8_t amqp10[] = "AMQP\x03\x01\x00\x00";
        check_error(amqp10, 8, 4096, AMQP_PARSE_BAD_PROTOCOL, 4);
        static const uint8_t v0_9_0[] = "AMQP\x00\x00\x09\x00";
        check_error(v0_9_0, 8, 4096, AMQP_PARSE_BAD_PROTOCOL, 7);
        /* RabbitMQ accepts the 0-9 header as 0-9-1. */
        static const uint8_t v0_9[] = "AMQP\x01\x01\x00\x09" GOLDEN_HEARTBEAT;
        struct rec r;
        check_all_chunkings(v0_9, sizeof(v0_9) - 1, 4096, &r);
        assert_int_equal(r.protocol, 1);
        assert_int_equal(r.n, 1);
}

static void test_buffer_rules(void **state)
{
        (void)state;
        uint8_t small[100], big[4096];
        struct amqp_parser p;
        amqp_parser_init(&p, 4096, false);
        assert_int_equal(amqp_parser_set_buffer(&p, small, sizeof(small)), -EINVAL);
        assert_int_equal(amqp_parser_set_buffer(&p, big, 4088), 0);
        assert_int_equal(amqp_parser_set_frame_max(&p, 4097), -EINVAL);
        assert_int_equal(amqp_parser_set_frame_max(&p, 4), -EINVAL);
        assert_int_equal(amqp_parser_set_frame_max(&p, 4096), 0);
        /* Mid-assembly the buffer can be neither swapped nor taken. */
        static const uint8_t ack[] = GOLDEN_BASIC_ACK;
        struct amqp_frame f;
        size_t used;
        assert_int_equal(amqp_parser_feed(&p, ack, 10, &used, &f), AMQP_PARSE_AGAIN);
        assert_null(amqp_parser_take_buffer(&p));
        assert_int_equal(amqp_parser_set_buffer(&p, big + 1, 4088), -EBUSY);
        assert_int_equal(amqp_parser_feed(&p, ack + 10, sizeof(ack) - 11, &used, &f),
                         AMQP_PARSE_FRAME);
        assert_true(f.assembled);
        assert_ptr_equal(f.payload, big);
        assert_ptr_equal(amqp_parser_take_buffer(&p), big);
        assert_null(amqp_parser_take_buffer(&p));
        /* frame_max 0: only the lent buffer limits split frames. */
        amqp_parser_init(&p, 0, false);
        assert_int_equal(amqp_parser_set_buffer(&p, small, sizeof(small)), 0);
        static uint8_t large[8 + 200];
        int n = amqp_frame_encode(AMQP_FRAME_BODY, 1, big, 200, large, sizeof(large));
        assert_int_equal(amqp_parser_feed(&p, large, (size_t)n, &used, &f), AMQP_PARSE_FRAME);
        assert_int_equal(amqp_parser_feed(&p, large, 10, &used, &f), -AMQP_FRAME_ERROR);
        assert_int_equal(p.err_offset, (uint64_t)n + 7);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_stream_every_chunking),
            cmocka_unit_test(test_split_header_payload_view),
            cmocka_unit_test(test_bad_frame_end),
            cmocka_unit_test(test_unknown_frame_type),
            cmocka_unit_test(test_frame_max_boundary),
            cmocka_unit_test(test_protocol_headers),
            cmocka_unit_test(test_buffer_rules),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
