/* Table-driven Kafka codec runtime: walks the generated schema tables
 * (kafka_msgs.c) to decode bodies into kafka_val trees and encode them back.
 * One interpreter for every api and version keeps the build small. */
#include "kafka_codec.h"

#include <string.h>

_Static_assert(sizeof(struct kafka_val) == 24, "kafka_val grew: check the layout");

static const uint8_t kafka_uuid_zero[16];

const struct kafka_msg_desc *kafka_msg_desc_find(int16_t api_key, enum kafka_dir dir)
{
        if (api_key < 0 || api_key > KAFKA_API_KEY_MAX)
                return NULL;
        int16_t idx = kafka_msg_index[api_key][dir];
        return idx < 0 ? NULL : &kafka_msgs[idx];
}

void *kafka_arena_alloc(struct kafka_arena *a, size_t bytes)
{
        size_t off = SL_ALIGN_UP(a->used, (size_t)8);
        if (off > a->cap || bytes > a->cap - off)
                return NULL;
        a->used = off + bytes;
        return a->base + off;
}

void kafka_val_set_cstr(struct kafka_val *s, unsigned id, const char *cstr)
{
        kafka_val_set_str(s, id, cstr, cstr ? (int32_t)strlen(cstr) : -1);
}

static inline bool in_range(int v, int lo, int hi)
{
        return v >= lo && v <= hi;
}

static inline bool is_flex(const struct kafka_msg_desc *d, int16_t ver)
{
        return d->flex_min >= 0 && ver >= d->flex_min;
}

/* A field is tagged (written in the trailer, not in place) in this version. */
static inline bool is_tagged(const struct kafka_field *f, int16_t ver, bool flex)
{
        return flex && f->tag >= 0 && ver >= f->tag_min;
}

static inline bool is_nullable(const struct kafka_field *f, int16_t ver)
{
        return in_range(ver, f->null_min, f->null_max);
}

/* ---- defaults ------------------------------------------------------------ */

static int struct_init(struct kafka_arena *a, uint16_t sid, struct kafka_val *out);

static int field_default(struct kafka_arena *a, const struct kafka_field *f, struct kafka_val *v)
{
        memset(v, 0, sizeof(*v));
        v->type = f->type;
        v->elem_type = f->elem_type;
        v->sid = f->sid;
        switch (f->type) {
        case KAFKA_T_FLOAT64:
                v->u.f64 = f->def_f64;
                break;
        case KAFKA_T_UUID:
                v->u.ptr = kafka_uuid_zero;
                break;
        case KAFKA_T_STRING:
        case KAFKA_T_BYTES:
        case KAFKA_T_RECORDS:
                v->u.ptr = (const uint8_t *)f->def_str;
                v->len = f->def_null ? -1 : (int32_t)strlen(f->def_str);
                break;
        case KAFKA_T_ARRAY:
                break; /* empty */
        case KAFKA_T_STRUCT: {
                uint16_t n = kafka_structs[f->sid].nfields;
                v->u.elems = kafka_arena_alloc(a, n * sizeof(struct kafka_val));
                if (!v->u.elems)
                        return -ENOMEM;
                v->len = 1;
                return struct_init(a, f->sid, v->u.elems);
        }
        default:
                v->u.i64 = f->def_int;
        }
        return 0;
}

static int struct_init(struct kafka_arena *a, uint16_t sid, struct kafka_val *out)
{
        const struct kafka_struct_desc *sd = &kafka_structs[sid];
        for (unsigned i = 0; i < sd->nfields; i++) {
                int rc = field_default(a, &kafka_fields[sd->first + i], &out[i]);
                if (rc < 0)
                        return rc;
        }
        return 0;
}

static void prim_default(uint8_t type, struct kafka_val *v)
{
        memset(v, 0, sizeof(*v));
        v->type = type;
        v->sid = KAFKA_SID_NONE;
        if (type == KAFKA_T_UUID)
                v->u.ptr = kafka_uuid_zero;
        else if (type == KAFKA_T_STRING || type == KAFKA_T_BYTES)
                v->u.ptr = (const uint8_t *)"";
}

struct kafka_val *kafka_val_array_init(struct kafka_arena *a, struct kafka_val *s, unsigned id,
                                       int32_t n)
{
        struct kafka_val *arr = &s[id];
        SL_ASSERT(arr->type == KAFKA_T_ARRAY && n >= 0);
        uint16_t stride = kafka_val_stride(arr);
        struct kafka_val *e = kafka_arena_alloc(a, (size_t)n * stride * sizeof(*e));
        if (!e)
                return NULL;
        for (int32_t i = 0; i < n; i++) {
                if (arr->sid == KAFKA_SID_NONE)
                        prim_default(arr->elem_type, &e[i]);
                else if (struct_init(a, arr->sid, e + (size_t)i * stride) < 0)
                        return NULL;
        }
        arr->u.elems = e;
        arr->len = n;
        arr->flags |= KAFKA_VAL_SET;
        return e;
}

void kafka_val_array_set_null(struct kafka_val *s, unsigned id)
{
        struct kafka_val *arr = &s[id];
        SL_ASSERT(arr->type == KAFKA_T_ARRAY);
        arr->u.elems = NULL;
        arr->len = -1;
        arr->flags |= KAFKA_VAL_SET;
}

int kafka_msg_init(struct kafka_msg *m, struct kafka_arena *a, int16_t api_key, int16_t version,
                   enum kafka_dir dir)
{
        const struct kafka_msg_desc *d = kafka_msg_desc_find(api_key, dir);
        if (!d || !in_range(version, d->ver_min, d->ver_max))
                return -ENOTSUP;
        m->desc = d;
        m->version = version;
        m->root = kafka_arena_alloc(a, kafka_structs[d->sid].nfields * sizeof(struct kafka_val));
        if (!m->root)
                return -ENOMEM;
        return struct_init(a, d->sid, m->root);
}

/* ---- decode -------------------------------------------------------------- */

struct rd {
        const uint8_t *p, *end;
};

struct dec {
        struct kafka_arena *a;
        int16_t ver;
        bool flex;
};

static inline size_t rd_left(const struct rd *r)
{
        return (size_t)(r->end - r->p);
}

static inline int rd_be(struct rd *r, unsigned n, uint64_t *v)
{
        if (sl_unlikely(rd_left(r) < n))
                return -EBADMSG;
        uint64_t x = 0;
        for (unsigned i = 0; i < n; i++)
                x = (x << 8) | r->p[i];
        r->p += n;
        *v = x;
        return 0;
}

static int rd_uvarint(struct rd *r, uint32_t *v)
{
        uint32_t x = 0;
        for (unsigned shift = 0; shift < 35; shift += 7) {
                if (sl_unlikely(r->p == r->end))
                        return -EBADMSG;
                uint8_t b = *r->p++;
                if (shift == 28 && (b & 0xf0))
                        return -EBADMSG; /* more than 32 bits */
                x |= (uint32_t)(b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *v = x;
                        return 0;
                }
        }
        return -EBADMSG;
}

/* Length prefix of a string/bytes/array: classic int16/int32 or compact
 * uvarint N+1. Returns -1 for null. */
static int rd_len(const struct dec *d, struct rd *r, unsigned classic_bytes, int32_t *len)
{
        uint64_t x = 0;
        if (d->flex) {
                uint32_t u;
                int rc = rd_uvarint(r, &u);
                if (rc < 0)
                        return rc;
                if (u > (uint32_t)INT32_MAX)
                        return -EBADMSG;
                *len = (int32_t)u - 1;
                return 0;
        }
        int rc = rd_be(r, classic_bytes, &x);
        if (rc < 0)
                return rc;
        *len = classic_bytes == 2 ? (int16_t)x : (int32_t)x;
        if (*len < -1)
                return -EBADMSG;
        return 0;
}

/* Everything that is not a struct or an array. */
static int dec_prim(const struct dec *d, struct rd *r, uint8_t type, bool nullable,
                    struct kafka_val *v)
{
        uint64_t x = 0;
        int rc;
        switch (type) {
        case KAFKA_T_BOOL:
                rc = rd_be(r, 1, &x);
                v->u.i64 = x != 0;
                return rc;
        case KAFKA_T_INT8:
                rc = rd_be(r, 1, &x);
                v->u.i64 = (int8_t)x;
                return rc;
        case KAFKA_T_INT16:
                rc = rd_be(r, 2, &x);
                v->u.i64 = (int16_t)x;
                return rc;
        case KAFKA_T_UINT16:
                rc = rd_be(r, 2, &x);
                v->u.i64 = (uint16_t)x;
                return rc;
        case KAFKA_T_INT32:
                rc = rd_be(r, 4, &x);
                v->u.i64 = (int32_t)x;
                return rc;
        case KAFKA_T_UINT32:
                rc = rd_be(r, 4, &x);
                v->u.i64 = (uint32_t)x;
                return rc;
        case KAFKA_T_INT64:
                rc = rd_be(r, 8, &x);
                v->u.i64 = (int64_t)x;
                return rc;
        case KAFKA_T_FLOAT64:
                rc = rd_be(r, 8, &x);
                memcpy(&v->u.f64, &x, sizeof(x));
                return rc;
        case KAFKA_T_UUID:
                if (rd_left(r) < 16)
                        return -EBADMSG;
                v->u.ptr = r->p;
                r->p += 16;
                return 0;
        case KAFKA_T_STRING:
        case KAFKA_T_BYTES:
        case KAFKA_T_RECORDS:
                rc = rd_len(d, r, type == KAFKA_T_STRING ? 2 : 4, &v->len);
                if (rc < 0)
                        return rc;
                if (v->len < 0) {
                        v->u.ptr = NULL;
                        return nullable ? 0 : -EBADMSG;
                }
                if ((size_t)v->len > rd_left(r))
                        return -EBADMSG;
                v->u.ptr = r->p; /* a view: records are never copied */
                r->p += v->len;
                return 0;
        }
        return -EBADMSG;
}

static int dec_struct(const struct dec *d, struct rd *r, uint16_t sid, struct kafka_val *out);

static int dec_array(const struct dec *d, struct rd *r, const struct kafka_field *f,
                     struct kafka_val *v)
{
        int rc = rd_len(d, r, 4, &v->len);
        if (rc < 0)
                return rc;
        if (v->len < 0)
                return is_nullable(f, d->ver) ? 0 : -EBADMSG;
        /* Every element takes at least one byte: refuse counts the input cannot
         * hold before asking the arena for them. */
        if ((size_t)v->len > rd_left(r))
                return -EBADMSG;
        uint16_t stride = kafka_val_stride(v);
        struct kafka_val *e = kafka_arena_alloc(d->a, (size_t)v->len * stride * sizeof(*e));
        if (!e)
                return -ENOMEM;
        v->u.elems = e;
        for (int32_t i = 0; i < v->len; i++) {
                if (f->elem_type == KAFKA_T_STRUCT) {
                        rc = dec_struct(d, r, f->sid, e + (size_t)i * stride);
                } else {
                        prim_default(f->elem_type, &e[i]);
                        e[i].flags = KAFKA_VAL_SET;
                        rc = dec_prim(d, r, f->elem_type, false, &e[i]);
                }
                if (rc < 0)
                        return rc;
        }
        return 0;
}

static int dec_value(const struct dec *d, struct rd *r, const struct kafka_field *f,
                     struct kafka_val *v)
{
        memset(v, 0, sizeof(*v));
        v->type = f->type;
        v->elem_type = f->elem_type;
        v->sid = f->sid;
        v->flags = KAFKA_VAL_SET;
        if (f->type == KAFKA_T_ARRAY)
                return dec_array(d, r, f, v);
        if (f->type == KAFKA_T_STRUCT) {
                v->len = 1;
                v->u.elems = kafka_arena_alloc(d->a, kafka_structs[f->sid].nfields * sizeof(*v));
                if (!v->u.elems)
                        return -ENOMEM;
                return dec_struct(d, r, f->sid, v->u.elems);
        }
        return dec_prim(d, r, f->type, is_nullable(f, d->ver), v);
}

/* The tagged-field trailer of a flexible struct; unknown tags are skipped. */
static int dec_tags(const struct dec *d, struct rd *r, const struct kafka_struct_desc *sd,
                    struct kafka_val *out)
{
        uint32_t n, tag, size;
        int rc = rd_uvarint(r, &n);
        for (uint32_t k = 0; rc == 0 && k < n; k++) {
                if ((rc = rd_uvarint(r, &tag)) < 0 || (rc = rd_uvarint(r, &size)) < 0)
                        return rc;
                if (size > rd_left(r))
                        return -EBADMSG;
                struct rd sub = {r->p, r->p + size};
                r->p += size;
                for (unsigned i = 0; i < sd->nfields; i++) {
                        const struct kafka_field *f = &kafka_fields[sd->first + i];
                        if ((uint32_t)f->tag == tag && is_tagged(f, d->ver, true) &&
                            in_range(d->ver, f->ver_min, f->ver_max)) {
                                rc = dec_value(d, &sub, f, &out[i]);
                                break;
                        }
                }
        }
        return rc;
}

static int dec_struct(const struct dec *d, struct rd *r, uint16_t sid, struct kafka_val *out)
{
        const struct kafka_struct_desc *sd = &kafka_structs[sid];
        for (unsigned i = 0; i < sd->nfields; i++) {
                const struct kafka_field *f = &kafka_fields[sd->first + i];
                int rc;
                if (!in_range(d->ver, f->ver_min, f->ver_max) || is_tagged(f, d->ver, d->flex))
                        rc = field_default(d->a, f, &out[i]);
                else
                        rc = dec_value(d, r, f, &out[i]);
                if (rc < 0)
                        return rc;
        }
        return d->flex ? dec_tags(d, r, sd, out) : 0;
}

ssize_t kafka_msg_decode(struct kafka_msg *m, struct kafka_arena *a, int16_t api_key,
                         int16_t version, enum kafka_dir dir, const uint8_t *body, size_t len)
{
        const struct kafka_msg_desc *md = kafka_msg_desc_find(api_key, dir);
        if (!md || !in_range(version, md->ver_min, md->ver_max))
                return -ENOTSUP;
        struct dec d = {.a = a, .ver = version, .flex = is_flex(md, version)};
        struct rd r = {body, body + len};
        m->desc = md;
        m->version = version;
        m->root = kafka_arena_alloc(a, kafka_structs[md->sid].nfields * sizeof(struct kafka_val));
        if (!m->root)
                return -ENOMEM;
        int rc = dec_struct(&d, &r, md->sid, m->root);
        return rc < 0 ? rc : (ssize_t)(r.p - body);
}

/* ---- encode -------------------------------------------------------------- */

/* p == NULL only counts: the same walk sizes and writes. */
/* Where RECORDS bytes are left out of the output (kafka_response_encode_iov):
 * each is written as its length prefix only and noted with the output
 * position it belongs at. */
struct wr_segs {
        struct kafka_seg *seg;
        int n, max;
        size_t skipped; /* record bytes not written to the output */
};

struct wr {
        uint8_t *p;
        size_t cap, pos;
        struct wr_segs *segs;
};

struct enc {
        int16_t ver;
        bool flex;
};

static inline int wr_put(struct wr *w, const void *src, size_t n)
{
        if (sl_unlikely(n > w->cap - w->pos))
                return -ENOSPC;
        if (w->p)
                memcpy(w->p + w->pos, src, n);
        w->pos += n;
        return 0;
}

static inline int wr_be(struct wr *w, uint64_t v, unsigned n)
{
        uint8_t b[8];
        for (unsigned i = 0; i < n; i++)
                b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
        return wr_put(w, b, n);
}

static int wr_uvarint(struct wr *w, uint32_t v)
{
        uint8_t b[5];
        unsigned n = 0;
        while (v >= 0x80) {
                b[n++] = (uint8_t)(v | 0x80);
                v >>= 7;
        }
        b[n++] = (uint8_t)v;
        return wr_put(w, b, n);
}

static int wr_len(const struct enc *e, struct wr *w, unsigned classic_bytes, int32_t len)
{
        if (e->flex)
                return wr_uvarint(w, (uint32_t)len + 1);
        return wr_be(w, (uint64_t)(int64_t)len, classic_bytes);
}

static int enc_prim(const struct enc *e, struct wr *w, uint8_t type, bool nullable,
                    const struct kafka_val *v)
{
        uint64_t x = 0;
        switch (type) {
        case KAFKA_T_BOOL:
                return wr_be(w, v->u.i64 != 0, 1);
        case KAFKA_T_INT8:
                return wr_be(w, (uint64_t)v->u.i64, 1);
        case KAFKA_T_INT16:
        case KAFKA_T_UINT16:
                return wr_be(w, (uint64_t)v->u.i64, 2);
        case KAFKA_T_INT32:
        case KAFKA_T_UINT32:
                return wr_be(w, (uint64_t)v->u.i64, 4);
        case KAFKA_T_INT64:
                return wr_be(w, (uint64_t)v->u.i64, 8);
        case KAFKA_T_FLOAT64:
                memcpy(&x, &v->u.f64, sizeof(x));
                return wr_be(w, x, 8);
        case KAFKA_T_UUID:
                return wr_put(w, v->u.ptr ? v->u.ptr : kafka_uuid_zero, 16);
        case KAFKA_T_STRING:
        case KAFKA_T_BYTES:
        case KAFKA_T_RECORDS: {
                int32_t len = v->u.ptr ? v->len : -1;
                if (len < 0) {
                        if (!nullable)
                                return -EINVAL;
                        return wr_len(e, w, type == KAFKA_T_STRING ? 2 : 4, -1);
                }
                if (type == KAFKA_T_STRING && len > INT16_MAX)
                        return -EINVAL;
                int rc = wr_len(e, w, type == KAFKA_T_STRING ? 2 : 4, len);
                if (rc < 0)
                        return rc;
                struct wr_segs *sg = w->segs;
                if (type == KAFKA_T_RECORDS && sg && sg->n < sg->max &&
                    (uint32_t)len >= KAFKA_SEG_MIN_BYTES) {
                        sg->seg[sg->n++] =
                            (struct kafka_seg){.at = w->pos, .ptr = v->u.ptr, .len = (uint32_t)len};
                        sg->skipped += (size_t)len;
                        return 0;
                }
                return wr_put(w, v->u.ptr, (size_t)len);
        }
        }
        return -EINVAL;
}

static int enc_struct(const struct enc *e, struct wr *w, uint16_t sid, const struct kafka_val *in);

static int enc_value(const struct enc *e, struct wr *w, const struct kafka_field *f,
                     const struct kafka_val *v)
{
        if (sl_unlikely(v->type != f->type))
                return -EINVAL;
        if (f->type == KAFKA_T_STRUCT) {
                if (!v->u.elems || v->sid != f->sid)
                        return -EINVAL;
                return enc_struct(e, w, f->sid, v->u.elems);
        }
        if (f->type != KAFKA_T_ARRAY)
                return enc_prim(e, w, f->type, is_nullable(f, e->ver), v);

        if (v->len < 0)
                return is_nullable(f, e->ver) ? wr_len(e, w, 4, -1) : -EINVAL;
        if ((v->len > 0 && !v->u.elems) || v->sid != f->sid)
                return -EINVAL;
        int rc = wr_len(e, w, 4, v->len);
        uint16_t stride = kafka_val_stride(v);
        for (int32_t i = 0; rc == 0 && i < v->len; i++) {
                const struct kafka_val *el = v->u.elems + (size_t)i * stride;
                if (f->elem_type == KAFKA_T_STRUCT)
                        rc = enc_struct(e, w, f->sid, el);
                else if (el->type != f->elem_type)
                        rc = -EINVAL;
                else
                        rc = enc_prim(e, w, f->elem_type, false, el);
        }
        return rc;
}

static int enc_tags(const struct enc *e, struct wr *w, const struct kafka_struct_desc *sd,
                    const struct kafka_val *in)
{
        uint32_t n = 0;
        for (unsigned i = 0; i < sd->nfields; i++) {
                const struct kafka_field *f = &kafka_fields[sd->first + i];
                n += in_range(e->ver, f->ver_min, f->ver_max) && is_tagged(f, e->ver, true) &&
                     (in[i].flags & KAFKA_VAL_SET);
        }
        int rc = wr_uvarint(w, n);
        for (unsigned i = 0; rc == 0 && n && i < sd->nfields; i++) {
                const struct kafka_field *f = &kafka_fields[sd->first + i];
                if (!in_range(e->ver, f->ver_min, f->ver_max) || !is_tagged(f, e->ver, true) ||
                    !(in[i].flags & KAFKA_VAL_SET))
                        continue;
                /* The size goes first: measure with a counting writer. */
                struct wr count = {NULL, SIZE_MAX, 0};
                if ((rc = enc_value(e, &count, f, &in[i])) < 0)
                        return rc;
                if (count.pos > UINT32_MAX)
                        return -EINVAL;
                if ((rc = wr_uvarint(w, (uint32_t)f->tag)) < 0 ||
                    (rc = wr_uvarint(w, (uint32_t)count.pos)) < 0)
                        return rc;
                rc = enc_value(e, w, f, &in[i]);
        }
        return rc;
}

static int enc_struct(const struct enc *e, struct wr *w, uint16_t sid, const struct kafka_val *in)
{
        const struct kafka_struct_desc *sd = &kafka_structs[sid];
        for (unsigned i = 0; i < sd->nfields; i++) {
                const struct kafka_field *f = &kafka_fields[sd->first + i];
                if (!in_range(e->ver, f->ver_min, f->ver_max) || is_tagged(f, e->ver, e->flex))
                        continue; /* absent in this version (ignorable or not) */
                int rc = enc_value(e, w, f, &in[i]);
                if (rc < 0)
                        return rc;
        }
        return e->flex ? enc_tags(e, w, sd, in) : 0;
}

static ssize_t msg_encode(const struct kafka_msg *m, struct wr *w)
{
        struct enc e = {.ver = m->version, .flex = is_flex(m->desc, m->version)};
        size_t start = w->pos;
        int rc = enc_struct(&e, w, m->desc->sid, m->root);
        return rc < 0 ? rc : (ssize_t)(w->pos - start);
}

ssize_t kafka_msg_encode(const struct kafka_msg *m, uint8_t *out, size_t cap)
{
        struct wr w = {out, cap, 0, NULL};
        SL_ASSERT(out || cap == 0);
        return msg_encode(m, &w);
}

ssize_t kafka_msg_size(const struct kafka_msg *m)
{
        struct wr w = {NULL, SIZE_MAX, 0, NULL};
        return msg_encode(m, &w);
}

/* ---- framing and headers ------------------------------------------------- */

ssize_t kafka_frame_size(const uint8_t *buf, size_t len, uint32_t frame_max)
{
        if (len < KAFKA_FRAME_PREFIX)
                return 0;
        int32_t n = (int32_t)((uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
                              (uint32_t)buf[2] << 8 | buf[3]);
        if (n < 0)
                return -EBADMSG;
        if ((uint32_t)n > frame_max)
                return -EMSGSIZE;
        return (ssize_t)n + KAFKA_FRAME_PREFIX;
}

int kafka_req_header_version(int16_t api_key, int16_t version)
{
        const struct kafka_msg_desc *d = kafka_msg_desc_find(api_key, KAFKA_REQUEST);
        if (!d)
                return -ENOTSUP;
        return is_flex(d, version) ? 2 : 1;
}

int kafka_resp_header_version(int16_t api_key, int16_t version)
{
        if (api_key == KAFKA_API_API_VERSIONS)
                return 0;
        const struct kafka_msg_desc *d = kafka_msg_desc_find(api_key, KAFKA_RESPONSE);
        return d && is_flex(d, version) ? 1 : 0;
}

ssize_t kafka_req_header_decode(struct kafka_req_header *h, const uint8_t *p, size_t len)
{
        struct rd r = {p, p + len};
        uint64_t key, ver, corr;
        memset(h, 0, sizeof(*h));
        if (rd_be(&r, 2, &key) < 0 || rd_be(&r, 2, &ver) < 0 || rd_be(&r, 4, &corr) < 0)
                return -EBADMSG;
        h->api_key = (int16_t)key;
        h->api_version = (int16_t)ver;
        h->correlation_id = (int32_t)corr;
        int hv = kafka_req_header_version(h->api_key, h->api_version);
        if (hv < 0)
                return hv;
        h->header_version = (uint8_t)hv;
        /* client_id keeps its int16 length even in header v2 ("flexibleVersions":
         * "none" in RequestHeader.json), so read it as a classic string. */
        struct dec classic = {.flex = false};
        struct kafka_val v;
        if (dec_prim(&classic, &r, KAFKA_T_STRING, true, &v) < 0)
                return -EBADMSG;
        h->client_id = (struct kafka_str){v.u.ptr, v.len};
        if (hv == 2) {
                uint32_t n, tag, size;
                if (rd_uvarint(&r, &n) < 0)
                        return -EBADMSG;
                for (uint32_t k = 0; k < n; k++) {
                        if (rd_uvarint(&r, &tag) < 0 || rd_uvarint(&r, &size) < 0 ||
                            size > rd_left(&r))
                                return -EBADMSG;
                        r.p += size;
                }
        }
        return r.p - p;
}

ssize_t kafka_req_header_encode(const struct kafka_req_header *h, uint8_t *out, size_t cap)
{
        struct wr w = {out, cap, 0, NULL};
        int hv = kafka_req_header_version(h->api_key, h->api_version);
        if (hv < 0)
                return hv;
        struct enc classic = {.flex = false};
        struct kafka_val v = {.u.ptr = h->client_id.ptr, .len = h->client_id.len};
        int rc;
        if ((rc = wr_be(&w, (uint16_t)h->api_key, 2)) < 0 ||
            (rc = wr_be(&w, (uint16_t)h->api_version, 2)) < 0 ||
            (rc = wr_be(&w, (uint32_t)h->correlation_id, 4)) < 0 ||
            (rc = enc_prim(&classic, &w, KAFKA_T_STRING, true, &v)) < 0)
                return rc;
        if (hv == 2 && (rc = wr_uvarint(&w, 0)) < 0)
                return rc;
        return (ssize_t)w.pos;
}

ssize_t kafka_resp_header_encode(int16_t api_key, int16_t version, int32_t correlation_id,
                                 uint8_t *out, size_t cap)
{
        struct wr w = {out, cap, 0, NULL};
        int rc = wr_be(&w, (uint32_t)correlation_id, 4);
        if (rc == 0 && kafka_resp_header_version(api_key, version) == 1)
                rc = wr_uvarint(&w, 0);
        return rc < 0 ? rc : (ssize_t)w.pos;
}

ssize_t kafka_response_encode(const struct kafka_msg *m, int32_t correlation_id, uint8_t *out,
                              size_t cap)
{
        return kafka_response_encode_segs(m, correlation_id, out, cap, NULL, 0, NULL);
}

ssize_t kafka_response_encode_segs(const struct kafka_msg *m, int32_t correlation_id, uint8_t *out,
                                   size_t cap, struct kafka_seg *seg, int seg_max, int *nseg)
{
        struct wr_segs sg = {.seg = seg, .max = seg ? seg_max : 0};
        if (nseg)
                *nseg = 0;
        if (cap < KAFKA_FRAME_PREFIX)
                return -ENOSPC;
        ssize_t hn = kafka_resp_header_encode(m->desc->api_key, m->version, correlation_id,
                                              out + KAFKA_FRAME_PREFIX, cap - KAFKA_FRAME_PREFIX);
        if (hn < 0)
                return hn;
        size_t off = KAFKA_FRAME_PREFIX + (size_t)hn;
        struct wr body = {out, cap, off, seg ? &sg : NULL};
        ssize_t bn = msg_encode(m, &body);
        if (bn < 0)
                return bn;
        size_t total = off + (size_t)bn;
        if (nseg)
                *nseg = sg.n;
        /* the size prefix counts the records left out too */
        if (total + sg.skipped - KAFKA_FRAME_PREFIX > INT32_MAX)
                return -EINVAL;
        struct wr w = {out, KAFKA_FRAME_PREFIX, 0, NULL};
        wr_be(&w, total + sg.skipped - KAFKA_FRAME_PREFIX, 4);
        return (ssize_t)total;
}
