/* libFuzzer target for the NATS parser: the first bytes of the input choose
 * split points, the rest is fed whole and then in those chunks; the two runs
 * must give the same ops (split payloads assembled) and the same error. The
 * CONNECT scanner runs on every CONNECT argument. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nats_parser.h"

#define CUTS_MAX 16

/* One buffer of records; a message that is still arriving goes to pend
 * first, so a message that ends in an error leaves no record whether it
 * came whole or in fragments. */
struct buf {
        uint8_t *s;
        size_t len, cap;
};

struct out {
        struct buf done, pend;
        struct buf *cur;
        bool in_msg;
        size_t msg_total, msg_got;
};

static void buf_put(struct buf *o, const void *p, size_t n)
{
        if (o->len + n > o->cap) {
                o->cap = (o->len + n) * 2 + 64;
                o->s = realloc(o->s, o->cap);
                if (!o->s)
                        abort();
        }
        if (n)
                memcpy(o->s + o->len, p, n);
        o->len += n;
}

static void put(struct out *o, const void *p, size_t n)
{
        buf_put(o->cur ? o->cur : &o->done, p, n);
}

static void flush_pend(struct out *o)
{
        buf_put(&o->done, o->pend.s, o->pend.len);
        o->pend.len = 0;
        o->cur = &o->done;
}

static void put_view(struct out *o, struct nats_view v)
{
        uint32_t l = (uint32_t)v.len;
        put(o, &l, sizeof(l));
        put(o, v.ptr, v.len);
}

static void record(struct out *o, const struct nats_op *op)
{
        uint8_t t = (uint8_t)op->type;
        if (op->type == NATS_OP_PAYLOAD) {
                if (!o->in_msg)
                        abort();
                o->msg_got += op->payload.len;
                if (o->msg_got > o->msg_total)
                        abort();
                put(o, op->payload.ptr, op->payload.len);
                if (op->end) {
                        if (o->msg_got != o->msg_total)
                                abort();
                        o->in_msg = false;
                        flush_pend(o);
                }
                return;
        }
        if (o->in_msg)
                abort();
        if (op->type == NATS_OP_PUB || op->type == NATS_OP_HPUB)
                o->cur = &o->pend;
        put(o, &t, 1);
        put_view(o, op->subject);
        put_view(o, op->reply);
        put_view(o, op->queue);
        put_view(o, op->sid);
        put_view(o, op->arg);
        put(o, &op->hdr_len, sizeof(op->hdr_len));
        put(o, &op->total_len, sizeof(op->total_len));
        put(o, &op->max_msgs, sizeof(op->max_msgs));
        if (op->type == NATS_OP_PUB || op->type == NATS_OP_HPUB) {
                if (op->hdr_len > op->total_len || op->payload.len > op->total_len)
                        abort();
                put(o, op->payload.ptr, op->payload.len);
                if (op->partial) {
                        o->in_msg = true;
                        o->msg_total = op->total_len;
                        o->msg_got = op->payload.len;
                } else if (op->payload.len != op->total_len) {
                        abort();
                } else {
                        flush_pend(o);
                }
        }
        if (op->type == NATS_OP_CONNECT) {
                struct nats_connect c;
                uint8_t buf[256];
                int rc = nats_connect_parse(op->arg.ptr, op->arg.len, &c, buf, sizeof(buf));
                put(o, &rc, sizeof(rc));
                if (rc == 0) {
                        (void)nats_connect_validate(&c);
                        put(o, &c.verbose, 1);
                        put_view(o, c.name);
                        put_view(o, c.pass);
                }
        }
}

/* Returns the final status: 0 (need more) or the error. */
static int run(const struct nats_parser_config *cfg, const uint8_t *data, size_t len,
               const size_t *cuts, size_t ncuts, struct out *o)
{
        struct nats_parser *p = malloc(sizeof(*p));
        nats_parser_init(p, cfg);
        size_t prev = 0;
        int status = 0;
        for (size_t k = 0; k <= ncuts && !status; k++) {
                size_t end = k < ncuts ? cuts[k] : len;
                /* a private copy per chunk, freed after: ASan catches views
                 * that outlive their chunk */
                uint8_t *c = malloc(end - prev + 1);
                memcpy(c, data + prev, end - prev);
                size_t off = 0, n = end - prev;
                while (off < n) {
                        struct nats_op op;
                        size_t used;
                        int rc = nats_parse(p, c + off, n - off, &used, &op);
                        if (rc < 0) {
                                if (used >= n - off)
                                        abort();
                                status = rc;
                                break;
                        }
                        if (rc == NATS_PARSE_AGAIN) {
                                if (used != n - off)
                                        abort();
                                break;
                        }
                        if (used == 0 || used > n - off)
                                abort();
                        off += used;
                        record(o, &op);
                }
                free(c);
                prev = end;
        }
        if (status == 0 && o->in_msg) {
                static const uint8_t incomplete = 0xff;
                flush_pend(o);
                put(o, &incomplete, 1);
        }
        free(p);
        free(o->pend.s);
        return status;
}

static int cmp_size(const void *a, const void *b)
{
        size_t x = *(const size_t *)a, y = *(const size_t *)b;
        return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 2)
                return 0;
        /* byte 0: number of cuts and a small control line limit now and then;
         * then one byte per cut */
        size_t ncuts = data[0] % (CUTS_MAX + 1);
        struct nats_parser_config cfg;
        nats_parser_config_default(&cfg);
        if (data[0] & 0x80) {
                cfg.max_control_line = 16 + data[1] % 64;
                cfg.max_payload = data[1] % 32;
        }
        size_t hdr = 2 + ncuts;
        if (size < hdr)
                return 0;
        const uint8_t *in = data + hdr;
        size_t len = size - hdr;
        size_t cuts[CUTS_MAX];
        for (size_t k = 0; k < ncuts; k++)
                cuts[k] = len ? (size_t)data[2 + k] * len / 256 : 0;
        qsort(cuts, ncuts, sizeof(size_t), cmp_size);

        struct out whole = {0}, split = {0}, bytes = {0};
        int s1 = run(&cfg, in, len, NULL, 0, &whole);
        int s2 = run(&cfg, in, len, cuts, ncuts, &split);
        if (s1 != s2 || whole.done.len != split.done.len ||
            (whole.done.len && memcmp(whole.done.s, split.done.s, whole.done.len)))
                abort();
        if (len <= 256) {
                size_t every[256];
                for (size_t k = 0; k + 1 < len; k++)
                        every[k] = k + 1;
                int s3 = run(&cfg, in, len, every, len ? len - 1 : 0, &bytes);
                if (s1 != s3 || whole.done.len != bytes.done.len ||
                    (whole.done.len && memcmp(whole.done.s, bytes.done.s, whole.done.len)))
                        abort();
        }
        free(whole.done.s);
        free(split.done.s);
        free(bytes.done.s);
        return 0;
}
