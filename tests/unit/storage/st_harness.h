/* A partition under test with a shadow copy of every batch appended, so
 * any read can be checked byte for byte against what was acknowledged. */
#ifndef ST_HARNESS_H
#define ST_HARNESS_H

#include "st_util.h"

#include <errno.h>

#define ST_MAX_BATCHES 8192

struct st_batch_rec {
        int64_t base;
        int32_t count;
        uint32_t len;
        uint8_t *bytes; /* as stored: base offset and epoch stamped */
        bool acked;
};

struct st_part {
        char dir[256];
        struct log_io *io;
        struct log_owner *o;
        struct log_partition *p;
        struct log_config cfg;
        struct st_batch_rec b[ST_MAX_BATCHES];
        int nb;
        int64_t trimmed_max; /* highest offset log_trim was given */
        uint8_t *rbuf;
        uint32_t rcap;
};

static inline void st_ack_rec(void *ctx, int64_t base, int res)
{
        struct st_batch_rec *r = ctx;
        (void)base;
        if (res == 0)
                r->acked = true;
}

static inline void st_part_open(struct st_part *s)
{
        if (!s->o) {
                s->o = log_owner_create(s->io);
                assert_non_null(s->o);
        }
        assert_int_equal(log_partition_open(s->o, s->dir, &s->cfg, 3, &s->p), 0);
        if (!s->rbuf) {
                s->rcap = 1 << 20;
                s->rbuf = aligned_alloc(4096, s->rcap);
        }
}

static inline void st_part_init(struct st_part *s, struct log_io *io)
{
        memset(s, 0, sizeof(*s));
        assert_non_null(st_tmpdir(s->dir, sizeof(s->dir)));
        strcat(s->dir, "/p0");
        s->io = io;
        st_cfg(&s->cfg);
}

static inline void st_part_close(struct st_part *s)
{
        st_drain(s->o);
        log_partition_close(s->p);
        s->p = NULL;
}

static inline void st_part_reopen(struct st_part *s)
{
        st_part_close(s);
        st_part_open(s);
}

static inline void st_part_free(struct st_part *s)
{
        if (s->p)
                st_part_close(s);
        log_owner_destroy(s->o);
        s->io->ops->destroy(s->io);
        for (int i = 0; i < s->nb; i++)
                free(s->b[i].bytes);
        free(s->rbuf);
        char top[256];
        memcpy(top, s->dir, sizeof(top));
        top[sizeof(top) - 1] = 0;
        *strrchr(top, '/') = 0;
        st_rmrf(top);
}

/* Append one batch; returns log_append's result. */
static inline int st_append(struct st_part *s, int records, uint32_t value_len, int64_t ts)
{
        uint8_t *buf = malloc(64 + (size_t)records * (value_len + 16));
        uint32_t n = st_batch(buf, records, value_len, ts, (uint32_t)s->nb * 7919u + 1);
        assert_true(s->nb < ST_MAX_BATCHES);
        struct st_batch_rec *r = &s->b[s->nb];
        int64_t base;
        int rc = log_append(s->p, buf, n, st_ack_rec, r, &base);
        if (rc < 0) {
                free(buf);
                return rc;
        }
        st_be64(buf, (uint64_t)base);
        st_be32(buf + 12, 3);
        *r = (struct st_batch_rec){.base = base, .count = records, .len = n, .bytes = buf};
        s->nb++;
        return 0;
}

/* Append, polling when the ring or the ack queue is full. */
static inline void st_append_ok(struct st_part *s, int records, uint32_t value_len, int64_t ts)
{
        int rc;
        while ((rc = st_append(s, records, value_len, ts)) == -ENOBUFS) {
                log_owner_poll(s->o);
                if (s->io->inflight)
                        s->io->ops->wait(s->io);
        }
        assert_int_equal(rc, 0);
}

struct st_rd {
        bool done;
        int res;
};

static inline void st_read_cb(struct log_read *r, int res)
{
        struct st_rd *d = r->ctx;
        d->done = true;
        d->res = res;
}

/* Synchronous read for tests: returns bytes or -errno; r holds the view. */
static inline int st_read(struct st_part *s, struct log_read *r, int64_t off, bool by_time,
                          int64_t ts, uint32_t max_bytes)
{
        struct st_rd d = {0};
        memset(r, 0, sizeof(*r));
        r->offset = off;
        r->by_time = by_time;
        r->timestamp = ts;
        r->max_bytes = max_bytes;
        r->buf = s->rbuf;
        r->buf_cap = s->rcap;
        r->cb = st_read_cb;
        r->ctx = &d;
        int rc = log_read_submit(s->p, r);
        if (rc != 0)
                return rc;
        while (!d.done) {
                log_owner_poll(s->o);
                if (!d.done && s->io->inflight)
                        s->io->ops->wait(s->io);
        }
        return d.res;
}

static inline int st_find(struct st_part *s, int64_t off)
{
        int lo = 0, hi = s->nb - 1;
        while (lo < hi) {
                int mid = (lo + hi + 1) / 2;
                if (s->b[mid].base <= off)
                        lo = mid;
                else
                        hi = mid - 1;
        }
        return lo;
}

/* Check that the batches in r's view are byte-identical to the shadow, in
 * order, starting with the one holding `off`. Returns batches checked. */
static inline int st_check_view(struct st_part *s, const struct log_read *r, int64_t off)
{
        const uint8_t *v = (const uint8_t *)r->buf + r->data_off;
        uint32_t pos = 0;
        int i = st_find(s, off), n = 0;
        while (pos < r->data_len) {
                assert_true(i < s->nb);
                struct st_batch_rec *b = &s->b[i];
                assert_true(pos + b->len <= r->data_len);
                assert_memory_equal(v + pos, b->bytes, b->len);
                pos += b->len;
                i++;
                n++;
        }
        return n;
}

#endif
