/* Resumable AMQP 0-9-1 frame parser: the 8-byte protocol header, then frames
 * (type, channel, size, payload, frame-end) over input cut anywhere, down to
 * one byte per call. Payloads are views into the input when a frame arrives
 * whole; only frames split across chunks are copied, into a caller buffer. */
#ifndef AMQP_FRAME_H
#define AMQP_FRAME_H

#include "sl_common.h"
#include "amqp_spec.h"

/* What a client must send first; also what a server answers to any header it
 * does not accept, right before closing. */
#define AMQP_PROTOCOL_HEADER     "AMQP\x00\x00\x09\x01"
#define AMQP_PROTOCOL_HEADER_LEN 8
/* type + channel + size before the payload, frame-end after it. */
#define AMQP_FRAME_HEADER_LEN 7
#define AMQP_FRAME_OVERHEAD   8

enum amqp_parse_rc {
        AMQP_PARSE_AGAIN = 0,         /* every input byte consumed, no frame complete yet */
        AMQP_PARSE_FRAME = 1,         /* *frame is filled */
        AMQP_PARSE_PROTOCOL = 2,      /* a protocol header we accept was consumed */
        AMQP_PARSE_NEED_BUFFER = 3,   /* a frame spans chunks: call amqp_parser_set_buffer */
        AMQP_PARSE_BAD_PROTOCOL = -1, /* send AMQP_PROTOCOL_HEADER back and close */
        /* Framing errors return -AMQP_FRAME_ERROR (-501): close the connection
         * with reply code 501 and err_text. */
};

struct amqp_frame {
        uint8_t type; /* AMQP_FRAME_METHOD, _HEADER, _BODY, _HEARTBEAT */
        uint16_t channel;
        uint32_t size;
        /* Borrowed: points into the chunk passed to the call that returned
         * the frame, or into the assembly buffer (assembled = true). Valid until
         * that chunk is released or the next amqp_parser_feed call. */
        const uint8_t *payload;
        bool assembled;
};

enum amqp_parser_state {
        AMQP_PS_PROTOCOL, /* reading the 8-byte protocol header */
        AMQP_PS_HEADER,   /* reading the 7-byte frame header */
        AMQP_PS_PAYLOAD,  /* copying a split payload into the buffer */
        AMQP_PS_END,      /* payload assembled, frame-end byte still to come */
        AMQP_PS_ERROR,    /* sticky: every later call returns the same error */
};

/* One per connection; owned by the connection's worker. */
struct amqp_parser {
        uint8_t state;                         /* enum amqp_parser_state */
        uint8_t hdr_len;                       /* bytes of hdr[] filled */
        uint8_t hdr[AMQP_PROTOCOL_HEADER_LEN]; /* scratch for a split header */
        uint32_t frame_max;    /* whole frame incl. overhead; 0 = only the buffer limits */
        struct amqp_frame cur; /* frame being read */
        uint32_t got;          /* payload bytes assembled so far */
        /* Assembly buffer, lent by the caller (see amqp_parser_set_buffer). */
        uint8_t *buf;
        size_t buf_cap;
        uint64_t offset;      /* stream bytes consumed so far */
        int err;              /* the sticky error once state == AMQP_PS_ERROR */
        uint64_t err_offset;  /* stream offset of the offending byte */
        const char *err_text; /* static reply-text for connection.close */
};

/* expect_protocol_header: true on the server side of a new connection.
 * frame_max: the limit before tune-ok (AMQP_FRAME_MIN_SIZE, or the spec's
 * 4096); raise it with amqp_parser_set_frame_max once tune-ok agreed. */
void amqp_parser_init(struct amqp_parser *p, uint32_t frame_max, bool expect_protocol_header);

/* Lends a buffer of cap bytes, used only for a frame whose bytes arrive in
 * more than one chunk: it must hold the largest payload the parser accepts,
 * i.e. cap >= frame_max - AMQP_FRAME_OVERHEAD (or any size when frame_max is
 * 0: larger frames are then refused with 501). Either lend one at init and
 * keep it, or lend one only when feed returns AMQP_PARSE_NEED_BUFFER and take
 * it back with amqp_parser_take_buffer once the frame it holds is handled,
 * so idle connections hold no buffer. Returns 0 or -EINVAL if cap is too
 * small. */
int amqp_parser_set_buffer(struct amqp_parser *p, uint8_t *buf, size_t cap);

/* Returns the lent buffer (NULL if none) and forgets it, or NULL while a
 * frame is being assembled into it. */
uint8_t *amqp_parser_take_buffer(struct amqp_parser *p);

/* Sets the negotiated frame_max (whole frame, overhead included; 0 = no
 * limit but the buffer). Returns 0 or -EINVAL if a lent buffer is too small. */
int amqp_parser_set_frame_max(struct amqp_parser *p, uint32_t frame_max);

/* Consumes bytes from data[0..len) and stops after the first event:
 *  AMQP_PARSE_FRAME      *frame filled; *consumed bytes used, feed the rest next;
 *  AMQP_PARSE_PROTOCOL   header accepted (0-9-1, or 0-9 "AMQP\1\1\0\9", which
 *                        RabbitMQ treats as 0-9-1);
 *  AMQP_PARSE_AGAIN      *consumed == len: all bytes kept in the parser;
 *  AMQP_PARSE_NEED_BUFFER no buffer is lent and a frame spans chunks: lend one
 *                        and call again with the remaining bytes;
 *  AMQP_PARSE_BAD_PROTOCOL / -AMQP_FRAME_ERROR: err_offset and err_text say
 *                        where and why. Errors: payload size over frame_max - 8,
 *                        frame-end other than 0xCE, unknown frame type.
 * Borrows data: a returned payload may point into it. Frame contents
 * (channel 0 for heartbeats, method payloads) are the caller's to check. */
int amqp_parser_feed(struct amqp_parser *p, const uint8_t *data, size_t len, size_t *consumed,
                     struct amqp_frame *frame);

#endif
