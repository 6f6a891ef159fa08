/* AMQP 0-9-1 frame parser as an explicit state machine (protocol header,
 * frame header, payload, frame-end). Headers split across chunks go through
 * an 8-byte scratch area; split payloads through the caller's buffer. */
#include "amqp_frame.h"

#include <errno.h>
#include <string.h>

/* RabbitMQ also accepts the 0-9 header and speaks 0-9-1 on it. */
static const uint8_t proto_091[AMQP_PROTOCOL_HEADER_LEN] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
static const uint8_t proto_09[AMQP_PROTOCOL_HEADER_LEN] = {'A', 'M', 'Q', 'P', 1, 1, 0, 9};

void amqp_parser_init(struct amqp_parser *p, uint32_t frame_max, bool expect_protocol_header)
{
        memset(p, 0, sizeof(*p));
        p->state = expect_protocol_header ? AMQP_PS_PROTOCOL : AMQP_PS_HEADER;
        p->frame_max = frame_max;
        SL_ASSERT(frame_max == 0 || frame_max >= AMQP_FRAME_OVERHEAD);
}

static bool buffer_fits(uint32_t frame_max, size_t cap)
{
        return frame_max == 0 || cap >= frame_max - AMQP_FRAME_OVERHEAD;
}

static bool assembling(const struct amqp_parser *p)
{
        return (p->state == AMQP_PS_PAYLOAD && p->got > 0) ||
               (p->state == AMQP_PS_END && p->cur.size > 0);
}

int amqp_parser_set_buffer(struct amqp_parser *p, uint8_t *buf, size_t cap)
{
        if (!buf || !buffer_fits(p->frame_max, cap))
                return -EINVAL;
        if (assembling(p) && buf != p->buf)
                return -EBUSY; /* half a payload already lives in the old one */
        p->buf = buf;
        p->buf_cap = cap;
        return 0;
}

uint8_t *amqp_parser_take_buffer(struct amqp_parser *p)
{
        if (assembling(p))
                return NULL;
        uint8_t *buf = p->buf;
        p->buf = NULL;
        p->buf_cap = 0;
        return buf;
}

int amqp_parser_set_frame_max(struct amqp_parser *p, uint32_t frame_max)
{
        if (frame_max != 0 && frame_max < AMQP_FRAME_OVERHEAD)
                return -EINVAL;
        if (p->buf && !buffer_fits(frame_max, p->buf_cap))
                return -EINVAL;
        p->frame_max = frame_max;
        return 0;
}

static int fail(struct amqp_parser *p, int err, uint64_t at, const char *text)
{
        p->state = AMQP_PS_ERROR;
        p->err = err;
        p->err_offset = at;
        p->err_text = text;
        return err;
}

static bool proto_prefix_ok(const uint8_t *hdr, size_t n)
{
        return memcmp(hdr, proto_091, n) == 0 || memcmp(hdr, proto_09, n) == 0;
}

static bool frame_type_known(uint8_t type)
{
        return type == AMQP_FRAME_METHOD || type == AMQP_FRAME_HEADER || type == AMQP_FRAME_BODY ||
               type == AMQP_FRAME_HEARTBEAT;
}

/* Checks a complete 7-byte frame header found at stream offset at. */
static int header_take(struct amqp_parser *p, const uint8_t *h, uint64_t at)
{
        p->cur.type = h[0];
        p->cur.channel = (uint16_t)(h[1] << 8 | h[2]);
        p->cur.size = (uint32_t)h[3] << 24 | (uint32_t)h[4] << 16 | (uint32_t)h[5] << 8 | h[6];
        p->cur.payload = NULL;
        p->cur.assembled = false;
        p->got = 0;
        if (!frame_type_known(p->cur.type))
                return fail(p, -AMQP_FRAME_ERROR, at, "FRAME_ERROR - unknown frame type");
        if (p->frame_max && p->cur.size > p->frame_max - AMQP_FRAME_OVERHEAD)
                return fail(p, -AMQP_FRAME_ERROR, at + 3, "FRAME_ERROR - frame too large");
        p->state = AMQP_PS_PAYLOAD;
        return 0;
}

int amqp_parser_feed(struct amqp_parser *p, const uint8_t *data, size_t len, size_t *consumed,
                     struct amqp_frame *frame)
{
        size_t i = 0;
        int rc = AMQP_PARSE_AGAIN;

        while (rc == AMQP_PARSE_AGAIN) {
                switch (p->state) {
                case AMQP_PS_ERROR:
                        *consumed = 0;
                        return p->err;

                case AMQP_PS_PROTOCOL:
                        /* Byte by byte, so "GET / HTTP" fails at its first byte. */
                        while (i < len && p->hdr_len < AMQP_PROTOCOL_HEADER_LEN) {
                                p->hdr[p->hdr_len++] = data[i++];
                                if (!proto_prefix_ok(p->hdr, p->hdr_len)) {
                                        rc = fail(p, AMQP_PARSE_BAD_PROTOCOL, p->offset + i - 1,
                                                  "protocol header not supported");
                                        goto out;
                                }
                        }
                        if (p->hdr_len < AMQP_PROTOCOL_HEADER_LEN)
                                goto out;
                        p->hdr_len = 0;
                        p->state = AMQP_PS_HEADER;
                        rc = AMQP_PARSE_PROTOCOL;
                        break;

                case AMQP_PS_HEADER:
                        if (p->hdr_len == 0 && len - i >= AMQP_FRAME_HEADER_LEN) {
                                /* Common case: the header is whole in this chunk. */
                                i += AMQP_FRAME_HEADER_LEN;
                                if (header_take(p, data + i - AMQP_FRAME_HEADER_LEN,
                                                p->offset + i - AMQP_FRAME_HEADER_LEN) < 0) {
                                        rc = p->err;
                                        goto out;
                                }
                                break;
                        }
                        while (i < len && p->hdr_len < AMQP_FRAME_HEADER_LEN)
                                p->hdr[p->hdr_len++] = data[i++];
                        if (p->hdr_len < AMQP_FRAME_HEADER_LEN)
                                goto out;
                        p->hdr_len = 0;
                        if (header_take(p, p->hdr, p->offset + i - AMQP_FRAME_HEADER_LEN) < 0) {
                                rc = p->err;
                                goto out;
                        }
                        break;

                case AMQP_PS_PAYLOAD: {
                        size_t size = p->cur.size;
                        if (p->got == 0 && len - i > size) {
                                /* Payload and frame-end in this chunk: a view, no copy. */
                                if (data[i + size] != AMQP_FRAME_END) {
                                        rc = fail(p, -AMQP_FRAME_ERROR, p->offset + i + size,
                                                  "FRAME_ERROR - bad frame end");
                                        goto out;
                                }
                                p->cur.payload = data + i;
                                i += size + 1;
                                *frame = p->cur;
                                p->state = AMQP_PS_HEADER;
                                rc = AMQP_PARSE_FRAME;
                                break;
                        }
                        if (i == len)
                                goto out; /* nothing to store yet; the rest may come whole */
                        if (size > 0 && !p->buf) {
                                rc = AMQP_PARSE_NEED_BUFFER;
                                goto out;
                        }
                        if (size > p->buf_cap) {
                                /* Only with frame_max 0: a lent buffer fits frame_max. */
                                rc = fail(p, -AMQP_FRAME_ERROR, p->offset + i,
                                          "FRAME_ERROR - frame too large");
                                goto out;
                        }
                        size_t n = SL_MIN(size - p->got, len - i);
                        if (n)
                                memcpy(p->buf + p->got, data + i, n);
                        p->got += (uint32_t)n;
                        i += n;
                        if (p->got < size)
                                goto out;
                        p->state = AMQP_PS_END;
                        break;
                }

                case AMQP_PS_END:
                        if (i == len)
                                goto out;
                        if (data[i] != AMQP_FRAME_END) {
                                rc = fail(p, -AMQP_FRAME_ERROR, p->offset + i,
                                          "FRAME_ERROR - bad frame end");
                                goto out;
                        }
                        i++;
                        *frame = p->cur;
                        frame->assembled = p->cur.size > 0;
                        frame->payload = frame->assembled ? p->buf : (const uint8_t *)"";
                        p->state = AMQP_PS_HEADER;
                        rc = AMQP_PARSE_FRAME;
                        break;
                }
        }
out:
        SL_DASSERT(rc != AMQP_PARSE_AGAIN || i == len);
        p->offset += i;
        *consumed = i;
        return rc;
}
