/* Kafka request/response codec: a small interpreter over the schema tables
 * that kafka_gen.py generates (kafka_msgs.{h,c}). Decode turns a message body
 * into an arena-allocated tree of kafka_val whose strings/bytes/records are
 * views into the input; encode writes such a tree back to bytes. */
#ifndef KAFKA_CODEC_H
#define KAFKA_CODEC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sl_common.h"
#include "kafka_msgs.h"

/* ---- schema tables (generated) ---------------------------------------- */

enum kafka_type {
        KAFKA_T_BOOL = 1,
        KAFKA_T_INT8,
        KAFKA_T_INT16,
        KAFKA_T_UINT16,
        KAFKA_T_INT32,
        KAFKA_T_UINT32,
        KAFKA_T_INT64,
        KAFKA_T_FLOAT64,
        KAFKA_T_UUID,
        KAFKA_T_STRING,
        KAFKA_T_BYTES,
        KAFKA_T_RECORDS,
        KAFKA_T_STRUCT, /* a nested struct: elems -> its fields */
        KAFKA_T_ARRAY,  /* elems -> len elements (structs laid out back to back) */
};

#define KAFKA_SID_NONE 0xffff
#define KAFKA_VER_MAX  0x7fff

/* One field of a struct. Version ranges are inclusive; min > max = never. */
struct kafka_field {
        const char *name;
        uint8_t type;
        uint8_t elem_type; /* KAFKA_T_ARRAY only */
        uint16_t sid;      /* struct id of a STRUCT or of an array's elements */
        int16_t ver_min, ver_max;
        int16_t null_min, null_max;
        int32_t tag;     /* -1: never tagged */
        int16_t tag_min; /* tagged from this (flexible) version on */
        uint8_t ignorable;
        uint8_t def_null; /* default is null (strings, records) */
        int64_t def_int;
        double def_f64;
        const char *def_str;
};

struct kafka_struct_desc {
        const char *name;
        uint16_t first; /* index of the first field in kafka_fields */
        uint16_t nfields;
};

struct kafka_msg_desc {
        const char *name;
        int16_t api_key;
        uint8_t is_response;
        int16_t ver_min, ver_max;
        int16_t flex_min; /* flexible (compact + tagged) from this version on; -1 never */
        uint16_t sid;     /* root struct */
};

extern const struct kafka_field kafka_fields[];
extern const struct kafka_struct_desc kafka_structs[KAFKA_NUM_STRUCTS];
extern const struct kafka_msg_desc kafka_msgs[KAFKA_NUM_MSGS];
extern const int16_t kafka_msg_index[KAFKA_API_KEY_MAX + 1][2];

enum kafka_dir { KAFKA_REQUEST = 0, KAFKA_RESPONSE = 1 };

/* Message description for (api_key, direction), or NULL if not generated. */
const struct kafka_msg_desc *kafka_msg_desc_find(int16_t api_key, enum kafka_dir dir);

/* ---- arena --------------------------------------------------------------- */

/* Caller-provided fixed memory for one decoded/built message; running out is
 * -ENOMEM, never a malloc. Reset it per request. */
struct kafka_arena {
        uint8_t *base;
        size_t cap;
        size_t used;
};

static inline void kafka_arena_init(struct kafka_arena *a, void *mem, size_t cap)
{
        a->base = mem;
        a->cap = cap;
        a->used = 0;
}

static inline void kafka_arena_reset(struct kafka_arena *a)
{
        a->used = 0;
}

void *kafka_arena_alloc(struct kafka_arena *a, size_t bytes);

/* ---- value tree ---------------------------------------------------------- */

#define KAFKA_VAL_SET 0x1 /* read from the wire, or set by the builder */

/* One field value. A struct is a plain array of kafka_val indexed by the
 * generated field ids; 24 bytes each so big requests stay cache-friendly.
 * Every value carries its type, so accessors can assert it in debug builds. */
struct kafka_val {
        union {
                int64_t i64;
                double f64;
                const uint8_t *ptr;      /* STRING/BYTES/RECORDS: view, borrowed */
                struct kafka_val *elems; /* STRUCT/ARRAY */
        } u;                             /* UUID: ptr to 16 bytes, never NULL */
        int32_t len;                     /* STRING/BYTES/RECORDS bytes, ARRAY count; -1 = null */
        uint16_t sid;                    /* STRUCT, or ARRAY of structs: element struct id */
        uint8_t type;                    /* enum kafka_type */
        uint8_t elem_type;               /* ARRAY: element type */
        uint8_t flags;
};

/* A decoded or built message. root is the top struct's field array. */
struct kafka_msg {
        const struct kafka_msg_desc *desc;
        int16_t version;
        struct kafka_val *root;
};

struct kafka_str {
        const uint8_t *ptr;
        int32_t len; /* -1 = null */
};

/* Decode a message body (after the header). Strings, bytes and records in
 * the tree borrow from body, which must outlive the tree. Returns the bytes
 * consumed, -ENOTSUP (api/version not generated), -EBADMSG (malformed) or
 * -ENOMEM (arena full). Unknown tagged fields are skipped. */
ssize_t kafka_msg_decode(struct kafka_msg *m, struct kafka_arena *a, int16_t api_key,
                         int16_t version, enum kafka_dir dir, const uint8_t *body, size_t len);

/* Start building a message: a root whose fields hold their defaults. */
int kafka_msg_init(struct kafka_msg *m, struct kafka_arena *a, int16_t api_key, int16_t version,
                   enum kafka_dir dir);

/* Encode m's body into out. Returns bytes written, -ENOSPC if cap is too
 * small, -EINVAL if the tree does not fit the schema (null where the version
 * forbids it, wrong type). Tagged fields are written when KAFKA_VAL_SET. */
ssize_t kafka_msg_encode(const struct kafka_msg *m, uint8_t *out, size_t cap);

/* Exact byte size kafka_msg_encode would write, or -EINVAL. */
ssize_t kafka_msg_size(const struct kafka_msg *m);

/* Allocate n elements (each initialised to defaults) for array field id of
 * struct s; returns the element storage or NULL when the arena is full. */
struct kafka_val *kafka_val_array_init(struct kafka_arena *a, struct kafka_val *s, unsigned id,
                                       int32_t n);
/* Set array field id of struct s to null (only where the version allows
 * it: else the encoder refuses the message with -EINVAL). */
void kafka_val_array_set_null(struct kafka_val *s, unsigned id);

static inline uint16_t kafka_val_stride(const struct kafka_val *arr)
{
        return arr->sid == KAFKA_SID_NONE ? 1 : kafka_structs[arr->sid].nfields;
}

/* Element i of an array: for struct arrays, that element's field array. */
static inline struct kafka_val *kafka_val_array_elem(const struct kafka_val *arr, int32_t i)
{
        SL_DASSERT(arr->type == KAFKA_T_ARRAY && i >= 0 && i < arr->len);
        return arr->u.elems + (size_t)i * kafka_val_stride(arr);
}

static inline int32_t kafka_val_array_len(const struct kafka_val *s, unsigned id)
{
        SL_DASSERT(s[id].type == KAFKA_T_ARRAY);
        return s[id].len;
}

static inline struct kafka_val *kafka_val_array(const struct kafka_val *s, unsigned id)
{
        SL_DASSERT(s[id].type == KAFKA_T_ARRAY);
        return (struct kafka_val *)&s[id];
}

/* Nested struct field: its field array. */
static inline struct kafka_val *kafka_val_struct(const struct kafka_val *s, unsigned id)
{
        SL_DASSERT(s[id].type == KAFKA_T_STRUCT);
        return s[id].u.elems;
}

static inline bool kafka_val_is_set(const struct kafka_val *s, unsigned id)
{
        return s[id].flags & KAFKA_VAL_SET;
}

#define KAFKA_VAL_INT_ACCESSORS(name, ctype, T)                                                    \
        static inline ctype kafka_val_get_##name(const struct kafka_val *s, unsigned id)           \
        {                                                                                          \
                SL_DASSERT(s[id].type == (T));                                                     \
                return (ctype)s[id].u.i64;                                                         \
        }                                                                                          \
        static inline void kafka_val_set_##name(struct kafka_val *s, unsigned id, ctype v)         \
        {                                                                                          \
                SL_DASSERT(s[id].type == (T));                                                     \
                s[id].u.i64 = (int64_t)v;                                                          \
                s[id].flags |= KAFKA_VAL_SET;                                                      \
        }

KAFKA_VAL_INT_ACCESSORS(bool, bool, KAFKA_T_BOOL)
KAFKA_VAL_INT_ACCESSORS(int8, int8_t, KAFKA_T_INT8)
KAFKA_VAL_INT_ACCESSORS(int16, int16_t, KAFKA_T_INT16)
KAFKA_VAL_INT_ACCESSORS(uint16, uint16_t, KAFKA_T_UINT16)
KAFKA_VAL_INT_ACCESSORS(int32, int32_t, KAFKA_T_INT32)
KAFKA_VAL_INT_ACCESSORS(uint32, uint32_t, KAFKA_T_UINT32)
KAFKA_VAL_INT_ACCESSORS(int64, int64_t, KAFKA_T_INT64)

static inline double kafka_val_get_float64(const struct kafka_val *s, unsigned id)
{
        SL_DASSERT(s[id].type == KAFKA_T_FLOAT64);
        return s[id].u.f64;
}

static inline void kafka_val_set_float64(struct kafka_val *s, unsigned id, double v)
{
        SL_DASSERT(s[id].type == KAFKA_T_FLOAT64);
        s[id].u.f64 = v;
        s[id].flags |= KAFKA_VAL_SET;
}

static inline const uint8_t *kafka_val_get_uuid(const struct kafka_val *s, unsigned id)
{
        SL_DASSERT(s[id].type == KAFKA_T_UUID);
        return s[id].u.ptr;
}

/* Borrows uuid (16 bytes) until the message is encoded. */
static inline void kafka_val_set_uuid(struct kafka_val *s, unsigned id, const uint8_t *uuid)
{
        SL_DASSERT(s[id].type == KAFKA_T_UUID && uuid);
        s[id].u.ptr = uuid;
        s[id].flags |= KAFKA_VAL_SET;
}

/* STRING, BYTES and RECORDS: a view (len -1 = null). */
static inline struct kafka_str kafka_val_get_str(const struct kafka_val *s, unsigned id)
{
        SL_DASSERT(s[id].type == KAFKA_T_STRING || s[id].type == KAFKA_T_BYTES ||
                   s[id].type == KAFKA_T_RECORDS);
        return (struct kafka_str){s[id].u.ptr, s[id].len};
}

/* Borrows p until the message is encoded; p == NULL sets null. */
static inline void kafka_val_set_str(struct kafka_val *s, unsigned id, const void *p, int32_t len)
{
        SL_DASSERT(s[id].type == KAFKA_T_STRING || s[id].type == KAFKA_T_BYTES ||
                   s[id].type == KAFKA_T_RECORDS);
        s[id].u.ptr = p;
        s[id].len = p ? len : -1;
        s[id].flags |= KAFKA_VAL_SET;
}

void kafka_val_set_cstr(struct kafka_val *s, unsigned id, const char *cstr);

/* ---- framing and headers ------------------------------------------------- */

#define KAFKA_FRAME_PREFIX 4

/* Size of the frame at the start of buf (prefix included): 0 = need more
 * bytes (AGAIN), -EMSGSIZE above frame_max, -EBADMSG when negative. */
ssize_t kafka_frame_size(const uint8_t *buf, size_t len, uint32_t frame_max);

struct kafka_req_header {
        int16_t api_key;
        int16_t api_version;
        int32_t correlation_id;
        struct kafka_str client_id; /* view into the frame */
        uint8_t header_version;     /* 1 or 2 */
};

/* Request header version (1, or 2 for flexible versions); -ENOTSUP for an
 * api key that is not generated. Versions above the table's max keep the
 * flexible rule, so an over-new ApiVersions header still parses. */
int kafka_req_header_version(int16_t api_key, int16_t version);

/* Response header version: 0, or 1 for flexible versions; ApiVersions is
 * always 0 (KIP-511) so a client can read it before knowing our versions. */
int kafka_resp_header_version(int16_t api_key, int16_t version);

/* Parse the request header at the start of a frame's payload (after the
 * size prefix). Returns header bytes consumed; -EBADMSG if truncated or
 * malformed; -ENOTSUP for an unknown api key (api_key, api_version and
 * correlation_id are still filled so the caller can answer or close). */
ssize_t kafka_req_header_decode(struct kafka_req_header *h, const uint8_t *p, size_t len);

/* Write a request header (for tests and client tools). Returns bytes. */
ssize_t kafka_req_header_encode(const struct kafka_req_header *h, uint8_t *out, size_t cap);

/* Write a response header for (api_key, version). Returns bytes or -ENOSPC. */
ssize_t kafka_resp_header_encode(int16_t api_key, int16_t version, int32_t correlation_id,
                                 uint8_t *out, size_t cap);

/* A whole response frame: size prefix, header and m's body. Returns bytes
 * or -ENOSPC / -EINVAL. */
ssize_t kafka_response_encode(const struct kafka_msg *m, int32_t correlation_id, uint8_t *out,
                              size_t cap);

/* The same frame without copying large RECORDS values (Fetch's record
 * batches): each such value is written as its length only and listed in
 * seg[] with the position in out where its bytes belong, so the caller
 * sends out and the records as separate pieces (one copy less). Values
 * under KAFKA_SEG_MIN_BYTES, and any past seg_max, are copied as usual.
 * Returns the bytes written to out (the frame is that plus the segments'
 * bytes; the size prefix counts them all) or -ENOSPC / -EINVAL. */
#define KAFKA_SEG_MIN_BYTES 512
struct kafka_seg {
        size_t at; /* bytes of out that come before this piece */
        const uint8_t *ptr;
        uint32_t len;
};
ssize_t kafka_response_encode_segs(const struct kafka_msg *m, int32_t correlation_id, uint8_t *out,
                                   size_t cap, struct kafka_seg *seg, int seg_max, int *nseg);

#endif
