/* NATS load generator: its own minimal client on non-blocking sockets, all
 * connections in one thread around poll(). Publishing writes a prebuilt block
 * of identical PUB commands straight from memory (no per-message work); the
 * reader skips payloads and only counts them. */
#include "bench_nats.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RBUF_BYTES       (512u * 1024u)
#define WBUF_BYTES       (256u * 1024u)
#define BLOCK_BYTES_MIN  (256u * 1024u)
#define LINE_BYTES_MAX   4096u
#define REPLY_BYTES_MAX  256u
#define SETUP_TIMEOUT_NS (5ull * 1000000000ull)
#define DRAIN_TIMEOUT_NS (10ull * 1000000000ull)
#define POLL_MS          50

enum conn_role { ROLE_PUB, ROLE_SUB, ROLE_RESPONDER, ROLE_REQUESTER };

struct nconn {
        int fd;
        enum conn_role role;
        char *rbuf;
        size_t rlen, roff;
        uint64_t skip_bytes; /* rest of the current MSG: payload + CRLF */
        char reply[REPLY_BYTES_MAX];
        size_t reply_len;
        uint32_t msg_size; /* payload bytes of the current MSG */
        char *wbuf;        /* control lines and responses */
        size_t wlen, woff;
        bool want_out; /* a write hit EAGAIN */
        uint64_t msgs_in, pongs_in;
};

struct nbench {
        const struct bench_opts *o;
        int mode;
        struct nconn conns[BENCH_FANOUT_MAX + 1];
        unsigned nconns;
        unsigned first_sub, nsubs;
        char subject[64];
        char *payload; /* size_bytes of 'x', shared by every message we send */

        /* publisher: a block of whole PUB commands, written cyclically */
        char *block;
        size_t block_bytes, msg_bytes, block_off;
        uint64_t pub_bytes, pub_limit_bytes;
        uint64_t window_msgs;

        /* request/reply */
        struct bench_hist *hist;
        uint64_t req_sent_ns, rtts, rtt_limit;
        bool req_outstanding, stopping;

        uint64_t now_ns, start_ns, deadline_ns, last_recv_ns;
        bool failed;
};

static int conn_out_append(struct nconn *c, const char *data, size_t len)
{
        if (c->woff == c->wlen)
                c->woff = c->wlen = 0;
        if (WBUF_BYTES - c->wlen < len) {
                memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
                c->wlen -= c->woff;
                c->woff = 0;
                if (WBUF_BYTES - c->wlen < len)
                        return -ENOBUFS;
        }
        memcpy(c->wbuf + c->wlen, data, len);
        c->wlen += len;
        return 0;
}

/* Writes what is queued; returns 0 (maybe partial: want_out set) or -errno. */
static int conn_flush(struct nconn *c)
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

static int req_send(struct nbench *nb)
{
        struct nconn *c = &nb->conns[1]; /* requester */
        char hdr[128];
        int h = snprintf(hdr, sizeof(hdr), "PUB %s.req %s.reply %" PRIu32 "\r\n", nb->subject,
                         nb->subject, nb->o->size_bytes);
        if (conn_out_append(c, hdr, (size_t)h) ||
            conn_out_append(c, nb->payload, nb->o->size_bytes) || conn_out_append(c, "\r\n", 2))
                return -ENOBUFS;
        nb->req_sent_ns = bench_now_ns();
        nb->req_outstanding = true;
        return conn_flush(c);
}

/* A whole MSG (line and payload) has been read on c. */
static int msg_done(struct nbench *nb, struct nconn *c)
{
        c->msgs_in++;
        switch (c->role) {
        case ROLE_SUB:
        case ROLE_PUB:
                return 0;
        case ROLE_RESPONDER: {
                char hdr[REPLY_BYTES_MAX + 32];
                int h = snprintf(hdr, sizeof(hdr), "PUB %.*s %" PRIu32 "\r\n", (int)c->reply_len,
                                 c->reply, c->msg_size);
                if (conn_out_append(c, hdr, (size_t)h) ||
                    conn_out_append(c, nb->payload, c->msg_size) || conn_out_append(c, "\r\n", 2))
                        return -ENOBUFS;
                return 0;
        }
        case ROLE_REQUESTER: {
                uint64_t now = bench_now_ns();
                bench_hist_record(nb->hist, now - nb->req_sent_ns);
                nb->rtts++;
                nb->req_outstanding = false;
                nb->last_recv_ns = now;
                bool more = nb->rtt_limit ? nb->rtts < nb->rtt_limit : now < nb->deadline_ns;
                if (!more) {
                        nb->stopping = true;
                        return 0;
                }
                return req_send(nb);
        }
        }
        return 0;
}

/* "MSG subj sid [reply] bytes" or "HMSG subj sid [reply] hdr_bytes total_bytes":
 * the last token is the byte count; the reply is the 4th token of 5 (MSG). */
static int msg_line_parse(struct nconn *c, const char *line, size_t len, bool hmsg)
{
        size_t i = len;
        uint64_t bytes = 0, mul = 1;
        while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9') {
                bytes += (uint64_t)(line[i - 1] - '0') * mul;
                mul *= 10;
                i--;
        }
        if (i == len || i == 0 || line[i - 1] != ' ')
                return -EPROTO;
        c->msg_size = (uint32_t)bytes;
        c->skip_bytes = bytes + 2;
        if (c->role != ROLE_RESPONDER || hmsg)
                return 0;
        const char *tok[5];
        size_t tok_len[5];
        unsigned n = 0;
        for (size_t p = 0; p < len && n < 5;) {
                while (p < len && line[p] == ' ')
                        p++;
                size_t s = p;
                while (p < len && line[p] != ' ')
                        p++;
                if (p > s) {
                        tok[n] = line + s;
                        tok_len[n++] = p - s;
                }
        }
        if (n != 5 || tok_len[3] >= REPLY_BYTES_MAX)
                return -EPROTO; /* a request without a reply subject */
        memcpy(c->reply, tok[3], tok_len[3]);
        c->reply_len = tok_len[3];
        return 0;
}

static int conn_parse(struct nbench *nb, struct nconn *c)
{
        char *p = c->rbuf + c->roff, *end = c->rbuf + c->rlen;
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
                        rc = msg_done(nb, c);
                        if (rc)
                                break;
                        continue;
                }
                if (p == end)
                        break;
                char *nl = memchr(p, '\n', (size_t)(end - p));
                if (!nl) {
                        if ((size_t)(end - p) > LINE_BYTES_MAX)
                                rc = -EPROTO;
                        break;
                }
                size_t len = (size_t)(nl - p);
                if (len && p[len - 1] == '\r')
                        len--;
                if (len >= 4 && memcmp(p, "MSG ", 4) == 0) {
                        rc = msg_line_parse(c, p, len, false);
                } else if (len >= 5 && memcmp(p, "HMSG ", 5) == 0) {
                        rc = msg_line_parse(c, p, len, true);
                } else if (len == 4 && memcmp(p, "PING", 4) == 0) {
                        rc = conn_out_append(c, "PONG\r\n", 6);
                } else if (len == 4 && memcmp(p, "PONG", 4) == 0) {
                        c->pongs_in++;
                } else if (len >= 4 && memcmp(p, "-ERR", 4) == 0) {
                        bench_fail("server: %.*s", (int)len, p);
                        rc = -EPROTO;
                } else if (!(len >= 3 && memcmp(p, "+OK", 3) == 0) &&
                           !(len >= 4 && memcmp(p, "INFO", 4) == 0)) {
                        bench_fail("unexpected from server: %.*s", (int)(len > 80 ? 80 : len), p);
                        rc = -EPROTO;
                }
                if (rc)
                        break;
                p = nl + 1;
        }
        c->roff = (size_t)(p - c->rbuf);
        if (c->roff == c->rlen)
                c->roff = c->rlen = 0;
        return rc;
}

/* A publisher's control lines may only go between two PUB commands. */
static bool conn_may_flush(const struct nbench *nb, const struct nconn *c)
{
        return c->woff < c->wlen &&
               (c->role != ROLE_PUB || nb->msg_bytes == 0 || nb->pub_bytes % nb->msg_bytes == 0);
}

/* Reads once (up to the buffer) and parses; returns 0, or -errno / -EPIPE on EOF. */
static int conn_read(struct nbench *nb, struct nconn *c)
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
        uint64_t before = c->msgs_in;
        int rc = conn_parse(nb, c);
        if (c->msgs_in != before)
                nb->last_recv_ns = nb->now_ns;
        if (rc == 0 && conn_may_flush(nb, c))
                rc = conn_flush(c);
        return rc;
}

/* How many deliveries the window is measured against. */
static uint64_t sub_progress(const struct nbench *nb)
{
        uint64_t min = UINT64_MAX, sum = 0;
        for (unsigned i = 0; i < nb->nsubs; i++) {
                uint64_t m = nb->conns[nb->first_sub + i].msgs_in;
                sum += m;
                if (m < min)
                        min = m;
        }
        return nb->mode == BENCH_NATS_QUEUE ? sum : min;
}

static int pub_write(struct nbench *nb)
{
        struct nconn *c = &nb->conns[0];
        bool at_boundary = nb->pub_bytes % nb->msg_bytes == 0;
        if (c->woff < c->wlen && at_boundary) {
                int rc = conn_flush(c);
                if (rc || c->woff < c->wlen)
                        return rc;
        }
        uint64_t limit = nb->pub_limit_bytes;
        if (nb->nsubs) {
                uint64_t w = (sub_progress(nb) + nb->window_msgs) * nb->msg_bytes;
                if (w < limit)
                        limit = w;
        }
        while (nb->pub_bytes < limit) {
                size_t n = nb->block_bytes - nb->block_off;
                if (n > limit - nb->pub_bytes)
                        n = (size_t)(limit - nb->pub_bytes);
                ssize_t w = write(c->fd, nb->block + nb->block_off, n);
                if (w < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                c->want_out = true;
                                return 0;
                        }
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                nb->pub_bytes += (uint64_t)w;
                nb->block_off += (size_t)w;
                if (nb->block_off == nb->block_bytes)
                        nb->block_off = 0;
                if ((size_t)w < n) {
                        c->want_out = true;
                        return 0;
                }
        }
        return 0;
}

/* One poll round: wait for any socket, read what came, write what may go. */
static int loop_step(struct nbench *nb, bool publishing)
{
        struct pollfd pfd[BENCH_FANOUT_MAX + 1];
        for (unsigned i = 0; i < nb->nconns; i++) {
                struct nconn *c = &nb->conns[i];
                pfd[i].fd = c->fd;
                pfd[i].events = POLLIN;
                if (c->want_out)
                        pfd[i].events |= POLLOUT;
                pfd[i].revents = 0;
        }
        int n = poll(pfd, nb->nconns, POLL_MS);
        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        nb->now_ns = bench_now_ns();
        for (unsigned i = 0; i < nb->nconns; i++) {
                struct nconn *c = &nb->conns[i];
                int rc = 0;
                if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP))
                        rc = conn_read(nb, c);
                if (rc == 0 && (pfd[i].revents & POLLOUT)) {
                        c->want_out = false;
                        if (conn_may_flush(nb, c))
                                rc = conn_flush(c);
                }
                if (rc)
                        return rc;
        }
        if (publishing)
                return pub_write(nb);
        return 0;
}

static int conn_open(struct nbench *nb, enum conn_role role, const char *subs)
{
        struct nconn *c = &nb->conns[nb->nconns];
        c->role = role;
        c->rbuf = malloc(RBUF_BYTES);
        c->wbuf = malloc(WBUF_BYTES);
        c->fd = -1;
        if (!c->rbuf || !c->wbuf)
                return -ENOMEM;
        nb->nconns++;
        c->fd = bench_tcp_connect(nb->o->host, nb->o->port);
        if (c->fd < 0)
                return c->fd;
        int rc = bench_fd_nonblock_set(c->fd);
        if (rc)
                return rc;
        static const char connect[] =
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,"
            "\"name\":\"sluice-bench\",\"lang\":\"c\",\"version\":\"0.1.0\",\"protocol\":1,"
            "\"echo\":true,\"headers\":false,\"no_responders\":false}\r\n";
        if (conn_out_append(c, connect, sizeof(connect) - 1) ||
            conn_out_append(c, subs, strlen(subs)) || conn_out_append(c, "PING\r\n", 6))
                return -ENOBUFS;
        return conn_flush(c);
}

/* Waits until every connection has answered its PING: its SUBs are in place. */
static int conns_ready_wait(struct nbench *nb)
{
        uint64_t until = bench_now_ns() + SETUP_TIMEOUT_NS;
        for (;;) {
                bool all = true;
                for (unsigned i = 0; i < nb->nconns; i++)
                        all = all && nb->conns[i].pongs_in > 0;
                if (all)
                        return 0;
                if (bench_now_ns() > until)
                        return -ETIMEDOUT;
                int rc = loop_step(nb, false);
                if (rc)
                        return rc;
        }
}

static int block_build(struct nbench *nb)
{
        char hdr[128];
        uint32_t size = nb->o->size_bytes;
        int h = snprintf(hdr, sizeof(hdr), "PUB %s %" PRIu32 "\r\n", nb->subject, size);
        nb->msg_bytes = (size_t)h + size + 2;
        size_t per = BLOCK_BYTES_MIN / nb->msg_bytes;
        if (per < 4)
                per = 4;
        nb->block_bytes = per * nb->msg_bytes;
        nb->block = malloc(nb->block_bytes);
        if (!nb->block)
                return -ENOMEM;
        for (size_t i = 0; i < per; i++) {
                char *m = nb->block + i * nb->msg_bytes;
                memcpy(m, hdr, (size_t)h);
                memcpy(m + h, nb->payload, size);
                memcpy(m + h + size, "\r\n", 2);
        }
        return 0;
}

static int setup(struct nbench *nb)
{
        char subs[256];
        int rc = 0;
        const struct bench_opts *o = nb->o;
        if (nb->mode == BENCH_NATS_REQREP) {
                snprintf(subs, sizeof(subs), "SUB %s.req 1\r\n", nb->subject);
                rc = conn_open(nb, ROLE_RESPONDER, subs);
                if (rc == 0) {
                        snprintf(subs, sizeof(subs), "SUB %s.reply 1\r\n", nb->subject);
                        rc = conn_open(nb, ROLE_REQUESTER, subs);
                }
                return rc ? rc : conns_ready_wait(nb);
        }
        rc = conn_open(nb, ROLE_PUB, "");
        nb->first_sub = 1;
        nb->nsubs = 0;
        if (nb->mode == BENCH_NATS_PUBSUB)
                nb->nsubs = 1;
        else if (nb->mode == BENCH_NATS_FANOUT || nb->mode == BENCH_NATS_QUEUE)
                nb->nsubs = o->fanout;
        for (unsigned i = 0; rc == 0 && i < nb->nsubs; i++) {
                if (nb->mode == BENCH_NATS_QUEUE)
                        snprintf(subs, sizeof(subs), "SUB %s workers 1\r\n", nb->subject);
                else
                        snprintf(subs, sizeof(subs), "SUB %s 1\r\n", nb->subject);
                rc = conn_open(nb, ROLE_SUB, subs);
        }
        if (rc == 0)
                rc = block_build(nb);
        if (rc == 0)
                rc = conns_ready_wait(nb);
        if (rc == 0) {
                uint64_t w = o->window_bytes / nb->msg_bytes;
                nb->window_msgs = w < 16 ? 16 : w;
        }
        return rc;
}

static int run_reqrep(struct nbench *nb)
{
        nb->rtt_limit = nb->o->count;
        int rc = req_send(nb);
        while (rc == 0 && (nb->req_outstanding || !nb->stopping)) {
                rc = loop_step(nb, false);
                if (rc == 0 && nb->req_outstanding &&
                    nb->now_ns > nb->req_sent_ns + DRAIN_TIMEOUT_NS)
                        rc = -ETIMEDOUT;
        }
        return rc;
}

static int run_pub(struct nbench *nb)
{
        const struct bench_opts *o = nb->o;
        nb->pub_limit_bytes = o->count ? o->count * nb->msg_bytes : UINT64_MAX;
        int rc = pub_write(nb);
        while (rc == 0 && nb->pub_bytes < nb->pub_limit_bytes) {
                rc = loop_step(nb, true);
                if (!o->count && nb->now_ns >= nb->deadline_ns &&
                    nb->pub_limit_bytes == UINT64_MAX) {
                        /* stop at the end of the message being written */
                        uint64_t m = (nb->pub_bytes + nb->msg_bytes - 1) / nb->msg_bytes;
                        nb->pub_limit_bytes = m * nb->msg_bytes;
                }
        }
        if (rc)
                return rc;
        /* Publish-only: the run ends when the broker has read everything (PONG).
         * With subscribers: when every delivery has arrived, or the drain times out. */
        uint64_t pongs = nb->conns[0].pongs_in;
        if (conn_out_append(&nb->conns[0], "PING\r\n", 6) || conn_flush(&nb->conns[0]))
                return -EIO;
        uint64_t pub_msgs = nb->pub_bytes / nb->msg_bytes;
        uint64_t expect = nb->mode == BENCH_NATS_FANOUT ? pub_msgs * nb->nsubs : pub_msgs;
        uint64_t until = bench_now_ns() + DRAIN_TIMEOUT_NS;
        for (;;) {
                uint64_t got = 0;
                for (unsigned i = 0; i < nb->nsubs; i++)
                        got += nb->conns[nb->first_sub + i].msgs_in;
                bool done = nb->nsubs ? got >= expect : nb->conns[0].pongs_in > pongs;
                if (done || nb->now_ns > until)
                        break;
                rc = loop_step(nb, false);
                if (rc)
                        return rc;
        }
        if (!nb->nsubs)
                nb->last_recv_ns = nb->now_ns;
        return 0;
}

int bench_nats_run(const struct bench_opts *opts, int mode, struct bench_result *res)
{
        struct nbench *nb = calloc(1, sizeof(*nb));
        if (!nb)
                return bench_fail("out of memory");
        nb->o = opts;
        nb->mode = mode;
        snprintf(nb->subject, sizeof(nb->subject), "bench.%ld", (long)getpid());
        nb->payload = malloc(opts->size_bytes);
        nb->hist = calloc(1, sizeof(*nb->hist));
        int rc = -ENOMEM;
        if (nb->payload && nb->hist) {
                memset(nb->payload, 'x', opts->size_bytes);
                rc = setup(nb);
                if (rc)
                        bench_fail("setup against %s:%s: %s", opts->host, opts->port,
                                   strerror(-rc));
        }
        if (rc == 0) {
                double cpu0 = bench_cpu_self_s();
                nb->start_ns = nb->now_ns = nb->last_recv_ns = bench_now_ns();
                nb->deadline_ns = nb->start_ns + (uint64_t)(opts->duration_s * 1e9);
                rc = mode == BENCH_NATS_REQREP ? run_reqrep(nb) : run_pub(nb);
                if (rc)
                        bench_fail("run: %s", strerror(-rc));
                res->client_cpu_s = bench_cpu_self_s() - cpu0;
                uint64_t end = nb->last_recv_ns > nb->start_ns ? nb->last_recv_ns : nb->now_ns;
                res->elapsed_s = (double)(end - nb->start_ns) / 1e9;
        }
        if (rc == 0 && mode == BENCH_NATS_REQREP) {
                res->pub_msgs = res->recv_msgs = nb->rtts;
                res->has_latency = true;
                res->lat_p50_us = (double)bench_hist_quantile(nb->hist, 0.50) / 1e3;
                res->lat_p99_us = (double)bench_hist_quantile(nb->hist, 0.99) / 1e3;
                res->lat_p999_us = (double)bench_hist_quantile(nb->hist, 0.999) / 1e3;
                res->lat_max_us = (double)nb->hist->max / 1e3;
                res->lat_mean_us =
                    nb->hist->total ? (double)nb->hist->sum / (double)nb->hist->total / 1e3 : 0;
        } else if (rc == 0) {
                res->pub_msgs = nb->pub_bytes / nb->msg_bytes;
                for (unsigned i = 0; i < nb->nsubs; i++)
                        res->recv_msgs += nb->conns[nb->first_sub + i].msgs_in;
                uint64_t expect =
                    mode == BENCH_NATS_FANOUT ? res->pub_msgs * nb->nsubs : res->pub_msgs;
                if (nb->nsubs && res->recv_msgs < expect)
                        res->lost_msgs = expect - res->recv_msgs;
        }
        for (unsigned i = 0; i < nb->nconns; i++) {
                if (nb->conns[i].fd >= 0)
                        close(nb->conns[i].fd);
                free(nb->conns[i].rbuf);
                free(nb->conns[i].wbuf);
        }
        free(nb->block);
        free(nb->payload);
        free(nb->hist);
        free(nb);
        return rc ? -1 : 0;
}
