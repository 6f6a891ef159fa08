/* libFuzzer target for a durable queue's log records as recovery reads them
 * back (amqp_qrec_feed): whatever the log holds (corrupt lengths, pieces out
 * of order, orphans, torn tails), reassembly never writes past the buffer
 * it was given, never returns a message whose size disagrees with its head,
 * and frees every partial one. Then the round trip: the input's first bytes
 * as a message, split by amqp_qrec_build into small batches, reassemble to
 * exactly that message.
 * Input: byte 0 = batch size choice, then records as [u16 length][payload]. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_qrec.h"

#define DATA_CAP (1u << 20) /* messages larger than this are skipped (alloc NULL) */

static int live_buffers;

static uint8_t *fz_alloc(void *ctx, const struct amqp_qrec_head *h)
{
        (void)ctx;
        uint64_t n = amqp_qrec_data_len(h);
        if (n > DATA_CAP)
                return NULL;
        live_buffers++;
        return malloc(n ? n : 1);
}

static void fz_drop(void *ctx, uint8_t *data)
{
        (void)ctx;
        live_buffers--;
        free(data);
}

static void feed_records(const uint8_t *p, size_t n)
{
        struct amqp_qrec_asm as = {0};
        int64_t off = 0;
        while (n >= 2) {
                size_t len = (size_t)p[0] << 8 | p[1];
                p += 2;
                n -= 2;
                if (len > n)
                        len = n;
                enum amqp_qrec_kind k =
                    amqp_qrec_feed(&as, p, (uint32_t)len, off, fz_alloc, fz_drop, NULL);
                if (k == AMQP_QREC_MSG) {
                        if (as.off > off)
                                abort();
                        fz_drop(NULL, as.data);
                }
                p += len;
                n -= len;
                off++;
        }
        amqp_qrec_finish(&as, fz_drop, NULL);
        if (live_buffers != 0)
                abort(); /* a partial message leaked */
}

static void round_trip(const uint8_t *p, size_t n, uint32_t batch_max)
{
        if (n < 3)
                return;
        struct amqp_qrec_head h = {.type = p[0] & 1 ? DQ_REC_DELAYED : DQ_REC_MSG,
                                   .ex_len = (uint8_t)(p[1] % 8),
                                   .rk_len = (uint8_t)(p[2] % 8),
                                   .redelivered = p[0] & 2,
                                   .due_wall_ms = 12345};
        n -= 3;
        p += 3;
        if (n < (size_t)h.ex_len + h.rk_len)
                return;
        h.hdr_len = (uint32_t)(n - h.ex_len - h.rk_len) / 4;
        h.body_len = n - h.ex_len - h.rk_len - h.hdr_len;
        static uint8_t b[4096];
        struct amqp_qrec_asm as = {0};
        uint32_t pieces = amqp_qrec_pieces(&h, batch_max);
        int got = 0;
        for (uint32_t i = 0; i < pieces; i++) {
                uint32_t len = amqp_qrec_build(b, batch_max, &h, p, i, 100, 1);
                if (len > batch_max)
                        abort();
                enum amqp_qrec_kind k =
                    amqp_qrec_feed(&as, b + LOG_BATCH_HEADER_BYTES, len - LOG_BATCH_HEADER_BYTES,
                                   100 + i, fz_alloc, fz_drop, NULL);
                if (k == AMQP_QREC_MSG) {
                        if (i + 1 != pieces || as.off != 100 || as.h.body_len != h.body_len ||
                            as.h.hdr_len != h.hdr_len || memcmp(as.data, p, n) != 0)
                                abort();
                        fz_drop(NULL, as.data);
                        got++;
                }
        }
        amqp_qrec_finish(&as, fz_drop, NULL);
        if (got != 1 || live_buffers != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        static const uint32_t batch[4] = {LOG_BATCH_HEADER_BYTES + 40, 128, 512, 4096};
        feed_records(data + 1, size - 1);
        round_trip(data + 1, size - 1 < 8192 ? size - 1 : 8192, batch[data[0] % 4]);
        return 0;
}
