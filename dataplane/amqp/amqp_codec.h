/* AMQP 0-9-1 codecs: method frame payloads, content headers and field tables,
 * driven by the descriptor tables that gen/amqp_gen.py generates from the
 * RabbitMQ spec JSON. Decoding yields views into the input; nothing allocates. */
#ifndef AMQP_CODEC_H
#define AMQP_CODEC_H

#include "sl_common.h"
#include "amqp_spec.h"

/* Primitive wire types after domain resolution. */
enum amqp_type {
        AMQP_T_OCTET,
        AMQP_T_SHORT,
        AMQP_T_LONG,
        AMQP_T_LONGLONG,
        AMQP_T_SHORTSTR,
        AMQP_T_LONGSTR,
        AMQP_T_BIT,
        AMQP_T_TIMESTAMP,
        AMQP_T_TABLE,
};

/* Which peer receives a method (the spec's <chassis>): lets a handler refuse
 * a client sending a server-only method. */
enum { AMQP_CHASSIS_CLIENT = 1, AMQP_CHASSIS_SERVER = 2 };

struct amqp_arg_desc {
        const char *name;
        uint8_t type; /* enum amqp_type */
        uint8_t bit;  /* AMQP_T_BIT: position in its packed octet; 0 starts a new octet */
        uint8_t has_default;
        uint64_t def_u;    /* default of integer and bit arguments */
        const char *def_s; /* default of string arguments; NULL = empty (also tables) */
};

struct amqp_method_desc {
        uint32_t key; /* AMQP_METHOD_KEY(class_id, method_id) */
        uint16_t class_id;
        uint16_t method_id;
        const char *name; /* "basic.publish" */
        uint8_t nargs;
        bool content;          /* followed by a content header and body frames */
        bool synchronous;      /* expects one of responses[] */
        uint8_t chassis;       /* AMQP_CHASSIS_* bits: who receives it */
        uint32_t responses[2]; /* method keys, 0 = none */
        const struct amqp_arg_desc *args;
};

struct amqp_prop_desc {
        const char *name;
        uint8_t type; /* enum amqp_type */
};

struct amqp_class_desc {
        uint16_t id;
        const char *name;
        uint8_t nprops; /* content properties, in flag order */
        const struct amqp_prop_desc *props;
};

/* Generated tables (amqp_spec.c), sorted by class id then method id. */
extern const struct amqp_method_desc amqp_method_descs[AMQP_METHOD_COUNT];
extern const struct amqp_class_desc amqp_class_descs[AMQP_CLASS_COUNT];
const struct amqp_method_desc *amqp_method_desc_find(uint32_t key);
const struct amqp_class_desc *amqp_class_desc_find(uint16_t class_id);
/* "NOT_FOUND" for 404 etc., NULL for a code the spec does not define. */
const char *amqp_reply_name(uint16_t code);
/* Hard errors close the connection, soft ones only the channel. */
bool amqp_reply_is_hard(uint16_t code);

/* A view: borrowed bytes, valid as long as the buffer they point into. */
struct amqp_bytes {
        const uint8_t *ptr;
        uint32_t len;
};

/* NULL gives the empty view, so array items can be written without names. */
static inline struct amqp_bytes amqp_cstr(const char *s)
{
        size_t n = 0;
        if (!s)
                return (struct amqp_bytes){(const uint8_t *)"", 0};
        while (s[n])
                n++;
        return (struct amqp_bytes){(const uint8_t *)s, (uint32_t)n};
}

/* One argument or property value; the descriptor says which member is live:
 * u for octet/short/long/longlong/bit/timestamp, b for shortstr/longstr and
 * for tables (b = the table's entries without their 4-byte length prefix). */
union amqp_value {
        uint64_t u;
        struct amqp_bytes b;
};

/* A decoded method. Accessors by generated index, e.g.
 * m.args[AMQP_BASIC_PUBLISH_ROUTING_KEY].b */
struct amqp_method {
        uint32_t key; /* AMQP_BASIC_PUBLISH, ... */
        const struct amqp_method_desc *desc;
        union amqp_value args[AMQP_ARGS_MAX];
};

/* Limits on what a peer may send us. */
#define AMQP_TABLE_DEPTH_MAX 8 /* nesting of F/A inside a method or header table */

/* Decode a method frame payload (class id, method id, arguments) into *m.
 * Borrows p: string and table views point into it. Tables are validated.
 * Returns 0 or a negative AMQP reply code for the connection.close:
 * -AMQP_COMMAND_INVALID unknown class/method, -AMQP_FRAME_ERROR truncated
 * or trailing bytes, -AMQP_SYNTAX_ERROR malformed field table. */
int amqp_method_decode(const uint8_t *p, size_t n, struct amqp_method *m);

/* Fill *m with the spec defaults of a method (zero/empty where the spec has
 * none). Returns 0 or -ENOENT for an unknown key. */
int amqp_method_init(struct amqp_method *m, uint32_t key);

/* Encode *m (class id, method id, arguments) into out[0..cap). Table values
 * are copied as given (encode them with amqp_table_writer). Returns the byte
 * count, -ENOSPC if cap is too small, -EINVAL for a shortstr over 255 bytes or
 * an unknown method. */
int amqp_method_encode(const struct amqp_method *m, uint8_t *out, size_t cap);

/* A content header frame payload. Property i of the class is present when
 * bit i of present is set (index = generated AMQP_BASIC_PROP_*). */
struct amqp_header {
        uint16_t class_id;
        uint16_t weight; /* always 0 on the wire today; kept for round trips */
        uint64_t body_size;
        uint32_t present;
        union amqp_value props[AMQP_PROPS_MAX];
};

static inline bool amqp_header_has(const struct amqp_header *h, unsigned prop)
{
        return (h->present >> prop) & 1u;
}

/* Decode a content header payload. Borrows p. Flag words with the
 * continuation bit are followed; a flag for a property the class does not
 * have is an error. Bytes after the last property are ignored, as clients in
 * the wild send them (amqp091-go's read tests). Returns 0,
 * -AMQP_COMMAND_INVALID for a class without content, -AMQP_FRAME_ERROR if
 * truncated, -AMQP_SYNTAX_ERROR for a bad flag or table. */
int amqp_header_decode(const uint8_t *p, size_t n, struct amqp_header *h);

/* Encode a content header payload. Returns the byte count, -ENOSPC, or
 * -EINVAL (unknown class, present bit beyond the class's properties,
 * shortstr over 255 bytes). */
int amqp_header_encode(const struct amqp_header *h, uint8_t *out, size_t cap);

/* Whole frames (type, channel, size, payload, frame-end) around the payload
 * encoders, for the send path. Return the frame length, -ENOSPC or -EINVAL. */
int amqp_method_frame_encode(uint16_t channel, const struct amqp_method *m, uint8_t *out,
                             size_t cap);
int amqp_header_frame_encode(uint16_t channel, const struct amqp_header *h, uint8_t *out,
                             size_t cap);
/* Frames any payload (e.g. a body) by copying it. */
int amqp_frame_encode(uint8_t type, uint16_t channel, const uint8_t *payload, uint32_t len,
                      uint8_t *out, size_t cap);

/* ---- field tables and arrays ---------------------------------------------
 * Tags as RabbitMQ reads them (NOTES.md section 3): t b B s u I i L l f d D S
 * x A T F V. One struct serves the iterator and the writer. */
struct amqp_field {
        struct amqp_bytes name; /* empty for array items */
        uint8_t tag;            /* 't', 'b', ... */
        union {
                int64_t i;  /* b s I l L (sign-extended) */
                uint64_t u; /* t B u i T */
                float f;
                double d;
                struct {
                        uint8_t scale;
                        uint32_t value;
                } dec;               /* D */
                struct amqp_bytes b; /* S x; F A: entries/items without the length prefix */
        } v;
};

struct amqp_table_iter {
        const uint8_t *p;
        const uint8_t *end;
        bool array; /* items carry no names */
};

/* Iterate a table's entries (or an array's items): tbl is the view a decoded
 * method/header gives (no length prefix). Borrows tbl. */
void amqp_table_iter_init(struct amqp_table_iter *it, struct amqp_bytes tbl, bool array);
/* 1 and *f filled, 0 at the end, -AMQP_SYNTAX_ERROR on malformed input (an
 * unvalidated table may still be iterated safely). */
int amqp_table_next(struct amqp_table_iter *it, struct amqp_field *f);

/* Check a whole table (array = false) or array, nested ones included, down to
 * depth_max levels of F/A. 0 or -AMQP_SYNTAX_ERROR. */
int amqp_table_validate(struct amqp_bytes tbl, bool array, unsigned depth_max);

/* Look a top-level key up. 1 found, 0 not found, -AMQP_SYNTAX_ERROR. */
int amqp_table_find(struct amqp_bytes tbl, const char *name, struct amqp_field *f);

/* Builds a table into a caller buffer, nested tables and arrays included.
 * Errors are sticky: check once at amqp_table_writer_finish. The result is
 * the entries without a length prefix, i.e. what union amqp_value.b holds. */
struct amqp_table_writer {
        uint8_t *buf;
        size_t cap;
        size_t len;
        int err;
        unsigned depth;
        size_t open_at[AMQP_TABLE_DEPTH_MAX]; /* offset of each open length prefix */
        bool open_array[AMQP_TABLE_DEPTH_MAX + 1];
};

void amqp_table_writer_init(struct amqp_table_writer *w, uint8_t *buf, size_t cap);
/* Appends one field: f->name is ignored inside arrays. For F and A, f->v.b
 * is copied as already-encoded content. */
void amqp_table_put(struct amqp_table_writer *w, const struct amqp_field *f);
/* Opens a nested table ('F') or array ('A') named name (ignored in arrays);
 * close it with amqp_table_end. */
void amqp_table_begin(struct amqp_table_writer *w, const char *name, uint8_t tag);
void amqp_table_end(struct amqp_table_writer *w);
/* Returns the table as a view into buf, or an error: -ENOSPC (buffer),
 * -EINVAL (unknown tag, name over 255 bytes, unbalanced begin/end, depth). */
int amqp_table_writer_finish(struct amqp_table_writer *w, struct amqp_bytes *out);

/* Shorthands for the common field kinds. */
void amqp_table_put_bool(struct amqp_table_writer *w, const char *name, bool v);
void amqp_table_put_i64(struct amqp_table_writer *w, const char *name, int64_t v);
void amqp_table_put_str(struct amqp_table_writer *w, const char *name, struct amqp_bytes s);

#endif
