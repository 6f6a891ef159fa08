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
#include "ctl_text.h"
#include "kafka_codec.h"
#include "sl_log.h"

enum {
        KERR_NONE = 0,
        KERR_UNKNOWN_TOPIC = 3,
        KERR_INVALID_TOPIC = 17,
        KERR_INVALID_PARTITIONS = 37,
        KERR_INVALID_REPLICA_ASSIGNMENT = 39,
        KERR_INVALID_REQUEST = 42,
        KERR_UNKNOWN = -1
};

struct create_op {
        uint16_t src;
        uint64_t cookie;
        int16_t err;
        uint32_t cbs_pending;
        uint64_t needs_gen; /* 0: the next snapshot published */
        bool durable;
        bool del;   /* a delete: remove directories before answering */
        bool gcall; /* CreatePartitions: the response is in the lent call */
        struct create_op *next;
};

/* Partitions [first, first + n) of a topic have ids [base, base + n). */
struct pid_range {
        uint8_t uuid[16];
        uint32_t first, base, n;
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

struct ctl_kafka_offsets ctl_kafka_published[CTL_KAFKA_PIDS_MAX];
_Static_assert(sizeof(struct ctl_kafka_offsets) == SL_CACHELINE,
               "one partition's published offsets per cache line");

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

/* Topic ids are random (v4 UUIDs): their first bytes hash well enough. */
static uint32_t id_hash(const uint8_t uuid[16])
{
        uint32_t h;
        memcpy(&h, uuid, 4);
        return h ^ (h >> 16);
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
        if (!s || !s->id_hash)
                return NULL;
        for (uint32_t i = id_hash(uuid) & s->hash_mask;; i = (i + 1) & s->hash_mask) {
                uint32_t v = s->id_hash[i];
                if (!v)
                        return NULL;
                if (memcmp(s->topics[v - 1].uuid, uuid, 16) == 0)
                        return &s->topics[v - 1];
        }
}

/* Partition ids: a contiguous range per created topic and per range of
 * partitions added later, assigned once per process, so a partition keeps
 * its id (and its open log on the worker) when its topic grows. */
static int pids_assign(const uint8_t uuid[16], uint32_t nparts, struct ctl_kafka_part *parts)
{
        uint32_t covered = 0;
        for (uint32_t i = 0; i < K.npids; i++) {
                const struct pid_range *r = &K.pids[i];
                if (memcmp(r->uuid, uuid, 16) != 0)
                        continue;
                for (uint32_t k = 0; k < r->n && r->first + k < nparts; k++)
                        parts[r->first + k].pid = r->base + k;
                covered = SL_MAX(covered, r->first + r->n);
        }
        if (covered >= nparts)
                return 0;
        uint32_t n = nparts - covered;
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
        r->first = covered;
        r->base = K.next_pid;
        r->n = n;
        K.next_pid += n;
        for (uint32_t k = 0; k < n; k++)
                parts[covered + k].pid = r->base + k;
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
        free(s->id_hash);
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
        s->id_hash = calloc(hn, sizeof(*s->id_hash));
        s->hash_mask = hn - 1;
        if (!s->topics || !s->hash || !s->id_hash)
                goto fail;
        uint16_t nw = K.cp->rt->nworkers;
        for (uint32_t i = 0; i < n; i++) {
                const struct meta_topic *mt = meta_topic_at(K.meta, i);
                if (mt->deleted)
                        continue;
                struct ctl_kafka_topic *t = &s->topics[s->ntopics];
                t->parts = calloc(mt->partitions, sizeof(*t->parts));
                if (!t->parts)
                        goto fail;
                if (pids_assign(mt->uuid, mt->partitions, t->parts) != 0) {
                        sl_log(SL_LOG_ERROR, "kafka: out of partition ids; topic %s not served",
                               mt->name);
                        free(t->parts);
                        t->parts = NULL;
                        continue;
                }
                snprintf(t->name, sizeof(t->name), "%s", mt->name);
                t->name_len = (uint16_t)strlen(t->name);
                memcpy(t->uuid, mt->uuid, 16);
                t->nparts = mt->partitions;
                ctl_kafka_topic_resolve(K.cp->current, &mt->cfg, mt->flags, t);
                for (uint32_t p = 0; p < mt->partitions; p++) {
                        int32_t wk = mt->worker ? mt->worker[p] : -1;
                        /* Unplaced, or placed on a worker this run does not
                         * have: serve it from a worker that exists. */
                        if (wk < 0 || wk >= nw)
                                wk = (int32_t)(t->parts[p].pid % nw);
                        t->parts[p].worker = (uint16_t)wk;
                }
                uint32_t h = name_hash(t->name, t->name_len) & s->hash_mask;
                while (s->hash[h])
                        h = (h + 1) & s->hash_mask;
                s->hash[h] = s->ntopics + 1;
                h = id_hash(t->uuid) & s->hash_mask;
                while (s->id_hash[h])
                        h = (h + 1) & s->hash_mask;
                s->id_hash[h] = s->ntopics + 1;
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
        struct sl_msg r = {.type = op->gcall ? CTL_KAFKA_MSG_GROUP
                                   : op->del ? CTL_KAFKA_MSG_DELETE
                                             : CTL_KAFKA_MSG_CREATE,
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
        /* The record keeps the broker's values of the time for the keys
         * the topic did not set, but only the ones `flags` marks as its own
         * are read back (ctl_kafka_topic_resolve): the others follow the
         * broker's [kafka] defaults, also after they change. */
        struct log_config cfg;
        ctl_kafka_log_config(K.cp->current, &cfg);
        const struct ctl_kafka_topic_cfg *own = m->a.ptr[3];
        uint32_t flags = (uint32_t)m->a.u64[2] & META_TOPIC_LOG_APPEND_TIME;
        if (own) {
                flags |= own->set & CTL_KAFKA_SET_MASK;
                if (own->set & CTL_KAFKA_SET_RETENTION_MS)
                        cfg.retention_ms = own->retention_ms;
                if (own->set & CTL_KAFKA_SET_RETENTION_BYTES)
                        cfg.retention_bytes = own->retention_bytes;
                if (own->set & CTL_KAFKA_SET_SEGMENT_BYTES)
                        cfg.segment_bytes = (uint64_t)own->segment_bytes;
                if (own->set & CTL_KAFKA_SET_SEGMENT_MS)
                        cfg.segment_ms = (uint64_t)own->segment_ms;
        }
        const struct meta_topic *t = NULL;
        op->cbs_pending = 1;
        int rc = meta_topic_create_flags(K.meta, buf, (uint32_t)nparts, &cfg, flags, op_durable_cb,
                                         op, &t);
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

/* One topic of a CreatePartitions request: 0 or a Kafka error and a
 * message (static). Grows the topic in the metadata log unless
 * validate_only; the op is answered once the workers have it. */
static int16_t grow_topic(struct create_op *op, const struct kafka_val *t, bool validate_only,
                          const char **msg)
{
        struct kafka_str name = kafka_val_get_str(t, KAFKA_CREATE_PARTITIONS_REQ_TOPICS_NAME);
        int32_t count = kafka_val_get_int32(t, KAFKA_CREATE_PARTITIONS_REQ_TOPICS_COUNT);
        char buf[META_NAME_MAX + 1];
        if (name.len <= 0 || name.len > META_NAME_MAX)
                return KERR_UNKNOWN_TOPIC;
        memcpy(buf, name.ptr, (size_t)name.len);
        buf[name.len] = 0;
        const struct meta_topic *mt = meta_topic_find(K.meta, buf);
        if (!mt || mt->deleted) {
                *msg = "This server does not host this topic.";
                return KERR_UNKNOWN_TOPIC;
        }
        if (count < 0 || (uint32_t)count < mt->partitions) {
                *msg = "The topic currently has more partitions than requested; partitions "
                       "can only be added.";
                return KERR_INVALID_PARTITIONS;
        }
        if ((uint32_t)count == mt->partitions) {
                *msg = "The topic already has the requested number of partitions.";
                return KERR_INVALID_PARTITIONS;
        }
        if (count > CTL_KAFKA_TOPIC_PARTS_MAX ||
            K.next_pid + (uint32_t)count - mt->partitions > CTL_KAFKA_PIDS_MAX) {
                *msg = "The requested partition count is above this broker's limit.";
                return KERR_INVALID_PARTITIONS;
        }
        uint32_t added = (uint32_t)count - mt->partitions;
        const struct kafka_val *as =
            kafka_val_array(t, KAFKA_CREATE_PARTITIONS_REQ_TOPICS_ASSIGNMENTS);
        if (as && as->len >= 0) {
                /* One broker (node 0), one replica: [[0]] per new partition. */
                bool ok = (uint32_t)as->len == added;
                for (int32_t i = 0; ok && i < as->len; i++) {
                        const struct kafka_val *ids = kafka_val_array(
                            kafka_val_array_elem(as, i),
                            KAFKA_CREATE_PARTITIONS_REQ_TOPICS_ASSIGNMENTS_BROKER_IDS);
                        ok = ids->len == 1 && kafka_val_array_elem(ids, 0)->u.i64 == 0;
                }
                if (!ok) {
                        *msg = "Each new partition must be assigned to broker 0 alone.";
                        return KERR_INVALID_REPLICA_ASSIGNMENT;
                }
        }
        if (validate_only)
                return KERR_NONE;
        uint8_t uuid[16];
        memcpy(uuid, mt->uuid, 16);
        uint32_t old = mt->partitions;
        op->cbs_pending++;
        if (meta_topic_grow(K.meta, uuid, (uint32_t)count, op_durable_cb, op) != 0) {
                op->cbs_pending--;
                return KERR_UNKNOWN;
        }
        uint16_t nw = K.cp->rt->nworkers;
        for (uint32_t p = old; p < (uint32_t)count; p++) {
                int32_t wk = (int32_t)(K.place_next++ % nw);
                op->cbs_pending++;
                if (meta_placement_set(K.meta, uuid, p, wk, op_durable_cb, op) != 0)
                        op->cbs_pending--;
        }
        sl_log(SL_LOG_INFO, "kafka: topic %s grown from %u to %u partitions", buf, old,
               (unsigned)count);
        return KERR_NONE;
}

void ctl_kafka_create_partitions(struct ctl_plane *cp, struct ctl_kafka_gcall *c, uint16_t ep,
                                 uint64_t cookie)
{
        const struct kafka_val *rq = c->req->root;
        bool validate_only = kafka_val_get_bool(rq, KAFKA_CREATE_PARTITIONS_REQ_VALIDATE_ONLY);
        const struct kafka_val *ta = kafka_val_array(rq, KAFKA_CREATE_PARTITIONS_REQ_TOPICS);
        int32_t n = ta->len < 0 ? 0 : ta->len;
        struct create_op *op = calloc(1, sizeof(*op));
        if (!op || kafka_msg_init(c->resp, c->arena, c->api_key, c->api_version, KAFKA_RESPONSE)) {
                free(op);
                struct sl_msg r = {.type = CTL_KAFKA_MSG_GROUP, .cookie = cookie};
                sl_mbox_reply(&cp->mb, ep, &r); /* no response: the worker closes */
                return;
        }
        op->src = ep;
        op->cookie = cookie;
        op->gcall = true;
        struct kafka_val *rt = c->resp->root;
        kafka_val_array_init(c->arena, rt, KAFKA_CREATE_PARTITIONS_RESP_RESULTS, n);
        for (int32_t i = 0; i < n; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                struct kafka_str name =
                    kafka_val_get_str(t, KAFKA_CREATE_PARTITIONS_REQ_TOPICS_NAME);
                struct kafka_val *e = kafka_val_array_elem(
                    kafka_val_array(rt, KAFKA_CREATE_PARTITIONS_RESP_RESULTS), i);
                kafka_val_set_str(e, KAFKA_CREATE_PARTITIONS_RESP_RESULTS_NAME,
                                  name.len > 0 ? name.ptr : (const uint8_t *)"",
                                  name.len > 0 ? name.len : 0);
                const char *msg = NULL;
                int16_t err = KERR_NONE;
                for (int32_t j = 0; j < n; j++) {
                        struct kafka_str other = kafka_val_get_str(
                            kafka_val_array_elem(ta, j), KAFKA_CREATE_PARTITIONS_REQ_TOPICS_NAME);
                        if (j != i && other.len == name.len &&
                            (name.len <= 0 || !memcmp(other.ptr, name.ptr, (size_t)name.len))) {
                                err = KERR_INVALID_REQUEST;
                                msg = "Duplicate topic in request.";
                        }
                }
                if (!err)
                        err = grow_topic(op, t, validate_only, &msg);
                kafka_val_set_int16(e, KAFKA_CREATE_PARTITIONS_RESP_RESULTS_ERROR_CODE, err);
                if (msg)
                        kafka_val_set_str(e, KAFKA_CREATE_PARTITIONS_RESP_RESULTS_ERROR_MESSAGE,
                                          (const uint8_t *)msg, (int32_t)strlen(msg));
        }
        op->next = K.ops;
        K.ops = op;
        if (op->cbs_pending == 0) {
                /* Nothing written: the workers already have this state. */
                op->durable = true;
                K.dirty = true;
        }
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

/* A restart with fewer workers than a partition was placed on: it goes to
 * the least loaded worker that exists (ties: the lowest id), in metadata
 * order, so the result is a function of the metadata and the worker count,
 * and the placement record is rewritten so it stays there (a later restart
 * with more workers does not move it back). Logs are found by directory
 * (topic UUID and partition), whichever worker opens them. Unplaced
 * partitions are placed the same way. */
static void placement_repair(uint16_t nw)
{
        uint32_t load[CTL_WORKERS_MAX] = {0}, moved = 0;
        uint32_t n = meta_topic_count(K.meta);
        for (uint32_t i = 0; i < n; i++) {
                const struct meta_topic *t = meta_topic_at(K.meta, i);
                for (uint32_t p = 0; !t->deleted && p < t->partitions; p++)
                        if (t->worker[p] >= 0 && t->worker[p] < nw)
                                load[t->worker[p]]++;
        }
        for (uint32_t i = 0; i < n; i++) {
                const struct meta_topic *t = meta_topic_at(K.meta, i);
                for (uint32_t p = 0; !t->deleted && p < t->partitions; p++) {
                        if (t->worker[p] >= 0 && t->worker[p] < nw)
                                continue;
                        uint16_t best = 0;
                        for (uint16_t w = 1; w < nw; w++)
                                if (load[w] < load[best])
                                        best = w;
                        /* No callback: if this record is lost in a crash,
                         * the next start computes the same placement. */
                        if (meta_placement_set(K.meta, t->uuid, p, best, NULL, NULL) == 0) {
                                load[best]++;
                                moved++;
                        }
                }
        }
        if (moved)
                sl_log(SL_LOG_INFO, "kafka: %u partitions re-placed over %u workers", moved,
                       (unsigned)nw);
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
        placement_repair(cp->rt->nworkers);
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

/* ---- metrics ------------------------------------------------------------- */

/* A Prometheus label value: backslash, quote and newline escaped. */
static void label_put(struct ctl_text *t, const char *s)
{
        for (; *s; s++) {
                if (*s == '\\' || *s == '"')
                        ctl_text_printf(t, "\\%c", *s);
                else if (*s == '\n')
                        ctl_text_printf(t, "\\n");
                else
                        ctl_text_printf(t, "%c", *s);
        }
}

/* which: 0 high watermark, 1 log end, 2 log start */
static int64_t published(uint32_t pid, int which)
{
        const struct ctl_kafka_offsets *o = &ctl_kafka_published[pid];
        const _Atomic int64_t *v = which == 0 ? &o->hw : which == 1 ? &o->end : &o->start;
        return atomic_load_explicit(v, memory_order_relaxed);
}

void ctl_kafka_metrics(struct ctl_text *t)
{
        if (!K.on || !K.cur)
                return;
        const struct ctl_kafka_snap *s = K.cur;
        static const char *const part_names[3] = {"sluice_kafka_partition_high_watermark",
                                                  "sluice_kafka_partition_log_end_offset",
                                                  "sluice_kafka_partition_log_start_offset"};
        static const char *const part_help[3] = {
            "Offset below which records are visible (durable for fsync topics).",
            "Offset the next appended record gets.",
            "Oldest offset still in the log (moved by retention; as of the owner's last "
            "retention check)."};
        for (int which = 0; which < 3; which++) {
                ctl_text_printf(t, "# HELP %s %s\n# TYPE %s gauge\n", part_names[which],
                                part_help[which], part_names[which]);
                for (uint32_t i = 0; i < s->ntopics; i++)
                        for (uint32_t p = 0; p < s->topics[i].nparts; p++) {
                                ctl_text_printf(
                                    t, "%s{topic=\"%s\",partition=\"%u\"} %lld\n",
                                    part_names[which], s->topics[i].name, p,
                                    (long long)published(s->topics[i].parts[p].pid, which));
                        }
        }
        ctl_text_printf(t, "# HELP sluice_kafka_partition_worker Worker that owns the "
                           "partition.\n# TYPE sluice_kafka_partition_worker gauge\n");
        for (uint32_t i = 0; i < s->ntopics; i++)
                for (uint32_t p = 0; p < s->topics[i].nparts; p++)
                        ctl_text_printf(
                            t,
                            "sluice_kafka_partition_worker{topic=\"%s\",partition=\"%u\"} "
                            "%u\n",
                            s->topics[i].name, p, s->topics[i].parts[p].worker);
        static const char *const grp_names[2] = {"sluice_kafka_consumer_group_committed_offset",
                                                 "sluice_kafka_consumer_group_lag"};
        static const char *const grp_help[2] = {
            "Offset a consumer group committed for a partition.",
            "High watermark minus the group's committed offset."};
        for (int which = 0; which < 2; which++) {
                ctl_text_printf(t, "# HELP %s %s\n# TYPE %s gauge\n", grp_names[which],
                                grp_help[which], grp_names[which]);
                for (uint32_t slot = 0; slot < meta_offset_slots(K.meta); slot++) {
                        const char *group;
                        const uint8_t *uuid;
                        uint32_t part;
                        int64_t off;
                        if (meta_offset_at(K.meta, slot, &group, &uuid, &part, &off) != 0 ||
                            off < 0)
                                continue;
                        const struct ctl_kafka_topic *tp = ctl_kafka_snap_find_id(s, uuid);
                        if (!tp || part >= tp->nparts)
                                continue;
                        int64_t v = off;
                        if (which == 1) {
                                int64_t hw = published(tp->parts[part].pid, 0);
                                v = hw > off ? hw - off : 0;
                        }
                        ctl_text_printf(t, "%s{group=\"", grp_names[which]);
                        label_put(t, group);
                        ctl_text_printf(t, "\",topic=\"%s\",partition=\"%u\"} %lld\n", tp->name,
                                        part, (long long)v);
                }
        }
}
