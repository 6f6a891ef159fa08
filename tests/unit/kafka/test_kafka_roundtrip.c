/* Round trip of every generated message at every version: fill a tree with
 * deterministic values, encode, decode, compare the trees, re-encode and
 * compare the bytes. Catches table or runtime asymmetries the goldens miss. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kafka_codec.h"

static uint8_t arena_mem[1 << 20];
static uint8_t buf1[1 << 16], buf2[1 << 16];
static const char text[] = "abcdefghijklmnopqrstuvwxyz0123456789";
static const uint8_t uuid_pattern[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* How a variant fills: nulls where allowed, tagged fields, array sizes. */
struct fill {
        struct kafka_arena *a;
        int16_t ver;
        bool flex;
        bool nulls;
        bool tags;
        uint32_t seed;
};

static uint32_t next(struct fill *f)
{
        f->seed = f->seed * 1103515245u + 12345u;
        return f->seed >> 8;
}

static void fill_prim(struct fill *f, uint8_t type, struct kafka_val *v)
{
        uint32_t x = next(f);
        switch (type) {
        case KAFKA_T_BOOL:
                v->u.i64 = x & 1;
                break;
        case KAFKA_T_INT8:
                v->u.i64 = (int8_t)x;
                break;
        case KAFKA_T_INT16:
                v->u.i64 = (int16_t)x;
                break;
        case KAFKA_T_UINT16:
                v->u.i64 = (uint16_t)x;
                break;
        case KAFKA_T_INT32:
                v->u.i64 = (int32_t)(x * 2654435761u);
                break;
        case KAFKA_T_UINT32:
                v->u.i64 = (uint32_t)(x * 2654435761u);
                break;
        case KAFKA_T_INT64:
                v->u.i64 = (int64_t)((uint64_t)x << 32 | next(f)) - (1ll << 40);
                break;
        case KAFKA_T_FLOAT64:
                v->u.f64 = (double)x / 7.0;
                break;
        case KAFKA_T_UUID:
                v->u.ptr = uuid_pattern;
                break;
        default: /* STRING, BYTES, RECORDS */
                v->len = (int32_t)(x % (sizeof(text) - 1));
                v->u.ptr = (const uint8_t *)text;
        }
        v->flags |= KAFKA_VAL_SET;
}

static void fill_struct(struct fill *f, uint16_t sid, struct kafka_val *s)
{
        const struct kafka_struct_desc *sd = &kafka_structs[sid];
        for (unsigned i = 0; i < sd->nfields; i++) {
                const struct kafka_field *fd = &kafka_fields[sd->first + i];
                bool tagged = f->flex && fd->tag >= 0 && f->ver >= fd->tag_min;
                if (f->ver < fd->ver_min || f->ver > fd->ver_max || (tagged && !f->tags))
                        continue;
                bool null = f->nulls && f->ver >= fd->null_min && f->ver <= fd->null_max;
                if (fd->type == KAFKA_T_STRUCT) {
                        fill_struct(f, fd->sid, s[i].u.elems);
                        s[i].flags |= KAFKA_VAL_SET;
                } else if (fd->type == KAFKA_T_ARRAY && null) {
                        s[i].len = -1;
                        s[i].flags |= KAFKA_VAL_SET;
                } else if (fd->type == KAFKA_T_ARRAY) {
                        int32_t n = (int32_t)(next(f) % 3);
                        struct kafka_val *e = kafka_val_array_init(f->a, s, i, n);
                        assert_non_null(e);
                        for (int32_t k = 0; k < n; k++) {
                                if (fd->elem_type == KAFKA_T_STRUCT)
                                        fill_struct(f, fd->sid, kafka_val_array_elem(&s[i], k));
                                else
                                        fill_prim(f, fd->elem_type, &e[k]);
                        }
                } else if (null) {
                        s[i].u.ptr = NULL;
                        s[i].len = -1;
                        s[i].flags |= KAFKA_VAL_SET;
                } else {
                        fill_prim(f, fd->type, &s[i]);
                }
        }
}

static void assert_val_equal(const struct kafka_val *x, const struct kafka_val *y,
                             const char *where);

static void assert_struct_equal(uint16_t sid, const struct kafka_val *x, const struct kafka_val *y)
{
        const struct kafka_struct_desc *sd = &kafka_structs[sid];
        for (unsigned i = 0; i < sd->nfields; i++)
                assert_val_equal(&x[i], &y[i], kafka_fields[sd->first + i].name);
}

static void assert_val_equal(const struct kafka_val *x, const struct kafka_val *y,
                             const char *where)
{
        if (x->type != y->type || x->len != y->len || x->flags != y->flags || x->sid != y->sid)
                fail_msg("%s: type %d/%d len %d/%d flags %d/%d", where, x->type, y->type, x->len,
                         y->len, x->flags, y->flags);
        switch (x->type) {
        case KAFKA_T_FLOAT64:
                assert_true(x->u.f64 == y->u.f64);
                break;
        case KAFKA_T_UUID:
                assert_memory_equal(x->u.ptr, y->u.ptr, 16);
                break;
        case KAFKA_T_STRING:
        case KAFKA_T_BYTES:
        case KAFKA_T_RECORDS:
                if (x->len > 0)
                        assert_memory_equal(x->u.ptr, y->u.ptr, (size_t)x->len);
                break;
        case KAFKA_T_STRUCT:
                assert_struct_equal(x->sid, x->u.elems, y->u.elems);
                break;
        case KAFKA_T_ARRAY:
                for (int32_t k = 0; k < x->len; k++) {
                        if (x->sid == KAFKA_SID_NONE)
                                assert_val_equal(&x->u.elems[k], &y->u.elems[k], where);
                        else
                                assert_struct_equal(x->sid, kafka_val_array_elem(x, k),
                                                    kafka_val_array_elem(y, k));
                }
                break;
        default:
                if (x->u.i64 != y->u.i64)
                        fail_msg("%s: %lld != %lld", where, (long long)x->u.i64,
                                 (long long)y->u.i64);
        }
}

static void roundtrip(const struct kafka_msg_desc *d, int16_t ver, unsigned variant)
{
        struct kafka_arena a;
        kafka_arena_init(&a, arena_mem, sizeof(arena_mem));
        enum kafka_dir dir = d->is_response ? KAFKA_RESPONSE : KAFKA_REQUEST;
        struct kafka_msg m, got;
        assert_int_equal(kafka_msg_init(&m, &a, d->api_key, ver, dir), 0);
        struct fill f = {
            .a = &a,
            .ver = ver,
            .flex = d->flex_min >= 0 && ver >= d->flex_min,
            .nulls = variant & 1,
            .tags = variant & 2,
            .seed = variant * 7919u + (uint32_t)ver,
        };
        fill_struct(&f, d->sid, m.root);

        ssize_t n = kafka_msg_encode(&m, buf1, sizeof(buf1));
        if (n < 0)
                fail_msg("%s v%d variant %u: encode %zd", d->name, ver, variant, n);
        assert_int_equal(kafka_msg_size(&m), n);
        assert_int_equal(kafka_msg_decode(&got, &a, d->api_key, ver, dir, buf1, (size_t)n), n);
        assert_struct_equal(d->sid, m.root, got.root);
        assert_int_equal(kafka_msg_encode(&got, buf2, sizeof(buf2)), n);
        assert_memory_equal(buf1, buf2, (size_t)n);
        /* Every strict prefix is either truncated or, at worst, a shorter valid
         * message; it must never read past the end (ASan checks that). */
        for (ssize_t cut = 0; cut < n; cut++)
                assert_true(kafka_msg_decode(&got, &a, d->api_key, ver, dir, buf1, (size_t)cut) <
                            cut + 1);
}

static void test_roundtrip_all(void **state)
{
        (void)state;
        unsigned count = 0;
        for (unsigned i = 0; i < KAFKA_NUM_MSGS; i++) {
                const struct kafka_msg_desc *d = &kafka_msgs[i];
                for (int16_t v = d->ver_min; v <= d->ver_max; v++)
                        for (unsigned variant = 0; variant < 4; variant++, count++)
                                roundtrip(d, v, variant);
        }
        assert_true(count > 40 * 4);
        print_message("%u message/version/variant round trips\n", count);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_roundtrip_all),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
