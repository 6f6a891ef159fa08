/* AMQP 0-9-1 load generator: its own minimal client on non-blocking sockets,
 * every connection in one thread around poll(). The publisher writes a
 * prebuilt block of identical basic.publish + header + body frames straight
 * from memory; readers parse only method frames and skip bodies without
 * copying. Nothing is allocated per message: confirm latencies go through a
 * fixed ring of send times indexed by delivery tag. */
#include "bench_amqp.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RBUF_BYTES       (512u * 1024u)
#define WBUF_BYTES       (64u * 1024u)
#define BLOCK_BYTES_MIN  (256u * 1024u)
#define FRAME_MAX_BYTES  131072u /* what we ask for; both brokers default to it */
#define METHOD_BYTES_MAX 4096u   /* longest method frame we build */
#define REPLY_BYTES_MAX  512u    /* longest awaited reply we keep */
#define INFLIGHT_RING    65536u  /* confirm send-time ring; a power of two */
#define SETUP_TIMEOUT_NS (10ull * 1000000000ull)
#define DRAIN_TIMEOUT_NS (10ull * 1000000000ull)
#define POLL_MS          50
#define CHANNEL          1

#define FRAME_METHOD    1
#define FRAME_HEADER    2
#define FRAME_BODY      3
#define FRAME_HEARTBEAT 8
#define FRAME_END       0xCE

/* class << 16 | method */
#define M(cls, id)           (((uint32_t)(cls) << 16) | (uint32_t)(id))
#define CONNECTION_START     M(10, 10)
#define CONNECTION_START_OK  M(10, 11)
#define CONNECTION_TUNE      M(10, 30)
#define CONNECTION_TUNE_OK   M(10, 31)
#define CONNECTION_OPEN      M(10, 40)
#define CONNECTION_OPEN_OK   M(10, 41)
#define CONNECTION_CLOSE     M(10, 50)
#define CONNECTION_CLOSE_OK  M(10, 51)
#define CONNECTION_BLOCKED   M(10, 60)
#define CONNECTION_UNBLOCKED M(10, 61)
#define CHANNEL_OPEN         M(20, 10)
#define CHANNEL_OPEN_OK      M(20, 11)
#define CHANNEL_CLOSE        M(20, 40)
#define EXCHANGE_DECLARE     M(40, 10)
#define EXCHANGE_DECLARE_OK  M(40, 11)
#define EXCHANGE_DELETE      M(40, 20)
#define EXCHANGE_DELETE_OK   M(40, 21)
#define QUEUE_DECLARE        M(50, 10)
#define QUEUE_DECLARE_OK     M(50, 11)
#define QUEUE_BIND           M(50, 20)
#define QUEUE_BIND_OK        M(50, 21)
#define QUEUE_DELETE         M(50, 40)
#define QUEUE_DELETE_OK      M(50, 41)
#define BASIC_QOS            M(60, 10)
#define BASIC_QOS_OK         M(60, 11)
#define BASIC_CONSUME        M(60, 20)
#define BASIC_CONSUME_OK     M(60, 21)
#define BASIC_PUBLISH        M(60, 40)
#define BASIC_RETURN         M(60, 50)
#define BASIC_DELIVER        M(60, 60)
#define BASIC_ACK            M(60, 80)
#define BASIC_NACK           M(60, 120)
#define CONFIRM_SELECT       M(85, 10)
#define CONFIRM_SELECT_OK    M(85, 11)

enum conn_role { ROLE_PUB, ROLE_SUB };

struct aconn {
        int fd;
        enum conn_role role;
        char *rbuf;
        size_t rlen, roff;
        uint64_t skip_bytes; /* rest of a body frame being skipped, frame end included */
        char *wbuf;          /* methods (setup, acks), never mixed into a publish */
        size_t wlen, woff;
        bool want_out;
        bool manual_ack;
        uint64_t deliveries;
        uint64_t last_tag, acked_tag;
        uint32_t want; /* the method a synchronous call waits for, 0 if none */
        bool got;
        char reply[REPLY_BYTES_MAX];
        size_t reply_len;
};

struct abench {
        const struct bench_opts *o;
        int mode;
        struct aconn conns[BENCH_FANOUT_MAX + 1];
        unsigned nconns, nsubs; /* conns[0] publishes, 1..nsubs consume */
        uint32_t frame_max;
        char queue[BENCH_FANOUT_MAX][64];
        unsigned nqueues;
        char exchange[64];
        char *payload;

        /* publisher: a block of whole messages, written cyclically */
        char *block;
        size_t block_bytes, msg_bytes, block_off;
        uint64_t pub_bytes, pub_limit_bytes;
        uint64_t window_msgs;

        /* confirms: send time of tag t in sent_ns[t % INFLIGHT_RING] */
        uint64_t *sent_ns;
        uint64_t confirmed, nacked, returned;
        struct bench_hist *hist;

        uint64_t now_ns, start_ns, deadline_ns, last_event_ns;
};

/* ---- encoding (big-endian, AMQP's) ---- */

struct wr {
        char *p;
        size_t len, cap;
        bool overflow;
};

static void wr_bytes(struct wr *w, const void *d, size_t n)
{
        if (w->len + n > w->cap) {
                w->overflow = true;
                return;
        }
        memcpy(w->p + w->len, d, n);
        w->len += n;
}

static void wr_u8(struct wr *w, uint8_t v)
{
        wr_bytes(w, &v, 1);
}

static void wr_u16(struct wr *w, uint16_t v)
{
        uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
        wr_bytes(w, b, 2);
}

static void wr_u32(struct wr *w, uint32_t v)
{
        uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        wr_bytes(w, b, 4);
}

static void wr_u64(struct wr *w, uint64_t v)
{
        wr_u32(w, (uint32_t)(v >> 32));
        wr_u32(w, (uint32_t)v);
}

static void wr_shortstr(struct wr *w, const char *s)
{
        size_t n = strlen(s);
        if (n > 255) {
                w->overflow = true;
                return;
        }
        wr_u8(w, (uint8_t)n);
        wr_bytes(w, s, n);
}

static void wr_longstr(struct wr *w, const void *s, size_t n)
{
        wr_u32(w, (uint32_t)n);
        wr_bytes(w, s, n);
}

/* Starts a frame; frame_end() fills in its size and appends the end octet. */
static size_t frame_begin(struct wr *w, uint8_t type, uint16_t channel)
{
        wr_u8(w, type);
        wr_u16(w, channel);
        size_t at = w->len;
        wr_u32(w, 0);
        return at;
}

static void frame_end(struct wr *w, size_t size_at)
{
        if (w->overflow)
                return;
        uint32_t size = (uint32_t)(w->len - size_at - 4);
        uint8_t b[4] = {(uint8_t)(size >> 24), (uint8_t)(size >> 16), (uint8_t)(size >> 8),
                        (uint8_t)size};
        memcpy(w->p + size_at, b, 4);
        wr_u8(w, FRAME_END);
}

static uint16_t rd_u16(const uint8_t *p)
{
        return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd_u32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd_u64(const uint8_t *p)
{
        return (uint64_t)rd_u32(p) << 32 | rd_u32(p + 4);
}

/* ---- connection I/O ---- */

static int conn_flush(struct aconn *c)
{
        while (c->woff < c->wlen) {
                ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                c->want_out = true;
                                return 0;
                        }
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                c->woff += (size_t)n;
        }
        c->woff = c->wlen = 0;
        return 0;
}

/* A writer over the free tail of c's output buffer; commit with out_commit. */
static struct wr out_begin(struct aconn *c)
{
        if (c->woff == c->wlen)
                c->woff = c->wlen = 0;
        if (WBUF_BYTES - c->wlen < METHOD_BYTES_MAX && c->woff) {
                memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
                c->wlen -= c->woff;
                c->woff = 0;
        }
        return (struct wr){c->wbuf + c->wlen, 0, WBUF_BYTES - c->wlen, false};
}

static int out_commit(struct aconn *c, const struct wr *w)
{
        if (w->overflow)
                return -ENOBUFS;
        c->wlen += w->len;
        return 0;
}

static int method_send_ack(struct aconn *c, uint64_t tag)
{
        struct wr w = out_begin(c);
        size_t at = frame_begin(&w, FRAME_METHOD, CHANNEL);
        wr_u16(&w, 60);
        wr_u16(&w, 80);
        wr_u64(&w, tag);
        wr_u8(&w, 1); /* multiple: everything up to tag */
        frame_end(&w, at);
        return out_commit(c, &w);
}

static int fail_close(const char *what, const uint8_t *a, uint32_t len)
{
        if (len < 3 || len < 3u + a[2])
                return bench_fail("server sent %s", what);
        return bench_fail("server sent %s %u: %.*s", what, rd_u16(a), (int)a[2],
                          (const char *)a + 3);
}

/* Every broker confirms in publish order on one channel (RabbitMQ may
 * coalesce with multiple=1), so an ack or nack for tag t settles every tag
 * up to t. */
static int confirm_upto(struct abench *ab, uint64_t tag, bool ack)
{
        if (tag <= ab->confirmed)
                return 0;
        /* a tag never published would also make the loop below unbounded */
        if (!ab->msg_bytes || tag > ab->pub_bytes / ab->msg_bytes)
                return bench_fail("confirm for tag %" PRIu64 ", never published", tag), -EPROTO;
        uint64_t now = ab->now_ns;
        for (uint64_t t = ab->confirmed + 1; t <= tag; t++)
                bench_hist_record(ab->hist, now - ab->sent_ns[t % INFLIGHT_RING]);
        if (!ack)
                ab->nacked += tag - ab->confirmed;
        ab->confirmed = tag;
        ab->last_event_ns = now;
        return 0;
}

static int method_handle(struct abench *ab, struct aconn *c, const uint8_t *p, uint32_t len)
{
        if (len < 4)
                return bench_fail("method frame of %u bytes", len), -EPROTO;
        uint32_t id = M(rd_u16(p), rd_u16(p + 2));
        const uint8_t *a = p + 4;
        uint32_t alen = len - 4;
        switch (id) {
        case BASIC_DELIVER: /* consumer-tag shortstr, delivery-tag u64, ... */
                if (alen < 1 || alen < 1u + a[0] + 8u)
                        return -EPROTO;
                c->last_tag = rd_u64(a + 1 + a[0]);
                c->deliveries++;
                ab->last_event_ns = ab->now_ns;
                return 0;
        case BASIC_ACK:
        case BASIC_NACK:
                if (alen < 9)
                        return -EPROTO;
                /* multiple or not, confirms come in order: see confirm_upto */
                return confirm_upto(ab, rd_u64(a), id == BASIC_ACK);
        case BASIC_RETURN:
                ab->returned++;
                return 0;
        case CONNECTION_CLOSE:
                fail_close("connection.close", a, alen);
                return -ECONNRESET;
        case CHANNEL_CLOSE:
                fail_close("channel.close", a, alen);
                return -ECONNRESET;
        case CONNECTION_BLOCKED:
        case CONNECTION_UNBLOCKED:
                return 0; /* TCP backpressure does the blocking for us */
        }
        if (c->want && id == c->want) {
                c->got = true;
                c->reply_len = alen < REPLY_BYTES_MAX ? alen : REPLY_BYTES_MAX;
                memcpy(c->reply, a, c->reply_len);
                return 0;
        }
        return bench_fail("unexpected method %u.%u", id >> 16, id & 0xffff), -EPROTO;
}

static int conn_parse(struct abench *ab, struct aconn *c)
{
        const uint8_t *p = (const uint8_t *)c->rbuf + c->roff;
        const uint8_t *end = (const uint8_t *)c->rbuf + c->rlen;
        int rc = 0;
        for (;;) {
                if (c->skip_bytes) {
                        size_t k = (size_t)(end - p);
                        if (k > c->skip_bytes)
                                k = (size_t)c->skip_bytes;
                        p += k;
                        c->skip_bytes -= k;
                        if (c->skip_bytes)
                                break;
                        continue;
                }
                if (end - p < 7)
                        break;
                uint8_t type = p[0];
                uint32_t size = rd_u32(p + 3);
                if (size > ab->frame_max) {
                        bench_fail("frame of %u bytes over frame_max %u", size, ab->frame_max);
                        rc = -EPROTO;
                        break;
                }
                if (type == FRAME_BODY) {
                        p += 7;
                        c->skip_bytes = (uint64_t)size + 1;
                        continue;
                }
                if ((size_t)(end - p) < 8u + size) {
                        if (8u + size > RBUF_BYTES)
                                rc = -EPROTO;
                        break;
                }
                if (p[7 + size] != FRAME_END) {
                        bench_fail("frame without frame-end octet");
                        rc = -EPROTO;
                        break;
                }
                if (type == FRAME_METHOD)
                        rc = method_handle(ab, c, p + 7, size);
                else if (type != FRAME_HEADER && type != FRAME_HEARTBEAT)
                        rc = -EPROTO;
                if (rc)
                        break;
                p += 8 + size;
        }
        c->roff = (size_t)(p - (const uint8_t *)c->rbuf);
        if (c->roff == c->rlen)
                c->roff = c->rlen = 0;
        /* Manual acks: one ack (multiple) per read for everything received. */
        if (rc == 0 && c->manual_ack && c->last_tag > c->acked_tag) {
                rc = method_send_ack(c, c->last_tag);
                c->acked_tag = c->last_tag;
        }
        return rc;
}

/* A publisher's methods may only go between two whole messages. */
static bool conn_may_flush(const struct abench *ab, const struct aconn *c)
{
        return c->woff < c->wlen &&
               (c->role != ROLE_PUB || ab->msg_bytes == 0 || ab->pub_bytes % ab->msg_bytes == 0);
}

static int conn_read(struct abench *ab, struct aconn *c)
{
        if (RBUF_BYTES - c->rlen < RBUF_BYTES / 4 && c->roff > 0) {
                memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
                c->rlen -= c->roff;
                c->roff = 0;
        }
        ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF_BYTES - c->rlen);
        if (n < 0)
                return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
        if (n == 0)
                return -EPIPE;
        c->rlen += (size_t)n;
        int rc = conn_parse(ab, c);
        if (rc == 0 && conn_may_flush(ab, c))
                rc = conn_flush(c);
        return rc;
}

/* ---- publishing ---- */

/* Deliveries of the slowest consumer: the publisher stays a window ahead. */
static uint64_t sub_progress(const struct abench *ab)
{
        uint64_t min = UINT64_MAX;
        for (unsigned i = 1; i <= ab->nsubs; i++)
                if (ab->conns[i].deliveries < min)
                        min = ab->conns[i].deliveries;
        return min;
}

/* Stamps the send time of every message whose last byte just went out. */
static void sent_stamp(struct abench *ab, uint64_t bytes_before, uint64_t bytes_after)
{
        if (ab->mode != BENCH_AMQP_CONFIRM)
                return;
        uint64_t now = bench_now_ns();
        for (uint64_t t = bytes_before / ab->msg_bytes + 1; t <= bytes_after / ab->msg_bytes; t++)
                ab->sent_ns[t % INFLIGHT_RING] = now;
}

static int pub_write(struct abench *ab)
{
        struct aconn *c = &ab->conns[0];
        if (c->woff < c->wlen && ab->pub_bytes % ab->msg_bytes == 0) {
                int rc = conn_flush(c);
                if (rc || c->woff < c->wlen)
                        return rc;
        }
        uint64_t limit = ab->pub_limit_bytes;
        uint64_t ahead = ab->mode == BENCH_AMQP_CONFIRM ? ab->confirmed : sub_progress(ab);
        uint64_t w = (ahead + ab->window_msgs) * ab->msg_bytes;
        if (w < limit)
                limit = w;
        while (ab->pub_bytes < limit) {
                size_t n = ab->block_bytes - ab->block_off;
                if (n > limit - ab->pub_bytes)
                        n = (size_t)(limit - ab->pub_bytes);
                ssize_t k = write(c->fd, ab->block + ab->block_off, n);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                c->want_out = true;
                                return 0;
                        }
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                sent_stamp(ab, ab->pub_bytes, ab->pub_bytes + (uint64_t)k);
                ab->pub_bytes += (uint64_t)k;
                ab->block_off += (size_t)k;
                if (ab->block_off == ab->block_bytes)
                        ab->block_off = 0;
                if ((size_t)k < n) {
                        c->want_out = true;
                        return 0;
                }
        }
        return 0;
}

/* One poll round over every connection; the publisher writes if allowed. */
static int loop_step(struct abench *ab, bool publishing)
{
        struct pollfd pfd[BENCH_FANOUT_MAX + 1];
        for (unsigned i = 0; i < ab->nconns; i++) {
                struct aconn *c = &ab->conns[i];
                pfd[i].fd = c->fd;
                pfd[i].events = POLLIN;
                if (c->want_out)
                        pfd[i].events |= POLLOUT;
                pfd[i].revents = 0;
        }
        int n = poll(pfd, ab->nconns, POLL_MS);
        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        ab->now_ns = bench_now_ns();
        for (unsigned i = 0; i < ab->nconns; i++) {
                struct aconn *c = &ab->conns[i];
                int rc = 0;
                if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP))
                        rc = conn_read(ab, c);
                if (rc == 0 && (pfd[i].revents & POLLOUT)) {
                        c->want_out = false;
                        if (conn_may_flush(ab, c))
                                rc = conn_flush(c);
                }
                if (rc)
                        return rc;
        }
        return publishing ? pub_write(ab) : 0;
}

/* ---- synchronous setup calls ---- */

/* Sends what w holds on c and waits for the method `want` (0: just send). */
static int call(struct abench *ab, struct aconn *c, struct wr *w, uint32_t want)
{
        int rc = out_commit(c, w);
        if (rc == 0)
                rc = conn_flush(c);
        if (rc || !want)
                return rc;
        c->want = want;
        c->got = false;
        uint64_t until = bench_now_ns() + SETUP_TIMEOUT_NS;
        while (!c->got) {
                if (bench_now_ns() > until) {
                        bench_fail("no reply %u.%u within the setup timeout", want >> 16,
                                   want & 0xffff);
                        return -ETIMEDOUT;
                }
                rc = loop_step(ab, false);
                if (rc)
                        return rc;
        }
        c->want = 0;
        return 0;
}

static struct wr method_begin(struct aconn *c, uint32_t id, uint16_t channel, size_t *at)
{
        struct wr w = out_begin(c);
        *at = frame_begin(&w, FRAME_METHOD, channel);
        wr_u16(&w, (uint16_t)(id >> 16));
        wr_u16(&w, (uint16_t)id);
        return w;
}

static int handshake(struct abench *ab, struct aconn *c)
{
        struct wr w = out_begin(c);
        wr_bytes(&w, "AMQP\0\0\x09\x01", 8);
        int rc = call(ab, c, &w, CONNECTION_START);
        if (rc)
                return rc;

        size_t at;
        w = method_begin(c, CONNECTION_START_OK, 0, &at);
        static const char props[] = "\x07productS\x00\x00\x00\x0csluice-bench";
        wr_longstr(&w, props, sizeof(props) - 1);
        wr_shortstr(&w, "PLAIN");
        wr_longstr(&w, "\0guest\0guest", 12);
        wr_shortstr(&w, "en_US");
        frame_end(&w, at);
        if ((rc = call(ab, c, &w, CONNECTION_TUNE)))
                return rc;
        if (c->reply_len < 8)
                return -EPROTO;
        uint16_t channel_max = rd_u16((const uint8_t *)c->reply);
        uint32_t frame_max = rd_u32((const uint8_t *)c->reply + 2);
        ab->frame_max = frame_max && frame_max < FRAME_MAX_BYTES ? frame_max : FRAME_MAX_BYTES;

        w = method_begin(c, CONNECTION_TUNE_OK, 0, &at);
        wr_u16(&w, channel_max);
        wr_u32(&w, ab->frame_max);
        wr_u16(&w, 0); /* no heartbeats: runs are short and the client always reads */
        frame_end(&w, at);
        if ((rc = call(ab, c, &w, 0)))
                return rc;

        w = method_begin(c, CONNECTION_OPEN, 0, &at);
        wr_shortstr(&w, "/");
        wr_shortstr(&w, "");
        wr_u8(&w, 0);
        frame_end(&w, at);
        if ((rc = call(ab, c, &w, CONNECTION_OPEN_OK)))
                return rc;

        w = method_begin(c, CHANNEL_OPEN, CHANNEL, &at);
        wr_shortstr(&w, "");
        frame_end(&w, at);
        return call(ab, c, &w, CHANNEL_OPEN_OK);
}

static int queue_declare(struct abench *ab, struct aconn *c, const char *q, bool durable)
{
        size_t at;
        struct wr w = method_begin(c, QUEUE_DECLARE, CHANNEL, &at);
        wr_u16(&w, 0);
        wr_shortstr(&w, q);
        wr_u8(&w, durable ? 2 : 0); /* passive, durable, exclusive, auto-delete, no-wait */
        wr_u32(&w, 0);              /* arguments: empty table */
        frame_end(&w, at);
        return call(ab, c, &w, QUEUE_DECLARE_OK);
}

static int exchange_declare(struct abench *ab, struct aconn *c, const char *x, const char *type)
{
        size_t at;
        struct wr w = method_begin(c, EXCHANGE_DECLARE, CHANNEL, &at);
        wr_u16(&w, 0);
        wr_shortstr(&w, x);
        wr_shortstr(&w, type);
        wr_u8(&w, 0);
        wr_u32(&w, 0);
        frame_end(&w, at);
        return call(ab, c, &w, EXCHANGE_DECLARE_OK);
}

static int queue_bind(struct abench *ab, struct aconn *c, const char *q, const char *x)
{
        size_t at;
        struct wr w = method_begin(c, QUEUE_BIND, CHANNEL, &at);
        wr_u16(&w, 0);
        wr_shortstr(&w, q);
        wr_shortstr(&w, x);
        wr_shortstr(&w, "");
        wr_u8(&w, 0);
        wr_u32(&w, 0);
        frame_end(&w, at);
        return call(ab, c, &w, QUEUE_BIND_OK);
}

static int consume(struct abench *ab, struct aconn *c, const char *q, uint32_t prefetch)
{
        size_t at;
        struct wr w;
        int rc;
        if (prefetch) {
                w = method_begin(c, BASIC_QOS, CHANNEL, &at);
                wr_u32(&w, 0);
                wr_u16(&w, (uint16_t)prefetch);
                wr_u8(&w, 0);
                frame_end(&w, at);
                if ((rc = call(ab, c, &w, BASIC_QOS_OK)))
                        return rc;
        }
        c->manual_ack = prefetch != 0;
        w = method_begin(c, BASIC_CONSUME, CHANNEL, &at);
        wr_u16(&w, 0);
        wr_shortstr(&w, q);
        wr_shortstr(&w, "");
        wr_u8(&w, prefetch ? 0 : 2); /* no-local, no-ack, exclusive, no-wait */
        wr_u32(&w, 0);
        frame_end(&w, at);
        return call(ab, c, &w, BASIC_CONSUME_OK);
}

static int conn_open(struct abench *ab, enum conn_role role)
{
        struct aconn *c = &ab->conns[ab->nconns];
        c->role = role;
        c->fd = -1;
        c->rbuf = malloc(RBUF_BYTES);
        c->wbuf = malloc(WBUF_BYTES);
        if (!c->rbuf || !c->wbuf)
                return -ENOMEM;
        ab->nconns++;
        c->fd = bench_tcp_connect(ab->o->host, ab->o->port);
        if (c->fd < 0)
                return c->fd;
        int rc = bench_fd_nonblock_set(c->fd);
        return rc ? rc : handshake(ab, c);
}

/* One message: basic.publish, a content header (delivery mode only) and
 * body frames of at most frame_max. */
static int msg_encode(struct abench *ab, struct wr *w)
{
        bool fanout = ab->mode == BENCH_AMQP_FANOUT;
        size_t at = frame_begin(w, FRAME_METHOD, CHANNEL);
        wr_u16(w, 60);
        wr_u16(w, 40);
        wr_u16(w, 0);
        wr_shortstr(w, fanout ? ab->exchange : "");
        wr_shortstr(w, fanout ? "" : ab->queue[0]);
        wr_u8(w, 0); /* mandatory, immediate */
        frame_end(w, at);

        at = frame_begin(w, FRAME_HEADER, CHANNEL);
        wr_u16(w, 60);
        wr_u16(w, 0);
        wr_u64(w, ab->o->size_bytes);
        wr_u16(w, 0x1000); /* delivery-mode present */
        wr_u8(w, ab->mode == BENCH_AMQP_CONFIRM ? 2 : 1);
        frame_end(w, at);

        uint32_t chunk_max = ab->frame_max - 8;
        for (uint32_t off = 0; off < ab->o->size_bytes; off += chunk_max) {
                uint32_t n = ab->o->size_bytes - off;
                if (n > chunk_max)
                        n = chunk_max;
                at = frame_begin(w, FRAME_BODY, CHANNEL);
                wr_bytes(w, ab->payload + off, n);
                frame_end(w, at);
        }
        return w->overflow ? -ENOBUFS : 0;
}

static int block_build(struct abench *ab)
{
        char one[BENCH_SIZE_MAX + 1024];
        struct wr w = {one, 0, sizeof(one), false};
        int rc = msg_encode(ab, &w);
        if (rc)
                return rc;
        ab->msg_bytes = w.len;
        size_t per = BLOCK_BYTES_MIN / ab->msg_bytes;
        if (per < 4)
                per = 4;
        ab->block_bytes = per * ab->msg_bytes;
        ab->block = malloc(ab->block_bytes);
        if (!ab->block)
                return -ENOMEM;
        for (size_t i = 0; i < per; i++)
                memcpy(ab->block + i * ab->msg_bytes, one, ab->msg_bytes);
        return 0;
}

static int setup(struct abench *ab)
{
        const struct bench_opts *o = ab->o;
        long pid = (long)getpid();
        int rc = conn_open(ab, ROLE_PUB);
        struct aconn *pub = &ab->conns[0];
        ab->nqueues = ab->mode == BENCH_AMQP_FANOUT ? o->fanout : 1;
        ab->nsubs = ab->mode == BENCH_AMQP_CONFIRM ? 0 : ab->nqueues;
        for (unsigned i = 0; rc == 0 && i < ab->nqueues; i++) {
                snprintf(ab->queue[i], sizeof(ab->queue[i]), "sluice-bench-%ld-%u", pid, i);
                rc = queue_declare(ab, pub, ab->queue[i], ab->mode == BENCH_AMQP_CONFIRM);
        }
        if (rc == 0 && ab->mode == BENCH_AMQP_FANOUT) {
                snprintf(ab->exchange, sizeof(ab->exchange), "sluice-bench-%ld-fan", pid);
                rc = exchange_declare(ab, pub, ab->exchange, "fanout");
                for (unsigned i = 0; rc == 0 && i < ab->nqueues; i++)
                        rc = queue_bind(ab, pub, ab->queue[i], ab->exchange);
        }
        if (rc == 0 && ab->mode == BENCH_AMQP_CONFIRM) {
                size_t at;
                struct wr w = method_begin(pub, CONFIRM_SELECT, CHANNEL, &at);
                wr_u8(&w, 0);
                frame_end(&w, at);
                rc = call(ab, pub, &w, CONFIRM_SELECT_OK);
        }
        for (unsigned i = 0; rc == 0 && i < ab->nsubs; i++) {
                rc = conn_open(ab, ROLE_SUB);
                if (rc == 0)
                        rc = consume(ab, &ab->conns[ab->nconns - 1], ab->queue[i],
                                     ab->mode == BENCH_AMQP_CONSUME ? o->prefetch : 0);
        }
        if (rc == 0)
                rc = block_build(ab);
        if (rc == 0 && ab->mode == BENCH_AMQP_CONFIRM) {
                ab->window_msgs = o->inflight;
        } else if (rc == 0) {
                uint64_t w = o->window_bytes / ab->msg_bytes;
                ab->window_msgs = w < 16 ? 16 : w;
        }
        return rc;
}

/* Deletes what setup declared and closes every connection cleanly; errors
 * here do not change the result. */
static void teardown(struct abench *ab)
{
        struct aconn *pub = &ab->conns[0];
        if (pub->fd < 0 || ab->pub_bytes % (ab->msg_bytes ? ab->msg_bytes : 1))
                return;
        size_t at;
        struct wr w;
        for (unsigned i = ab->nconns; i-- > 0;) {
                struct aconn *c = &ab->conns[i];
                if (c->fd < 0)
                        continue;
                if (c == pub) {
                        for (unsigned q = 0; q < ab->nqueues; q++) {
                                w = method_begin(pub, QUEUE_DELETE, CHANNEL, &at);
                                wr_u16(&w, 0);
                                wr_shortstr(&w, ab->queue[q]);
                                wr_u8(&w, 0);
                                frame_end(&w, at);
                                if (call(ab, pub, &w, QUEUE_DELETE_OK))
                                        return;
                        }
                        if (ab->exchange[0]) {
                                w = method_begin(pub, EXCHANGE_DELETE, CHANNEL, &at);
                                wr_u16(&w, 0);
                                wr_shortstr(&w, ab->exchange);
                                wr_u8(&w, 0);
                                frame_end(&w, at);
                                if (call(ab, pub, &w, EXCHANGE_DELETE_OK))
                                        return;
                        }
                }
                w = method_begin(c, CONNECTION_CLOSE, 0, &at);
                wr_u16(&w, 200);
                wr_shortstr(&w, "bench done");
                wr_u16(&w, 0);
                wr_u16(&w, 0);
                frame_end(&w, at);
                if (call(ab, c, &w, CONNECTION_CLOSE_OK))
                        return;
                close(c->fd); /* poll() skips it from now on */
                c->fd = -1;
        }
}

static uint64_t deliveries(const struct abench *ab)
{
        uint64_t n = 0;
        for (unsigned i = 1; i <= ab->nsubs; i++)
                n += ab->conns[i].deliveries;
        return n;
}

static int run(struct abench *ab)
{
        const struct bench_opts *o = ab->o;
        ab->pub_limit_bytes = o->count ? o->count * ab->msg_bytes : UINT64_MAX;
        bool cut = false;
        int rc = pub_write(ab);
        while (rc == 0 && ab->pub_bytes < ab->pub_limit_bytes) {
                rc = loop_step(ab, true);
                /* --count caps a run; the deadline always ends it (a queue
                 * nobody consumes must not outgrow memory) */
                if (!cut && ab->now_ns >= ab->deadline_ns) {
                        /* stop at the end of the message being written */
                        uint64_t m = (ab->pub_bytes + ab->msg_bytes - 1) / ab->msg_bytes;
                        if (m * ab->msg_bytes < ab->pub_limit_bytes)
                                ab->pub_limit_bytes = m * ab->msg_bytes;
                        cut = true;
                }
        }
        /* Drain: every confirm, or every delivery, or the drain timeout. */
        uint64_t pub_msgs = ab->pub_bytes / ab->msg_bytes;
        uint64_t until = bench_now_ns() + DRAIN_TIMEOUT_NS;
        while (rc == 0) {
                bool done = ab->mode == BENCH_AMQP_CONFIRM ? ab->confirmed >= pub_msgs
                                                           : deliveries(ab) >= pub_msgs * ab->nsubs;
                if (done || ab->now_ns > until)
                        break;
                rc = loop_step(ab, false);
        }
        return rc;
}

static void result_fill(const struct abench *ab, struct bench_result *res)
{
        res->pub_msgs = ab->pub_bytes / ab->msg_bytes;
        if (ab->mode == BENCH_AMQP_CONFIRM) {
                /* msgs/s counts confirmed messages; nacks count as lost */
                uint64_t ok = ab->confirmed - ab->nacked;
                res->lost_msgs = res->pub_msgs - ok;
                res->has_latency = true;
                const struct bench_hist *h = ab->hist;
                res->lat_p50_us = (double)bench_hist_quantile(h, 0.50) / 1e3;
                res->lat_p99_us = (double)bench_hist_quantile(h, 0.99) / 1e3;
                res->lat_p999_us = (double)bench_hist_quantile(h, 0.999) / 1e3;
                res->lat_max_us = (double)h->max / 1e3;
                res->lat_mean_us = h->total ? (double)h->sum / (double)h->total / 1e3 : 0;
                return;
        }
        res->recv_msgs = deliveries(ab);
        uint64_t expect = res->pub_msgs * ab->nsubs;
        if (res->recv_msgs < expect)
                res->lost_msgs = expect - res->recv_msgs;
}

int bench_amqp_run(const struct bench_opts *opts, int mode, struct bench_result *res)
{
        if (mode == BENCH_AMQP_CONFIRM && (opts->inflight == 0 || opts->inflight > INFLIGHT_RING))
                return bench_fail("--inflight: expected 1..%u", INFLIGHT_RING);
        if (mode == BENCH_AMQP_CONSUME && (opts->prefetch == 0 || opts->prefetch > 65535))
                return bench_fail("--prefetch: expected 1..65535");
        struct abench *ab = calloc(1, sizeof(*ab));
        if (!ab)
                return bench_fail("out of memory");
        ab->o = opts;
        ab->mode = mode;
        ab->frame_max = FRAME_MAX_BYTES;
        ab->payload = malloc(opts->size_bytes);
        ab->hist = calloc(1, sizeof(*ab->hist));
        ab->sent_ns = calloc(INFLIGHT_RING, sizeof(*ab->sent_ns));
        for (unsigned i = 0; i <= BENCH_FANOUT_MAX; i++)
                ab->conns[i].fd = -1;
        int rc = -ENOMEM;
        if (ab->payload && ab->hist && ab->sent_ns) {
                memset(ab->payload, 'x', opts->size_bytes);
                rc = setup(ab);
                if (rc)
                        bench_fail("setup against %s:%s: %s", opts->host, opts->port,
                                   strerror(-rc));
        }
        if (rc == 0) {
                double cpu0 = bench_cpu_self_s();
                ab->start_ns = ab->now_ns = ab->last_event_ns = bench_now_ns();
                ab->deadline_ns = ab->start_ns + (uint64_t)(opts->duration_s * 1e9);
                rc = run(ab);
                if (rc)
                        bench_fail("run: %s", strerror(-rc));
                res->client_cpu_s = bench_cpu_self_s() - cpu0;
                uint64_t end = ab->last_event_ns > ab->start_ns ? ab->last_event_ns : ab->now_ns;
                res->elapsed_s = (double)(end - ab->start_ns) / 1e9;
                result_fill(ab, res);
                if (rc == 0)
                        teardown(ab);
        }
        for (unsigned i = 0; i < ab->nconns; i++) {
                if (ab->conns[i].fd >= 0)
                        close(ab->conns[i].fd);
                free(ab->conns[i].rbuf);
                free(ab->conns[i].wbuf);
        }
        free(ab->block);
        free(ab->payload);
        free(ab->hist);
        free(ab->sent_ns);
        free(ab);
        return rc ? -1 : 0;
}
