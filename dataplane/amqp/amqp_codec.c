/* Table-driven AMQP 0-9-1 codecs: one loop over the generated argument
 * descriptors decodes or encodes any method; content headers walk the class's
 * property list by flag bit. Big-endian throughout, bounds checked per read. */
#include "amqp_codec.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

/* ---- bounded big-endian reader ------------------------------------------ */

struct rd {
        const uint8_t *p;
        const uint8_t *end;
};

static inline bool rd_has(const struct rd *r, size_t n)
{
        return (size_t)(r->end - r->p) >= n;
}

static inline uint64_t rd_be(struct rd *r, unsigned n)
{
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v = v << 8 | r->p[i];
        r->p += n;
        return v;
}

static inline uint64_t get_be(const uint8_t *p, unsigned n)
{
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v = v << 8 | p[i];
        return v;
}

static inline void put_be(uint8_t *p, uint64_t v, unsigned n)
{
        for (unsigned i = n; i-- > 0; v >>= 8)
                p[i] = (uint8_t)v;
}

/* ---- bounded writer -------------------------------------------------------- */

struct wr {
        uint8_t *p;
        uint8_t *end;
        int err; /* sticky: the first failure wins */
};

static inline uint8_t *wr_reserve(struct wr *w, size_t n)
{
        if (w->err)
                return NULL;
        if ((size_t)(w->end - w->p) < n) {
                w->err = -ENOSPC;
                return NULL;
        }
        uint8_t *at = w->p;
        w->p += n;
        return at;
}

static inline void wr_be(struct wr *w, uint64_t v, unsigned n)
{
        uint8_t *at = wr_reserve(w, n);
        if (at)
                put_be(at, v, n);
}

static inline void wr_bytes(struct wr *w, const void *src, size_t n)
{
        uint8_t *at = wr_reserve(w, n);
        if (at && n)
                memcpy(at, src, n);
}

/* ---- field tables ------------------------------------------------------------ */

/* Fixed-size tags: how many value bytes follow; -1 = length-prefixed, -2 = unknown. */
static int field_size(uint8_t tag)
{
        switch (tag) {
        case 'V':
                return 0;
        case 't':
        case 'b':
        case 'B':
                return 1;
        case 's':
        case 'u':
                return 2;
        case 'I':
        case 'i':
        case 'f':
                return 4;
        case 'D':
                return 5;
        case 'l':
        case 'L':
        case 'd':
        case 'T':
                return 8;
        case 'S':
        case 'x':
        case 'F':
        case 'A':
                return -1;
        default:
                return -2;
        }
}

void amqp_table_iter_init(struct amqp_table_iter *it, struct amqp_bytes tbl, bool array)
{
        it->p = tbl.ptr;
        it->end = tbl.ptr + tbl.len;
        it->array = array;
}

int amqp_table_next(struct amqp_table_iter *it, struct amqp_field *f)
{
        struct rd r = {it->p, it->end};
        if (r.p == r.end)
                return 0;
        f->name = (struct amqp_bytes){NULL, 0};
        if (!it->array) {
                uint8_t nlen = r.p[0];
                if (!rd_has(&r, 1u + nlen))
                        return -AMQP_SYNTAX_ERROR;
                f->name = (struct amqp_bytes){r.p + 1, nlen};
                r.p += 1u + nlen;
        }
        if (!rd_has(&r, 1))
                return -AMQP_SYNTAX_ERROR;
        f->tag = *r.p++;
        int size = field_size(f->tag);
        if (size == -2)
                return -AMQP_SYNTAX_ERROR; /* unknown tags have no length to skip */
        if (size == -1) {
                if (!rd_has(&r, 4))
                        return -AMQP_SYNTAX_ERROR;
                uint32_t len = (uint32_t)rd_be(&r, 4);
                if (!rd_has(&r, len))
                        return -AMQP_SYNTAX_ERROR;
                f->v.b = (struct amqp_bytes){r.p, len};
                r.p += len;
                it->p = r.p;
                return 1;
        }
        if (!rd_has(&r, (size_t)size))
                return -AMQP_SYNTAX_ERROR;
        uint64_t raw = get_be(r.p, (unsigned)size);
        switch (f->tag) {
        case 'b':
                f->v.i = (int8_t)raw;
                break;
        case 's':
                f->v.i = (int16_t)raw;
                break;
        case 'I':
                f->v.i = (int32_t)raw;
                break;
        case 'l':
        case 'L': /* RabbitMQ reads L as signed 64-bit too */
                f->v.i = (int64_t)raw;
                break;
        case 'f': {
                uint32_t bits = (uint32_t)raw;
                memcpy(&f->v.f, &bits, sizeof(bits));
                break;
        }
        case 'd':
                memcpy(&f->v.d, &raw, sizeof(raw));
                break;
        case 'D':
                f->v.dec.scale = r.p[0];
                f->v.dec.value = (uint32_t)get_be(r.p + 1, 4);
                break;
        default: /* t B u i T V */
                f->v.u = raw;
                break;
        }
        it->p = r.p + size;
        return 1;
}

/* Recursion is bounded by depth_max, so the stack use is too. */
int amqp_table_validate(struct amqp_bytes tbl, bool array, unsigned depth_max)
{
        SL_ASSERT(depth_max <= 4 * AMQP_TABLE_DEPTH_MAX); /* keeps the stack small */
        struct amqp_table_iter it;
        struct amqp_field f;
        int rc;
        amqp_table_iter_init(&it, tbl, array);
        while ((rc = amqp_table_next(&it, &f)) == 1) {
                if (f.tag != 'F' && f.tag != 'A')
                        continue;
                if (depth_max == 0)
                        return -AMQP_SYNTAX_ERROR;
                rc = amqp_table_validate(f.v.b, f.tag == 'A', depth_max - 1);
                if (rc < 0)
                        return rc;
        }
        return rc;
}

int amqp_table_find(struct amqp_bytes tbl, const char *name, struct amqp_field *f)
{
        struct amqp_bytes key = amqp_cstr(name);
        struct amqp_table_iter it;
        int rc;
        amqp_table_iter_init(&it, tbl, false);
        while ((rc = amqp_table_next(&it, f)) == 1) {
                if (f->name.len == key.len && memcmp(f->name.ptr, key.ptr, key.len) == 0)
                        return 1;
        }
        return rc;
}

void amqp_table_writer_init(struct amqp_table_writer *w, uint8_t *buf, size_t cap)
{
        memset(w, 0, sizeof(*w));
        w->buf = buf;
        w->cap = cap;
}

static uint8_t *tw_reserve(struct amqp_table_writer *w, size_t n)
{
        if (w->err)
                return NULL;
        if (w->cap - w->len < n) {
                w->err = -ENOSPC;
                return NULL;
        }
        uint8_t *at = w->buf + w->len;
        w->len += n;
        return at;
}

/* Writes the name (unless inside an array) and the tag. */
static bool tw_head(struct amqp_table_writer *w, struct amqp_bytes name, uint8_t tag)
{
        if (w->err)
                return false;
        if (!w->open_array[w->depth]) {
                if (name.len > 255) {
                        w->err = -EINVAL;
                        return false;
                }
                uint8_t *at = tw_reserve(w, 1u + name.len);
                if (!at)
                        return false;
                at[0] = (uint8_t)name.len;
                if (name.len)
                        memcpy(at + 1, name.ptr, name.len);
        }
        uint8_t *at = tw_reserve(w, 1);
        if (at)
                *at = tag;
        return at != NULL;
}

void amqp_table_put(struct amqp_table_writer *w, const struct amqp_field *f)
{
        int size = field_size(f->tag);
        if (size == -2) {
                if (!w->err)
                        w->err = -EINVAL;
                return;
        }
        if (!tw_head(w, f->name, f->tag))
                return;
        if (size == -1) {
                uint8_t *at = tw_reserve(w, 4u + (size_t)f->v.b.len);
                if (!at)
                        return;
                put_be(at, f->v.b.len, 4);
                if (f->v.b.len)
                        memcpy(at + 4, f->v.b.ptr, f->v.b.len);
                return;
        }
        uint8_t *at = tw_reserve(w, (size_t)size);
        if (!at)
                return;
        uint64_t raw = f->v.u;
        if (f->tag == 'f') {
                uint32_t bits;
                memcpy(&bits, &f->v.f, sizeof(bits));
                raw = bits;
        } else if (f->tag == 'd') {
                memcpy(&raw, &f->v.d, sizeof(raw));
        } else if (f->tag == 'D') {
                at[0] = f->v.dec.scale;
                put_be(at + 1, f->v.dec.value, 4);
                return;
        }
        put_be(at, raw, (unsigned)size); /* truncates signed values to their width */
}

void amqp_table_begin(struct amqp_table_writer *w, const char *name, uint8_t tag)
{
        if (!w->err && ((tag != 'F' && tag != 'A') || w->depth == AMQP_TABLE_DEPTH_MAX))
                w->err = -EINVAL;
        if (!tw_head(w, amqp_cstr(name), tag))
                return;
        size_t at = w->len;
        if (!tw_reserve(w, 4))
                return;
        w->open_at[w->depth++] = at;
        w->open_array[w->depth] = tag == 'A';
}

void amqp_table_end(struct amqp_table_writer *w)
{
        if (w->err)
                return;
        if (w->depth == 0) {
                w->err = -EINVAL;
                return;
        }
        size_t at = w->open_at[--w->depth];
        put_be(w->buf + at, w->len - at - 4, 4);
}

int amqp_table_writer_finish(struct amqp_table_writer *w, struct amqp_bytes *out)
{
        if (!w->err && w->depth != 0)
                w->err = -EINVAL;
        if (!w->err && w->len > UINT32_MAX)
                w->err = -EINVAL;
        if (w->err)
                return w->err;
        *out = (struct amqp_bytes){w->buf, (uint32_t)w->len};
        return 0;
}

void amqp_table_put_bool(struct amqp_table_writer *w, const char *name, bool v)
{
        struct amqp_field f = {.name = amqp_cstr(name), .tag = 't', .v.u = v};
        amqp_table_put(w, &f);
}

void amqp_table_put_i64(struct amqp_table_writer *w, const char *name, int64_t v)
{
        struct amqp_field f = {.name = amqp_cstr(name), .tag = 'l', .v.i = v};
        amqp_table_put(w, &f);
}

void amqp_table_put_str(struct amqp_table_writer *w, const char *name, struct amqp_bytes s)
{
        struct amqp_field f = {.name = amqp_cstr(name), .tag = 'S', .v.b = s};
        amqp_table_put(w, &f);
}

/* ---- one value of a primitive type ------------------------------------------- */

static const uint8_t int_size[] = {
    [AMQP_T_OCTET] = 1,    [AMQP_T_SHORT] = 2,     [AMQP_T_LONG] = 4,
    [AMQP_T_LONGLONG] = 8, [AMQP_T_TIMESTAMP] = 8,
};

/* Decodes every type but bit. Returns 0 or a negative reply code. */
static int value_decode(struct rd *r, uint8_t type, union amqp_value *v)
{
        switch (type) {
        case AMQP_T_SHORTSTR:
                if (!rd_has(r, 1) || !rd_has(r, 1u + r->p[0]))
                        return -AMQP_FRAME_ERROR;
                v->b = (struct amqp_bytes){r->p + 1, r->p[0]};
                r->p += 1u + r->p[0];
                return 0;
        case AMQP_T_LONGSTR:
        case AMQP_T_TABLE: {
                if (!rd_has(r, 4))
                        return -AMQP_FRAME_ERROR;
                uint32_t len = (uint32_t)get_be(r->p, 4);
                if (!rd_has(r, 4u + (size_t)len))
                        return -AMQP_FRAME_ERROR;
                v->b = (struct amqp_bytes){r->p + 4, len};
                r->p += 4u + (size_t)len;
                if (type == AMQP_T_TABLE)
                        return amqp_table_validate(v->b, false, AMQP_TABLE_DEPTH_MAX);
                return 0;
        }
        default:
                SL_DASSERT(type < SL_ARRAY_LEN(int_size) && int_size[type]);
                if (!rd_has(r, int_size[type]))
                        return -AMQP_FRAME_ERROR;
                v->u = rd_be(r, int_size[type]);
                return 0;
        }
}

static void value_encode(struct wr *w, uint8_t type, const union amqp_value *v)
{
        switch (type) {
        case AMQP_T_SHORTSTR:
                if (v->b.len > 255) {
                        if (!w->err)
                                w->err = -EINVAL;
                        return;
                }
                wr_be(w, v->b.len, 1);
                wr_bytes(w, v->b.ptr, v->b.len);
                return;
        case AMQP_T_LONGSTR:
        case AMQP_T_TABLE:
                wr_be(w, v->b.len, 4);
                wr_bytes(w, v->b.ptr, v->b.len);
                return;
        default:
                SL_DASSERT(type < SL_ARRAY_LEN(int_size) && int_size[type]);
                wr_be(w, v->u, int_size[type]);
                return;
        }
}

/* ---- methods ------------------------------------------------------------------- */

int amqp_method_decode(const uint8_t *p, size_t n, struct amqp_method *m)
{
        if (n < 4)
                return -AMQP_FRAME_ERROR;
        struct rd r = {p, p + n};
        m->key = (uint32_t)rd_be(&r, 4);
        m->desc = amqp_method_desc_find(m->key);
        if (!m->desc)
                return -AMQP_COMMAND_INVALID;
        uint8_t bits = 0;
        for (unsigned i = 0; i < m->desc->nargs; i++) {
                const struct amqp_arg_desc *a = &m->desc->args[i];
                if (a->type == AMQP_T_BIT) {
                        if (a->bit == 0) {
                                if (!rd_has(&r, 1))
                                        return -AMQP_FRAME_ERROR;
                                bits = *r.p++;
                        }
                        m->args[i].u = (bits >> a->bit) & 1u;
                        continue;
                }
                int rc = value_decode(&r, a->type, &m->args[i]);
                if (rc < 0)
                        return rc;
        }
        /* RabbitMQ's generated decoders match the exact length: extra bytes are
         * a framing error, not something to skip. */
        return r.p == r.end ? 0 : -AMQP_FRAME_ERROR;
}

int amqp_method_init(struct amqp_method *m, uint32_t key)
{
        memset(m, 0, sizeof(*m));
        m->key = key;
        m->desc = amqp_method_desc_find(key);
        if (!m->desc)
                return -ENOENT;
        for (unsigned i = 0; i < m->desc->nargs; i++) {
                const struct amqp_arg_desc *a = &m->desc->args[i];
                if (a->def_s)
                        m->args[i].b = amqp_cstr(a->def_s);
                else if (a->type != AMQP_T_TABLE && a->type != AMQP_T_SHORTSTR &&
                         a->type != AMQP_T_LONGSTR)
                        m->args[i].u = a->def_u;
        }
        return 0;
}

static void method_encode(struct wr *w, const struct amqp_method *m)
{
        const struct amqp_method_desc *d = amqp_method_desc_find(m->key);
        if (!d) {
                w->err = -EINVAL;
                return;
        }
        wr_be(w, m->key, 4);
        uint8_t *bits = NULL;
        for (unsigned i = 0; i < d->nargs; i++) {
                const struct amqp_arg_desc *a = &d->args[i];
                if (a->type != AMQP_T_BIT) {
                        value_encode(w, a->type, &m->args[i]);
                        continue;
                }
                if (a->bit == 0 && (bits = wr_reserve(w, 1)))
                        *bits = 0;
                if (bits && m->args[i].u)
                        *bits |= (uint8_t)(1u << a->bit);
        }
}

int amqp_method_encode(const struct amqp_method *m, uint8_t *out, size_t cap)
{
        cap = SL_MIN(cap, (size_t)INT_MAX); /* the count must fit the return value */
        struct wr w = {out, out + cap, 0};
        method_encode(&w, m);
        return w.err ? w.err : (int)(w.p - out);
}

/* ---- content headers ----------------------------------------------------------- */

int amqp_header_decode(const uint8_t *p, size_t n, struct amqp_header *h)
{
        struct rd r = {p, p + n};
        if (!rd_has(&r, 14))
                return -AMQP_FRAME_ERROR;
        h->class_id = (uint16_t)rd_be(&r, 2);
        h->weight = (uint16_t)rd_be(&r, 2);
        h->body_size = rd_be(&r, 8);
        h->present = 0;
        const struct amqp_class_desc *c = amqp_class_desc_find(h->class_id);
        if (!c || c->nprops == 0)
                return -AMQP_COMMAND_INVALID;
        /* Flag words: 15 property bits each (bit 15 first), bit 0 = continue. */
        for (unsigned word = 0;; word++) {
                if (!rd_has(&r, 2))
                        return -AMQP_FRAME_ERROR;
                uint16_t flags = (uint16_t)rd_be(&r, 2);
                for (unsigned b = 0; b < 15; b++) {
                        if (!(flags & (0x8000u >> b)))
                                continue;
                        unsigned prop = word * 15 + b;
                        if (prop >= c->nprops)
                                return -AMQP_SYNTAX_ERROR;
                        h->present |= 1u << prop;
                }
                if (!(flags & 1u))
                        break;
                if ((word + 1) * 15 >= c->nprops)
                        return -AMQP_SYNTAX_ERROR; /* a continuation with nothing left to flag */
        }
        for (unsigned i = 0; i < c->nprops; i++) {
                if (!amqp_header_has(h, i))
                        continue;
                /* Properties have no bit type: basic's are strings, octets, a
                 * timestamp and a table. */
                int rc = value_decode(&r, c->props[i].type, &h->props[i]);
                if (rc < 0)
                        return rc;
        }
        return 0;
}

static void header_encode(struct wr *w, const struct amqp_header *h)
{
        const struct amqp_class_desc *c = amqp_class_desc_find(h->class_id);
        if (!c || c->nprops == 0 || (c->nprops < 32 && (h->present >> c->nprops))) {
                w->err = -EINVAL;
                return;
        }
        wr_be(w, h->class_id, 2);
        wr_be(w, h->weight, 2);
        wr_be(w, h->body_size, 8);
        unsigned words = (c->nprops + 14) / 15;
        for (unsigned word = 0; word < words; word++) {
                uint16_t flags = 0;
                for (unsigned b = 0; b < 15 && word * 15 + b < c->nprops; b++)
                        if (amqp_header_has(h, word * 15 + b))
                                flags |= (uint16_t)(0x8000u >> b);
                bool more = (h->present >> ((word + 1) * 15)) != 0 && word + 1 < words;
                wr_be(w, flags | (more ? 1u : 0u), 2);
                if (!more)
                        break;
        }
        for (unsigned i = 0; i < c->nprops; i++)
                if (amqp_header_has(h, i))
                        value_encode(w, c->props[i].type, &h->props[i]);
}

int amqp_header_encode(const struct amqp_header *h, uint8_t *out, size_t cap)
{
        cap = SL_MIN(cap, (size_t)INT_MAX);
        struct wr w = {out, out + cap, 0};
        header_encode(&w, h);
        return w.err ? w.err : (int)(w.p - out);
}

/* ---- whole frames ------------------------------------------------------------------ */

/* Writes the 7-byte frame header with a size patched in by frame_close. */
static uint8_t *frame_open(struct wr *w, uint8_t type, uint16_t channel)
{
        uint8_t *hdr = wr_reserve(w, 7);
        if (hdr) {
                hdr[0] = type;
                put_be(hdr + 1, channel, 2);
        }
        return hdr;
}

static int frame_close(struct wr *w, uint8_t *hdr, uint8_t *out)
{
        wr_be(w, AMQP_FRAME_END, 1);
        if (w->err)
                return w->err;
        put_be(hdr + 3, (uint64_t)(w->p - hdr - 8), 4);
        return (int)(w->p - out);
}

int amqp_method_frame_encode(uint16_t channel, const struct amqp_method *m, uint8_t *out,
                             size_t cap)
{
        cap = SL_MIN(cap, (size_t)INT_MAX);
        struct wr w = {out, out + cap, 0};
        uint8_t *hdr = frame_open(&w, AMQP_FRAME_METHOD, channel);
        method_encode(&w, m);
        return frame_close(&w, hdr, out);
}

int amqp_header_frame_encode(uint16_t channel, const struct amqp_header *h, uint8_t *out,
                             size_t cap)
{
        cap = SL_MIN(cap, (size_t)INT_MAX);
        struct wr w = {out, out + cap, 0};
        uint8_t *hdr = frame_open(&w, AMQP_FRAME_HEADER, channel);
        header_encode(&w, h);
        return frame_close(&w, hdr, out);
}

int amqp_frame_encode(uint8_t type, uint16_t channel, const uint8_t *payload, uint32_t len,
                      uint8_t *out, size_t cap)
{
        cap = SL_MIN(cap, (size_t)INT_MAX);
        struct wr w = {out, out + cap, 0};
        uint8_t *hdr = frame_open(&w, type, channel);
        wr_bytes(&w, payload, len);
        return frame_close(&w, hdr, out);
}
