/* Field tables as RabbitMQ reads them: every tag encodes to the bytes of
 * NOTES.md section 3 and iterates back to its value, nesting is bounded, and
 * malformed tables are a SYNTAX_ERROR (502), never a crash. */
#include <errno.h>

#include "amqp_codec.h"
#include "amqp_test.h"

// clang-format off
static const uint8_t every_type[] = {
	0x01, 't', 't', 0x01,
	0x01, 'b', 'b', 0xfe,
	0x01, 'B', 'B', 0xc8,
	0x01, 's', 's', 0xfe, 0xd4,
	0x01, 'u', 'u', 0xfd, 0xe8,
	0x01, 'I', 'I', 0xff, 0xfe, 0xee, 0x90,
	0x01, 'i', 'i', 0xee, 0x6b, 0x28, 0x00,
	0x01, 'l', 'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb,
	0x01, 'L', 'L', 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x01, 'f', 'f', 0x3f, 0xc0, 0x00, 0x00,
	0x01, 'd', 'd', 0xc0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x01, 'D', 'D', 0x02, 0x00, 0x00, 0x30, 0x39,
	0x01, 'S', 'S', 0x00, 0x00, 0x00, 0x03, 's', 't', 'r',
	0x01, 'x', 'x', 0x00, 0x00, 0x00, 0x02, 0x00, 0xff,
	0x01, 'T', 'T', 0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00,
	0x01, 'V', 'V',
	0x01, 'F', 'F', 0x00, 0x00, 0x00, 0x03, 0x01, 'n', 'V',
	0x01, 'A', 'A', 0x00, 0x00, 0x00, 0x12,
		't', 0x00,
		'S', 0x00, 0x00, 0x00, 0x01, 'a',
		'F', 0x00, 0x00, 0x00, 0x00,
		'A', 0x00, 0x00, 0x00, 0x00,
};
// clang-format on

static int write_every_type(uint8_t *buf, size_t cap, struct amqp_bytes *out)
{
        struct amqp_table_writer w;
        amqp_table_writer_init(&w, buf, cap);
        const struct amqp_field scalars[] = {
            {.name = amqp_cstr("t"), .tag = 't', .v.u = 1},
            {.name = amqp_cstr("b"), .tag = 'b', .v.i = -2},
            {.name = amqp_cstr("B"), .tag = 'B', .v.u = 200},
            {.name = amqp_cstr("s"), .tag = 's', .v.i = -300},
            {.name = amqp_cstr("u"), .tag = 'u', .v.u = 65000},
            {.name = amqp_cstr("I"), .tag = 'I', .v.i = -70000},
            {.name = amqp_cstr("i"), .tag = 'i', .v.u = 4000000000u},
            {.name = amqp_cstr("l"), .tag = 'l', .v.i = -5},
            {.name = amqp_cstr("L"), .tag = 'L', .v.i = 1ll << 40},
            {.name = amqp_cstr("f"), .tag = 'f', .v.f = 1.5f},
            {.name = amqp_cstr("d"), .tag = 'd', .v.d = -2.25},
            {.name = amqp_cstr("D"), .tag = 'D', .v.dec = {2, 12345}},
            {.name = amqp_cstr("S"), .tag = 'S', .v.b = amqp_cstr("str")},
            {.name = amqp_cstr("x"), .tag = 'x', .v.b = {(const uint8_t *)"\x00\xff", 2}},
            {.name = amqp_cstr("T"), .tag = 'T', .v.u = 1700000000},
            {.name = amqp_cstr("V"), .tag = 'V'},
        };
        for (size_t i = 0; i < SL_ARRAY_LEN(scalars); i++)
                amqp_table_put(&w, &scalars[i]);
        amqp_table_begin(&w, "F", 'F');
        amqp_table_put(&w, &(struct amqp_field){.name = amqp_cstr("n"), .tag = 'V'});
        amqp_table_end(&w);
        amqp_table_begin(&w, "A", 'A');
        amqp_table_put(&w, &(struct amqp_field){.name = amqp_cstr("ignored"), .tag = 't'});
        amqp_table_put_str(&w, "ignored", amqp_cstr("a"));
        amqp_table_begin(&w, "ignored", 'F');
        amqp_table_end(&w);
        amqp_table_begin(&w, "ignored", 'A');
        amqp_table_end(&w);
        amqp_table_end(&w);
        return amqp_table_writer_finish(&w, out);
}

static void test_encode_every_type(void **state)
{
        (void)state;
        uint8_t buf[256];
        struct amqp_bytes t;
        assert_int_equal(write_every_type(buf, sizeof(buf), &t), 0);
        assert_bytes_equal(t.ptr, t.len, every_type, sizeof(every_type));
        for (size_t cap = 0; cap < sizeof(every_type); cap++)
                assert_int_equal(write_every_type(buf, cap, &t), -ENOSPC);
}

static void test_iterate_every_type(void **state)
{
        (void)state;
        struct amqp_bytes t = {every_type, sizeof(every_type)};
        assert_int_equal(amqp_table_validate(t, false, AMQP_TABLE_DEPTH_MAX), 0);
        struct amqp_table_iter it;
        struct amqp_field f;
        amqp_table_iter_init(&it, t, false);
        const char *order = "tbBsuIilLfdDSxTVFA";
        for (const char *c = order; *c; c++) {
                assert_int_equal(amqp_table_next(&it, &f), 1);
                assert_int_equal(f.tag, *c);
                assert_int_equal(f.name.len, 1);
                assert_int_equal(f.name.ptr[0], *c);
                switch (f.tag) {
                case 't':
                        assert_int_equal(f.v.u, 1);
                        break;
                case 'b':
                        assert_true(f.v.i == -2);
                        break;
                case 'B':
                        assert_int_equal(f.v.u, 200);
                        break;
                case 's':
                        assert_true(f.v.i == -300);
                        break;
                case 'u':
                        assert_int_equal(f.v.u, 65000);
                        break;
                case 'I':
                        assert_true(f.v.i == -70000);
                        break;
                case 'i':
                        assert_int_equal(f.v.u, 4000000000u);
                        break;
                case 'l':
                        assert_true(f.v.i == -5);
                        break;
                case 'L':
                        assert_true(f.v.i == 1ll << 40);
                        break;
                case 'f':
                        assert_true(f.v.f == 1.5f);
                        break;
                case 'd':
                        assert_true(f.v.d == -2.25);
                        break;
                case 'D':
                        assert_int_equal(f.v.dec.scale, 2);
                        assert_int_equal(f.v.dec.value, 12345);
                        break;
                case 'S':
                        assert_bytes_equal(f.v.b.ptr, f.v.b.len, "str", 3);
                        break;
                case 'x':
                        assert_bytes_equal(f.v.b.ptr, f.v.b.len, "\x00\xff", 2);
                        break;
                case 'T':
                        assert_int_equal(f.v.u, 1700000000);
                        break;
                case 'F': {
                        struct amqp_field n;
                        assert_int_equal(amqp_table_find(f.v.b, "n", &n), 1);
                        assert_int_equal(n.tag, 'V');
                        break;
                }
                case 'A': {
                        struct amqp_table_iter ai;
                        struct amqp_field item;
                        amqp_table_iter_init(&ai, f.v.b, true);
                        for (const char *ic = "tSFA"; *ic; ic++) {
                                assert_int_equal(amqp_table_next(&ai, &item), 1);
                                assert_int_equal(item.tag, *ic);
                                assert_int_equal(item.name.len, 0);
                        }
                        assert_int_equal(amqp_table_next(&ai, &item), 0);
                        break;
                }
                }
        }
        assert_int_equal(amqp_table_next(&it, &f), 0);
        assert_int_equal(amqp_table_find(t, "missing", &f), 0);
}

/* Nested tables: depth AMQP_TABLE_DEPTH_MAX passes, one more is refused by
 * both the writer and the validator. */
static void test_depth_limit(void **state)
{
        (void)state;
        uint8_t buf[256];
        struct amqp_table_writer w;
        struct amqp_bytes t;
        amqp_table_writer_init(&w, buf, sizeof(buf));
        for (unsigned i = 0; i < AMQP_TABLE_DEPTH_MAX; i++)
                amqp_table_begin(&w, "n", i % 2 ? 'A' : 'F');
        for (unsigned i = 0; i < AMQP_TABLE_DEPTH_MAX; i++)
                amqp_table_end(&w);
        assert_int_equal(amqp_table_writer_finish(&w, &t), 0);
        assert_int_equal(amqp_table_validate(t, false, AMQP_TABLE_DEPTH_MAX), 0);
        assert_int_equal(amqp_table_validate(t, false, AMQP_TABLE_DEPTH_MAX - 1),
                         -AMQP_SYNTAX_ERROR);

        amqp_table_writer_init(&w, buf, sizeof(buf));
        for (unsigned i = 0; i <= AMQP_TABLE_DEPTH_MAX; i++)
                amqp_table_begin(&w, "n", 'F');
        assert_int_equal(amqp_table_writer_finish(&w, &t), -EINVAL);

        /* A decoded method refuses a table nested one level too deep. */
        uint8_t deep[512];
        size_t n = 0;
        for (unsigned i = 0; i <= AMQP_TABLE_DEPTH_MAX; i++) {
                size_t len = (AMQP_TABLE_DEPTH_MAX - i) * 7;
                uint8_t e[] = {0x01, 'n', 'F', 0, 0, (uint8_t)(len >> 8), (uint8_t)len};
                memcpy(deep + n, e, sizeof(e));
                n += sizeof(e);
        }
        assert_int_equal(amqp_table_validate((struct amqp_bytes){deep, (uint32_t)n}, false,
                                             AMQP_TABLE_DEPTH_MAX),
                         -AMQP_SYNTAX_ERROR);
        assert_int_equal(amqp_table_validate((struct amqp_bytes){deep, (uint32_t)n}, false,
                                             AMQP_TABLE_DEPTH_MAX + 1),
                         0);
}

static void test_malformed(void **state)
{
        (void)state;
        static const struct {
                const char *what;
                const uint8_t *p;
                uint32_t n;
                bool array;
        } cases[] = {
            {"name past end",
             (const uint8_t *)"\x05"
                              "a",
             2, false},
            {"missing tag",
             (const uint8_t *)"\x01"
                              "a",
             2, false},
            {"short value",
             (const uint8_t *)"\x01"
                              "aI\x00\x00",
             5, false},
            {"string past end",
             (const uint8_t *)"\x01"
                              "aS\x00\x00\x00\x09x",
             8, false},
            {"length truncated",
             (const uint8_t *)"\x01"
                              "ax\x00\x00",
             5, false},
            {"unknown tag",
             (const uint8_t *)"\x01"
                              "aZ",
             3, false},
            {"spec-only U tag",
             (const uint8_t *)"\x01"
                              "aU\x00\x01",
             5, false},
            {"bad nested",
             (const uint8_t *)"\x01"
                              "aF\x00\x00\x00\x02\x01"
                              "b",
             9, false},
            {"bad array item",
             (const uint8_t *)"A\x00\x00\x00\x01"
                              "Z",
             6, true},
            {"truncated array item", (const uint8_t *)"l\x00\x00", 3, true},
        };
        for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
                struct amqp_bytes t = {cases[i].p, cases[i].n};
                if (amqp_table_validate(t, cases[i].array, AMQP_TABLE_DEPTH_MAX) !=
                    -AMQP_SYNTAX_ERROR)
                        fail_msg("accepted: %s", cases[i].what);
        }
        /* Every cut of a good table either ends on an entry boundary or fails. */
        for (uint32_t cut = 0; cut < sizeof(every_type); cut++) {
                int rc = amqp_table_validate((struct amqp_bytes){every_type, cut}, false, 8);
                assert_true(rc == 0 || rc == -AMQP_SYNTAX_ERROR);
        }
}

static void test_writer_misuse(void **state)
{
        (void)state;
        uint8_t buf[512];
        struct amqp_table_writer w;
        struct amqp_bytes t;
        char name[257];
        memset(name, 'k', 256);
        name[256] = 0;
        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_put_bool(&w, name, true);
        assert_int_equal(amqp_table_writer_finish(&w, &t), -EINVAL);
        name[255] = 0;
        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_put_bool(&w, name, true);
        assert_int_equal(amqp_table_writer_finish(&w, &t), 0);
        assert_int_equal(t.len, 1 + 255 + 2);

        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_end(&w);
        assert_int_equal(amqp_table_writer_finish(&w, &t), -EINVAL);
        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_begin(&w, "open", 'F');
        assert_int_equal(amqp_table_writer_finish(&w, &t), -EINVAL);
        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_put(&w, &(struct amqp_field){.name = amqp_cstr("z"), .tag = 'Z'});
        assert_int_equal(amqp_table_writer_finish(&w, &t), -EINVAL);
        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_begin(&w, "s", 'S');
        assert_int_equal(amqp_table_writer_finish(&w, &t), -EINVAL);
}

/* The x-death shape (NOTES.md / issue 7): an array of tables with a nested
 * routing-keys array, written once and read back through find. */
static void test_x_death_shape(void **state)
{
        (void)state;
        uint8_t buf[256];
        struct amqp_table_writer w;
        struct amqp_bytes t;
        amqp_table_writer_init(&w, buf, sizeof(buf));
        amqp_table_begin(&w, "x-death", 'A');
        amqp_table_begin(&w, NULL, 'F');
        amqp_table_put_i64(&w, "count", 1);
        amqp_table_put_str(&w, "reason", amqp_cstr("rejected"));
        amqp_table_put_str(&w, "queue", amqp_cstr("q"));
        amqp_table_put(&w, &(struct amqp_field){.name = amqp_cstr("time"), .tag = 'T', .v.u = 5});
        amqp_table_put_str(&w, "exchange", amqp_cstr(""));
        amqp_table_begin(&w, "routing-keys", 'A');
        amqp_table_put_str(&w, NULL, amqp_cstr("rk"));
        amqp_table_end(&w);
        amqp_table_end(&w);
        amqp_table_end(&w);
        assert_int_equal(amqp_table_writer_finish(&w, &t), 0);
        assert_int_equal(amqp_table_validate(t, false, AMQP_TABLE_DEPTH_MAX), 0);

        struct amqp_field xd, entry, count;
        struct amqp_table_iter it;
        assert_int_equal(amqp_table_find(t, "x-death", &xd), 1);
        assert_int_equal(xd.tag, 'A');
        amqp_table_iter_init(&it, xd.v.b, true);
        assert_int_equal(amqp_table_next(&it, &entry), 1);
        assert_int_equal(entry.tag, 'F');
        assert_int_equal(amqp_table_find(entry.v.b, "count", &count), 1);
        assert_int_equal(count.tag, 'l');
        assert_true(count.v.i == 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_encode_every_type), cmocka_unit_test(test_iterate_every_type),
            cmocka_unit_test(test_depth_limit),       cmocka_unit_test(test_malformed),
            cmocka_unit_test(test_writer_misuse),     cmocka_unit_test(test_x_death_shape),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
