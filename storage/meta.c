/* The metadata log. Record: len u32 | crc32c u32 | type u16 | version u16 |
 * payload, little-endian; len counts type..payload, the CRC covers the same
 * bytes. Files: meta.snap (state as records between SNAP_BEGIN{gen} and
 * SNAP_END) and meta-<gen>.log (records since). A torn log tail is cut at
 * open. New fields are only ever appended to a record's payload, so a
 * reader takes the fields it knows and ignores the rest. */
#include "meta.h"
#include "log_crc32c.h"
#include "sl_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_HDR     12
#define META_REC_MAX (1u << 20)

struct meta_off {
        char *group; /* NULL = empty slot */
        uint8_t uuid[16];
        uint32_t partition;
        int64_t offset;
};

struct meta_def {
        char *key; /* NULL: deleted slot */
        uint8_t *val;
        uint32_t len;
};

struct meta_cbent {
        meta_cb cb;
        void *ctx;
};

struct buf {
        uint8_t *b;
        size_t len, cap;
};

struct meta_log {
        struct log_io *io;
        bool own_io;
        char dir[PATH_MAX];
        int dirfd, fd;
        uint64_t gen, file_len;
        int err;

        struct meta_topic *topics;
        uint32_t ntopics, topics_cap;
        struct meta_off *offs;
        uint32_t noffs, offs_cap; /* open addressing, power of two */
        struct meta_def *defs;    /* few and rarely changed: a plain array */
        uint32_t ndefs, defs_cap;

        struct buf pend, fly; /* appended, being written */
        struct meta_cbent *pcb, *fcb;
        uint32_t npcb, nfcb, pcb_cap, fcb_cap;
        struct log_io_req wreq, sreq;
        bool writing, syncing;
        uint64_t unknown_records;
        int64_t producer_id_hwm;
        uint64_t snapshot_bytes; /* automatic snapshot threshold, 0 = never */
        uint64_t snapshot_len;   /* size of the last snapshot written */
        uint64_t snapshots;      /* written by this process */
};

/* ---- encoding ------------------------------------------------------- */

static int buf_put(struct buf *b, const void *p, size_t n)
{
        if (b->len + n > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                while (cap < b->len + n)
                        cap *= 2;
                uint8_t *nb = realloc(b->b, cap);
                if (!nb)
                        return -ENOMEM;
                b->b = nb;
                b->cap = cap;
        }
        memcpy(b->b + b->len, p, n);
        b->len += n;
        return 0;
}

#define PUT(b, v)                                                                                  \
        do {                                                                                       \
                __typeof__(v) _v = (v);                                                            \
                if (buf_put((b), &_v, sizeof(_v)) < 0)                                             \
                        return -ENOMEM;                                                            \
        } while (0)

static int put_str(struct buf *b, const char *s)
{
        uint16_t n = (uint16_t)strnlen(s, 4096);
        PUT(b, n);
        return buf_put(b, s, n);
}

struct rd {
        const uint8_t *p;
        size_t n;
        bool bad;
};

static void rd_get(struct rd *r, void *dst, size_t n)
{
        if (r->bad || r->n < n) {
                r->bad = true;
                memset(dst, 0, n);
                return;
        }
        memcpy(dst, r->p, n);
        r->p += n;
        r->n -= n;
}

#define GET(r, T)                                                                                  \
        ({                                                                                         \
                T _v;                                                                              \
                rd_get((r), &_v, sizeof(_v));                                                      \
                _v;                                                                                \
        })

static void rd_str(struct rd *r, char *dst, size_t cap)
{
        uint16_t n = GET(r, uint16_t);
        if (n >= cap || r->n < n) {
                r->bad = true;
                dst[0] = 0;
                return;
        }
        rd_get(r, dst, n);
        dst[n] = 0;
}

/* Frame a record around the payload in `pl` and add it to `out`. */
static int rec_frame(struct buf *out, uint16_t type, uint16_t ver, const struct buf *pl)
{
        uint8_t hdr[META_HDR];
        uint32_t len = (uint32_t)(4 + pl->len);
        memcpy(hdr, &len, 4);
        memcpy(hdr + 8, &type, 2);
        memcpy(hdr + 10, &ver, 2);
        uint32_t crc = log_crc32c(0, hdr + 8, 4);
        crc = log_crc32c(crc, pl->b, pl->len);
        memcpy(hdr + 4, &crc, 4);
        if (buf_put(out, hdr, sizeof(hdr)) < 0)
                return -ENOMEM;
        return buf_put(out, pl->b, pl->len);
}

static int enc_topic(struct buf *pl, const struct meta_topic *t)
{
        if (buf_put(pl, t->uuid, 16) < 0 || put_str(pl, t->name) < 0)
                return -ENOMEM;
        PUT(pl, t->partitions);
        PUT(pl, (uint8_t)t->cfg.durability);
        PUT(pl, t->cfg.flush_interval_ms);
        PUT(pl, t->cfg.flush_interval_bytes);
        PUT(pl, t->cfg.segment_bytes);
        PUT(pl, t->cfg.segment_ms);
        PUT(pl, t->cfg.retention_bytes);
        PUT(pl, t->cfg.retention_ms);
        PUT(pl, t->flags); /* appended later: older records end before it */
        return 0;
}

static int enc_placement(struct buf *pl, const uint8_t *uuid, uint32_t part, int32_t worker)
{
        if (buf_put(pl, uuid, 16) < 0)
                return -ENOMEM;
        PUT(pl, part);
        PUT(pl, worker);
        return 0;
}

static int enc_offset(struct buf *pl, const char *group, const uint8_t *uuid, uint32_t part,
                      int64_t off)
{
        if (put_str(pl, group) < 0 || buf_put(pl, uuid, 16) < 0)
                return -ENOMEM;
        PUT(pl, part);
        PUT(pl, off);
        return 0;
}

/* ---- state ---------------------------------------------------------- */

static struct meta_topic *topic_by_uuid(const struct meta_log *m, const uint8_t *uuid)
{
        for (uint32_t i = 0; i < m->ntopics; i++)
                if (!memcmp(m->topics[i].uuid, uuid, 16))
                        return &m->topics[i];
        return NULL;
}

/* Idempotent: replaying a record twice (log after snapshot) is harmless. */
static int apply_topic(struct meta_log *m, const struct meta_topic *t)
{
        struct meta_topic *x = topic_by_uuid(m, t->uuid);
        if (!x) {
                if (m->ntopics == m->topics_cap) {
                        uint32_t cap = m->topics_cap ? m->topics_cap * 2 : 16;
                        struct meta_topic *n = realloc(m->topics, sizeof(*n) * cap);
                        if (!n)
                                return -ENOMEM;
                        m->topics = n;
                        m->topics_cap = cap;
                }
                x = &m->topics[m->ntopics++];
                memset(x, 0, sizeof(*x));
        }
        int32_t *w = x->worker;
        uint32_t old = x->partitions;
        *x = *t;
        x->worker = realloc(w, sizeof(int32_t) * (t->partitions ? t->partitions : 1));
        if (!x->worker)
                return -ENOMEM;
        for (uint32_t i = w ? old : 0; i < t->partitions; i++)
                x->worker[i] = -1;
        return 0;
}

static uint32_t off_hash(const char *g, const uint8_t *uuid, uint32_t part)
{
        uint32_t h = log_crc32c(0, g, strlen(g));
        h = log_crc32c(h, uuid, 16);
        return log_crc32c(h, &part, 4);
}

static struct meta_off *off_slot(const struct meta_log *m, const char *g, const uint8_t *uuid,
                                 uint32_t part)
{
        if (!m->offs_cap)
                return NULL;
        uint32_t i = off_hash(g, uuid, part) & (m->offs_cap - 1);
        for (;;) {
                struct meta_off *o = &m->offs[i];
                if (!o->group ||
                    (o->partition == part && !memcmp(o->uuid, uuid, 16) && !strcmp(o->group, g)))
                        return o;
                i = (i + 1) & (m->offs_cap - 1);
        }
}

static int apply_offset(struct meta_log *m, const char *g, const uint8_t *uuid, uint32_t part,
                        int64_t off)
{
        if ((m->noffs + 1) * 10 > m->offs_cap * 7) {
                uint32_t cap = m->offs_cap ? m->offs_cap * 2 : 64;
                struct meta_off *old = m->offs;
                uint32_t ocap = m->offs_cap;
                m->offs = calloc(cap, sizeof(*m->offs));
                if (!m->offs) {
                        m->offs = old;
                        return -ENOMEM;
                }
                m->offs_cap = cap;
                for (uint32_t i = 0; i < ocap; i++)
                        if (old[i].group)
                                *off_slot(m, old[i].group, old[i].uuid, old[i].partition) = old[i];
                free(old);
        }
        struct meta_off *o = off_slot(m, g, uuid, part);
        if (!o->group) {
                o->group = strdup(g);
                if (!o->group)
                        return -ENOMEM;
                memcpy(o->uuid, uuid, 16);
                o->partition = part;
                m->noffs++;
        }
        o->offset = off;
        return 0;
}

/* Open addressing cannot simply empty a slot: rebuild without the group. */
static int apply_group_delete(struct meta_log *m, const char *g)
{
        if (!m->offs_cap)
                return 0;
        struct meta_off *old = m->offs;
        uint32_t cap = m->offs_cap;
        m->offs = calloc(cap, sizeof(*m->offs));
        if (!m->offs) {
                m->offs = old;
                return -ENOMEM;
        }
        m->noffs = 0;
        for (uint32_t i = 0; i < cap; i++) {
                if (!old[i].group)
                        continue;
                if (!strcmp(old[i].group, g)) {
                        free(old[i].group);
                        continue;
                }
                *off_slot(m, old[i].group, old[i].uuid, old[i].partition) = old[i];
                m->noffs++;
        }
        free(old);
        return 0;
}

/* Apply one record's payload; unknown types are counted and skipped. */
static int apply_def(struct meta_log *m, const char *key, const uint8_t *val, uint32_t len)
{
        struct meta_def *free_slot = NULL;
        for (uint32_t i = 0; i < m->ndefs; i++) {
                struct meta_def *d = &m->defs[i];
                if (!d->key) {
                        free_slot = free_slot ? free_slot : d;
                        continue;
                }
                if (strcmp(d->key, key) != 0)
                        continue;
                free(d->val);
                d->val = NULL;
                d->len = 0;
                if (len == 0) {
                        free(d->key);
                        d->key = NULL;
                        return 0;
                }
                d->val = malloc(len);
                if (!d->val)
                        return -ENOMEM;
                memcpy(d->val, val, len);
                d->len = len;
                return 0;
        }
        if (len == 0)
                return 0;
        if (!free_slot) {
                if (m->ndefs == m->defs_cap) {
                        uint32_t cap = m->defs_cap ? m->defs_cap * 2 : 16;
                        struct meta_def *nd = realloc(m->defs, cap * sizeof(*nd));
                        if (!nd)
                                return -ENOMEM;
                        m->defs = nd;
                        m->defs_cap = cap;
                }
                free_slot = &m->defs[m->ndefs++];
        }
        free_slot->key = strdup(key);
        free_slot->val = malloc(len);
        if (!free_slot->key || !free_slot->val) {
                free(free_slot->key);
                free(free_slot->val);
                free_slot->key = NULL;
                free_slot->val = NULL;
                return -ENOMEM;
        }
        memcpy(free_slot->val, val, len);
        free_slot->len = len;
        return 0;
}

static int enc_def(struct buf *pl, const char *key, const void *val, uint32_t len)
{
        int rc = put_str(pl, key);
        if (rc)
                return rc;
        PUT(pl, len);
        return len ? buf_put(pl, val, len) : 0; /* a delete has no value */
}

static int apply(struct meta_log *m, uint16_t type, uint16_t ver, const uint8_t *p, size_t n)
{
        struct rd r = {.p = p, .n = n};
        (void)ver;
        switch (type) {
        case META_REC_TOPIC: {
                struct meta_topic t;
                memset(&t, 0, sizeof(t));
                log_config_default(&t.cfg);
                rd_get(&r, t.uuid, 16);
                rd_str(&r, t.name, sizeof(t.name));
                t.partitions = GET(&r, uint32_t);
                t.cfg.durability = (enum log_durability)GET(&r, uint8_t);
                t.cfg.flush_interval_ms = GET(&r, uint32_t);
                t.cfg.flush_interval_bytes = GET(&r, uint64_t);
                t.cfg.segment_bytes = GET(&r, uint64_t);
                t.cfg.segment_ms = GET(&r, uint64_t);
                t.cfg.retention_bytes = GET(&r, int64_t);
                t.cfg.retention_ms = GET(&r, int64_t);
                t.flags = r.n >= 4 ? GET(&r, uint32_t) : 0;
                return r.bad ? -EBADMSG : apply_topic(m, &t);
        }
        case META_REC_TOPIC_DELETE: {
                uint8_t uuid[16];
                rd_get(&r, uuid, 16);
                struct meta_topic *t = r.bad ? NULL : topic_by_uuid(m, uuid);
                if (t)
                        t->deleted = true;
                return r.bad ? -EBADMSG : 0;
        }
        case META_REC_PLACEMENT: {
                uint8_t uuid[16];
                rd_get(&r, uuid, 16);
                uint32_t part = GET(&r, uint32_t);
                int32_t w = GET(&r, int32_t);
                struct meta_topic *t = r.bad ? NULL : topic_by_uuid(m, uuid);
                if (t && part < t->partitions)
                        t->worker[part] = w;
                return r.bad ? -EBADMSG : 0;
        }
        case META_REC_OFFSET: {
                char g[256];
                uint8_t uuid[16];
                rd_str(&r, g, sizeof(g));
                rd_get(&r, uuid, 16);
                uint32_t part = GET(&r, uint32_t);
                int64_t off = GET(&r, int64_t);
                return r.bad ? -EBADMSG : apply_offset(m, g, uuid, part, off);
        }
        case META_REC_GROUP_DELETE: {
                char g[256];
                rd_str(&r, g, sizeof(g));
                return r.bad ? -EBADMSG : apply_group_delete(m, g);
        }
        case META_REC_PRODUCER_IDS: {
                int64_t hwm = GET(&r, int64_t);
                if (!r.bad && hwm > m->producer_id_hwm)
                        m->producer_id_hwm = hwm;
                return r.bad ? -EBADMSG : 0;
        }
        case META_REC_DEF: {
                char key[4096];
                rd_str(&r, key, sizeof(key));
                uint32_t len = GET(&r, uint32_t);
                if (r.bad || r.n < len)
                        return -EBADMSG;
                return apply_def(m, key, r.p, len);
        }
        case META_REC_SNAP_BEGIN:
        case META_REC_SNAP_END:
                return 0;
        default:
                m->unknown_records++;
                return 0;
        }
}

/* Walk framed records in b[0..n): apply each valid one, stop at the first
 * torn or corrupt one. Returns the valid length; counts records. */
static size_t replay(struct meta_log *m, const uint8_t *b, size_t n, uint64_t *count, uint64_t *gen,
                     bool *ended)
{
        size_t pos = 0;
        while (pos + META_HDR <= n) {
                uint32_t len, crc;
                uint16_t type, ver;
                memcpy(&len, b + pos, 4);
                memcpy(&crc, b + pos + 4, 4);
                if (len < 4 || len > META_REC_MAX || pos + 8 + len > n)
                        break;
                if (log_crc32c(0, b + pos + 8, len) != crc)
                        break;
                memcpy(&type, b + pos + 8, 2);
                memcpy(&ver, b + pos + 10, 2);
                const uint8_t *pl = b + pos + META_HDR;
                size_t pln = len - 4;
                if (type == META_REC_SNAP_BEGIN && gen && pln >= 8)
                        memcpy(gen, pl, 8);
                if (type == META_REC_SNAP_END && ended)
                        *ended = true;
                if (apply(m, type, ver, pl, pln) < 0)
                        break;
                (*count)++;
                pos += 8 + len;
        }
        return pos;
}

/* ---- group commit ---------------------------------------------------- */

static int cb_push(struct meta_cbent **v, uint32_t *n, uint32_t *cap, meta_cb cb, void *ctx)
{
        if (*n == *cap) {
                uint32_t c = *cap ? *cap * 2 : 64;
                struct meta_cbent *nv = realloc(*v, sizeof(**v) * c);
                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = c;
        }
        (*v)[(*n)++] = (struct meta_cbent){cb, ctx};
        return 0;
}

static int append(struct meta_log *m, uint16_t type, struct buf *pl, meta_cb cb, void *ctx)
{
        int rc = m->err;
        if (!rc)
                rc = rec_frame(&m->pend, type, 1, pl);
        if (!rc)
                rc = cb_push(&m->pcb, &m->npcb, &m->pcb_cap, cb, ctx);
        free(pl->b);
        return rc;
}

static void round_finish(struct meta_log *m, int res)
{
        if (res < 0 && !m->err)
                m->err = res;
        for (uint32_t i = 0; i < m->nfcb; i++)
                if (m->fcb[i].cb)
                        m->fcb[i].cb(m->fcb[i].ctx, res);
        m->nfcb = 0;
        m->fly.len = 0;
}

static void sync_done(struct log_io_req *req, int res)
{
        struct meta_log *m = SL_CONTAINER_OF(req, struct meta_log, sreq);
        m->syncing = false;
        round_finish(m, res < 0 ? res : 0);
}

static void write_done(struct log_io_req *req, int res)
{
        struct meta_log *m = SL_CONTAINER_OF(req, struct meta_log, wreq);
        m->writing = false;
        if (res != (int)m->fly.len) {
                round_finish(m, res < 0 ? res : -EIO);
                return;
        }
        m->file_len += m->fly.len;
        m->syncing = true;
        m->sreq = (struct log_io_req){.op = LOG_IO_FDATASYNC, .fd = m->fd, .cb = sync_done};
        log_io_submit(m->io, &m->sreq);
}

/* Snapshot when the log has grown past the threshold and at least four
 * times the last snapshot, so a large state (many committed offsets) is
 * rewritten at most once per 4x its size in records: amortised O(1) per
 * record. A log holding record types this build does not know is never
 * snapshotted automatically: a snapshot would drop what a newer version
 * wrote. */
static bool snapshot_due(const struct meta_log *m)
{
        uint64_t len = meta_log_bytes(m);
        return m->snapshot_bytes && !m->unknown_records && !m->err && len >= m->snapshot_bytes &&
               len >= 4 * m->snapshot_len;
}

int meta_poll(struct meta_log *m)
{
        int n = m->io->ops->reap(m->io);
        if (n < 0)
                return n;
        /* At a round boundary: the snapshot takes the round's place (it holds
         * the pending records' effects and acknowledges them). On failure the
         * round goes to the old log as usual and the next try waits for
         * another threshold's worth of growth. */
        if (!m->writing && !m->syncing && snapshot_due(m) && meta_snapshot(m) < 0)
                m->snapshot_len = meta_log_bytes(m);
        if (!m->writing && !m->syncing && m->pend.len) {
                /* Everything appended since the last round: one write, one
                 * fdatasync, then every callback of the round. */
                struct buf t = m->fly;
                m->fly = m->pend;
                m->pend = t;
                m->pend.len = 0;
                struct meta_cbent *c = m->fcb;
                uint32_t cc = m->fcb_cap;
                m->fcb = m->pcb;
                m->fcb_cap = m->pcb_cap;
                m->nfcb = m->npcb;
                m->pcb = c;
                m->pcb_cap = cc;
                m->npcb = 0;
                if (m->err) {
                        round_finish(m, m->err);
                } else {
                        m->writing = true;
                        m->wreq = (struct log_io_req){.op = LOG_IO_WRITE,
                                                      .fd = m->fd,
                                                      .buf = m->fly.b,
                                                      .len = (uint32_t)m->fly.len,
                                                      .off = m->file_len,
                                                      .cb = write_done};
                        log_io_submit(m->io, &m->wreq);
                }
        }
        int rc = m->io->ops->flush(m->io);
        return rc < 0 ? rc : n;
}

int meta_drain(struct meta_log *m)
{
        for (;;) {
                int rc = meta_poll(m);
                if (rc < 0)
                        return rc;
                if (!m->writing && !m->syncing && !m->pend.len)
                        return m->err;
                rc = m->io->ops->wait(m->io);
                if (rc < 0)
                        return rc;
        }
}

uint64_t meta_log_bytes(const struct meta_log *m)
{
        return m->file_len + m->pend.len;
}

/* ---- mutations ------------------------------------------------------- */

/* A TOPIC record: applied now, durable when cb runs. */
static int topic_write(struct meta_log *m, const struct meta_topic *t, meta_cb cb, void *ctx)
{
        struct buf pl = {0};
        int rc = enc_topic(&pl, t);
        if (!rc)
                rc = apply_topic(m, t);
        if (rc) {
                free(pl.b);
                return rc;
        }
        return append(m, META_REC_TOPIC, &pl, cb, ctx);
}

int meta_topic_create(struct meta_log *m, const char *name, uint32_t partitions,
                      const struct log_config *cfg, meta_cb cb, void *ctx,
                      const struct meta_topic **out)
{
        return meta_topic_create_flags(m, name, partitions, cfg, 0, cb, ctx, out);
}

int meta_topic_create_flags(struct meta_log *m, const char *name, uint32_t partitions,
                            const struct log_config *cfg, uint32_t flags, meta_cb cb, void *ctx,
                            const struct meta_topic **out)
{
        if (!name[0] || strlen(name) > META_NAME_MAX || !partitions)
                return -EINVAL;
        if (meta_topic_find(m, name))
                return -EEXIST;
        struct meta_topic t;
        memset(&t, 0, sizeof(t));
        if (getrandom(t.uuid, 16, 0) != 16)
                return -EIO;
        t.uuid[6] = (t.uuid[6] & 0x0f) | 0x40; /* RFC 4122 version 4 */
        t.uuid[8] = (t.uuid[8] & 0x3f) | 0x80;
        snprintf(t.name, sizeof(t.name), "%s", name);
        t.partitions = partitions;
        t.cfg = *cfg;
        t.flags = flags;
        int rc = topic_write(m, &t, cb, ctx);
        if (!rc && out)
                *out = topic_by_uuid(m, t.uuid);
        return rc;
}

int meta_topic_delete(struct meta_log *m, const uint8_t uuid[16], meta_cb cb, void *ctx)
{
        struct meta_topic *t = topic_by_uuid(m, uuid);
        if (!t || t->deleted)
                return -ENOENT;
        t->deleted = true;
        struct buf pl = {0};
        if (buf_put(&pl, uuid, 16) < 0)
                return -ENOMEM;
        return append(m, META_REC_TOPIC_DELETE, &pl, cb, ctx);
}

int meta_placement_set(struct meta_log *m, const uint8_t uuid[16], uint32_t partition,
                       int32_t worker, meta_cb cb, void *ctx)
{
        struct meta_topic *t = topic_by_uuid(m, uuid);
        if (!t || t->deleted || partition >= t->partitions)
                return -ENOENT;
        t->worker[partition] = worker;
        struct buf pl = {0};
        int rc = enc_placement(&pl, uuid, partition, worker);
        if (rc) {
                free(pl.b);
                return rc;
        }
        return append(m, META_REC_PLACEMENT, &pl, cb, ctx);
}

int meta_offset_commit(struct meta_log *m, const char *group, const uint8_t uuid[16],
                       uint32_t partition, int64_t offset, meta_cb cb, void *ctx)
{
        if (strlen(group) > 255)
                return -EINVAL;
        int rc = apply_offset(m, group, uuid, partition, offset);
        if (rc)
                return rc;
        struct buf pl = {0};
        rc = enc_offset(&pl, group, uuid, partition, offset);
        if (rc) {
                free(pl.b);
                return rc;
        }
        return append(m, META_REC_OFFSET, &pl, cb, ctx);
}

int meta_topic_grow(struct meta_log *m, const uint8_t uuid[16], uint32_t partitions, meta_cb cb,
                    void *ctx)
{
        struct meta_topic *x = topic_by_uuid(m, uuid);
        if (!x || x->deleted)
                return -ENOENT;
        if (partitions <= x->partitions)
                return -EINVAL;
        struct meta_topic t = *x;
        t.partitions = partitions;
        t.worker = NULL;
        return topic_write(m, &t, cb, ctx);
}

int meta_group_delete(struct meta_log *m, const char *group, meta_cb cb, void *ctx)
{
        if (strlen(group) > 255)
                return -EINVAL;
        int rc = apply_group_delete(m, group);
        struct buf pl = {0};
        if (!rc)
                rc = put_str(&pl, group);
        if (rc) {
                free(pl.b);
                return rc;
        }
        return append(m, META_REC_GROUP_DELETE, &pl, cb, ctx);
}

bool meta_group_has_offsets(const struct meta_log *m, const char *group)
{
        for (uint32_t i = 0; i < m->offs_cap; i++)
                if (m->offs[i].group && !strcmp(m->offs[i].group, group))
                        return true;
        return false;
}

uint32_t meta_offset_slots(const struct meta_log *m)
{
        return m->offs_cap;
}

int meta_offset_at(const struct meta_log *m, uint32_t slot, const char **group,
                   const uint8_t **uuid, uint32_t *partition, int64_t *offset)
{
        if (slot >= m->offs_cap || !m->offs[slot].group)
                return -ENOENT;
        const struct meta_off *o = &m->offs[slot];
        *group = o->group;
        *uuid = o->uuid;
        *partition = o->partition;
        *offset = o->offset;
        return 0;
}

int64_t meta_producer_id_hwm(const struct meta_log *m)
{
        return m->producer_id_hwm;
}

int meta_producer_id_reserve(struct meta_log *m, int64_t hwm, meta_cb cb, void *ctx)
{
        if (hwm > m->producer_id_hwm)
                m->producer_id_hwm = hwm;
        struct buf pl = {0};
        int rc = buf_put(&pl, &hwm, 8);
        if (rc) {
                free(pl.b);
                return rc;
        }
        return append(m, META_REC_PRODUCER_IDS, &pl, cb, ctx);
}

int meta_def_put(struct meta_log *m, const char *key, const void *val, uint32_t len, meta_cb cb,
                 void *ctx)
{
        if (strlen(key) >= 4096 || len > META_REC_MAX / 2)
                return -EINVAL;
        int rc = apply_def(m, key, val, len);
        if (rc)
                return rc;
        struct buf pl = {0};
        rc = enc_def(&pl, key, val, len);
        if (rc) {
                free(pl.b);
                return rc;
        }
        return append(m, META_REC_DEF, &pl, cb, ctx);
}

uint32_t meta_def_count(const struct meta_log *m)
{
        return m->ndefs;
}

const char *meta_def_at(const struct meta_log *m, uint32_t i, const uint8_t **val, uint32_t *len)
{
        if (i >= m->ndefs || !m->defs[i].key)
                return NULL;
        *val = m->defs[i].val;
        *len = m->defs[i].len;
        return m->defs[i].key;
}

int meta_offset_get(const struct meta_log *m, const char *group, const uint8_t uuid[16],
                    uint32_t partition, int64_t *offset)
{
        struct meta_off *o = off_slot(m, group, uuid, partition);
        if (!o || !o->group)
                return -ENOENT;
        *offset = o->offset;
        return 0;
}

const struct meta_topic *meta_topic_find(const struct meta_log *m, const char *name)
{
        for (uint32_t i = 0; i < m->ntopics; i++)
                if (!m->topics[i].deleted && !strcmp(m->topics[i].name, name))
                        return &m->topics[i];
        return NULL;
}

const struct meta_topic *meta_topic_by_uuid(const struct meta_log *m, const uint8_t uuid[16])
{
        return topic_by_uuid(m, uuid);
}

uint32_t meta_topic_count(const struct meta_log *m)
{
        return m->ntopics;
}

const struct meta_topic *meta_topic_at(const struct meta_log *m, uint32_t i)
{
        return i < m->ntopics ? &m->topics[i] : NULL;
}

/* ---- files ----------------------------------------------------------- */

static int read_all(int fd, uint8_t **out, size_t *len)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        uint8_t *b = malloc((size_t)st.st_size + 1);
        if (!b)
                return -ENOMEM;
        size_t got = 0;
        while (got < (size_t)st.st_size) {
                ssize_t n = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        *out = b;
        *len = got;
        return 0;
}

static void log_name(char *buf, size_t n, uint64_t gen)
{
        snprintf(buf, n, "meta-%llu.log", (unsigned long long)gen);
}

static int open_log(struct meta_log *m, bool create)
{
        char name[64];
        log_name(name, sizeof(name), m->gen);
        bool existed = faccessat(m->dirfd, name, F_OK, 0) == 0;
        int fd = m->io->ops->open(m->io, m->dirfd, name, O_RDWR | (create ? O_CREAT : 0), 0644);
        if (fd < 0)
                return fd;
        if (!existed) {
                int rc = m->io->ops->fsync_now(m->io, fd);
                if (!rc)
                        rc = m->io->ops->fsync_now(m->io, m->dirfd);
                if (rc) {
                        close(fd);
                        return rc;
                }
        }
        m->fd = fd;
        return 0;
}

static void remove_stale(struct meta_log *m)
{
        DIR *d = fdopendir(dup(m->dirfd));
        if (!d)
                return;
        struct dirent *de;
        char cur[64];
        log_name(cur, sizeof(cur), m->gen);
        while ((de = readdir(d))) {
                bool stale_log = !strncmp(de->d_name, "meta-", 5) && strcmp(de->d_name, cur);
                if (stale_log || !strcmp(de->d_name, "meta.snap.tmp"))
                        m->io->ops->unlink_now(m->io, m->dirfd, de->d_name);
        }
        closedir(d);
}

struct meta_log *meta_open(const char *dir, struct log_io *io, int *err)
{
        struct meta_log *m = calloc(1, sizeof(*m));
        uint8_t *b = NULL;
        size_t n = 0;
        int rc = -ENOMEM;
        if (!m)
                goto fail;
        m->dirfd = m->fd = -1;
        m->snapshot_bytes = META_SNAPSHOT_BYTES;
        snprintf(m->dir, sizeof(m->dir), "%s", dir);
        m->io = io;
        if (!io) {
                m->io = log_io_uring_create(NULL, 64, 0);
                m->own_io = true;
                if (!m->io)
                        goto fail;
        }
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                rc = -errno;
                goto fail;
        }
        m->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->dirfd < 0) {
                rc = -errno;
                goto fail;
        }
        int sfd = openat(m->dirfd, "meta.snap", O_RDONLY | O_CLOEXEC);
        if (sfd >= 0) {
                uint64_t count = 0;
                bool ended = false;
                rc = read_all(sfd, &b, &n);
                close(sfd);
                if (rc < 0)
                        goto fail;
                size_t ok = replay(m, b, n, &count, &m->gen, &ended);
                m->snapshot_len = n;
                free(b);
                b = NULL;
                /* A snapshot is renamed into place only when complete: a
                 * damaged one is not a torn tail but a damaged disk. */
                if (!ended || ok != n) {
                        rc = -EUCLEAN;
                        goto fail;
                }
        }
        rc = open_log(m, true);
        if (rc < 0)
                goto fail;
        rc = read_all(m->fd, &b, &n);
        if (rc < 0)
                goto fail;
        uint64_t count = 0;
        size_t ok = replay(m, b, n, &count, NULL, NULL);
        free(b);
        b = NULL;
        if (ok != n) {
                /* Torn tail from a crash mid-write: nothing there was acked. */
                if (ftruncate(m->fd, (off_t)ok) < 0 ||
                    (rc = m->io->ops->fsync_now(m->io, m->fd)) < 0) {
                        rc = rc < 0 ? rc : -errno;
                        goto fail;
                }
        }
        m->file_len = ok;
        remove_stale(m);
        return m;
fail:
        free(b);
        if (err)
                *err = rc;
        meta_abandon(m);
        return NULL;
}

static void meta_free(struct meta_log *m)
{
        for (uint32_t i = 0; i < m->ntopics; i++)
                free(m->topics[i].worker);
        free(m->topics);
        for (uint32_t i = 0; i < m->offs_cap; i++)
                free(m->offs[i].group);
        free(m->offs);
        for (uint32_t i = 0; i < m->ndefs; i++) {
                free(m->defs[i].key);
                free(m->defs[i].val);
        }
        free(m->defs);
        free(m->pend.b);
        free(m->fly.b);
        free(m->pcb);
        free(m->fcb);
        if (m->fd >= 0)
                close(m->fd);
        if (m->dirfd >= 0)
                close(m->dirfd);
        if (m->own_io)
                m->io->ops->destroy(m->io);
        free(m);
}

void meta_close(struct meta_log *m)
{
        if (!m)
                return;
        SL_ASSERT(!m->writing && !m->syncing);
        meta_free(m);
}

void meta_abandon(struct meta_log *m)
{
        if (m)
                meta_free(m);
}

static int write_full(int fd, const uint8_t *b, size_t n)
{
        size_t off = 0;
        while (off < n) {
                ssize_t w = pwrite(fd, b + off, n - off, (off_t)off);
                if (w < 0)
                        return -errno;
                off += (size_t)w;
        }
        return 0;
}

int meta_snapshot(struct meta_log *m)
{
        if (m->writing || m->syncing)
                return -EBUSY;
        if (m->err)
                return m->err;
        struct buf out = {0}, pl = {0};
        uint64_t gen = m->gen + 1, records = 0;
        int rc = 0;
#define EMIT(type)                                                                                 \
        do {                                                                                       \
                if (rc == 0)                                                                       \
                        rc = rec_frame(&out, (type), 1, &pl);                                      \
                pl.len = 0;                                                                        \
                records++;                                                                         \
        } while (0)
        rc = buf_put(&pl, &gen, 8);
        EMIT(META_REC_SNAP_BEGIN);
        for (uint32_t i = 0; i < m->ntopics && !rc; i++) {
                const struct meta_topic *t = &m->topics[i];
                if (t->deleted)
                        continue;
                rc = enc_topic(&pl, t);
                EMIT(META_REC_TOPIC);
                for (uint32_t p = 0; p < t->partitions && !rc; p++) {
                        if (t->worker[p] < 0)
                                continue;
                        rc = enc_placement(&pl, t->uuid, p, t->worker[p]);
                        EMIT(META_REC_PLACEMENT);
                }
        }
        for (uint32_t i = 0; i < m->offs_cap && !rc; i++) {
                const struct meta_off *o = &m->offs[i];
                if (!o->group)
                        continue;
                const struct meta_topic *t = topic_by_uuid(m, o->uuid);
                if (t && t->deleted)
                        continue;
                rc = enc_offset(&pl, o->group, o->uuid, o->partition, o->offset);
                EMIT(META_REC_OFFSET);
        }
        if (!rc && m->producer_id_hwm) {
                rc = buf_put(&pl, &m->producer_id_hwm, 8);
                EMIT(META_REC_PRODUCER_IDS);
        }
        for (uint32_t i = 0; i < m->ndefs && !rc; i++) {
                const struct meta_def *d = &m->defs[i];
                if (!d->key)
                        continue;
                rc = enc_def(&pl, d->key, d->val, d->len);
                EMIT(META_REC_DEF);
        }
        if (!rc)
                rc = buf_put(&pl, &records, 8);
        EMIT(META_REC_SNAP_END);
#undef EMIT
        free(pl.b);
        if (rc) {
                free(out.b);
                return rc;
        }
        /* temp file, fdatasync, new empty log, rename, directory fsync: a
         * crash at any point leaves either the old snapshot + old log or the
         * new snapshot + new log. */
        int fd =
            m->io->ops->open(m->io, m->dirfd, "meta.snap.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
                free(out.b);
                return fd;
        }
        uint64_t snap_len = out.len;
        rc = write_full(fd, out.b, out.len);
        free(out.b);
        if (!rc)
                rc = m->io->ops->fsync_now(m->io, fd);
        close(fd);
        int old_fd = m->fd;
        uint64_t old_gen = m->gen;
        if (!rc) {
                m->gen = gen;
                rc = open_log(m, true);
                if (rc) {
                        m->gen = old_gen;
                        m->fd = old_fd;
                }
        }
        if (rc) {
                m->io->ops->unlink_now(m->io, m->dirfd, "meta.snap.tmp");
                return rc;
        }
        if ((rc = m->io->ops->rename_now(m->io, m->dirfd, "meta.snap.tmp", "meta.snap")) < 0 ||
            (rc = m->io->ops->fsync_now(m->io, m->dirfd)) < 0) {
                close(m->fd);
                m->fd = old_fd;
                m->gen = old_gen;
                return rc;
        }
        close(old_fd);
        char name[64];
        log_name(name, sizeof(name), old_gen);
        m->io->ops->unlink_now(m->io, m->dirfd, name);
        m->file_len = 0;
        m->snapshot_len = snap_len;
        m->snapshots++;
        /* Records appended since the last round are in the snapshot (every
         * mutation is applied to memory before it is logged), and the
         * snapshot is durable: their round is over. */
        m->pend.len = 0;
        for (uint32_t i = 0; i < m->npcb; i++)
                if (m->pcb[i].cb)
                        m->pcb[i].cb(m->pcb[i].ctx, 0);
        m->npcb = 0;
        return 0;
}

void meta_set_snapshot_bytes(struct meta_log *m, uint64_t bytes)
{
        m->snapshot_bytes = bytes;
}

uint64_t meta_snapshot_count(const struct meta_log *m)
{
        return m->snapshots;
}

/* ---- partition directories ------------------------------------------- */

void meta_partition_dirname(const struct meta_topic *t, uint32_t partition, char *buf, size_t n)
{
        char hex[33];
        for (int i = 0; i < 16; i++)
                snprintf(hex + 2 * i, 3, "%02x", t->uuid[i]);
        snprintf(buf, n, "%s-%u", hex, partition);
}

static bool dir_named(const struct meta_log *m, const char *name)
{
        char buf[64];
        for (uint32_t i = 0; i < m->ntopics; i++) {
                const struct meta_topic *t = &m->topics[i];
                if (t->deleted)
                        continue;
                for (uint32_t p = 0; p < t->partitions; p++) {
                        meta_partition_dirname(t, p, buf, sizeof(buf));
                        if (!strcmp(buf, name))
                                return true;
                }
        }
        return false;
}

static int rm_dir(int parent, const char *name)
{
        int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
        return unlinkat(parent, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

int meta_dirs_sync(const struct meta_log *m, const char *topics_dir)
{
        if (mkdir(topics_dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        int tfd = open(topics_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tfd < 0)
                return -errno;
        char buf[64];
        bool made = false;
        for (uint32_t i = 0; i < m->ntopics; i++) {
                const struct meta_topic *t = &m->topics[i];
                if (t->deleted)
                        continue;
                for (uint32_t p = 0; p < t->partitions; p++) {
                        meta_partition_dirname(t, p, buf, sizeof(buf));
                        if (mkdirat(tfd, buf, 0755) == 0)
                                made = true;
                }
        }
        int removed = 0;
        DIR *d = fdopendir(dup(tfd));
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.' || dir_named(m, de->d_name))
                                continue;
                        if (rm_dir(tfd, de->d_name) == 0)
                                removed++;
                }
                closedir(d);
        }
        int rc = (made || removed) && fsync(tfd) < 0 ? -errno : 0;
        close(tfd);
        return rc < 0 ? rc : removed;
}
