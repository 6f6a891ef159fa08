/* The Kafka topic registry, on the control thread: topics and placement are
 * recorded in storage's metadata log (durable before anyone sees them), then
 * published to the workers as an immutable snapshot. A create request from
 * a worker is answered once every worker runs on a snapshot that has it. */
#include "ctl_kafka.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_plane.h"
#include "sl_log.h"

enum { KERR_NONE = 0, KERR_INVALID_TOPIC = 17, KERR_INVALID_PARTITIONS = 37, KERR_UNKNOWN = -1 };

struct create_op {
        uint16_t src;
        uint64_t cookie;
        int16_t err;
        uint32_t cbs_pending;
        uint64_t needs_gen; /* 0: the next snapshot published */
        bool durable;
        bool del; /* a delete: remove directories before answering */
        struct create_op *next;
};

struct pid_range {
        uint8_t uuid[16];
        uint32_t base, n;
};

static struct {
        bool on;
        struct ctl_plane *cp;
        struct meta_log *meta;
        uint64_t gen;
        bool dirty;
        struct ctl_kafka_snap *cur;  /* newest published */
        struct ctl_kafka_snap *olds; /* every snapshot not yet freed, newest first */
        uint64_t sent_gen[CTL_WORKERS_MAX];
        uint64_t acked_gen[CTL_WORKERS_MAX];
        struct pid_range *pids;
        uint32_t npids, pids_cap, next_pid;
        uint32_t place_next;
        struct create_op *ops;
} K;

bool ctl_kafka_topic_name_valid(const char *name, uint32_t len)
{
        if (len == 0 || len > META_NAME_MAX)
                return false;
        if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
                return false;
        for (uint32_t i = 0; i < len; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return false;
        }
        return true;
}

static uint32_t name_hash(const char *p, uint32_t len)
{
        uint32_t h = 2166136261u;
        for (uint32_t i = 0; i < len; i++)
                h = (h ^ (uint8_t)p[i]) * 16777619u;
        return h;
}

const struct ctl_kafka_topic *ctl_kafka_snap_find(const struct ctl_kafka_snap *s, const char *name,
                                                  uint32_t len)
{
        if (!s || !s->hash)
                return NULL;
        for (uint32_t i = name_hash(name, len) & s->hash_mask;; i = (i + 1) & s->hash_mask) {
                uint32_t v = s->hash[i];
                if (!v)
                        return NULL;
                const struct ctl_kafka_topic *t = &s->topics[v - 1];
                if (t->name_len == len && memcmp(t->name, name, len) == 0)
                        return t;
        }
}

const struct ctl_kafka_topic *ctl_kafka_snap_find_id(const struct ctl_kafka_snap *s,
                                                     const uint8_t uuid[16])
{
        for (uint32_t i = 0; s && i < s->ntopics; i++)
                if (memcmp(s->topics[i].uuid, uuid, 16) == 0)
                        return &s->topics[i];
        return NULL;
}

/* Partition ids: a contiguous range per topic, assigned once per process. */
static int pid_base(const uint8_t uuid[16], uint32_t n, uint32_t *base)
{
        for (uint32_t i = 0; i < K.npids; i++)
                if (memcmp(K.pids[i].uuid, uuid, 16) == 0 && K.pids[i].n >= n) {
                        *base = K.pids[i].base;
                        return 0;
                }
        if (K.next_pid + n > CTL_KAFKA_PIDS_MAX)
                return -ENOSPC;
        if (K.npids == K.pids_cap) {
                uint32_t cap = K.pids_cap ? K.pids_cap * 2 : 64;
                struct pid_range *p = realloc(K.pids, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                K.pids = p;
                K.pids_cap = cap;
        }
        struct pid_range *r = &K.pids[K.npids++];
        memcpy(r->uuid, uuid, 16);
        r->base = K.next_pid;
        r->n = n;
        K.next_pid += n;
        *base = r->base;
        return 0;
}

static void snap_free(struct ctl_kafka_snap *s)
{
        if (!s)
                return;
        for (uint32_t i = 0; i < s->ntopics; i++)
                free(s->topics[i].parts);
        free(s->topics);
        free(s->hash);
        free(s);
}

static struct ctl_kafka_snap *snap_build(void)
{
        uint32_t n = meta_topic_count(K.meta);
        struct ctl_kafka_snap *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->topics = calloc(n ? n : 1, sizeof(*s->topics));
        uint32_t hn = 16;
        while (hn < 2 * n)
                hn *= 2;
        s->hash = calloc(hn, sizeof(*s->hash));
        s->hash_mask = hn - 1;
        if (!s->topics || !s->hash)
                goto fail;
        uint16_t nw = K.cp->rt->nworkers;
        for (uint32_t i = 0; i < n; i++) {
                const struct meta_topic *mt = meta_topic_at(K.meta, i);
                if (mt->deleted)
                        continue;
                uint32_t base;
                if (pid_base(mt->uuid, mt->partitions, &base) != 0) {
                        sl_log(SL_LOG_ERROR, "kafka: out of partition ids; topic %s not served",
                               mt->name);
                        continue;
                }
                struct ctl_kafka_topic *t = &s->topics[s->ntopics];
                t->parts = calloc(mt->partitions, sizeof(*t->parts));
                if (!t->parts)
                        goto fail;
                snprintf(t->name, sizeof(t->name), "%s", mt->name);
                t->name_len = (uint16_t)strlen(t->name);
                memcpy(t->uuid, mt->uuid, 16);
                t->nparts = mt->partitions;
                t->cfg = mt->cfg;
                for (uint32_t p = 0; p < mt->partitions; p++) {
                        int32_t wk = mt->worker ? mt->worker[p] : -1;
                        /* Unplaced, or placed on a worker this run does not
                         * have: serve it from a worker that exists. */
                        if (wk < 0 || wk >= nw)
                                wk = (int32_t)((base + p) % nw);
                        t->parts[p].worker = (uint16_t)wk;
                        t->parts[p].pid = base + p;
                }
                uint32_t h = name_hash(t->name, t->name_len) & s->hash_mask;
                while (s->hash[h])
                        h = (h + 1) & s->hash_mask;
                s->hash[h] = s->ntopics + 1;
                s->ntopics++;
        }
        return s;
fail:
        snap_free(s);
        return NULL;
}

static void publish(void)
{
        struct ctl_kafka_snap *s = snap_build();
        if (!s) {
                sl_log(SL_LOG_ERROR, "kafka: cannot build the topic snapshot (out of memory)");
                return;
        }
        s->gen = ++K.gen;
        s->next_old = K.olds;
        K.olds = s;
        K.cur = s;
        K.dirty = false;
        for (struct create_op *op = K.ops; op; op = op->next)
                if (op->durable && !op->needs_gen)
                        op->needs_gen = s->gen;
}

static uint64_t acked_min(void)
{
        uint64_t m = UINT64_MAX;
        for (uint16_t i = 0; i < K.cp->rt->nworkers; i++)
                m = K.acked_gen[i] < m ? K.acked_gen[i] : m;
        return m;
}

static void snaps_reap(void)
{
        uint64_t min = acked_min();
        struct ctl_kafka_snap **pp = &K.olds;
        while (*pp) {
                struct ctl_kafka_snap *s = *pp;
                if (s != K.cur && s->gen < min) {
                        *pp = s->next_old;
                        snap_free(s);
                } else {
                        pp = &s->next_old;
                }
        }
}

static void op_reply(struct create_op *op)
{
        if (op->del) {
                /* Every worker has closed the partitions: their directories
                 * (named by the old UUID) can go. */
                char dir[CTL_PATH_MAX + 16];
                snprintf(dir, sizeof(dir), "%s/topics", K.cp->current->data_dir);
                int rc = meta_dirs_sync(K.meta, dir);
                if (rc < 0)
                        sl_log(SL_LOG_ERROR, "kafka: cannot remove deleted partitions in %s: %s",
                               dir, strerror(-rc));
        }
        struct sl_msg r = {.type = op->del ? CTL_KAFKA_MSG_DELETE : CTL_KAFKA_MSG_CREATE,
                           .cookie = op->cookie};
        r.u32 = (uint32_t)(uint16_t)op->err;
        sl_mbox_reply(&K.cp->mb, op->src, &r);
}

static void op_durable_cb(void *ctx, int res)
{
        struct create_op *op = ctx;
        if (res && !op->err) {
                sl_log(SL_LOG_ERROR, "kafka: metadata log write failed: %s", strerror(-res));
                op->err = KERR_UNKNOWN;
        }
        if (--op->cbs_pending == 0) {
                op->durable = true;
                K.dirty = true;
        }
}

static struct log_config topic_cfg(void)
{
        struct log_config c;
        log_config_default(&c);
        /* Smaller segments and preallocation than the storage defaults: a
         * broker with many small topics should not claim GiBs up front. */
        c.segment_bytes = 256ull << 20;
        c.prealloc_bytes = 16ull << 20;
        return c;
}

static void on_delete(const struct sl_msg *m)
{
        char name[META_NAME_MAX + 1];
        uint32_t len = SL_MIN(m->u32, (uint32_t)META_NAME_MAX);
        memcpy(name, m->a.ptr[0], len);
        name[len] = 0;
        const struct meta_topic *t = meta_topic_find(K.meta, name);
        struct create_op *op = t && !t->deleted ? calloc(1, sizeof(*op)) : NULL;
        if (!op) {
                struct sl_msg r = {.type = CTL_KAFKA_MSG_DELETE, .cookie = m->cookie};
                r.u32 = (uint16_t)(t && !t->deleted ? KERR_UNKNOWN : 3); /* UNKNOWN_TOPIC */
                sl_mbox_reply(&K.cp->mb, m->src, &r);
                return;
        }
        op->src = m->src;
        op->cookie = m->cookie;
        op->del = true;
        op->next = K.ops;
        K.ops = op;
        op->cbs_pending = 1;
        uint8_t uuid[16];
        memcpy(uuid, t->uuid, 16);
        if (meta_topic_delete(K.meta, uuid, op_durable_cb, op) != 0) {
                op->cbs_pending = 0;
                op->err = KERR_UNKNOWN;
                op->durable = true;
                K.dirty = true;
                return;
        }
        sl_log(SL_LOG_INFO, "kafka: topic %s deleted", name);
}

static void on_create(const struct sl_msg *m)
{
        struct create_op *op = calloc(1, sizeof(*op));
        if (!op) {
                struct sl_msg r = {.type = CTL_KAFKA_MSG_CREATE, .cookie = m->cookie};
                r.u32 = (uint16_t)KERR_UNKNOWN;
                sl_mbox_reply(&K.cp->mb, m->src, &r);
                return;
        }
        op->src = m->src;
        op->cookie = m->cookie;
        op->next = K.ops;
        K.ops = op;
        const char *name = m->a.ptr[0];
        uint32_t len = m->u32;
        int64_t nparts =
            m->a.i64[1] > 0 ? m->a.i64[1] : (int64_t)K.cp->current->kafka_default_partitions;
        char buf[META_NAME_MAX + 1];
        if (!ctl_kafka_topic_name_valid(name, len)) {
                op->err = KERR_INVALID_TOPIC;
                goto settled;
        }
        if (nparts > CTL_KAFKA_TOPIC_PARTS_MAX) {
                op->err = KERR_INVALID_PARTITIONS;
                goto settled;
        }
        memcpy(buf, name, len);
        buf[len] = 0;
        if (meta_topic_find(K.meta, buf))
                goto settled; /* created meanwhile: answer once it is published */
        struct log_config cfg = topic_cfg();
        const struct meta_topic *t = NULL;
        op->cbs_pending = 1;
        int rc = meta_topic_create(K.meta, buf, (uint32_t)nparts, &cfg, op_durable_cb, op, &t);
        if (rc) {
                op->cbs_pending = 0;
                op->err = KERR_UNKNOWN;
                goto settled;
        }
        uint16_t nw = K.cp->rt->nworkers;
        uint8_t uuid[16];
        memcpy(uuid, t->uuid, 16);
        for (uint32_t p = 0; p < (uint32_t)nparts; p++) {
                int32_t wk = (int32_t)((K.place_next + p) % nw);
                op->cbs_pending++;
                if (meta_placement_set(K.meta, uuid, p, wk, op_durable_cb, op) != 0) {
                        op->cbs_pending--;
                        op->err = KERR_UNKNOWN;
                }
        }
        K.place_next += (uint32_t)nparts;
        sl_log(SL_LOG_INFO, "kafka: topic %s created with %u partitions", buf, (unsigned)nparts);
        return;
settled:
        /* Nothing to write: answer after the next snapshot reaches everyone
         * (it also carries a topic another request is creating). */
        op->durable = true;
        K.dirty = true;
}

struct ctl_plane *ctl_kafka_plane(void)
{
        return K.cp;
}

struct meta_log *ctl_kafka_meta(void)
{
        return K.meta;
}

const struct ctl_kafka_snap *ctl_kafka_snap_current(void)
{
        return K.cur;
}

bool ctl_kafka_on_msg(struct ctl_plane *cp, const struct sl_msg *m)
{
        (void)cp;
        if (m->type < SL_MSG_KAFKA || m->type >= SL_MSG_KAFKA + 32)
                return false;
        if (!K.on) {
                if (m->flags & SL_MSG_F_REQUEST) {
                        struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                        r.u32 = (uint16_t)KERR_UNKNOWN;
                        sl_mbox_reply(&cp->mb, m->src, &r);
                }
                return true;
        }
        if (m->type == CTL_KAFKA_MSG_SNAP && (m->flags & SL_MSG_F_REPLY)) {
                if (m->src < CTL_WORKERS_MAX && m->cookie > K.acked_gen[m->src])
                        K.acked_gen[m->src] = m->cookie;
                return true;
        }
        if (m->type == CTL_KAFKA_MSG_CREATE && (m->flags & SL_MSG_F_REQUEST)) {
                on_create(m);
                return true;
        }
        if (m->type == CTL_KAFKA_MSG_DELETE && (m->flags & SL_MSG_F_REQUEST)) {
                on_delete(m);
                return true;
        }
        if (m->type == CTL_KAFKA_MSG_GROUP && (m->flags & SL_MSG_F_REQUEST)) {
                ctl_kafka_group_call(cp, m, sl_time_ms());
                return true;
        }
        if (m->flags & SL_MSG_F_REQUEST) {
                struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                sl_mbox_reply(&cp->mb, m->src, &r);
        }
        return true;
}

bool ctl_kafka_poll(struct ctl_plane *cp)
{
        if (!K.on)
                return false;
        meta_poll(K.meta);
        if (K.dirty)
                publish();
        for (uint16_t i = 0; i < cp->rt->nworkers; i++) {
                if (K.sent_gen[i] >= K.gen)
                        continue;
                struct sl_msg m = {.type = CTL_KAFKA_MSG_SNAP, .cookie = K.gen};
                m.a.ptr[0] = K.cur;
                if (sl_mbox_request(&cp->mb, i, &m) == 0)
                        K.sent_gen[i] = K.gen;
        }
        uint64_t min = acked_min();
        bool busy = false;
        struct create_op **pp = &K.ops;
        while (*pp) {
                struct create_op *op = *pp;
                if (op->durable && op->needs_gen && op->needs_gen <= min) {
                        op_reply(op);
                        *pp = op->next;
                        free(op);
                        continue;
                }
                busy |= !op->durable;
                pp = &op->next;
        }
        snaps_reap();
        ctl_kafka_group_poll(cp, sl_time_ms());
        return busy || ctl_kafka_group_busy();
}

int ctl_kafka_init(struct ctl_plane *cp, char *err, size_t err_len)
{
        const struct ctl_config *cfg = cp->current;
        if (!cfg->listeners[CTL_PROTO_KAFKA].enabled || !cp->rt->protos[CTL_PROTO_KAFKA])
                return 0;
        memset(&K, 0, sizeof(K));
        K.cp = cp;
        char dir[CTL_PATH_MAX + 16];
        snprintf(dir, sizeof(dir), "%s/topics", cfg->data_dir);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
                snprintf(err, err_len, "cannot create %s: %s", dir, strerror(errno));
                return -errno;
        }
        snprintf(dir, sizeof(dir), "%s/meta", cfg->data_dir);
        int rc = 0;
        K.meta = meta_open(dir, NULL, &rc);
        if (!K.meta) {
                snprintf(err, err_len, "cannot open the metadata log in %s: %s", dir,
                         strerror(-rc));
                return rc ? rc : -EIO;
        }
        K.on = true;
        K.dirty = true; /* the first snapshot goes out on the first poll */
        return 0;
}

void ctl_kafka_fini(struct ctl_plane *cp)
{
        (void)cp;
        if (!K.on)
                return;
        ctl_kafka_group_fini();
        /* Workers are stopped: no one can hold a snapshot any more. */
        meta_drain(K.meta);
        meta_close(K.meta);
        while (K.olds) {
                struct ctl_kafka_snap *s = K.olds;
                K.olds = s->next_old;
                snap_free(s);
        }
        while (K.ops) {
                struct create_op *op = K.ops;
                K.ops = op->next;
                free(op);
        }
        free(K.pids);
        memset(&K, 0, sizeof(K));
}
