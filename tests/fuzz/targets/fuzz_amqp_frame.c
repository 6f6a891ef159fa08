/* libFuzzer target for the AMQP 0-9-1 receive path: the frame parser over the
 * input cut at random points must see exactly the frames it sees in one chunk;
 * every method and content header decodes, re-encodes and decodes again to the
 * same bytes; every table found is walked. Never crashes, never overruns.
 * Input: byte 0 = options (protocol header expected, frame_max choice), bytes
 * 1-2 = split seed, then the stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_codec.h"
#include "amqp_frame.h"

#define FUZZ_BUF_BYTES (128 * 1024)

static uint8_t asm_buf[FUZZ_BUF_BYTES];
static uint8_t enc1[FUZZ_BUF_BYTES + 64], enc2[FUZZ_BUF_BYTES + 64];

/* Order-dependent digest of everything the parser reported. */
struct trace {
        uint64_t hash;
        unsigned frames;
        int rc;
        uint64_t err_offset;
};

static void mix(struct trace *t, const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                t->hash = (t->hash ^ p[i]) * 0x100000001b3ull;
}

static void walk_table(struct amqp_bytes tbl, bool array, unsigned depth)
{
        struct amqp_table_iter it;
        struct amqp_field f;
        amqp_table_iter_init(&it, tbl, array);
        while (amqp_table_next(&it, &f) == 1)
                if ((f.tag == 'F' || f.tag == 'A') && depth > 0)
                        walk_table(f.v.b, f.tag == 'A', depth - 1);
}

static void check_method(const uint8_t *p, size_t n)
{
        struct amqp_method m, m2;
        if (amqp_method_decode(p, n, &m) < 0)
                return;
        for (unsigned i = 0; i < m.desc->nargs; i++)
                if (m.desc->args[i].type == AMQP_T_TABLE)
                        walk_table(m.args[i].b, false, AMQP_TABLE_DEPTH_MAX);
        /* Unused bits of a packed octet may differ, so compare from the
         * first re-encoding on. */
        int n1 = amqp_method_encode(&m, enc1, sizeof(enc1));
        if (n1 < 0 || (size_t)n1 != n)
                abort();
        if (amqp_method_decode(enc1, (size_t)n1, &m2) != 0)
                abort();
        int n2 = amqp_method_encode(&m2, enc2, sizeof(enc2));
        if (n2 != n1 || memcmp(enc1, enc2, (size_t)n1) != 0)
                abort();
}

static void check_header(const uint8_t *p, size_t n)
{
        struct amqp_header h, h2;
        if (amqp_header_decode(p, n, &h) < 0)
                return;
        if (amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS))
                walk_table(h.props[AMQP_BASIC_PROP_HEADERS].b, false, AMQP_TABLE_DEPTH_MAX);
        int n1 = amqp_header_encode(&h, enc1, sizeof(enc1));
        if (n1 < 0 || (size_t)n1 > n) /* trailing bytes are dropped */
                abort();
        if (amqp_header_decode(enc1, (size_t)n1, &h2) != 0)
                abort();
        int n2 = amqp_header_encode(&h2, enc2, sizeof(enc2));
        if (n2 != n1 || memcmp(enc1, enc2, (size_t)n1) != 0)
                abort();
}

static void on_frame(struct trace *t, const struct amqp_frame *f, bool decode)
{
        uint8_t hdr[7] = {f->type,
                          (uint8_t)(f->channel >> 8),
                          (uint8_t)f->channel,
                          (uint8_t)(f->size >> 24),
                          (uint8_t)(f->size >> 16),
                          (uint8_t)(f->size >> 8),
                          (uint8_t)f->size};
        mix(t, hdr, sizeof(hdr));
        mix(t, f->payload, f->size);
        t->frames++;
        if (!decode)
                return;
        if (f->type == AMQP_FRAME_METHOD)
                check_method(f->payload, f->size);
        else if (f->type == AMQP_FRAME_HEADER)
                check_header(f->payload, f->size);
}

/* Feeds the stream in chunks whose sizes come from seed (0 = one chunk),
 * each chunk in its own allocation so a view kept past it trips ASan. */
static void parse(const uint8_t *in, size_t n, uint8_t opts, uint32_t seed, bool decode,
                  struct trace *t)
{
        static const uint32_t frame_maxes[] = {4096, AMQP_FRAME_MIN_SIZE, FUZZ_BUF_BYTES, 0};
        struct amqp_parser p;
        amqp_parser_init(&p, frame_maxes[(opts >> 1) & 3], opts & 1);
        memset(t, 0, sizeof(*t));
        uint32_t x = seed | 1;
        size_t at = 0;
        while (at < n) {
                size_t len = n - at;
                if (seed) {
                        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                        len = SL_MIN(len, (size_t)(x % ((opts & 0x80) ? 8 : 64)) + 1);
                }
                uint8_t *chunk = malloc(len);
                memcpy(chunk, in + at, len);
                at += len;
                const uint8_t *d = chunk;
                while (len > 0) {
                        struct amqp_frame f;
                        size_t used;
                        int rc = amqp_parser_feed(&p, d, len, &used, &f);
                        if (used > len)
                                abort();
                        d += used;
                        len -= used;
                        if (rc == AMQP_PARSE_FRAME) {
                                on_frame(t, &f, decode);
                                if (f.assembled && amqp_parser_take_buffer(&p) != asm_buf)
                                        abort();
                        } else if (rc == AMQP_PARSE_NEED_BUFFER) {
                                if (amqp_parser_set_buffer(&p, asm_buf, sizeof(asm_buf)) != 0)
                                        abort();
                        } else if (rc < 0) {
                                t->rc = rc;
                                t->err_offset = p.err_offset;
                                free(chunk);
                                return;
                        } else if (rc == AMQP_PARSE_AGAIN && len != 0) {
                                abort();
                        }
                }
                free(chunk);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 3)
                return 0;
        uint8_t opts = data[0];
        uint32_t seed = (uint32_t)data[1] << 8 | data[2];
        data += 3;
        size -= 3;

        struct trace whole, split;
        parse(data, size, opts, 0, true, &whole);
        parse(data, size, opts, seed | 1, false, &split);
        if (whole.hash != split.hash || whole.frames != split.frames || whole.rc != split.rc ||
            whole.err_offset != split.err_offset)
                abort();

        /* The raw input as a table and as an array, too. */
        struct amqp_bytes raw = {data, (uint32_t)SL_MIN(size, (size_t)UINT32_MAX)};
        if (amqp_table_validate(raw, false, AMQP_TABLE_DEPTH_MAX) == 0)
                walk_table(raw, false, AMQP_TABLE_DEPTH_MAX);
        if (amqp_table_validate(raw, true, AMQP_TABLE_DEPTH_MAX) == 0)
                walk_table(raw, true, AMQP_TABLE_DEPTH_MAX);
        return 0;
}
