/* A durable queue's log records: building them (split across batches when
 * a message is larger than one) and reassembling them on recovery. See
 * amqp_qrec.h for the layout. */
#include "amqp_qrec.h"

#include <string.h>

#include "log_crc32c.h"

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
        put_be32(p, (uint32_t)(v >> 32));
        put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* The batch header around payload_len bytes (all but the CRC). */
static uint32_t frame_header(uint8_t *b, uint32_t payload_len, uint64_t now_ms)
{
        uint32_t len = LOG_BATCH_HEADER_BYTES + payload_len;
        memset(b, 0, LOG_BATCH_HEADER_BYTES);
        put_be32(b + 8, len - 12);
        b[16] = 2;
        put_be64(b + 27, now_ms);
        put_be64(b + 35, now_ms);
        put_be64(b + 43, UINT64_MAX);
        b[51] = b[52] = 0xff;
        put_be32(b + 53, UINT32_MAX);
        put_be32(b + 57, 1);
        return len;
}

uint32_t amqp_qrec_frame(uint8_t *b, uint32_t payload_len, uint64_t now_ms)
{
        uint32_t len = frame_header(b, payload_len, now_ms);
        put_be32(b + 17, log_crc32c(0, b + 21, len - 21));
        return len;
}

/* A record of hn bytes already at the payload's start followed by n bytes
 * of data: the data is copied and the CRC computed in one pass (the one
 * place a message's bytes are read on their way to the log besides the
 * log's own copy). */
static uint32_t frame_copy(uint8_t *b, uint32_t hn, const uint8_t *data, uint32_t n,
                           uint64_t now_ms)
{
        uint32_t len = frame_header(b, hn + n, now_ms);
        uint32_t crc = log_crc32c(0, b + 21, LOG_BATCH_HEADER_BYTES - 21 + hn);
        crc = log_crc32c_copy(crc, b + LOG_BATCH_HEADER_BYTES + hn, data, n);
        put_be32(b + 17, crc);
        return len;
}

/* The message's bytes in the first piece of a split one. */
static uint32_t first_chunk(const struct amqp_qrec_head *h, uint32_t batch_max)
{
        return batch_max - LOG_BATCH_HEADER_BYTES - 1 - amqp_qrec_head_len(h->type);
}

uint32_t amqp_qrec_pieces(const struct amqp_qrec_head *h, uint32_t batch_max)
{
        const uint32_t payload_max = batch_max - LOG_BATCH_HEADER_BYTES;
        uint64_t data = amqp_qrec_data_len(h);
        if (amqp_qrec_head_len(h->type) + data <= payload_max)
                return 1;
        uint64_t rest = data - first_chunk(h, batch_max), per = payload_max - DQ_CONT_HEAD;
        return 1 + (uint32_t)((rest + per - 1) / per);
}

static void write_head(uint8_t *p, const struct amqp_qrec_head *h)
{
        p[0] = h->type;
        p[1] = h->ex_len;
        p[2] = h->rk_len;
        put_be32(p + 3, h->hdr_len);
        put_be64(p + 7, h->body_len);
        p[15] = h->redelivered;
        if (h->type == DQ_REC_DELAYED)
                put_be64(p + 16, h->due_wall_ms);
}

uint32_t amqp_qrec_build(uint8_t *b, uint32_t batch_max, const struct amqp_qrec_head *h,
                         const uint8_t *data, uint32_t piece, int64_t first_off, uint64_t now_ms)
{
        const uint32_t payload_max = batch_max - LOG_BATCH_HEADER_BYTES;
        uint8_t *p = b + LOG_BATCH_HEADER_BYTES;
        uint64_t data_len = amqp_qrec_data_len(h);
        uint32_t hl = amqp_qrec_head_len(h->type);
        if (hl + data_len <= payload_max) {
                write_head(p, h);
                return frame_copy(b, hl, data, (uint32_t)data_len, now_ms);
        }
        uint32_t c0 = first_chunk(h, batch_max);
        if (piece == 0) {
                p[0] = DQ_REC_FIRST;
                write_head(p + 1, h);
                return frame_copy(b, 1 + hl, data, c0, now_ms);
        }
        uint64_t per = payload_max - DQ_CONT_HEAD;
        uint64_t from = c0 + (uint64_t)(piece - 1) * per;
        uint32_t n = (uint32_t)(data_len - from < per ? data_len - from : per);
        p[0] = DQ_REC_CONT;
        put_be64(p + 1, (uint64_t)first_off);
        return frame_copy(b, DQ_CONT_HEAD, data + from, n, now_ms);
}

/* Parses a 'M'/'D' head at p (n bytes available); 0 or -1. */
static int read_head(const uint8_t *p, uint32_t n, struct amqp_qrec_head *h)
{
        if (n < 16 || (p[0] != DQ_REC_MSG && p[0] != DQ_REC_DELAYED))
                return -1;
        h->type = p[0];
        if (n < amqp_qrec_head_len(h->type))
                return -1;
        h->ex_len = p[1];
        h->rk_len = p[2];
        h->hdr_len = (uint32_t)p[3] << 24 | (uint32_t)p[4] << 16 | (uint32_t)p[5] << 8 | p[6];
        h->body_len = get_be64(p + 7);
        h->redelivered = p[15] != 0;
        h->due_wall_ms = h->type == DQ_REC_DELAYED ? get_be64(p + 16) : 0;
        return 0;
}

static void drop_open(struct amqp_qrec_asm *a, amqp_qrec_drop_fn drop, void *ctx)
{
        if (a->open && a->data)
                drop(ctx, a->data);
        a->open = false;
        a->data = NULL;
}

enum amqp_qrec_kind amqp_qrec_feed(struct amqp_qrec_asm *a, const uint8_t *pl, uint32_t plen,
                                   int64_t off, amqp_qrec_alloc_fn alloc, amqp_qrec_drop_fn drop,
                                   void *ctx)
{
        if (plen < 1)
                return AMQP_QREC_NONE;
        if (pl[0] == DQ_REC_ACK)
                return AMQP_QREC_ACK;
        if (pl[0] == DQ_REC_CONT) {
                if (!a->open || plen < DQ_CONT_HEAD || (int64_t)get_be64(pl + 1) != a->off)
                        return AMQP_QREC_NONE; /* an orphan (its start was trimmed or torn) */
                uint64_t need = amqp_qrec_data_len(&a->h), n = plen - DQ_CONT_HEAD;
                if (n > need - a->got) {
                        drop_open(a, drop, ctx);
                        return AMQP_QREC_NONE;
                }
                if (a->data)
                        memcpy(a->data + a->got, pl + DQ_CONT_HEAD, n);
                a->got += n;
                if (a->got < need)
                        return AMQP_QREC_NONE;
                a->open = false;
                return a->data ? AMQP_QREC_MSG : AMQP_QREC_NONE;
        }
        /* anything else starts a new message: a split one still open lost
         * its tail (never written completely before a crash) */
        drop_open(a, drop, ctx);
        bool first = pl[0] == DQ_REC_FIRST;
        const uint8_t *hp = first ? pl + 1 : pl;
        uint32_t hn = first ? plen - 1 : plen;
        struct amqp_qrec_head h;
        if (read_head(hp, hn, &h) != 0)
                return AMQP_QREC_NONE;
        uint32_t hl = amqp_qrec_head_len(h.type);
        uint64_t need = amqp_qrec_data_len(&h), have = hn - hl;
        if (first ? have >= need : have != need)
                return AMQP_QREC_NONE;
        a->h = h;
        a->off = off;
        a->got = have;
        a->data = alloc(ctx, &h);
        if (a->data)
                memcpy(a->data, hp + hl, have);
        if (first) {
                a->open = true;
                return AMQP_QREC_NONE;
        }
        return a->data ? AMQP_QREC_MSG : AMQP_QREC_NONE;
}

void amqp_qrec_finish(struct amqp_qrec_asm *a, amqp_qrec_drop_fn drop, void *ctx)
{
        drop_open(a, drop, ctx);
}
