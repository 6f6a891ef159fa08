/* The records of a durable queue's log (amqp_durable.c), kept apart from
 * the worker so the power-cut unit test writes and reads exactly what the
 * server does. Every record is one Kafka v2 batch of one record around
 * the payload (the log checks the frame and CRC, never the records):
 *
 *   'M' / 'D'  a whole message: type, ex_len (1), rk_len (1), hdr_len (4),
 *              body_len (8), redelivered (1), ['D': due wall ms (8)], then
 *              exchange, routing key, content header payload, body
 *   'F'        the first piece of a message too large for one batch: 'F',
 *              then the 'M'/'D' payload cut at the batch limit
 *   'C'        a continuation: 'C', the first piece's offset (8), the next
 *              bytes of that payload; the pieces of one message are
 *              consecutive in the log
 *   'A'        settlements: 'A', then the (first) offsets of settled messages
 *
 * A message is whole once its last 'C' arrived; a torn tail (pieces
 * missing after a crash) is discarded, never half delivered. */
#ifndef AMQP_QREC_H
#define AMQP_QREC_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

#define DQ_REC_MSG     'M'
#define DQ_REC_ACK     'A'
#define DQ_REC_DELAYED 'D' /* a held x-delayed-message: 'M' plus its due time (wall clock) */
#define DQ_REC_FIRST   'F'
#define DQ_REC_CONT    'C'
#define DQ_BATCH_MAX   (2u << 20)
#define DQ_CONT_HEAD   9u /* 'C' and the first piece's offset */

/* What precedes a message's bytes in its record. */
struct amqp_qrec_head {
        uint8_t type; /* DQ_REC_MSG or DQ_REC_DELAYED */
        uint8_t ex_len, rk_len;
        bool redelivered;
        uint32_t hdr_len;
        uint64_t body_len;
        uint64_t due_wall_ms; /* DQ_REC_DELAYED only */
};

static inline uint32_t amqp_qrec_head_len(uint8_t type)
{
        return type == DQ_REC_DELAYED ? 24 : 16;
}

/* ex + rk + header + body: the bytes after the head. */
static inline uint64_t amqp_qrec_data_len(const struct amqp_qrec_head *h)
{
        return (uint64_t)h->ex_len + h->rk_len + h->hdr_len + h->body_len;
}

/* Frames payload_len bytes at b + LOG_BATCH_HEADER_BYTES; returns the
 * batch length. */
uint32_t amqp_qrec_frame(uint8_t *b, uint32_t payload_len, uint64_t now_ms);

/* Records the message takes in batches of at most batch_max bytes (the
 * server: DQ_BATCH_MAX; 1 when it fits one). */
uint32_t amqp_qrec_pieces(const struct amqp_qrec_head *h, uint32_t batch_max);

/* Writes record `piece` (0 .. pieces-1) of the message into b (room for
 * batch_max) and returns its batch length. data: its ex, rk, header and
 * body; first_off: the offset of piece 0 (continuations name it). */
uint32_t amqp_qrec_build(uint8_t *b, uint32_t batch_max, const struct amqp_qrec_head *h,
                         const uint8_t *data, uint32_t piece, int64_t first_off, uint64_t now_ms);

/* Reassembly while reading a log back: feed every record in log order. */
struct amqp_qrec_asm {
        struct amqp_qrec_head h;
        int64_t off;   /* of the message (its first piece) */
        uint8_t *data; /* where its bytes go (from alloc) */
        uint64_t got;
        bool open; /* a split message is being assembled */
};

/* Returns where a message of data_len bytes goes (NULL: skip it). */
typedef uint8_t *(*amqp_qrec_alloc_fn)(void *ctx, const struct amqp_qrec_head *h);
/* Drops a message abandoned half way (its pieces torn off). */
typedef void (*amqp_qrec_drop_fn)(void *ctx, uint8_t *data);

enum amqp_qrec_kind {
        AMQP_QREC_NONE, /* nothing complete (a piece taken, or a record ignored) */
        AMQP_QREC_MSG,  /* a[0] holds a whole message: h, off, data */
        AMQP_QREC_ACK,  /* an ack record: its offsets are for the caller */
};

/* One record's payload at offset off. A whole message is copied into what
 * alloc returned; a piece out of order (or after a torn message) drops the
 * partial one. */
enum amqp_qrec_kind amqp_qrec_feed(struct amqp_qrec_asm *a, const uint8_t *pl, uint32_t plen,
                                   int64_t off, amqp_qrec_alloc_fn alloc, amqp_qrec_drop_fn drop,
                                   void *ctx);
/* End of the log: a message still being assembled is torn (dropped). */
void amqp_qrec_finish(struct amqp_qrec_asm *a, amqp_qrec_drop_fn drop, void *ctx);

#endif
