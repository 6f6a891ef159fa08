/* Power loss under a durable AMQP queue's log. SIGKILL keeps the page cache,
 * so the integration restart tests cannot catch a missing fsync; the storage
 * fake backend can (log_io_fake_power_cut: every file back to what its last
 * completed fsync covered, names no directory fsync covered undone).
 *
 * amqp_server.c keeps its queue-log code (amqp_dq_store, dq_acks_flush, amqp_dq_poll,
 * dq_recover) static, bound to its worker, and opens its storage on
 * log_io_uring_create, so it cannot be handed the fake backend. This test
 * drives the storage log the way that code does -- the same records, built
 * and reassembled by the server's own amqp_qrec.c ('M' message records,
 * messages over one batch split into an 'F' record and 'C' continuations,
 * 'A' records listing settled offsets), ack records appended before the
 * next message append, the whole
 * log trimmed once everything is settled -- cuts the power at a random
 * moment, reads the image back with the rule dq_recover applies (a message
 * without an ack record returns) and checks what the queue promises:
 * - every confirmed message that was not settled comes back, byte for byte;
 * - a settlement is durable once any later append was acknowledged (the
 *   rule that lets the server confirm without fsyncing acks of their own);
 * - nothing comes back that was never appended, and nothing twice;
 * - a split message comes back whole or not at all (a torn tail of pieces,
 *   cut before its last piece was durable, is dropped). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "amqp_qrec.h"
#include "log.h"
#include "log_crc32c.h"
#include "log_io.h"

#define MAX_MSGS  4096
#define MAX_BODY  1500
#define BIG_BODY  (200 * 1024) /* up to 4 pieces of BATCH_MAX */
#define BATCH_MAX (64 * 1024)
#define BATCH_CAP BATCH_MAX /* pieces and ack records (8 * MAX_MSGS fits) */

struct msg {
        int64_t loff;       /* offset of its 'M' or 'F' record */
        int64_t append_seq; /* position among all appends of its last piece */
        bool confirmed;     /* its (last piece's) append was acknowledged */
        bool settled;       /* listed in an ack record that was appended */
        int64_t ack_seq;    /* that ack record's position among all appends */
        uint32_t pieces;
        uint32_t appended; /* pieces appended (fewer: torn by the power cut) */
        struct amqp_qrec_head h;
        uint8_t *data; /* ex, rk, header, body */
};

struct model {
        struct msg m[MAX_MSGS];
        int n;
        int64_t appends;       /* appends issued (M and A) */
        int64_t last_acked;    /* highest append_seq whose append was acknowledged */
        int pending[MAX_MSGS]; /* settled in memory, not yet in an ack record */
        int npending;
        int64_t trimmed_to;
};

struct append_ack {
        struct model *md;
        int64_t seq;
        int msg; /* index of its message, -1 for an ack record */
};

static struct append_ack acks[8 * MAX_MSGS + 64];
static uint8_t batch[BATCH_CAP];

static void be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
        be32(p, (uint32_t)(v >> 32));
        be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

static uint64_t rng_next(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static uint32_t frame(uint8_t *b, uint32_t payload_len)
{
        return amqp_qrec_frame(b, payload_len, 1700000000000ull);
}

static void append_cb(void *ctx, int64_t base_offset, int res)
{
        (void)base_offset;
        struct append_ack *a = ctx;
        if (res != 0)
                return;
        /* the log acknowledges appends in order */
        assert_true(a->seq > a->md->last_acked);
        a->md->last_acked = a->seq;
        if (a->msg >= 0)
                a->md->m[a->msg].confirmed = true;
}

static int append(struct log_owner *o, struct log_partition *p, struct model *md, uint32_t len,
                  int msg, int64_t *off)
{
        struct append_ack *a = &acks[md->appends];
        *a = (struct append_ack){.md = md, .seq = md->appends, .msg = msg};
        int rc;
        while ((rc = log_append(p, batch, len, append_cb, a, off)) == -ENOBUFS)
                log_owner_poll_wait(o);
        assert_int_equal(rc, 0);
        return (int)md->appends++;
}

/* dq_acks_flush: the settlements so far as one ack record. */
static void flush_acks(struct log_owner *o, struct log_partition *p, struct model *md)
{
        if (!md->npending)
                return;
        uint8_t *r = batch + LOG_BATCH_HEADER_BYTES;
        r[0] = DQ_REC_ACK;
        for (int i = 0; i < md->npending; i++)
                be64(r + 1 + 8 * i, (uint64_t)md->m[md->pending[i]].loff);
        int64_t off;
        int seq = append(o, p, md, frame(batch, 1 + 8 * (uint32_t)md->npending), -1, &off);
        for (int i = 0; i < md->npending; i++) {
                md->m[md->pending[i]].settled = true;
                md->m[md->pending[i]].ack_seq = seq;
        }
        md->npending = 0;
}

/* amqp_dq_store: the message's records (one, or an 'F' and its 'C'
 * continuations, consecutive), always after the ack records of everything
 * settled before it; confirmed by the ack of its last piece. torn_after:
 * stop after that many pieces (the power goes mid-message). */
static void store(struct log_owner *o, struct log_partition *p, struct model *md, uint64_t *rng,
                  uint32_t torn_after)
{
        flush_acks(o, p, md);
        struct msg *m = &md->m[md->n];
        bool big = torn_after != UINT32_MAX || rng_next(rng) % 16 == 0;
        m->h = (struct amqp_qrec_head){
            .type = DQ_REC_MSG,
            .ex_len = (uint8_t)(rng_next(rng) % 8),
            .rk_len = (uint8_t)(rng_next(rng) % 16),
            .hdr_len = 14 + (uint32_t)(rng_next(rng) % 20),
            .body_len = big ? BATCH_MAX + rng_next(rng) % (BIG_BODY - BATCH_MAX)
                            : rng_next(rng) % (MAX_BODY - 64),
        };
        uint64_t n = amqp_qrec_data_len(&m->h);
        m->data = malloc(n);
        assert_non_null(m->data);
        for (uint64_t i = 0; i < n; i++)
                m->data[i] = (uint8_t)rng_next(rng);
        m->pieces = amqp_qrec_pieces(&m->h, BATCH_MAX);
        assert_true(big ? m->pieces >= 2 : m->pieces == 1);
        static uint8_t piece[BATCH_MAX];
        for (uint32_t i = 0; i < m->pieces && i < torn_after; i++) {
                uint32_t len =
                    amqp_qrec_build(piece, BATCH_MAX, &m->h, m->data, i, m->loff, 1700000000000ull);
                assert_true(len <= BATCH_MAX);
                memcpy(batch, piece, len);
                int64_t off;
                bool last = i + 1 == m->pieces;
                int seq = append(o, p, md, len, last ? md->n : -1, &off);
                m->appended++;
                if (i == 0)
                        m->loff = off;
                if (last)
                        m->append_seq = seq;
        }
        md->n++;
}

static void open_log(struct log_owner *o, const char *dir, struct log_partition **p)
{
        struct log_config cfg;
        log_config_default(&cfg);
        /* small segments and ring, so rolls, trims and the write window are
         * all in play within a few hundred messages */
        cfg.segment_bytes = 64 * 1024;
        cfg.ring_bytes = 256 * 1024;
        cfg.max_batch_bytes = 64 * 1024;
        cfg.max_write_bytes = 64 * 1024;
        cfg.index_interval_bytes = 4096;
        cfg.prealloc_bytes = 64 * 1024;
        cfg.max_pending = 256;
        /* as the server: only settlement removes (the batches' timestamps
         * are old, so retention by time would delete rolled segments) */
        cfg.retention_ms = -1;
        cfg.retention_bytes = -1;
        assert_int_equal(log_partition_open(o, dir, &cfg, 0, p), 0);
}

struct rd {
        bool done;
        int res;
};

static void read_cb(struct log_read *r, int res)
{
        struct rd *d = r->ctx;
        d->done = true;
        d->res = res;
}

static uint8_t *recover_alloc(void *ctx, const struct amqp_qrec_head *h)
{
        (void)ctx;
        uint8_t *d = malloc(amqp_qrec_data_len(h) + 1);
        assert_non_null(d);
        return d;
}

static int torn_dropped; /* split messages dropped at recovery for a missing tail */
static int split_back;   /* split messages read back whole */

static void recover_drop(void *ctx, uint8_t *data)
{
        (void)ctx;
        torn_dropped++;
        free(data);
}

/* dq_recover's rule: every whole message without an 'A' record listing it
 * returns. Checks each against the model; returns how many came back. */
static int recover_and_check(struct log_owner *o, struct log_partition *p, struct model *md)
{
        static uint8_t *buf;
        uint32_t cap = 256 * 1024 + 4 * 4096 + 2 * log_dio_align(p) + 4096;
        if (!buf)
                buf = aligned_alloc(4096, (cap + 4095) / 4096 * 4096);
        static int64_t acked[2 * MAX_MSGS], found[MAX_MSGS];
        int nacked = 0, nfound = 0;
        struct amqp_qrec_asm as = {0};
        int64_t off = log_start_offset(p), hw = log_high_watermark(p);
        while (off < hw) {
                struct rd d = {0};
                struct log_read r = {.offset = off,
                                     .max_bytes = 128 * 1024,
                                     .buf = buf,
                                     .buf_cap = cap,
                                     .cb = read_cb,
                                     .ctx = &d};
                int n = log_read_submit(p, &r);
                if (n == 0) {
                        while (!d.done)
                                log_owner_poll_wait(o);
                        n = d.res < 0 ? d.res : (int)r.data_len;
                }
                assert_true(n > 0);
                const uint8_t *v = buf + r.data_off, *end = v + r.data_len;
                while (end - v >= LOG_BATCH_HEADER_BYTES) {
                        uint32_t blen = log_batch_len(v);
                        assert_true(blen <= (size_t)(end - v));
                        int64_t boff = log_batch_base_offset(v);
                        const uint8_t *pl = v + LOG_BATCH_HEADER_BYTES;
                        uint32_t plen = blen - LOG_BATCH_HEADER_BYTES;
                        enum amqp_qrec_kind k =
                            boff >= off ? amqp_qrec_feed(&as, pl, plen, boff, recover_alloc,
                                                         recover_drop, NULL)
                                        : AMQP_QREC_NONE;
                        if (k == AMQP_QREC_ACK) {
                                for (uint32_t i = 0; 1 + 8 * (i + 1) <= plen; i++)
                                        acked[nacked++] = (int64_t)get_be64(pl + 1 + 8 * i);
                        } else if (k == AMQP_QREC_MSG) {
                                found[nfound++] = as.off;
                                /* byte for byte what was appended there */
                                int i = 0;
                                while (i < md->n && md->m[i].loff != as.off)
                                        i++;
                                assert_true(i < md->n);
                                const struct msg *m = &md->m[i];
                                assert_memory_equal(&as.h, &m->h, sizeof(as.h));
                                assert_memory_equal(as.data, m->data, amqp_qrec_data_len(&m->h));
                                split_back += m->pieces > 1;
                                free(as.data);
                        }
                        off = boff + log_batch_last_delta(v) + 1;
                        v += blen;
                }
        }
        amqp_qrec_finish(&as, recover_drop, NULL);
        int back = 0;
        for (int i = 0; i < md->n; i++) {
                const struct msg *m = &md->m[i];
                int present = 0;
                bool ack_found = false;
                for (int j = 0; j < nfound; j++)
                        present += found[j] == m->loff;
                for (int j = 0; j < nacked; j++)
                        ack_found |= acked[j] == m->loff;
                assert_true(present <= 1); /* never twice */
                if (m->appended < m->pieces)
                        assert_false(present); /* torn: never half delivered */
                bool returns = present && !ack_found;
                back += returns;
                if (m->confirmed && !m->settled)
                        assert_true(returns); /* a confirmed message is never lost */
                if (m->settled && m->ack_seq <= md->last_acked)
                        assert_false(returns); /* a durable settlement stays */
                if (!present)
                        /* gone: never confirmed, trimmed after settling, or
                         * settled (a settled prefix may be trimmed) */
                        assert_true(!m->confirmed || m->settled);
        }
        return back;
}

static void rmrf(const char *path)
{
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
        assert_int_equal(system(cmd), 0);
}

static void test_queue_log_survives_power_cuts(void **state)
{
        (void)state;
        static struct model md;
        int total_back = 0, total_confirmed = 0, total_durable_settled = 0;
        for (uint64_t seed = 1; seed <= 24; seed++) {
                uint64_t rng = seed * 2654435761u + 7;
                char top[64] = "/var/tmp/sluice-qlog-XXXXXX", dir[128];
                assert_non_null(mkdtemp(top));
                snprintf(dir, sizeof(dir), "%s/q", top);
                memset(&md, 0, sizeof(md));
                md.last_acked = -1;
                struct log_io *io = log_io_fake_create(seed);
                struct log_owner *o = log_owner_create(io);
                assert_non_null(o);
                struct log_partition *p;
                open_log(o, dir, &p);
                int steps = 200 + (int)(rng_next(&rng) % 600);
                for (int k = 0; k < steps && md.n < MAX_MSGS - 1; k++) {
                        uint64_t r = rng_next(&rng) % 100;
                        if (r < 45) {
                                store(o, p, &md, &rng, UINT32_MAX);
                        } else if (r < 80 && md.n) {
                                /* a consumer acks (or a no-ack delivery, a
                                 * reject, a purge): some unsettled message */
                                int i = (int)(rng_next(&rng) % (uint64_t)md.n);
                                bool queued = false;
                                for (int j = 0; j < md.npending; j++)
                                        queued |= md.pending[j] == i;
                                if (!md.m[i].settled && !queued)
                                        md.pending[md.npending++] = i;
                        } else if (r < 88) {
                                /* amqp_dq_poll at the end of a loop iteration */
                                flush_acks(o, p, &md);
                        } else if (r < 97) {
                                log_owner_poll(o);
                                if (io->inflight && rng_next(&rng) % 2)
                                        io->ops->wait(io);
                        } else {
                                /* amqp_dq_poll: everything settled and stored,
                                 * nothing in flight: the whole log goes */
                                flush_acks(o, p, &md);
                                bool all = true;
                                for (int i = 0; i < md.n; i++)
                                        all &= md.m[i].settled;
                                if (all && md.last_acked == md.appends - 1) {
                                        int64_t hw = log_high_watermark(p);
                                        assert_int_equal(log_trim(p, hw), 0);
                                        md.trimmed_to = hw;
                                }
                        }
                }
                if (rng_next(&rng) % 2 && md.n < MAX_MSGS - 1) {
                        /* the power goes between the pieces of a large
                         * message: the ones before are durable, its tail
                         * never arrives (its confirm was never sent) */
                        store(o, p, &md, &rng, 1 + (uint32_t)(rng_next(&rng) % 2));
                        assert_int_equal(log_owner_drain(o), 0);
                }
                log_io_fake_power_cut(io);
                log_partition_abandon(p);
                log_owner_destroy(o);
                io->ops->destroy(io);

                /* restart on the surviving image, as the worker does */
                struct log_io *io2 = log_io_uring_create(NULL, 64, 0);
                assert_non_null(io2);
                struct log_owner *o2 = log_owner_create(io2);
                open_log(o2, dir, &p);
                assert_int_equal(log_partition_state(p), 0);
                total_back += recover_and_check(o2, p, &md);
                for (int i = 0; i < md.n; i++) {
                        total_confirmed += md.m[i].confirmed;
                        total_durable_settled +=
                            md.m[i].settled && md.m[i].ack_seq <= md.last_acked;
                }
                for (int i = 0; i < md.n; i++)
                        free(md.m[i].data);
                assert_int_equal(log_owner_drain(o2), 0);
                log_partition_close(p);
                log_owner_destroy(o2);
                io2->ops->destroy(io2);
                rmrf(top);
        }
        /* the runs exercised both promises, not just empty logs, and split
         * messages both whole and torn */
        assert_true(total_back > 0 && total_confirmed > 0 && total_durable_settled > 0);
        assert_true(split_back > 0 && torn_dropped > 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_queue_log_survives_power_cuts),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
