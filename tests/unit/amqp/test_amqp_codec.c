/* Codec behaviour beyond the golden frames: every method of the spec
 * survives encode -> decode -> encode with synthetic arguments, and
 * truncated, padded, unknown or oversized input gets the RabbitMQ reply
 * code the connection.close will carry. */
#include <errno.h>

#include "amqp_codec.h"
#include "amqp_test.h"

/* A small valid table for table-typed arguments. */
static const uint8_t synth_table[] = {0x01, 'k', 'I', 0x00, 0x00, 0x00, 0x2a};
static const uint8_t synth_longstr[] = {0x00, 0xff, 'l', 0x00, 0xce, 'x'};

/* Deterministic, distinct per method and argument so that a mix-up of
 * argument slots shows up as a mismatch. */
static void synth_args(struct amqp_method *m, unsigned seed, char strs[][64])
{
        const struct amqp_method_desc *d = m->desc;
        for (unsigned i = 0; i < d->nargs; i++) {
                uint64_t x = (uint64_t)seed * 0x9e3779b97f4a7c15ull + i * 0x1234567u;
                switch (d->args[i].type) {
                case AMQP_T_OCTET:
                        m->args[i].u = x & 0xff;
                        break;
                case AMQP_T_SHORT:
                        m->args[i].u = x & 0xffff;
                        break;
                case AMQP_T_LONG:
                        m->args[i].u = x & 0xffffffff;
                        break;
                case AMQP_T_LONGLONG:
                case AMQP_T_TIMESTAMP:
                        m->args[i].u = x;
                        break;
                case AMQP_T_BIT:
                        m->args[i].u = (seed + i) & 1;
                        break;
                case AMQP_T_SHORTSTR:
                        snprintf(strs[i], 64, "%s/%u", d->args[i].name, seed);
                        m->args[i].b = amqp_cstr(strs[i]);
                        break;
                case AMQP_T_LONGSTR:
                        m->args[i].b = (struct amqp_bytes){synth_longstr, sizeof(synth_longstr)};
                        break;
                case AMQP_T_TABLE:
                        m->args[i].b = (struct amqp_bytes){synth_table, sizeof(synth_table)};
                        break;
                default:
                        fail();
                }
        }
}

static void assert_args_equal(const struct amqp_method *a, const struct amqp_method *b)
{
        assert_int_equal(a->key, b->key);
        assert_ptr_equal(a->desc, b->desc);
        for (unsigned i = 0; i < a->desc->nargs; i++) {
                uint8_t t = a->desc->args[i].type;
                if (t == AMQP_T_SHORTSTR || t == AMQP_T_LONGSTR || t == AMQP_T_TABLE)
                        assert_bytes_equal(a->args[i].b.ptr, a->args[i].b.len, b->args[i].b.ptr,
                                           b->args[i].b.len);
                else
                        assert_int_equal(a->args[i].u, b->args[i].u);
        }
}

static void test_round_trip_every_method(void **state)
{
        (void)state;
        uint8_t enc[1024], re[1024];
        char strs[AMQP_ARGS_MAX][64];
        for (unsigned k = 0; k < AMQP_METHOD_COUNT; k++) {
                for (unsigned seed = 0; seed < 4; seed++) {
                        struct amqp_method m, d;
                        assert_int_equal(amqp_method_init(&m, amqp_method_descs[k].key), 0);
                        synth_args(&m, seed + k * 4, strs);
                        int n = amqp_method_encode(&m, enc, sizeof(enc));
                        assert_true(n >= 4);
                        assert_int_equal(amqp_method_decode(enc, (size_t)n, &d), 0);
                        assert_args_equal(&m, &d);
                        int n2 = amqp_method_encode(&d, re, sizeof(re));
                        assert_bytes_equal(re, (size_t)n2, enc, (size_t)n);

                        /* Every strict prefix is truncated; one extra byte is padding. */
                        for (int cut = 0; cut < n; cut++)
                                assert_int_equal(amqp_method_decode(enc, (size_t)cut, &d),
                                                 -AMQP_FRAME_ERROR);
                        enc[n] = 0;
                        assert_int_equal(amqp_method_decode(enc, (size_t)n + 1, &d),
                                         -AMQP_FRAME_ERROR);
                        /* Every smaller output buffer is refused, never overrun. */
                        for (int cap = 0; cap < n; cap++)
                                assert_int_equal(amqp_method_encode(&m, re, (size_t)cap), -ENOSPC);
                }
        }
}

static void test_defaults_from_spec(void **state)
{
        (void)state;
        struct amqp_method m;
        assert_int_equal(amqp_method_init(&m, AMQP_EXCHANGE_DECLARE), 0);
        assert_int_equal(m.args[AMQP_EXCHANGE_DECLARE_TYPE].b.len, 6);
        assert_memory_equal(m.args[AMQP_EXCHANGE_DECLARE_TYPE].b.ptr, "direct", 6);
        assert_int_equal(m.args[AMQP_EXCHANGE_DECLARE_ARGUMENTS].b.len, 0);
        assert_int_equal(amqp_method_init(&m, AMQP_BASIC_REJECT), 0);
        assert_int_equal(m.args[AMQP_BASIC_REJECT_REQUEUE].u, 1);
        assert_int_equal(amqp_method_init(&m, AMQP_ACCESS_REQUEST_OK), 0);
        assert_int_equal(m.args[AMQP_ACCESS_REQUEST_OK_TICKET].u, 1);
        assert_int_equal(amqp_method_init(&m, AMQP_METHOD_KEY(60, 41)), -ENOENT);
}

static void test_unknown_method(void **state)
{
        (void)state;
        struct amqp_method d;
        static const uint8_t unknown_method[] = {0x00, 0x3c, 0x00, 0x29};
        static const uint8_t unknown_class[] = {0x00, 0x63, 0x00, 0x0a};
        assert_int_equal(amqp_method_decode(unknown_method, 4, &d), -AMQP_COMMAND_INVALID);
        assert_int_equal(amqp_method_decode(unknown_class, 4, &d), -AMQP_COMMAND_INVALID);
        assert_int_equal(amqp_method_decode(unknown_class, 3, &d), -AMQP_FRAME_ERROR);
}

static void test_bad_table_argument(void **state)
{
        (void)state;
        struct amqp_method d;
        /* queue.declare with arguments {k: Z ...}: unknown tag -> 502. */
        static const uint8_t bad[] = {0x00, 0x32, 0x00, 0x0a, 0x00, 0x00, 0x01, 'q',
                                      0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 'k',  'Z'};
        assert_int_equal(amqp_method_decode(bad, sizeof(bad), &d), -AMQP_SYNTAX_ERROR);
}

static void test_access_request_bits(void **state)
{
        (void)state;
        /* access.request has 5 bits after a shortstr: one octet. */
        struct amqp_method m, d;
        uint8_t out[64];
        assert_int_equal(amqp_method_init(&m, AMQP_ACCESS_REQUEST), 0);
        int n = amqp_method_encode(&m, out, sizeof(out));
        /* realm "/data", exclusive 0, passive/active/write/read 1 -> 0x1e */
        static const uint8_t want[] = {0x00, 0x1e, 0x00, 0x0a, 0x05, '/', 'd', 'a', 't', 'a', 0x1e};
        assert_bytes_equal(out, (size_t)n, want, sizeof(want));
        /* Unused high bits are ignored on decode, as RabbitMQ does. */
        out[n - 1] |= 0xe0;
        assert_int_equal(amqp_method_decode(out, (size_t)n, &d), 0);
        assert_int_equal(d.args[AMQP_ACCESS_REQUEST_READ].u, 1);
}

static void test_encode_rejects_long_shortstr(void **state)
{
        (void)state;
        char big[256];
        memset(big, 'a', sizeof(big));
        uint8_t out[512];
        struct amqp_method m;
        assert_int_equal(amqp_method_init(&m, AMQP_BASIC_PUBLISH), 0);
        m.args[AMQP_BASIC_PUBLISH_ROUTING_KEY].b = (struct amqp_bytes){(const uint8_t *)big, 255};
        assert_int_equal(amqp_method_encode(&m, out, sizeof(out)), 4 + 2 + 1 + 256 + 1);
        m.args[AMQP_BASIC_PUBLISH_ROUTING_KEY].b.len = 256;
        assert_int_equal(amqp_method_encode(&m, out, sizeof(out)), -EINVAL);
        m.key = AMQP_METHOD_KEY(60, 41);
        assert_int_equal(amqp_method_encode(&m, out, sizeof(out)), -EINVAL);
}

static void test_header_all_properties(void **state)
{
        (void)state;
        uint8_t out[512], re[512];
        struct amqp_header h = {.class_id = AMQP_CLASS_BASIC, .weight = 0, .body_size = 1ull << 40};
        const struct amqp_class_desc *c = amqp_class_desc_find(AMQP_CLASS_BASIC);
        assert_int_equal(c->nprops, AMQP_BASIC_PROP_COUNT);
        char strs[AMQP_PROPS_MAX][16];
        for (unsigned i = 0; i < c->nprops; i++) {
                h.present |= 1u << i;
                switch (c->props[i].type) {
                case AMQP_T_SHORTSTR:
                        snprintf(strs[i], sizeof(strs[i]), "p%u", i);
                        h.props[i].b = amqp_cstr(strs[i]);
                        break;
                case AMQP_T_TABLE:
                        h.props[i].b = (struct amqp_bytes){synth_table, sizeof(synth_table)};
                        break;
                case AMQP_T_OCTET:
                        h.props[i].u = i;
                        break;
                case AMQP_T_TIMESTAMP:
                        h.props[i].u = 1700000000;
                        break;
                default:
                        fail();
                }
        }
        int n = amqp_header_encode(&h, out, sizeof(out));
        assert_true(n > 14);
        assert_int_equal(out[12] << 8 | out[13], 0xfffc); /* bits 15..2, no continuation */
        struct amqp_header d;
        assert_int_equal(amqp_header_decode(out, (size_t)n, &d), 0);
        assert_int_equal(d.present, h.present);
        assert_int_equal(d.body_size, h.body_size);
        assert_int_equal(d.props[AMQP_BASIC_PROP_TIMESTAMP].u, 1700000000);
        int n2 = amqp_header_encode(&d, re, sizeof(re));
        assert_bytes_equal(re, (size_t)n2, out, (size_t)n);

        for (int cut = 0; cut < n; cut++)
                assert_int_equal(amqp_header_decode(out, (size_t)cut, &d), -AMQP_FRAME_ERROR);
        for (int cap = 0; cap < n; cap++)
                assert_int_equal(amqp_header_encode(&h, re, (size_t)cap), -ENOSPC);
        /* Trailing bytes after the last property are tolerated. */
        out[n] = 0x55;
        assert_int_equal(amqp_header_decode(out, (size_t)n + 1, &d), 0);
}

static void test_header_bad_flags(void **state)
{
        (void)state;
        struct amqp_header d;
        uint8_t p[] = {0x00, 0x3c, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00};
        assert_int_equal(amqp_header_decode(p, sizeof(p), &d), 0);
        assert_int_equal(d.present, 0);
        p[13] = 0x02; /* bit 1: a fifteenth basic property that does not exist */
        assert_int_equal(amqp_header_decode(p, sizeof(p), &d), -AMQP_SYNTAX_ERROR);
        p[13] = 0x01; /* continuation, but basic has only 14 properties */
        assert_int_equal(amqp_header_decode(p, sizeof(p), &d), -AMQP_SYNTAX_ERROR);
        p[13] = 0x00;
        p[1] = 0x0a; /* connection has no content */
        assert_int_equal(amqp_header_decode(p, sizeof(p), &d), -AMQP_COMMAND_INVALID);

        struct amqp_header h = {.class_id = AMQP_CLASS_BASIC, .present = 1u << 14};
        uint8_t out[64];
        assert_int_equal(amqp_header_encode(&h, out, sizeof(out)), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_round_trip_every_method),
            cmocka_unit_test(test_defaults_from_spec),
            cmocka_unit_test(test_unknown_method),
            cmocka_unit_test(test_bad_table_argument),
            cmocka_unit_test(test_access_request_bits),
            cmocka_unit_test(test_encode_rejects_long_shortstr),
            cmocka_unit_test(test_header_all_properties),
            cmocka_unit_test(test_header_bad_flags),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
