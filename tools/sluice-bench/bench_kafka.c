/* Kafka modes of sluice-bench (see bench_kafka.h). Everything is allocated
 * before the timed part: a produce request is built once per connection
 * and re-sent with only its correlation id patched (no idempotence, so the
 * same batch may be appended again), responses are parsed in place. */
#include "bench_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNS_MAX    64u
#define DEPTH_MAX    32u           /* pipelined produce requests per connection */
#define BATCH_BYTES  (64u * 1024u) /* record bytes per produce batch (throughput modes) */
#define FETCH_MAX    (4u << 20)    /* bytes per partition per fetch */
#define RX_CAP       (FETCH_MAX + (64u << 10))
#define CLIENT_ID    "sluice-bench"
#define API_PRODUCE  0
#define API_FETCH    1
#define API_METADATA 3
#define API_VERSIONS 18
#define PRODUCE_V    8
#define FETCH_V      11
#define METADATA_V   4

/* ---- CRC-32C (Castagnoli), slicing-by-8; only e2e computes it per batch ---- */
static uint32_t crc_tab[8][256];

static void crc32c_init(void)
{
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
                crc_tab[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
                for (int t = 1; t < 8; t++)
                        crc_tab[t][i] =
                            (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
        uint32_t c = 0xFFFFFFFFu;
        while (n >= 8) {
                c ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
                c = crc_tab[7][c & 0xff] ^ crc_tab[6][(c >> 8) & 0xff] ^
                    crc_tab[5][(c >> 16) & 0xff] ^ crc_tab[4][c >> 24] ^ crc_tab[3][p[4]] ^
                    crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^ crc_tab[0][p[7]];
                p += 8;
                n -= 8;
        }
        while (n--)
                c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
}

/* ---- big-endian writers and readers ---- */
struct wbuf {
        uint8_t *p;
        size_t len, cap;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
        if (w->len + n <= w->cap)
                memcpy(w->p + w->len, src, n);
        w->len += n; /* overflow is detected by the caller comparing len and cap */
}
static void put8(struct wbuf *w, uint8_t v)
{
        put(w, &v, 1);
}
static void put16(struct wbuf *w, uint16_t v)
{
        put(w, (uint8_t[]){v >> 8, v & 0xff}, 2);
}
static void put32(struct wbuf *w, uint32_t v)
{
        put(w, (uint8_t[]){v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff}, 4);
}
static void put64(struct wbuf *w, uint64_t v)
{
        put32(w, (uint32_t)(v >> 32));
        put32(w, (uint32_t)v);
}
static void putstr(struct wbuf *w, const char *s)
{
        put16(w, (uint16_t)strlen(s));
        put(w, s, strlen(s));
}
static void putvar(struct wbuf *w, int64_t v) /* zigzag varint */
{
        uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        while (u >= 0x80) {
                put8(w, (uint8_t)(u | 0x80));
                u >>= 7;
        }
        put8(w, (uint8_t)u);
}
static void set32(uint8_t *p, uint32_t v)
{
        p[0] = v >> 24;
        p[1] = (v >> 16) & 0xff;
        p[2] = (v >> 8) & 0xff;
        p[3] = v & 0xff;
}

struct rbuf {
        const uint8_t *p, *end;
        bool bad;
};

static const uint8_t *take(struct rbuf *r, size_t n)
{
        if (r->bad || (size_t)(r->end - r->p) < n) {
                r->bad = true;
                return NULL;
        }
        const uint8_t *q = r->p;
        r->p += n;
        return q;
}
static uint16_t get16(struct rbuf *r)
{
        const uint8_t *q = take(r, 2);
        return q ? (uint16_t)(q[0] << 8 | q[1]) : 0;
}
static uint32_t get32(struct rbuf *r)
{
        const uint8_t *q = take(r, 4);
        return q ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3] : 0;
}
static uint64_t get64(struct rbuf *r)
{
        uint64_t hi = get32(r);
        return hi << 32 | get32(r);
}
static void skipstr(struct rbuf *r)
{
        int16_t n = (int16_t)get16(r);
        if (n > 0)
                take(r, (size_t)n);
}
static int64_t getvar(struct rbuf *r)
{
        uint64_t u = 0;
        for (int shift = 0; shift < 64; shift += 7) {
                const uint8_t *q = take(r, 1);
                if (!q)
                        return 0;
                u |= (uint64_t)(*q & 0x7f) << shift;
                if (!(*q & 0x80))
                        return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
        }
        r->bad = true;
        return 0;
}

/* ---- requests ---- */
static size_t header(struct wbuf *w, int16_t api, int16_t version)
{
        size_t start = w->len;
        put32(w, 0); /* size, patched by finish() */
        put16(w, (uint16_t)api);
        put16(w, (uint16_t)version);
        put32(w, 0); /* correlation id, patched before each send */
        putstr(w, CLIENT_ID);
        return start;
}

static void finish(struct wbuf *w, size_t start)
{
        set32(w->p + start, (uint32_t)(w->len - start - 4));
}

/* A v2 record batch of n records of `size` bytes; the first 8 bytes of each
 * value carry `stamp` (e2e). Returns its length. */
static void batch(struct wbuf *w, uint32_t n, uint32_t size, uint64_t stamp)
{
        size_t b = w->len;
        put64(w, 0);           /* baseOffset: the broker stamps it */
        put32(w, 0);           /* batchLength, below */
        put32(w, 0xFFFFFFFFu); /* partitionLeaderEpoch */
        put8(w, 2);            /* magic */
        put32(w, 0);           /* crc, below */
        size_t crc_from = w->len;
        put16(w, 0);     /* attributes: no compression, CreateTime */
        put32(w, n - 1); /* lastOffsetDelta */
        /* base and max timestamp: wall-clock ms, as a client's CreateTime
         * (`stamp` is monotonic: as a timestamp it would be 1970, and a
         * broker's time retention deletes such batches at once) */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
        put64(w, ms);
        put64(w, ms);
        put64(w, UINT64_MAX); /* producerId -1: not idempotent */
        put16(w, UINT16_MAX); /* producerEpoch -1 */
        put32(w, UINT32_MAX); /* baseSequence -1 */
        put32(w, n);
        uint8_t body[8];
        for (uint32_t i = 0; i < n; i++) {
                /* attributes, timestampDelta, offsetDelta, key(-1), value, headers */
                uint8_t hdr[32];
                struct wbuf h = {hdr, 0, sizeof(hdr)};
                put8(&h, 0);
                putvar(&h, 0);
                putvar(&h, i);
                putvar(&h, -1);
                putvar(&h, size);
                putvar(w, (int64_t)(h.len + size + 1));
                put(w, hdr, h.len);
                for (int k = 0; k < 8; k++)
                        body[k] = (uint8_t)(stamp >> (56 - 8 * k));
                put(w, body, 8);
                size_t before = w->len;
                w->len += size - 8; /* payload bytes: zeros from calloc */
                if (w->len <= w->cap)
                        memset(w->p + before, 'x', size - 8);
                put8(w, 0); /* no headers */
        }
        if (w->len > w->cap)
                return;
        set32(w->p + b + 8, (uint32_t)(w->len - b - 12));
        set32(w->p + b + 17, crc32c(w->p + crc_from, w->len - crc_from));
}

/* Produce v8 for one partition with one batch. */
static void produce_req(struct wbuf *w, const char *topic, int32_t part, uint32_t n, uint32_t size,
                        uint64_t stamp)
{
        size_t s = header(w, API_PRODUCE, PRODUCE_V);
        put16(w, UINT16_MAX); /* transactional_id: null */
        put16(w, UINT16_MAX); /* acks = -1 (all) */
        put32(w, 30000);
        put32(w, 1);
        putstr(w, topic);
        put32(w, 1);
        put32(w, (uint32_t)part);
        size_t len_at = w->len;
        put32(w, 0);
        batch(w, n, size, stamp);
        if (w->len <= w->cap)
                set32(w->p + len_at, (uint32_t)(w->len - len_at - 4));
        finish(w, s);
}

static void fetch_req(struct wbuf *w, const char *topic, int32_t part, int64_t offset,
                      int32_t max_wait_ms)
{
        size_t s = header(w, API_FETCH, FETCH_V);
        put32(w, UINT32_MAX); /* replica_id -1 */
        put32(w, (uint32_t)max_wait_ms);
        put32(w, 1);          /* min_bytes */
        put32(w, FETCH_MAX);  /* max_bytes */
        put8(w, 0);           /* read_uncommitted */
        put32(w, 0);          /* session_id: no session */
        put32(w, UINT32_MAX); /* session_epoch -1 */
        put32(w, 1);
        putstr(w, topic);
        put32(w, 1);
        put32(w, (uint32_t)part);
        put32(w, UINT32_MAX); /* current_leader_epoch -1 */
        put64(w, (uint64_t)offset);
        put64(w, UINT64_MAX); /* log_start_offset -1 */
        put32(w, FETCH_MAX);
        put32(w, 0);   /* forgotten topics */
        putstr(w, ""); /* rack */
        finish(w, s);
}

/* ---- connections ---- */
struct kconn {
        int fd;
        int32_t part;
        /* produce: one prebuilt request re-sent; sent = bytes of the current copy */
        uint8_t *req;
        size_t req_len, sent;
        uint32_t corr, inflight, depth;
        uint64_t sent_ns[DEPTH_MAX];
        uint64_t to_send; /* requests left (UINT64_MAX: until the deadline) */
        uint64_t acked;   /* records acknowledged on this connection */
        /* fetch */
        int64_t offset;
        bool fetching;
        /* input */
        uint8_t *rx;
        size_t rx_len;
};

static int write_all(int fd, const uint8_t *p, size_t n)
{
        while (n) {
                ssize_t k = write(fd, p, n);
                if (k < 0 && errno == EAGAIN) {
                        struct pollfd pf = {fd, POLLOUT, 0};
                        poll(&pf, 1, 1000);
                        continue;
                }
                if (k <= 0)
                        return -1;
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

/* Reads whatever is there; returns 0, or -1 at EOF/error. */
static int conn_read(struct kconn *c)
{
        for (;;) {
                if (c->rx_len == RX_CAP)
                        return bench_fail("response larger than %u bytes", RX_CAP);
                ssize_t k = read(c->fd, c->rx + c->rx_len, RX_CAP - c->rx_len);
                if (k > 0) {
                        c->rx_len += (size_t)k;
                        continue;
                }
                if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return 0;
                return bench_fail("broker closed the connection (%s)", k ? strerror(errno) : "EOF");
        }
}

/* The next complete response frame, or NULL. */
static const uint8_t *frame_next(struct kconn *c, size_t *off, size_t *len)
{
        if (c->rx_len - *off < 4)
                return NULL;
        uint8_t *p = c->rx + *off;
        size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (c->rx_len - *off - 4 < n)
                return NULL;
        *off += 4 + n;
        *len = n;
        return p + 4;
}

static void frames_consumed(struct kconn *c, size_t off)
{
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
}

/* Blocking request/response used for set-up. */
static int roundtrip(struct kconn *c, struct wbuf *w, struct rbuf *out)
{
        set32(w->p + 8, ++c->corr);
        if (write_all(c->fd, w->p, w->len))
                return bench_fail("write: %s", strerror(errno));
        size_t off = 0, len;
        const uint8_t *f;
        while (!(f = frame_next(c, &off, &len))) {
                struct pollfd pf = {c->fd, POLLIN, 0};
                if (poll(&pf, 1, 10000) <= 0)
                        return bench_fail("no answer from the broker in 10 s");
                if (conn_read(c))
                        return -1;
        }
        if (len < 4)
                return bench_fail("a response without a correlation id");
        /* Set-up answers are small and read before anything else: the
         * caller parses them before the buffer is reused. */
        *out = (struct rbuf){f + 4, f + len, false};
        c->rx_len = 0;
        return 0;
}

/* ApiVersions v0: Produce v8 and Fetch v11 must be in range. */
static int check_versions(struct kconn *c, uint8_t *scratch, size_t cap)
{
        struct wbuf w = {scratch, 0, cap};
        size_t s = header(&w, API_VERSIONS, 0);
        finish(&w, s);
        struct rbuf r;
        if (roundtrip(c, &w, &r))
                return -1;
        int16_t err = (int16_t)get16(&r);
        uint32_t n = get32(&r);
        bool produce = false, fetch = false;
        for (uint32_t i = 0; i < n && !r.bad; i++) {
                int16_t key = (int16_t)get16(&r), lo = (int16_t)get16(&r), hi = (int16_t)get16(&r);
                produce |= key == API_PRODUCE && lo <= PRODUCE_V && hi >= PRODUCE_V;
                fetch |= key == API_FETCH && lo <= FETCH_V && hi >= FETCH_V;
        }
        if (err || !produce || !fetch)
                return bench_fail("broker lacks Produce v%d or Fetch v%d (ApiVersions error %d)",
                                  PRODUCE_V, FETCH_V, err);
        return 0;
}

/* Metadata v4 answer for one topic: its partition count, or -1. */
static int metadata_resp(struct rbuf *r)
{
        get32(r); /* throttle */
        uint32_t nb = get32(r);
        for (uint32_t i = 0; i < nb && !r->bad; i++) {
                get32(r);
                skipstr(r);
                get32(r);
                skipstr(r);
        }
        skipstr(r); /* cluster id */
        get32(r);   /* controller */
        uint32_t nt = get32(r);
        int16_t err = nt == 1 ? (int16_t)get16(r) : -1;
        skipstr(r);
        take(r, 1);
        uint32_t np = get32(r);
        return !r->bad && !err && np > 0 && np <= INT32_MAX ? (int)np : -1;
}

/* Metadata v4 with auto-creation; returns the partition count or -1. */
static int partitions(struct kconn *c, const char *topic, uint8_t *scratch, size_t cap)
{
        for (int attempt = 0; attempt < 50; attempt++) {
                struct wbuf w = {scratch, 0, cap};
                size_t s = header(&w, API_METADATA, METADATA_V);
                put32(&w, 1);
                putstr(&w, topic);
                put8(&w, 1); /* allow_auto_topic_creation */
                finish(&w, s);
                struct rbuf r;
                if (roundtrip(c, &w, &r))
                        return -1;
                int np = metadata_resp(&r);
                if (np > 0)
                        return np;
                struct timespec ts = {0, 20 * 1000 * 1000}; /* topic being created */
                nanosleep(&ts, NULL);
        }
        bench_fail("topic %s did not appear in Metadata", topic);
        return -1;
}

/* Produce v8 response for one partition: error code and base offset. */
static int produce_resp(const uint8_t *f, size_t len, int64_t *base)
{
        if (len < 4)
                return -1;
        struct rbuf r = {f + 4, f + len, false};
        get32(&r);
        skipstr(&r);
        get32(&r);
        get32(&r); /* partition */
        int16_t err = (int16_t)get16(&r);
        *base = (int64_t)get64(&r);
        return r.bad ? -1 : err;
}

/* One record of a v2 batch: its value's first 8 bytes are the send time
 * (e2e); the reader ends past the record, or bad. */
static void record_stamp(struct rbuf *h, uint64_t now, struct bench_hist *hist)
{
        int64_t rlen = getvar(h);
        if (h->bad || rlen < 0 || rlen > h->end - h->p) {
                h->bad = true;
                return;
        }
        struct rbuf r = {h->p, h->p + rlen, false};
        h->p += rlen;
        take(&r, 1);
        getvar(&r);
        getvar(&r);
        int64_t kl = getvar(&r);
        if (kl > 0 && kl <= r.end - r.p)
                r.p += kl;
        int64_t vl = getvar(&r);
        const uint8_t *v = vl >= 8 ? take(&r, 8) : NULL;
        if (!v)
                return;
        uint64_t t = 0;
        for (int k = 0; k < 8; k++)
                t = t << 8 | v[k];
        if (now > t)
                bench_hist_record(hist, now - t);
}

struct fetch_stats {
        uint64_t records;
        struct bench_hist *e2e; /* NULL: no per-record timestamps */
        int64_t next;
};

/* Walks a Fetch v11 response for one partition: counts records, advances the
 * offset, records e2e latencies from the stamps in the values. */
static int fetch_resp(const uint8_t *f, size_t len, struct fetch_stats *st)
{
        if (len < 4)
                return -1;
        struct rbuf r = {f + 4, f + len, false};
        get32(&r); /* throttle */
        int16_t top = (int16_t)get16(&r);
        get32(&r); /* session */
        if (get32(&r) != 1)
                return top ? top : -1;
        skipstr(&r);
        if (get32(&r) != 1)
                return -1;
        get32(&r);
        int16_t err = (int16_t)get16(&r);
        take(&r, 24); /* high watermark, last stable, log start */
        int32_t na = (int32_t)get32(&r);
        if (na > 0)
                take(&r, (size_t)na * 16);
        get32(&r); /* preferred read replica */
        int32_t rl = (int32_t)get32(&r);
        if (r.bad)
                return -1;
        if (err)
                return err;
        if (rl <= 0)
                return 0;
        const uint8_t *rec = take(&r, (size_t)rl);
        if (!rec)
                return -1;
        struct rbuf b = {rec, rec + rl, false};
        uint64_t now = bench_now_ns();
        while ((size_t)(b.end - b.p) >= 61) {
                struct rbuf h = b;
                int64_t base = (int64_t)get64(&h);
                uint32_t blen = get32(&h);
                if ((uint64_t)(b.end - b.p) < 12ull + blen)
                        break; /* a partial batch at the end (KIP-74): fetch it again */
                const uint8_t *next = b.p + 12 + blen;
                take(&h, 4 + 1 + 4 + 2);
                uint32_t last_delta = get32(&h);
                take(&h, 8 + 8 + 8 + 2 + 4);
                uint32_t n = get32(&h);
                if (blen < 49 || base < 0 || base > INT64_MAX / 2)
                        return -1; /* not a v2 batch a broker would send */
                int64_t end = base + (int64_t)last_delta + 1;
                if (end > st->next) {
                        uint64_t fresh = (uint64_t)(end - st->next);
                        st->records += fresh < n ? fresh : n;
                        st->next = end;
                        if (st->e2e) {
                                h.end = next;
                                for (uint32_t i = 0; i < n && !h.bad; i++)
                                        record_stamp(&h, now, st->e2e);
                        }
                }
                b.p = next;
        }
        return 0;
}

static int conn_open(struct kconn *c, const struct bench_opts *o)
{
        c->fd = bench_tcp_connect(o->host, o->port);
        if (c->fd < 0)
                return bench_fail("connect %s:%s: %s", o->host, o->port, strerror(-c->fd));
        bench_fd_nonblock_set(c->fd); /* conn_read reads until EAGAIN */
        c->rx = malloc(RX_CAP);
        if (!c->rx)
                return bench_fail("out of memory");
        return 0;
}

static void conn_close(struct kconn *c)
{
        if (c->fd >= 0)
                close(c->fd);
        free(c->rx);
        free(c->req);
}

/* Records per throughput batch: BATCH_BYTES of values, at least one. */
static uint32_t batch_records(uint32_t size)
{
        uint32_t n = BATCH_BYTES / size;
        return n ? n : 1;
}

/* Pipelined produce on every connection until `total` records or the
 * deadline; request round trips go to *lat. Returns records acknowledged. */
static int produce_phase(struct kconn *cs, unsigned nc, const struct bench_opts *o, uint64_t total,
                         double duration_s, struct bench_hist *lat, uint64_t *acked)
{
        uint32_t per = batch_records(o->size_bytes);
        uint64_t reqs = total ? (total + per - 1) / per : UINT64_MAX;
        for (unsigned i = 0; i < nc; i++) {
                struct kconn *c = &cs[i];
                c->to_send = reqs == UINT64_MAX ? UINT64_MAX : reqs / nc + (i < reqs % nc);
                c->inflight = 0;
                c->sent = 0;
                bench_fd_nonblock_set(c->fd);
        }
        uint64_t deadline = total ? UINT64_MAX : bench_now_ns() + (uint64_t)(duration_s * 1e9);
        struct pollfd pf[CONNS_MAX];
        *acked = 0;
        for (;;) {
                bool busy = false;
                uint64_t now = bench_now_ns();
                for (unsigned i = 0; i < nc; i++) {
                        struct kconn *c = &cs[i];
                        if (c->to_send && now >= deadline && c->sent == 0)
                                c->to_send = 0;
                        /* Send while there is room in the pipeline. */
                        while (c->to_send && (c->sent || c->inflight < c->depth)) {
                                if (c->sent == 0) {
                                        set32(c->req + 8, ++c->corr);
                                        c->sent_ns[c->corr % DEPTH_MAX] = bench_now_ns();
                                }
                                ssize_t k = write(c->fd, c->req + c->sent, c->req_len - c->sent);
                                if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                                        break;
                                if (k <= 0)
                                        return bench_fail("write: %s", strerror(errno));
                                c->sent += (size_t)k;
                                if (c->sent == c->req_len) {
                                        c->sent = 0;
                                        c->inflight++;
                                        if (c->to_send != UINT64_MAX)
                                                c->to_send--;
                                }
                        }
                        busy |= c->to_send || c->inflight;
                        pf[i] = (struct pollfd){
                            c->fd,
                            POLLIN |
                                (c->sent || (c->to_send && c->inflight < c->depth) ? POLLOUT : 0),
                            0};
                }
                if (!busy)
                        return 0;
                if (poll(pf, nc, 1000) < 0 && errno != EINTR)
                        return bench_fail("poll: %s", strerror(errno));
                for (unsigned i = 0; i < nc; i++) {
                        struct kconn *c = &cs[i];
                        if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP)))
                                continue;
                        if (conn_read(c))
                                return -1;
                        size_t off = 0, len;
                        const uint8_t *f;
                        uint64_t t = bench_now_ns();
                        while ((f = frame_next(c, &off, &len))) {
                                uint32_t corr = (uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 |
                                                (uint32_t)f[2] << 8 | f[3];
                                int64_t base;
                                int err = produce_resp(f, len, &base);
                                if (err)
                                        return bench_fail("produce error %d", err);
                                bench_hist_record(lat, t - c->sent_ns[corr % DEPTH_MAX]);
                                c->inflight--;
                                c->acked += per;
                                *acked += per;
                        }
                        frames_consumed(c, off);
                }
        }
}

static int fetch_phase(struct kconn *cs, unsigned nc, const char *topic, const int64_t *end,
                       uint8_t *scratch, size_t cap, uint64_t *records)
{
        struct pollfd pf[CONNS_MAX];
        struct fetch_stats st[CONNS_MAX];
        for (unsigned i = 0; i < nc; i++) {
                st[i] = (struct fetch_stats){0, NULL, 0};
                cs[i].fetching = false;
                bench_fd_nonblock_set(cs[i].fd);
        }
        uint64_t deadline = bench_now_ns() + 120ull * 1000000000u;
        for (;;) {
                bool busy = false;
                for (unsigned i = 0; i < nc; i++) {
                        struct kconn *c = &cs[i];
                        if (!c->fetching && st[i].next < end[i]) {
                                struct wbuf w = {scratch, 0, cap};
                                fetch_req(&w, topic, c->part, st[i].next, 500);
                                set32(w.p + 8, ++c->corr);
                                if (write_all(c->fd, w.p, w.len))
                                        return bench_fail("write: %s", strerror(errno));
                                c->fetching = true;
                        }
                        busy |= c->fetching;
                        pf[i] = (struct pollfd){c->fd, POLLIN, 0};
                }
                if (!busy)
                        break;
                if (bench_now_ns() > deadline)
                        return bench_fail("consume did not finish in 120 s");
                if (poll(pf, nc, 1000) < 0 && errno != EINTR)
                        return bench_fail("poll: %s", strerror(errno));
                for (unsigned i = 0; i < nc; i++) {
                        struct kconn *c = &cs[i];
                        if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP)))
                                continue;
                        if (conn_read(c))
                                return -1;
                        size_t off = 0, len;
                        const uint8_t *f;
                        while ((f = frame_next(c, &off, &len))) {
                                int err = fetch_resp(f, len, &st[i]);
                                if (err)
                                        return bench_fail("fetch error %d", err);
                                c->fetching = false;
                        }
                        frames_consumed(c, off);
                }
        }
        *records = 0;
        for (unsigned i = 0; i < nc; i++)
                *records += st[i].records;
        return 0;
}

/* e2e: one producer request (one record) in flight; a second connection
 * long-polls the partition (max_wait 500 ms, like fetch.wait.max.ms) and
 * times each record from its stamp. */
static int e2e_run(struct kconn *p, struct kconn *q, const struct bench_opts *o, const char *topic,
                   uint8_t *scratch, size_t cap, struct bench_hist *lat, uint64_t *sent_out,
                   uint64_t *recv_out)
{
        uint64_t target = o->count ? o->count : UINT64_MAX;
        uint64_t deadline =
            o->count ? UINT64_MAX : bench_now_ns() + (uint64_t)(o->duration_s * 1e9);
        bench_fd_nonblock_set(p->fd);
        bench_fd_nonblock_set(q->fd);
        struct fetch_stats st = {0, lat, 0};
        /* Start reading at the current end: a throw-away fetch at offset 0
         * is fine too, records older than the run carry old stamps; skip
         * them by starting after the log end reported by the first produce. */
        bool have_start = false, waiting = false;
        uint64_t sent = 0, acked = 0;
        uint8_t *req = scratch + cap / 2;
        size_t half = cap / 2;
        bool fetching = false;
        while (st.records < acked || (acked < target && bench_now_ns() < deadline) || waiting) {
                if (!waiting && acked < target && bench_now_ns() < deadline) {
                        struct wbuf w = {req, 0, half};
                        produce_req(&w, topic, p->part, 1, o->size_bytes, bench_now_ns());
                        set32(w.p + 8, ++p->corr);
                        if (write_all(p->fd, w.p, w.len))
                                return bench_fail("write: %s", strerror(errno));
                        sent++;
                        waiting = true;
                }
                if (have_start && !fetching) {
                        struct wbuf w = {scratch, 0, half};
                        fetch_req(&w, topic, q->part, st.next, 500);
                        set32(w.p + 8, ++q->corr);
                        if (write_all(q->fd, w.p, w.len))
                                return bench_fail("write: %s", strerror(errno));
                        fetching = true;
                }
                struct pollfd pf[2] = {{p->fd, POLLIN, 0}, {q->fd, POLLIN, 0}};
                if (poll(pf, 2, 2000) == 0)
                        return bench_fail("e2e: no progress in 2 s");
                if (pf[0].revents) {
                        if (conn_read(p))
                                return -1;
                        size_t off = 0, len;
                        const uint8_t *f;
                        while ((f = frame_next(p, &off, &len))) {
                                int64_t base;
                                int err = produce_resp(f, len, &base);
                                if (err)
                                        return bench_fail("produce error %d", err);
                                if (!have_start) {
                                        st.next = base;
                                        have_start = true;
                                }
                                acked++;
                                waiting = false;
                        }
                        frames_consumed(p, off);
                }
                if (pf[1].revents) {
                        if (conn_read(q))
                                return -1;
                        size_t off = 0, len;
                        const uint8_t *f;
                        while ((f = frame_next(q, &off, &len))) {
                                int err = fetch_resp(f, len, &st);
                                if (err)
                                        return bench_fail("fetch error %d", err);
                                fetching = false;
                        }
                        frames_consumed(q, off);
                }
        }
        *sent_out = sent;
        *recv_out = st.records;
        return 0;
}

int bench_kafka_parse(int16_t api, const uint8_t *frame, size_t len)
{
        struct bench_hist *h = calloc(1, sizeof(*h));
        if (!h || len < 4) {
                free(h);
                return -1;
        }
        int rc = -1;
        if (api == API_PRODUCE) {
                int64_t base;
                rc = produce_resp(frame, len, &base);
        } else if (api == API_FETCH) {
                struct fetch_stats st = {0, h, 0};
                rc = fetch_resp(frame, len, &st);
        } else if (api == API_METADATA) {
                struct rbuf r = {frame + 4, frame + len, false};
                rc = metadata_resp(&r);
        }
        free(h);
        return rc;
}

static void hist_result(const struct bench_hist *h, struct bench_result *res)
{
        if (!h->total)
                return;
        res->has_latency = true;
        res->lat_p50_us = (double)bench_hist_quantile(h, 0.50) / 1e3;
        res->lat_p99_us = (double)bench_hist_quantile(h, 0.99) / 1e3;
        res->lat_p999_us = (double)bench_hist_quantile(h, 0.999) / 1e3;
        res->lat_max_us = (double)h->max / 1e3;
        res->lat_mean_us = (double)h->sum / (double)h->total / 1e3;
}

int bench_kafka_run(const struct bench_opts *o, int mode, struct bench_result *res)
{
        crc32c_init();
        unsigned nc = mode == BENCH_KAFKA_E2E ? 2 : (o->fanout ? o->fanout : 1);
        if (nc > CONNS_MAX)
                return bench_fail("-n: at most %u connections", CONNS_MAX);
        char topic[128];
        if (o->topic)
                snprintf(topic, sizeof(topic), "%s", o->topic);
        else
                snprintf(topic, sizeof(topic), "sluice-bench-%d-%u", (int)getpid(), o->size_bytes);
        uint32_t per = batch_records(o->size_bytes);
        size_t cap = (size_t)per * (o->size_bytes + 32u) + 4096u;
        uint8_t *scratch = calloc(1, 2 * cap);
        struct kconn *cs = calloc(nc, sizeof(*cs));
        struct bench_hist *lat = calloc(1, sizeof(*lat));
        int rc = -1;
        if (!scratch || !cs || !lat) {
                bench_fail("out of memory");
                goto out;
        }
        for (unsigned i = 0; i < nc; i++)
                cs[i].fd = -1;
        for (unsigned i = 0; i < nc; i++)
                if (conn_open(&cs[i], o))
                        goto out;
        if (check_versions(&cs[0], scratch, cap))
                goto out;
        int np = partitions(&cs[0], topic, scratch, cap);
        if (np < 0)
                goto out;
        for (unsigned i = 0; i < nc; i++) {
                /* e2e: producer and consumer on the same partition */
                cs[i].part = mode == BENCH_KAFKA_E2E ? 0 : (int32_t)(i % (unsigned)np);
                uint32_t depth = (uint32_t)(o->window_bytes / ((uint64_t)per * o->size_bytes));
                cs[i].depth = depth < 1 ? 1 : depth > DEPTH_MAX ? DEPTH_MAX : depth;
                if (mode == BENCH_KAFKA_E2E)
                        continue;
                struct wbuf w = {scratch, 0, cap};
                produce_req(&w, topic, cs[i].part, per, o->size_bytes, bench_now_ns());
                if (w.len > w.cap) {
                        bench_fail("batch larger than its buffer");
                        goto out;
                }
                cs[i].req = malloc(w.len);
                if (!cs[i].req) {
                        bench_fail("out of memory");
                        goto out;
                }
                memcpy(cs[i].req, w.p, w.len);
                cs[i].req_len = w.len;
        }
        double cpu0 = bench_cpu_self_s();
        uint64_t t0 = bench_now_ns(), acked = 0;
        if (mode == BENCH_KAFKA_PRODUCE) {
                if (produce_phase(cs, nc, o, o->count, o->duration_s, lat, &acked))
                        goto out;
                res->pub_msgs = acked;
                hist_result(lat, res);
        } else if (mode == BENCH_KAFKA_CONSUME) {
                /* Fill (untimed): at least count records, or duration's worth. */
                if (produce_phase(cs, nc, o, o->count, o->duration_s, lat, &acked))
                        goto out;
                /* The topic is fresh: partition p ends at what the
                 * connections writing to it had acknowledged. Connection p
                 * reads partition p. */
                int64_t end[CONNS_MAX] = {0};
                for (unsigned i = 0; i < nc; i++)
                        end[cs[i].part] += (int64_t)cs[i].acked;
                cpu0 = bench_cpu_self_s();
                t0 = bench_now_ns();
                uint64_t records = 0;
                if (fetch_phase(cs, nc < (unsigned)np ? nc : (unsigned)np, topic, end, scratch, cap,
                                &records))
                        goto out;
                res->pub_msgs = acked;
                res->recv_msgs = records;
                res->lost_msgs = records < acked ? acked - records : 0;
        } else {
                uint64_t sent = 0, got = 0;
                if (e2e_run(&cs[0], &cs[1], o, topic, scratch, cap, lat, &sent, &got))
                        goto out;
                res->pub_msgs = sent;
                res->recv_msgs = got;
                res->lost_msgs = got < sent ? sent - got : 0;
                hist_result(lat, res);
        }
        res->elapsed_s = (double)(bench_now_ns() - t0) / 1e9;
        res->client_cpu_s = bench_cpu_self_s() - cpu0;
        rc = 0;
out:
        for (unsigned i = 0; cs && i < nc; i++)
                conn_close(&cs[i]);
        free(cs);
        free(scratch);
        free(lat);
        return rc;
}
