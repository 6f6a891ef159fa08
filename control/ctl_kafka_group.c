/* Kafka consumer groups on the control thread: the classic rebalance protocol
 * (JoinGroup, SyncGroup, Heartbeat, LeaveGroup with session and rebalance
 * timeouts) and committed offsets (OffsetCommit durable in storage's metadata
 * log before the answer, OffsetFetch). A worker lends the decoded request and
 * its arena; the answer is built here into that arena, then the worker is
 * told (the reply of its CTL_KAFKA_MSG_GROUP request). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ctl_kafka.h"
#include "ctl_plane.h"
#include "kafka_codec.h"
#include "sl_log.h"

enum {
        GERR_NONE = 0,
        GERR_UNKNOWN_TOPIC = 3,
        GERR_ILLEGAL_GENERATION = 22,
        GERR_INCONSISTENT_PROTOCOL = 23,
        GERR_INVALID_GROUP_ID = 24,
        GERR_UNKNOWN_MEMBER = 25,
        GERR_INVALID_SESSION_TIMEOUT = 26,
        GERR_REBALANCE_IN_PROGRESS = 27,
        GERR_NON_EMPTY_GROUP = 68,
        GERR_GROUP_ID_NOT_FOUND = 69,
        GERR_MEMBER_ID_REQUIRED = 79,
        GERR_UNKNOWN = -1,
};

enum grp_state { G_EMPTY, G_PREPARING, G_COMPLETING, G_STABLE };

#define ID_MAX     256
#define PROTOS_MAX 8

struct parked {
        struct ctl_kafka_gcall *call;
        uint16_t ep;
        uint64_t cookie;
};

struct member {
        char id[ID_MAX];
        char instance[ID_MAX];
        char client_id[128];
        int32_t session_ms, rebalance_ms;
        uint32_t nprotos;
        char proto_name[PROTOS_MAX][64];
        uint8_t *proto_meta[PROTOS_MAX];
        int32_t proto_len[PROTOS_MAX];
        uint8_t *assign;
        int32_t assign_len;
        uint64_t last_hb_ms;
        bool rejoined;
        struct parked join, sync;
        struct member *next;
};

struct group {
        char id[ID_MAX];
        enum grp_state state;
        int32_t gen;
        char proto_type[64];
        char proto[64];
        char leader[ID_MAX];
        struct member *members;
        uint64_t deadline_ms;
        struct group *next;
};

struct commit_op {
        struct parked p;
        uint32_t cbs;
        bool failed; /* a record of this call did not become durable */
};

static struct group *groups;
static uint64_t member_seq;
/* Per-boot random tag in every member id. Groups live in memory only, so
 * after a restart member_seq starts again: without the tag a new member
 * got the id a member from before the restart still used, both were taken
 * for one member, got the same partitions and committed over each other,
 * and a stale member's OffsetCommit passed the generation check under the
 * newcomer's id. Zero-terminated hex; empty until the first id. */
static char boot_tag[17];
static uint32_t commits_pending; /* OffsetCommits waiting for the metadata log */

static void strview(char *dst, size_t cap, struct kafka_str s)
{
        size_t n = s.len > 0 ? SL_MIN((size_t)s.len, cap - 1) : 0;
        memcpy(dst, s.ptr, n);
        dst[n] = 0;
}

static bool streq(const char *a, struct kafka_str s)
{
        size_t n = s.len > 0 ? (size_t)s.len : 0;
        return strlen(a) == n && memcmp(a, s.ptr, n) == 0;
}

static void reply(struct ctl_plane *cp, struct parked *p)
{
        if (!p->call)
                return;
        struct sl_msg r = {.type = CTL_KAFKA_MSG_GROUP, .cookie = p->cookie};
        sl_mbox_reply(&cp->mb, p->ep, &r);
        p->call = NULL;
}

/* Copies bytes into the lent arena: the answer must not point at state that
 * the next rebalance frees. */
static const uint8_t *arena_copy(struct ctl_kafka_gcall *c, const void *p, size_t n)
{
        uint8_t *d = kafka_arena_alloc(c->arena, n ? n : 1);
        if (d && n)
                memcpy(d, p, n);
        return d;
}

static void set_str(struct ctl_kafka_gcall *c, struct kafka_val *s, unsigned id, const char *v)
{
        size_t n = strlen(v);
        kafka_val_set_str(s, id, arena_copy(c, v, n), (int32_t)n);
}

/* A view from the request, copied (null or empty becomes ""). */
static void set_view(struct ctl_kafka_gcall *c, struct kafka_val *s, unsigned id,
                     struct kafka_str v)
{
        size_t n = v.len > 0 ? (size_t)v.len : 0;
        kafka_val_set_str(s, id, arena_copy(c, v.ptr, n), (int32_t)n);
}

static int resp_init(struct ctl_kafka_gcall *c)
{
        return kafka_msg_init(c->resp, c->arena, c->api_key, c->api_version, KAFKA_RESPONSE);
}

static struct group *group_find(struct kafka_str id, bool create)
{
        for (struct group *g = groups; g; g = g->next)
                if (streq(g->id, id))
                        return g;
        if (!create || id.len <= 0 || id.len >= ID_MAX)
                return NULL;
        struct group *g = calloc(1, sizeof(*g));
        if (!g)
                return NULL;
        strview(g->id, sizeof(g->id), id);
        g->next = groups;
        groups = g;
        return g;
}

static struct member *member_find(struct group *g, struct kafka_str id)
{
        for (struct member *m = g->members; m; m = m->next)
                if (streq(m->id, id))
                        return m;
        return NULL;
}

static void boot_tag_init(void)
{
        if (boot_tag[0])
                return;
        uint64_t r = 0;
        if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
                /* No entropy yet: the start time still differs per boot. */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                r = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
                r ^= (uint64_t)getpid() << 48;
        }
        snprintf(boot_tag, sizeof(boot_tag), "%016llx", (unsigned long long)r);
}

/* "<client id>-<boot tag>-<n>", as Kafka's "<client id>-<uuid>": unique
 * across restarts, and recognisable as issued by this boot. */
static void member_id_new(const struct ctl_kafka_gcall *c, char *id, size_t cap)
{
        boot_tag_init();
        char cid[64];
        strview(cid, sizeof(cid), (struct kafka_str){c->client_id, c->client_id_len});
        snprintf(id, cap, "%s-%s-%llu", cid[0] ? cid : "member", boot_tag,
                 (unsigned long long)++member_seq);
}

/* Whether id ends in "-<this boot's tag>-<n>" with n already handed out. */
static bool member_id_issued_here(struct kafka_str id)
{
        if (!boot_tag[0] || id.len <= 0)
                return false;
        const char *s = (const char *)id.ptr;
        size_t n = (size_t)id.len, digits = 0;
        uint64_t seq = 0;
        while (digits < n && digits < 20 && s[n - 1 - digits] >= '0' && s[n - 1 - digits] <= '9')
                digits++;
        if (digits == 0 || digits == 20)
                return false;
        for (size_t i = n - digits; i < n; i++)
                seq = seq * 10 + (uint64_t)(s[i] - '0');
        size_t tag = sizeof(boot_tag) - 1;
        if (n < digits + tag + 2)
                return false;
        const char *t = s + n - digits - 1 - tag;
        return t[-1] == '-' && t[tag] == '-' && memcmp(t, boot_tag, tag) == 0 && seq >= 1 &&
               seq <= member_seq;
}

static void member_protos_free(struct member *m)
{
        for (uint32_t i = 0; i < m->nprotos; i++)
                free(m->proto_meta[i]);
        m->nprotos = 0;
}

static void answer_join(struct ctl_plane *cp, struct group *g, struct member *m, int16_t err);
static void answer_sync(struct ctl_plane *cp, struct member *m, int16_t err);

static void member_remove(struct ctl_plane *cp, struct group *g, struct member *m)
{
        for (struct member **pp = &g->members; *pp; pp = &(*pp)->next)
                if (*pp == m) {
                        *pp = m->next;
                        break;
                }
        if (m->join.call)
                answer_join(cp, g, m, GERR_UNKNOWN_MEMBER);
        if (m->sync.call)
                answer_sync(cp, m, GERR_UNKNOWN_MEMBER);
        member_protos_free(m);
        free(m->assign);
        free(m);
}

static uint32_t member_count(const struct group *g)
{
        uint32_t n = 0;
        for (const struct member *m = g->members; m; m = m->next)
                n++;
        return n;
}

/* ---- answers ------------------------------------------------------------ */

static void answer_join(struct ctl_plane *cp, struct group *g, struct member *m, int16_t err)
{
        struct ctl_kafka_gcall *c = m->join.call;
        if (!c)
                return;
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        kafka_val_set_int16(rt, KAFKA_JOIN_GROUP_RESP_ERROR_CODE, err);
        kafka_val_set_int32(rt, KAFKA_JOIN_GROUP_RESP_GENERATION_ID, err ? -1 : g->gen);
        set_str(c, rt, KAFKA_JOIN_GROUP_RESP_PROTOCOL_NAME, err ? "" : g->proto);
        if (c->api_version >= 7)
                set_str(c, rt, KAFKA_JOIN_GROUP_RESP_PROTOCOL_TYPE, g->proto_type);
        set_str(c, rt, KAFKA_JOIN_GROUP_RESP_LEADER, err ? "" : g->leader);
        set_str(c, rt, KAFKA_JOIN_GROUP_RESP_MEMBER_ID, m->id);
        bool leader = !err && strcmp(g->leader, m->id) == 0;
        int32_t n = leader ? (int32_t)member_count(g) : 0;
        struct kafka_val *ma = kafka_val_array_init(c->arena, rt, KAFKA_JOIN_GROUP_RESP_MEMBERS, n);
        int32_t i = 0;
        for (struct member *o = g->members; ma && leader && o; o = o->next, i++) {
                struct kafka_val *e =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_JOIN_GROUP_RESP_MEMBERS), i);
                set_str(c, e, KAFKA_JOIN_GROUP_RESP_MEMBERS_MEMBER_ID, o->id);
                if (c->api_version >= 5 && o->instance[0])
                        set_str(c, e, KAFKA_JOIN_GROUP_RESP_MEMBERS_GROUP_INSTANCE_ID, o->instance);
                for (uint32_t k = 0; k < o->nprotos; k++)
                        if (strcmp(o->proto_name[k], g->proto) == 0)
                                kafka_val_set_str(
                                    e, KAFKA_JOIN_GROUP_RESP_MEMBERS_METADATA,
                                    arena_copy(c, o->proto_meta[k], (size_t)o->proto_len[k]),
                                    o->proto_len[k]);
        }
        reply(cp, &m->join);
}

static void answer_sync(struct ctl_plane *cp, struct member *m, int16_t err)
{
        struct ctl_kafka_gcall *c = m->sync.call;
        if (!c)
                return;
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        kafka_val_set_int16(rt, KAFKA_SYNC_GROUP_RESP_ERROR_CODE, err);
        const uint8_t *a = arena_copy(c, m->assign, err || !m->assign ? 0 : (size_t)m->assign_len);
        kafka_val_set_str(rt, KAFKA_SYNC_GROUP_RESP_ASSIGNMENT, a,
                          err || !m->assign ? 0 : m->assign_len);
        reply(cp, &m->sync);
}

/* ---- rebalance ----------------------------------------------------------- */

static void rebalance_start(struct group *g, uint64_t now_ms)
{
        if (g->state == G_PREPARING)
                return;
        int32_t t = 0;
        for (struct member *m = g->members; m; m = m->next) {
                t = SL_MAX(t, m->rebalance_ms);
                m->rejoined = m->join.call != NULL;
        }
        g->state = G_PREPARING;
        g->deadline_ms = now_ms + (uint64_t)SL_MAX(t, 1000);
}

static void rebalance_complete(struct ctl_plane *cp, struct group *g)
{
        struct member *m = g->members;
        while (m) {
                struct member *next = m->next;
                if (!m->rejoined)
                        member_remove(cp, g, m);
                m = next;
        }
        if (!g->members) {
                g->state = G_EMPTY;
                g->gen++;
                g->leader[0] = 0;
                return;
        }
        g->gen++;
        if (!member_find(
                g, (struct kafka_str){(const uint8_t *)g->leader, (int32_t)strlen(g->leader)}))
                snprintf(g->leader, sizeof(g->leader), "%s", g->members->id);
        /* The protocol: the leader's first one that every member supports. */
        struct member *l = member_find(
            g, (struct kafka_str){(const uint8_t *)g->leader, (int32_t)strlen(g->leader)});
        g->proto[0] = 0;
        for (uint32_t k = 0; l && k < l->nprotos && !g->proto[0]; k++) {
                bool all = true;
                for (struct member *o = g->members; o && all; o = o->next) {
                        bool has = false;
                        for (uint32_t j = 0; j < o->nprotos; j++)
                                has |= strcmp(o->proto_name[j], l->proto_name[k]) == 0;
                        all = has;
                }
                if (all)
                        snprintf(g->proto, sizeof(g->proto), "%s", l->proto_name[k]);
        }
        g->state = G_COMPLETING;
        for (struct member *o = g->members; o; o = o->next) {
                free(o->assign);
                o->assign = NULL;
                o->assign_len = 0;
                o->rejoined = false;
                answer_join(cp, g, o, g->proto[0] ? 0 : GERR_INCONSISTENT_PROTOCOL);
        }
}

static bool rebalance_ready(const struct group *g)
{
        for (const struct member *m = g->members; m; m = m->next)
                if (!m->rejoined)
                        return false;
        return true;
}

/* ---- APIs --------------------------------------------------------------- */

static void join_group(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk,
                       uint64_t now_ms)
{
        const struct kafka_val *rq = c->req->root;
        struct group *g = group_find(kafka_val_get_str(rq, KAFKA_JOIN_GROUP_REQ_GROUP_ID), true);
        struct member tmp = {.join = pk};
        if (!g) {
                answer_join(cp, &(struct group){0}, &tmp, GERR_INVALID_GROUP_ID);
                return;
        }
        struct kafka_str ptype = kafka_val_get_str(rq, KAFKA_JOIN_GROUP_REQ_PROTOCOL_TYPE);
        if (g->members && !streq(g->proto_type, ptype)) {
                answer_join(cp, g, &tmp, GERR_INCONSISTENT_PROTOCOL);
                return;
        }
        int32_t session = kafka_val_get_int32(rq, KAFKA_JOIN_GROUP_REQ_SESSION_TIMEOUT_MS);
        if (session < 1000 || session > 1800000) {
                answer_join(cp, g, &tmp, GERR_INVALID_SESSION_TIMEOUT);
                return;
        }
        struct kafka_str mid = kafka_val_get_str(rq, KAFKA_JOIN_GROUP_REQ_MEMBER_ID);
        struct kafka_str inst = kafka_val_get_str(rq, KAFKA_JOIN_GROUP_REQ_GROUP_INSTANCE_ID);
        struct member *m = mid.len > 0 ? member_find(g, mid) : NULL;
        if (!m && inst.len > 0) /* static membership: the same instance comes back */
                for (struct member *o = g->members; o && !m; o = o->next)
                        if (o->instance[0] && streq(o->instance, inst))
                                m = o;
        if (!m) {
                char id[ID_MAX];
                if (mid.len > 0) {
                        /* Only an id this boot handed out with
                         * MEMBER_ID_REQUIRED: one from before a restart
                         * (or made up) would be taken for someone else's,
                         * so the client starts over with an empty id. A
                         * static member keeps its id: its instance id is
                         * what identifies it. */
                        if (inst.len <= 0 && !member_id_issued_here(mid)) {
                                strview(tmp.id, sizeof(tmp.id), mid);
                                answer_join(cp, g, &tmp, GERR_UNKNOWN_MEMBER);
                                return;
                        }
                        strview(id, sizeof(id), mid);
                } else {
                        member_id_new(c, id, sizeof(id));
                        if (c->api_version >= 4 && inst.len <= 0) {
                                /* KIP-394: the client rejoins with this id. */
                                snprintf(tmp.id, sizeof(tmp.id), "%s", id);
                                answer_join(cp, g, &tmp, GERR_MEMBER_ID_REQUIRED);
                                return;
                        }
                }
                m = calloc(1, sizeof(*m));
                if (!m) {
                        answer_join(cp, g, &tmp, GERR_UNKNOWN);
                        return;
                }
                snprintf(m->id, sizeof(m->id), "%s", id);
                m->next = g->members;
                g->members = m;
        }
        if (inst.len > 0)
                strview(m->instance, sizeof(m->instance), inst);
        strview(m->client_id, sizeof(m->client_id),
                (struct kafka_str){c->client_id, c->client_id_len});
        if (m->join.call) /* a repeated join replaces the parked one */
                answer_join(cp, g, m, GERR_REBALANCE_IN_PROGRESS);
        strview(g->proto_type, sizeof(g->proto_type), ptype);
        m->session_ms = session;
        m->rebalance_ms = c->api_version >= 1
                              ? kafka_val_get_int32(rq, KAFKA_JOIN_GROUP_REQ_REBALANCE_TIMEOUT_MS)
                              : session;
        member_protos_free(m);
        const struct kafka_val *pa = kafka_val_array(rq, KAFKA_JOIN_GROUP_REQ_PROTOCOLS);
        for (int32_t i = 0; i < pa->len && m->nprotos < PROTOS_MAX; i++) {
                const struct kafka_val *e = kafka_val_array_elem(pa, i);
                struct kafka_str meta =
                    kafka_val_get_str(e, KAFKA_JOIN_GROUP_REQ_PROTOCOLS_METADATA);
                uint32_t k = m->nprotos++;
                strview(m->proto_name[k], sizeof(m->proto_name[k]),
                        kafka_val_get_str(e, KAFKA_JOIN_GROUP_REQ_PROTOCOLS_NAME));
                m->proto_len[k] = meta.len > 0 ? meta.len : 0;
                m->proto_meta[k] = malloc((size_t)m->proto_len[k] + 1);
                if (m->proto_meta[k] && meta.len > 0)
                        memcpy(m->proto_meta[k], meta.ptr, (size_t)meta.len);
        }
        m->join = pk;
        m->last_hb_ms = now_ms;
        if (g->state != G_PREPARING)
                rebalance_start(g, now_ms);
        m->rejoined = true;
        if (rebalance_ready(g))
                rebalance_complete(cp, g);
}

static int16_t member_check(struct group *g, struct kafka_str mid, int32_t gen, struct member **out)
{
        struct member *m = g ? member_find(g, mid) : NULL;
        *out = m;
        if (!m)
                return GERR_UNKNOWN_MEMBER;
        if (gen != g->gen)
                return GERR_ILLEGAL_GENERATION;
        return 0;
}

static void sync_group(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk,
                       uint64_t now_ms)
{
        const struct kafka_val *rq = c->req->root;
        struct group *g = group_find(kafka_val_get_str(rq, KAFKA_SYNC_GROUP_REQ_GROUP_ID), false);
        struct member *m;
        int16_t err = member_check(g, kafka_val_get_str(rq, KAFKA_SYNC_GROUP_REQ_MEMBER_ID),
                                   kafka_val_get_int32(rq, KAFKA_SYNC_GROUP_REQ_GENERATION_ID), &m);
        if (!err && g->state == G_PREPARING)
                err = GERR_REBALANCE_IN_PROGRESS;
        if (err) {
                struct member tmp = {.sync = pk};
                answer_sync(cp, &tmp, err);
                return;
        }
        m->last_hb_ms = now_ms;
        if (m->sync.call)
                answer_sync(cp, m, GERR_REBALANCE_IN_PROGRESS);
        m->sync = pk;
        if (g->state == G_STABLE) {
                answer_sync(cp, m, 0);
                return;
        }
        if (strcmp(g->leader, m->id) != 0)
                return; /* parked until the leader's assignment arrives */
        const struct kafka_val *aa = kafka_val_array(rq, KAFKA_SYNC_GROUP_REQ_ASSIGNMENTS);
        for (int32_t i = 0; i < aa->len; i++) {
                const struct kafka_val *e = kafka_val_array_elem(aa, i);
                struct member *o = member_find(
                    g, kafka_val_get_str(e, KAFKA_SYNC_GROUP_REQ_ASSIGNMENTS_MEMBER_ID));
                struct kafka_str a =
                    kafka_val_get_str(e, KAFKA_SYNC_GROUP_REQ_ASSIGNMENTS_ASSIGNMENT);
                if (!o || a.len < 0)
                        continue;
                free(o->assign);
                o->assign = malloc((size_t)a.len + 1);
                o->assign_len = o->assign ? a.len : 0;
                if (o->assign && a.len)
                        memcpy(o->assign, a.ptr, (size_t)a.len);
        }
        g->state = G_STABLE;
        for (struct member *o = g->members; o; o = o->next)
                if (o->sync.call)
                        answer_sync(cp, o, 0);
}

static void heartbeat(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk,
                      uint64_t now_ms)
{
        const struct kafka_val *rq = c->req->root;
        struct group *g = group_find(kafka_val_get_str(rq, KAFKA_HEARTBEAT_REQ_GROUP_ID), false);
        struct member *m;
        int16_t err = member_check(g, kafka_val_get_str(rq, KAFKA_HEARTBEAT_REQ_MEMBER_ID),
                                   kafka_val_get_int32(rq, KAFKA_HEARTBEAT_REQ_GENERATION_ID), &m);
        if (m)
                m->last_hb_ms = now_ms;
        if (!err && g->state == G_PREPARING)
                err = GERR_REBALANCE_IN_PROGRESS;
        resp_init(c);
        kafka_val_set_int16(c->resp->root, KAFKA_HEARTBEAT_RESP_ERROR_CODE, err);
        reply(cp, &pk);
}

static void leave_one(struct ctl_plane *cp, struct group *g, struct member *m, uint64_t now_ms)
{
        member_remove(cp, g, m);
        if (!g->members) {
                g->state = G_EMPTY;
                g->gen++;
                return;
        }
        rebalance_start(g, now_ms);
        if (rebalance_ready(g))
                rebalance_complete(cp, g);
}

static void leave_group(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk,
                        uint64_t now_ms)
{
        const struct kafka_val *rq = c->req->root;
        struct group *g = group_find(kafka_val_get_str(rq, KAFKA_LEAVE_GROUP_REQ_GROUP_ID), false);
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        if (c->api_version < 3) {
                struct member *m =
                    g ? member_find(g, kafka_val_get_str(rq, KAFKA_LEAVE_GROUP_REQ_MEMBER_ID))
                      : NULL;
                kafka_val_set_int16(rt, KAFKA_LEAVE_GROUP_RESP_ERROR_CODE,
                                    m ? 0 : GERR_UNKNOWN_MEMBER);
                if (m)
                        leave_one(cp, g, m, now_ms);
                reply(cp, &pk);
                return;
        }
        const struct kafka_val *ma = kafka_val_array(rq, KAFKA_LEAVE_GROUP_REQ_MEMBERS);
        int32_t n = ma->len < 0 ? 0 : ma->len;
        kafka_val_array_init(c->arena, rt, KAFKA_LEAVE_GROUP_RESP_MEMBERS, n);
        for (int32_t i = 0; i < n; i++) {
                const struct kafka_val *e = kafka_val_array_elem(ma, i);
                struct kafka_val *o =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_LEAVE_GROUP_RESP_MEMBERS), i);
                struct kafka_str mid =
                    kafka_val_get_str(e, KAFKA_LEAVE_GROUP_REQ_MEMBERS_MEMBER_ID);
                struct kafka_str inst =
                    kafka_val_get_str(e, KAFKA_LEAVE_GROUP_REQ_MEMBERS_GROUP_INSTANCE_ID);
                kafka_val_set_str(o, KAFKA_LEAVE_GROUP_RESP_MEMBERS_MEMBER_ID,
                                  arena_copy(c, mid.ptr, mid.len > 0 ? (size_t)mid.len : 0),
                                  mid.len > 0 ? mid.len : 0);
                if (inst.len >= 0)
                        kafka_val_set_str(o, KAFKA_LEAVE_GROUP_RESP_MEMBERS_GROUP_INSTANCE_ID,
                                          arena_copy(c, inst.ptr, (size_t)inst.len), inst.len);
                struct member *m = g ? member_find(g, mid) : NULL;
                for (struct member *x = g ? g->members : NULL; !m && x && inst.len > 0; x = x->next)
                        if (x->instance[0] && streq(x->instance, inst))
                                m = x;
                kafka_val_set_int16(o, KAFKA_LEAVE_GROUP_RESP_MEMBERS_ERROR_CODE,
                                    m ? 0 : GERR_UNKNOWN_MEMBER);
                if (m)
                        leave_one(cp, g, m, now_ms);
        }
        reply(cp, &pk);
}

/* A round of the metadata log failed: nothing this call wrote is durable,
 * so no entry may be answered as done (the client would skip records after
 * a crash). Entries answered with an error already keep theirs. */
static void commit_op_fail(struct commit_op *op)
{
        struct ctl_kafka_gcall *c = op->p.call;
        struct kafka_val *rt = c->resp->root;
        if (c->api_key == KAFKA_API_OFFSET_COMMIT) {
                struct kafka_val *ta = kafka_val_array(rt, KAFKA_OFFSET_COMMIT_RESP_TOPICS);
                for (int32_t i = 0; i < ta->len; i++) {
                        struct kafka_val *pa =
                            kafka_val_array(kafka_val_array_elem(ta, i),
                                            KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS);
                        for (int32_t j = 0; j < pa->len; j++) {
                                struct kafka_val *po = kafka_val_array_elem(pa, j);
                                if (!kafka_val_get_int16(
                                        po, KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS_ERROR_CODE))
                                        kafka_val_set_int16(
                                            po,
                                            KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS_ERROR_CODE,
                                            GERR_UNKNOWN);
                        }
                }
        } else if (c->api_key == KAFKA_API_DELETE_GROUPS) {
                struct kafka_val *ra = kafka_val_array(rt, KAFKA_DELETE_GROUPS_RESP_RESULTS);
                for (int32_t i = 0; i < ra->len; i++) {
                        struct kafka_val *e = kafka_val_array_elem(ra, i);
                        if (!kafka_val_get_int16(e, KAFKA_DELETE_GROUPS_RESP_RESULTS_ERROR_CODE))
                                kafka_val_set_int16(e, KAFKA_DELETE_GROUPS_RESP_RESULTS_ERROR_CODE,
                                                    GERR_UNKNOWN);
                }
        }
}

static void commit_cb(void *ctx, int res)
{
        struct commit_op *op = ctx;
        if (res) {
                sl_log(SL_LOG_ERROR, "kafka: offset commit not durable: %s", strerror(-res));
                op->failed = true;
        }
        if (--op->cbs == 0) {
                if (op->failed)
                        commit_op_fail(op);
                reply(ctl_kafka_plane(), &op->p);
                free(op);
                commits_pending--;
        }
}

/* A call answered once its metadata records are durable: commit_cb(op, 0)
 * after the last one is appended drops the starting hold. NULL (and the
 * call answered with no response: the worker closes) without memory. */
static struct commit_op *commit_op_start(struct ctl_plane *cp, struct ctl_kafka_gcall *c,
                                         struct parked pk)
{
        struct commit_op *op = calloc(1, sizeof(*op));
        if (!op) {
                reply(cp, &pk);
                return NULL;
        }
        op->p = pk;
        op->cbs = 1;
        commits_pending++;
        resp_init(c);
        return op;
}

static void offset_commit(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk)
{
        const struct kafka_val *rq = c->req->root;
        struct kafka_str gid = kafka_val_get_str(rq, KAFKA_OFFSET_COMMIT_REQ_GROUP_ID);
        struct group *g = group_find(gid, false);
        int32_t gen =
            kafka_val_get_int32(rq, KAFKA_OFFSET_COMMIT_REQ_GENERATION_ID_OR_MEMBER_EPOCH);
        int16_t gerr = 0;
        /* Generation -1 is a consumer outside any group (assign(), not
         * subscribe()): fine while the group has no members, as in Kafka.
         * While it has some, every commit must come from a current member
         * of the current generation: anything else is a client that lost
         * its partitions, and its offsets would move their new owner's
         * committed position back. */
        if (g && g->members) {
                struct member *m;
                gerr = member_check(g, kafka_val_get_str(rq, KAFKA_OFFSET_COMMIT_REQ_MEMBER_ID),
                                    gen, &m);
        } else if (gen >= 0) {
                gerr = GERR_UNKNOWN_MEMBER;
        }
        char group[ID_MAX];
        strview(group, sizeof(group), gid);
        struct commit_op *op = commit_op_start(cp, c, pk);
        if (!op)
                return;
        struct kafka_val *rt = c->resp->root;
        const struct kafka_val *ta = kafka_val_array(rq, KAFKA_OFFSET_COMMIT_REQ_TOPICS);
        int32_t nt = ta->len < 0 ? 0 : ta->len;
        kafka_val_array_init(c->arena, rt, KAFKA_OFFSET_COMMIT_RESP_TOPICS, nt);
        const struct ctl_kafka_snap *s = ctl_kafka_snap_current();
        for (int32_t i = 0; i < nt; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                struct kafka_val *to =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_OFFSET_COMMIT_RESP_TOPICS), i);
                struct kafka_str name = kafka_val_get_str(t, KAFKA_OFFSET_COMMIT_REQ_TOPICS_NAME);
                kafka_val_set_str(to, KAFKA_OFFSET_COMMIT_RESP_TOPICS_NAME, name.ptr, name.len);
                const struct ctl_kafka_topic *tp =
                    name.len > 0
                        ? ctl_kafka_snap_find(s, (const char *)name.ptr, (uint32_t)name.len)
                        : NULL;
                const struct kafka_val *pa =
                    kafka_val_array(t, KAFKA_OFFSET_COMMIT_REQ_TOPICS_PARTITIONS);
                int32_t np = pa->len < 0 ? 0 : pa->len;
                kafka_val_array_init(c->arena, to, KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS, np);
                for (int32_t j = 0; j < np; j++) {
                        const struct kafka_val *pe = kafka_val_array_elem(pa, j);
                        struct kafka_val *po = kafka_val_array_elem(
                            kafka_val_array(to, KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS), j);
                        int32_t idx = kafka_val_get_int32(
                            pe, KAFKA_OFFSET_COMMIT_REQ_TOPICS_PARTITIONS_PARTITION_INDEX);
                        kafka_val_set_int32(
                            po, KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS_PARTITION_INDEX, idx);
                        int16_t err = gerr;
                        if (!err && (!tp || idx < 0 || (uint32_t)idx >= tp->nparts))
                                err = GERR_UNKNOWN_TOPIC;
                        if (!err) {
                                op->cbs++;
                                int rc = meta_offset_commit(
                                    ctl_kafka_meta(), group, tp->uuid, (uint32_t)idx,
                                    kafka_val_get_int64(
                                        pe,
                                        KAFKA_OFFSET_COMMIT_REQ_TOPICS_PARTITIONS_COMMITTED_OFFSET),
                                    commit_cb, op);
                                if (rc) {
                                        op->cbs--;
                                        err = GERR_UNKNOWN;
                                }
                        }
                        kafka_val_set_int16(
                            po, KAFKA_OFFSET_COMMIT_RESP_TOPICS_PARTITIONS_ERROR_CODE, err);
                }
        }
        commit_cb(op, 0);
}

static void offset_fetch(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk)
{
        const struct kafka_val *rq = c->req->root;
        char group[ID_MAX];
        strview(group, sizeof(group), kafka_val_get_str(rq, KAFKA_OFFSET_FETCH_REQ_GROUP_ID));
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        const struct kafka_val *ta = kafka_val_array(rq, KAFKA_OFFSET_FETCH_REQ_TOPICS);
        /* A null list means "every topic the group committed": the metadata
         * log has no per-group index yet, so that answers with none. */
        int32_t nt = ta->len < 0 ? 0 : ta->len;
        kafka_val_array_init(c->arena, rt, KAFKA_OFFSET_FETCH_RESP_TOPICS, nt);
        const struct ctl_kafka_snap *s = ctl_kafka_snap_current();
        for (int32_t i = 0; i < nt; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                struct kafka_val *to =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_OFFSET_FETCH_RESP_TOPICS), i);
                struct kafka_str name = kafka_val_get_str(t, KAFKA_OFFSET_FETCH_REQ_TOPICS_NAME);
                kafka_val_set_str(to, KAFKA_OFFSET_FETCH_RESP_TOPICS_NAME, name.ptr, name.len);
                const struct ctl_kafka_topic *tp =
                    name.len > 0
                        ? ctl_kafka_snap_find(s, (const char *)name.ptr, (uint32_t)name.len)
                        : NULL;
                const struct kafka_val *pa =
                    kafka_val_array(t, KAFKA_OFFSET_FETCH_REQ_TOPICS_PARTITION_INDEXES);
                int32_t np = pa->len < 0 ? 0 : pa->len;
                kafka_val_array_init(c->arena, to, KAFKA_OFFSET_FETCH_RESP_TOPICS_PARTITIONS, np);
                for (int32_t j = 0; j < np; j++) {
                        int32_t idx = (int32_t)kafka_val_array_elem(pa, j)->u.i64;
                        struct kafka_val *po = kafka_val_array_elem(
                            kafka_val_array(to, KAFKA_OFFSET_FETCH_RESP_TOPICS_PARTITIONS), j);
                        kafka_val_set_int32(
                            po, KAFKA_OFFSET_FETCH_RESP_TOPICS_PARTITIONS_PARTITION_INDEX, idx);
                        int64_t off = -1;
                        if (tp && idx >= 0)
                                meta_offset_get(ctl_kafka_meta(), group, tp->uuid, (uint32_t)idx,
                                                &off);
                        kafka_val_set_int64(
                            po, KAFKA_OFFSET_FETCH_RESP_TOPICS_PARTITIONS_COMMITTED_OFFSET, off);
                        kafka_val_set_str(po, KAFKA_OFFSET_FETCH_RESP_TOPICS_PARTITIONS_METADATA,
                                          (const uint8_t *)"", 0);
                }
        }
        reply(cp, &pk);
}

/* InitProducerId: ids come from a high-water mark in the metadata log,
 * reserved a block at a time so a burst of producers costs one record and
 * one fdatasync, and an id is answered only once a record covering it is
 * durable: after a crash ids start at the mark and are never issued twice.
 * Requests for ids inside the block whose record is on its way wait for
 * it (parked on the last reservation) instead of writing a record each. */
#define PRODUCER_ID_BLOCK 1000

/* next id to hand out; below durable: covered by a durable record; below
 * reserving: covered by a record on its way (the last one: pid_last) */
static int64_t producer_id_next = -1, producer_id_durable, producer_id_reserving;

struct pid_waiter {
        struct parked p;
        struct pid_waiter *next;
};

struct pid_op {
        int64_t hwm;
        struct pid_waiter *first, **last; /* answered when hwm is durable */
};

static struct pid_op *pid_last;

static void pid_fail(struct ctl_kafka_gcall *c)
{
        kafka_val_set_int16(c->resp->root, KAFKA_INIT_PRODUCER_ID_RESP_ERROR_CODE, GERR_UNKNOWN);
        kafka_val_set_int64(c->resp->root, KAFKA_INIT_PRODUCER_ID_RESP_PRODUCER_ID, -1);
        kafka_val_set_int16(c->resp->root, KAFKA_INIT_PRODUCER_ID_RESP_PRODUCER_EPOCH, -1);
}

static void pid_reserved(void *ctx, int res)
{
        struct pid_op *op = ctx;
        if (res == 0) {
                if (op->hwm > producer_id_durable)
                        producer_id_durable = op->hwm;
        } else {
                sl_log(SL_LOG_ERROR, "kafka: producer id reservation not durable: %s",
                       strerror(-res));
        }
        if (pid_last == op) {
                pid_last = NULL;
                /* a failed block is skipped, never reused: its ids may have
                 * been answered with errors only, but the next request
                 * reserves again past it */
                producer_id_reserving = SL_MAX(producer_id_durable, producer_id_next);
        }
        for (struct pid_waiter *w = op->first, *next; w; w = next) {
                next = w->next;
                if (res != 0)
                        pid_fail(w->p.call);
                reply(ctl_kafka_plane(), &w->p);
                free(w);
        }
        free(op);
        commits_pending--;
}

static void init_producer_id(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk)
{
        const struct kafka_val *rq = c->req->root;
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        struct meta_log *meta = ctl_kafka_meta();
        if (producer_id_next < 0)
                producer_id_next = producer_id_durable = producer_id_reserving =
                    meta_producer_id_hwm(meta);
        if (kafka_val_get_str(rq, KAFKA_INIT_PRODUCER_ID_REQ_TRANSACTIONAL_ID).len >= 0) {
                /* Transactions are not advertised. */
                kafka_val_set_int16(rt, KAFKA_INIT_PRODUCER_ID_RESP_ERROR_CODE, 53);
                kafka_val_set_int64(rt, KAFKA_INIT_PRODUCER_ID_RESP_PRODUCER_ID, -1);
                kafka_val_set_int16(rt, KAFKA_INIT_PRODUCER_ID_RESP_PRODUCER_EPOCH, -1);
                reply(cp, &pk);
                return;
        }
        /* Without a transactional id Kafka hands out a new id at epoch 0
         * every time, also when the client names its current id and epoch
         * (KIP-360's v3+ fields matter to transactional producers only). */
        int64_t id = producer_id_next++;
        kafka_val_set_int64(rt, KAFKA_INIT_PRODUCER_ID_RESP_PRODUCER_ID, id);
        kafka_val_set_int16(rt, KAFKA_INIT_PRODUCER_ID_RESP_PRODUCER_EPOCH, 0);
        if (id < producer_id_durable) {
                reply(cp, &pk);
                return;
        }
        struct pid_waiter *w = calloc(1, sizeof(*w));
        if (!w) {
                pid_fail(c);
                reply(cp, &pk);
                return;
        }
        w->p = pk;
        if (id < producer_id_reserving && pid_last) {
                /* Records are durable in order: the last one on its way
                 * covers this id. */
                *pid_last->last = w;
                pid_last->last = &w->next;
                return;
        }
        /* Past every reservation: the next block. */
        int64_t hwm = SL_MAX(meta_producer_id_hwm(meta), id + PRODUCER_ID_BLOCK);
        struct pid_op *op = calloc(1, sizeof(*op));
        if (!op || meta_producer_id_reserve(meta, hwm, pid_reserved, op) != 0) {
                free(op);
                free(w);
                pid_fail(c);
                reply(cp, &pk);
                return;
        }
        op->hwm = hwm;
        op->first = w;
        op->last = &w->next;
        pid_last = op;
        producer_id_reserving = hwm;
        commits_pending++;
}

/* DeleteGroups: an empty (or only remembered through its offsets) group
 * is dropped with its committed offsets, answered once the metadata record
 * is durable; a group with members is NON_EMPTY_GROUP, an unknown one
 * GROUP_ID_NOT_FOUND, as Kafka does. */
static void delete_groups(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk)
{
        const struct kafka_val *ga =
            kafka_val_array(c->req->root, KAFKA_DELETE_GROUPS_REQ_GROUPS_NAMES);
        int32_t n = ga->len < 0 ? 0 : ga->len;
        struct commit_op *op = commit_op_start(cp, c, pk);
        if (!op)
                return;
        struct kafka_val *rt = c->resp->root;
        kafka_val_array_init(c->arena, rt, KAFKA_DELETE_GROUPS_RESP_RESULTS, n);
        for (int32_t i = 0; i < n; i++) {
                const struct kafka_val *gv = kafka_val_array_elem(ga, i);
                struct kafka_str id = {gv->u.ptr, gv->len};
                struct kafka_val *e =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_DELETE_GROUPS_RESP_RESULTS), i);
                set_view(c, e, KAFKA_DELETE_GROUPS_RESP_RESULTS_GROUP_ID, id);
                char name[ID_MAX];
                int16_t err = 0;
                struct group *g = group_find(id, false);
                if (id.len <= 0 || id.len >= ID_MAX) {
                        err = GERR_INVALID_GROUP_ID;
                } else if (g && g->members) {
                        err = GERR_NON_EMPTY_GROUP;
                } else {
                        strview(name, sizeof(name), id);
                        if (!g && !meta_group_has_offsets(ctl_kafka_meta(), name)) {
                                err = GERR_GROUP_ID_NOT_FOUND;
                        } else {
                                if (g) {
                                        struct group **pp = &groups;
                                        while (*pp != g)
                                                pp = &(*pp)->next;
                                        *pp = g->next;
                                        free(g);
                                }
                                op->cbs++;
                                if (meta_group_delete(ctl_kafka_meta(), name, commit_cb, op)) {
                                        op->cbs--;
                                        err = GERR_UNKNOWN;
                                }
                        }
                }
                kafka_val_set_int16(e, KAFKA_DELETE_GROUPS_RESP_RESULTS_ERROR_CODE, err);
        }
        commit_cb(op, 0);
}

static const char *const state_names[] = {"Empty", "PreparingRebalance", "CompletingRebalance",
                                          "Stable"};

static void list_groups(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk)
{
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        int32_t n = 0;
        for (struct group *g = groups; g; g = g->next)
                n++;
        kafka_val_array_init(c->arena, rt, KAFKA_LIST_GROUPS_RESP_GROUPS, n);
        int32_t i = 0;
        for (struct group *g = groups; g; g = g->next, i++) {
                struct kafka_val *e =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_LIST_GROUPS_RESP_GROUPS), i);
                set_str(c, e, KAFKA_LIST_GROUPS_RESP_GROUPS_GROUP_ID, g->id);
                set_str(c, e, KAFKA_LIST_GROUPS_RESP_GROUPS_PROTOCOL_TYPE, g->proto_type);
                if (c->api_version >= 4)
                        set_str(c, e, KAFKA_LIST_GROUPS_RESP_GROUPS_GROUP_STATE,
                                state_names[g->state]);
        }
        reply(cp, &pk);
}

static void describe_groups(struct ctl_plane *cp, struct ctl_kafka_gcall *c, struct parked pk)
{
        const struct kafka_val *ga =
            kafka_val_array(c->req->root, KAFKA_DESCRIBE_GROUPS_REQ_GROUPS);
        int32_t n = ga->len < 0 ? 0 : ga->len;
        resp_init(c);
        struct kafka_val *rt = c->resp->root;
        kafka_val_array_init(c->arena, rt, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS, n);
        for (int32_t i = 0; i < n; i++) {
                const struct kafka_val *gv = kafka_val_array_elem(ga, i);
                struct kafka_str id = {gv->u.ptr, gv->len};
                struct kafka_val *e =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS), i);
                set_view(c, e, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_GROUP_ID, id);
                struct group *g = group_find(id, false);
                /* An unknown group is described as Dead, as Kafka does. */
                set_str(c, e, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_GROUP_STATE,
                        g ? state_names[g->state] : "Dead");
                set_str(c, e, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_PROTOCOL_TYPE,
                        g ? g->proto_type : "");
                set_str(c, e, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_PROTOCOL_DATA, g ? g->proto : "");
                int32_t nm = g ? (int32_t)member_count(g) : 0;
                kafka_val_array_init(c->arena, e, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS, nm);
                int32_t j = 0;
                for (struct member *m = g ? g->members : NULL; m; m = m->next, j++) {
                        struct kafka_val *me = kafka_val_array_elem(
                            kafka_val_array(e, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS), j);
                        set_str(c, me, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS_MEMBER_ID, m->id);
                        if (c->api_version >= 4 && m->instance[0])
                                set_str(c, me,
                                        KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS_GROUP_INSTANCE_ID,
                                        m->instance);
                        set_str(c, me, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS_CLIENT_ID,
                                m->client_id);
                        set_str(c, me, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS_CLIENT_HOST, "");
                        const uint8_t *meta = NULL;
                        int32_t ml = 0;
                        for (uint32_t k = 0; k < m->nprotos; k++)
                                if (strcmp(m->proto_name[k], g->proto) == 0) {
                                        meta = m->proto_meta[k];
                                        ml = m->proto_len[k];
                                }
                        kafka_val_set_str(me,
                                          KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS_MEMBER_METADATA,
                                          arena_copy(c, meta, (size_t)ml), ml);
                        kafka_val_set_str(
                            me, KAFKA_DESCRIBE_GROUPS_RESP_GROUPS_MEMBERS_MEMBER_ASSIGNMENT,
                            arena_copy(c, m->assign, (size_t)m->assign_len), m->assign_len);
                }
        }
        reply(cp, &pk);
}

void ctl_kafka_group_call(struct ctl_plane *cp, const struct sl_msg *m, uint64_t now_ms)
{
        struct ctl_kafka_gcall *c = m->a.ptr[0];
        struct parked pk = {.call = c, .ep = m->src, .cookie = m->cookie};
        switch (c->api_key) {
        case KAFKA_API_JOIN_GROUP:
                join_group(cp, c, pk, now_ms);
                break;
        case KAFKA_API_SYNC_GROUP:
                sync_group(cp, c, pk, now_ms);
                break;
        case KAFKA_API_HEARTBEAT:
                heartbeat(cp, c, pk, now_ms);
                break;
        case KAFKA_API_LEAVE_GROUP:
                leave_group(cp, c, pk, now_ms);
                break;
        case KAFKA_API_OFFSET_COMMIT:
                offset_commit(cp, c, pk);
                break;
        case KAFKA_API_OFFSET_FETCH:
                offset_fetch(cp, c, pk);
                break;
        case KAFKA_API_LIST_GROUPS:
                list_groups(cp, c, pk);
                break;
        case KAFKA_API_INIT_PRODUCER_ID:
                init_producer_id(cp, c, pk);
                break;
        case KAFKA_API_DESCRIBE_GROUPS:
                describe_groups(cp, c, pk);
                break;
        case KAFKA_API_DELETE_GROUPS:
                delete_groups(cp, c, pk);
                break;
        case KAFKA_API_CREATE_PARTITIONS:
                ctl_kafka_create_partitions(cp, c, pk.ep, pk.cookie);
                break;
        default:
                reply(cp, &pk); /* no response built: the worker closes */
        }
}

void ctl_kafka_group_poll(struct ctl_plane *cp, uint64_t now_ms)
{
        for (struct group *g = groups; g; g = g->next) {
        again:
                for (struct member *m = g->members; m; m = m->next) {
                        /* A member parked in JoinGroup is bounded by the
                         * rebalance deadline instead of its session. */
                        if (!m->join.call && now_ms > m->last_hb_ms + (uint64_t)m->session_ms) {
                                sl_log(SL_LOG_INFO, "kafka: group %s: member %s session expired",
                                       g->id, m->id);
                                leave_one(cp, g, m, now_ms); /* may remove others */
                                goto again;
                        }
                }
                if (g->state == G_PREPARING && now_ms >= g->deadline_ms)
                        rebalance_complete(cp, g);
        }
}

bool ctl_kafka_group_busy(void)
{
        return commits_pending != 0;
}

void ctl_kafka_group_fini(void)
{
        while (groups) {
                struct group *g = groups;
                groups = g->next;
                while (g->members) {
                        struct member *m = g->members;
                        g->members = m->next;
                        member_protos_free(m);
                        free(m->assign);
                        free(m);
                }
                free(g);
        }
}
