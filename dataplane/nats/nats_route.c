/* Routing of NATS messages between workers. Each worker keeps two indexes:
 * `local` (its own connections' subscriptions) and `remote` (the interest
 * of every other worker, as refcounted (worker, subject, queue) entries).
 * A publish is matched against both on the publisher's worker: local
 * subscribers get it at once; each other worker with interest gets one
 * record in a per-destination batch buffer that crosses the ring once per
 * loop iteration. A queue group picks one member over all workers: a local
 * member directly, or a worker, which then picks a local member and bounces
 * the message on if it has none left. Interest changes are requests to
 * every other worker; their acknowledgements form the barrier PONG waits
 * for. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nats_internal.h"
#include "sl_log.h"

/* A remote worker's interest in (subject, queue). */
struct nats_rsub {
        struct nats_sub entry;
        struct nats_rsub *hnext;
        uint64_t hash;
        uint16_t worker;
        uint32_t refs;
        uint16_t subject_len, queue_len;
        uint8_t key[]; /* subject then queue */
};

/* One forwarded message in a batch buffer. */
struct nats_fwd {
        uint32_t len; /* whole record, 8-byte aligned */
        uint16_t subject_len, reply_len;
        uint32_t hdr_len, total_len;
        uint8_t flags;
        uint8_t hops;
        uint8_t nqueues;
        uint8_t pad;
        /* subject, reply, then per queue: u16 length + name, then payload */
};

#define FWD_PLAIN        1   /* deliver to the worker's plain subscriptions */
#define FWD_QUEUES_MAX   32  /* queue groups one record may name */
#define FWD_ASSIGNED_MAX 256 /* groups of one message sent to other workers */

static uint64_t rng_next(struct nats_worker *nw)
{
        uint64_t x = nw->rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return nw->rng = x;
}

static uint64_t key_hash(uint16_t worker, const uint8_t *s, size_t n, const uint8_t *q, size_t qn)
{
        uint64_t h = 1469598103934665603ull ^ worker;
        for (size_t i = 0; i < n; i++)
                h = (h ^ s[i]) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
        for (size_t i = 0; i < qn; i++)
                h = (h ^ q[i]) * 1099511628211ull;
        return h;
}

/* ---- setup ---------------------------------------------------------------- */

int nats_route_init(struct sl_worker *w)
{
        struct nats_worker *nw = calloc(1, sizeof(*nw));
        if (!nw)
                return -ENOMEM;
        nw->w = w;
        nw->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)w->id << 32) ^ sl_time_ns();
        nw->rtable_mask = 1023;
        nw->rtable = calloc(nw->rtable_mask + 1, sizeof(*nw->rtable));
        if (!nw->rtable || nats_sublist_init(&nw->local, true) ||
            nats_sublist_init(&nw->remote, true)) {
                free(nw->rtable);
                free(nw);
                return -ENOMEM;
        }
        w->proto_ctx[CTL_PROTO_NATS] = nw;
        return sl_worker_add_poller(w, nats_route_poll, nw);
}

void nats_route_fini(struct sl_worker *w)
{
        struct nats_worker *nw = nats_worker_of(w);
        if (!nw)
                return;
        for (uint32_t i = 0; i <= nw->rtable_mask; i++)
                for (struct nats_rsub *r = nw->rtable[i], *n; r; r = n) {
                        n = r->hnext;
                        free(r);
                }
        for (uint16_t d = 0; d < w->nworkers; d++)
                for (struct nats_change *c = nw->pending_head[d], *n; c; c = n) {
                        n = c->next_pending[d];
                        if (--c->acks_left == 0)
                                free(c);
                }
        free(nw->rtable);
        nats_sublist_fini(&nw->local);
        nats_sublist_fini(&nw->remote);
        free(nw);
        w->proto_ctx[CTL_PROTO_NATS] = NULL;
}

/* ---- interest ------------------------------------------------------------- */

static void pending_pump(struct nats_worker *nw)
{
        struct sl_worker *w = nw->w;
        for (uint16_t d = 0; d < w->nworkers; d++) {
                while (nw->pending_head[d]) {
                        struct nats_change *ch = nw->pending_head[d];
                        struct sl_msg m = {.type = NATS_MSG_INTEREST};
                        m.a.ptr[0] = ch;
                        if (sl_mbox_request(&w->mb, d, &m) != 0)
                                break;
                        nw->pending_head[d] = ch->next_pending[d];
                        if (!nw->pending_head[d])
                                nw->pending_tail[d] = NULL;
                        nw->pending--;
                }
        }
}

bool nats_route_ready(struct nats_worker *nw)
{
        struct sl_worker *w = nw->w;
        if (nw->pending >= NATS_PENDING_MAX || !sl_buf_available(&w->pool, SL_BUF_CHUNK) ||
            !sl_buf_available(&w->pool, SL_BUF_LARGE))
                return false;
        for (uint16_t d = 0; d < w->nworkers; d++)
                if (d != w->id && !sl_mbox_can_send(&w->mb, d, 2))
                        return false;
        return true;
}

int nats_route_interest(struct nats_worker *nw, struct sl_conn *c, const struct nats_lsub *s,
                        int delta, bool barrier)
{
        struct sl_worker *w = nw->w;
        if (w->nworkers == 1)
                return 0;
        size_t n = (size_t)s->subject_len + s->queue_len;
        struct nats_change *ch = malloc(sizeof(*ch) + n);
        if (!ch)
                return -ENOMEM;
        memset(ch, 0, sizeof(*ch));
        ch->delta = (int16_t)delta;
        ch->subject_len = s->subject_len;
        ch->queue_len = s->queue_len;
        memcpy(ch->data, s->subject, n);
        ch->acks_left = (uint16_t)(w->nworkers - 1);
        if (barrier && c) {
                ch->conn_id = c->id;
                ch->conn_slot = c->slot;
                ch->conn_gen = c->gen;
                struct nats_conn *nc = c->proto_state;
                nc->acks_outstanding++;
        }
        for (uint16_t d = 0; d < w->nworkers; d++) {
                if (d == w->id)
                        continue;
                if (nw->pending_tail[d])
                        nw->pending_tail[d]->next_pending[d] = ch;
                else
                        nw->pending_head[d] = ch;
                nw->pending_tail[d] = ch;
                nw->pending++;
        }
        pending_pump(nw);
        return 0;
}

static struct nats_rsub **rtable_find(struct nats_worker *nw, uint16_t worker, const uint8_t *s,
                                      size_t n, const uint8_t *q, size_t qn, uint64_t h)
{
        struct nats_rsub **pp = &nw->rtable[h & nw->rtable_mask];
        for (; *pp; pp = &(*pp)->hnext) {
                struct nats_rsub *r = *pp;
                if (r->hash == h && r->worker == worker && r->subject_len == n &&
                    r->queue_len == qn && memcmp(r->key, s, n) == 0 &&
                    memcmp(r->key + n, q, qn) == 0)
                        return pp;
        }
        return pp;
}

static void rtable_grow(struct nats_worker *nw)
{
        uint32_t mask = nw->rtable_mask * 2 + 1;
        struct nats_rsub **t = calloc(mask + 1, sizeof(*t));
        if (!t)
                return; /* keep the smaller table: longer chains, still correct */
        for (uint32_t i = 0; i <= nw->rtable_mask; i++)
                for (struct nats_rsub *r = nw->rtable[i], *n; r; r = n) {
                        n = r->hnext;
                        r->hnext = t[r->hash & mask];
                        t[r->hash & mask] = r;
                }
        free(nw->rtable);
        nw->rtable = t;
        nw->rtable_mask = mask;
}

/* Applies another worker's interest change to the remote index. */
static void interest_apply(struct nats_worker *nw, uint16_t from, const struct nats_change *ch)
{
        const uint8_t *s = ch->data, *q = ch->data + ch->subject_len;
        uint64_t h = key_hash(from, s, ch->subject_len, q, ch->queue_len);
        struct nats_rsub **pp = rtable_find(nw, from, s, ch->subject_len, q, ch->queue_len, h);
        struct nats_rsub *r = *pp;
        if (ch->delta > 0) {
                if (r) {
                        r->refs++;
                        return;
                }
                size_t n = (size_t)ch->subject_len + ch->queue_len;
                r = calloc(1, sizeof(*r) + n);
                if (!r) {
                        SL_ERR("nats: out of memory for remote interest; messages to worker %u may "
                               "be lost",
                               from);
                        return;
                }
                r->hash = h;
                r->worker = from;
                r->refs = 1;
                r->subject_len = ch->subject_len;
                r->queue_len = ch->queue_len;
                memcpy(r->key, ch->data, n);
                if (nats_sublist_insert(&nw->remote, &r->entry, r->key, r->subject_len,
                                        r->key + r->subject_len, r->queue_len) != 0) {
                        free(r);
                        return;
                }
                *pp = r;
                if (++nw->rcount > nw->rtable_mask)
                        rtable_grow(nw);
        } else if (r && --r->refs == 0) {
                *pp = r->hnext;
                nats_sublist_remove(&nw->remote, &r->entry);
                free(r);
                nw->rcount--;
        }
}

static void interest_acked(struct nats_worker *nw, struct nats_change *ch)
{
        struct sl_worker *w = nw->w;
        if (--ch->acks_left)
                return;
        if (ch->conn_id && ch->conn_slot < w->conns_max) {
                struct sl_conn *c = &w->conns[ch->conn_slot];
                if (c->gen == ch->conn_gen && c->id == ch->conn_id && c->state == SL_CONN_OPEN)
                        nats_conn_barrier_ack(c);
        }
        free(ch);
}

/* ---- forwarding ----------------------------------------------------------- */

static bool batch_send(struct nats_worker *nw, uint16_t d)
{
        struct sl_buf *b = nw->batch[d];
        if (!b)
                return true;
        struct sl_msg m = {.type = NATS_MSG_BATCH};
        m.a.ptr[0] = b;
        if (sl_mbox_send(&nw->w->mb, d, &m) != 0)
                return false;
        nw->batch[d] = NULL;
        return true;
}

/* Room for a record of `need` bytes for worker d, or NULL (counted). */
static uint8_t *batch_room(struct nats_worker *nw, uint16_t d, uint32_t need)
{
        struct sl_worker *w = nw->w;
        struct sl_buf *b = nw->batch[d];
        if (b && b->cap - b->len >= need)
                return b->data + b->len;
        if (b && !batch_send(nw, d))
                return NULL;
        enum sl_buf_class cls = need <= w->pool.bytes[SL_BUF_CHUNK] ? SL_BUF_CHUNK : SL_BUF_LARGE;
        if (need > w->pool.bytes[cls])
                return NULL;
        b = sl_buf_alloc(&w->pool, cls);
        if (!b)
                return NULL;
        nw->batch[d] = b;
        return b->data;
}

struct fwd_queue {
        const uint8_t *name;
        uint16_t len;
};

static bool fwd_append(struct nats_worker *nw, uint16_t d, uint8_t flags, uint8_t hops,
                       const uint8_t *subject, uint32_t subject_len, const uint8_t *reply,
                       uint32_t reply_len, const struct fwd_queue *qs, uint32_t nq,
                       const uint8_t *payload, uint32_t hdr_len, uint32_t total_len)
{
        uint32_t need = sizeof(struct nats_fwd) + subject_len + reply_len + total_len;
        for (uint32_t i = 0; i < nq; i++)
                need += 2 + qs[i].len;
        need = SL_ALIGN_UP(need, 8u);
        uint8_t *p = batch_room(nw, d, need);
        if (!p) {
                sl_counter_add(&nw->dropped_no_member, 1);
                return false;
        }
        struct nats_fwd *f = (struct nats_fwd *)p;
        *f = (struct nats_fwd){.len = need,
                               .subject_len = (uint16_t)subject_len,
                               .reply_len = (uint16_t)reply_len,
                               .hdr_len = hdr_len,
                               .total_len = total_len,
                               .flags = flags,
                               .hops = hops,
                               .nqueues = (uint8_t)nq};
        uint8_t *at = p + sizeof(*f);
        memcpy(at, subject, subject_len);
        at += subject_len;
        sl_copy(at, reply, reply_len);
        at += reply_len;
        for (uint32_t i = 0; i < nq; i++) {
                memcpy(at, &qs[i].len, 2);
                sl_copy(at + 2, qs[i].name, qs[i].len);
                at += 2 + qs[i].len;
        }
        sl_copy(at, payload, total_len);
        nw->batch[d]->len += need;
        sl_counter_add(&nw->forwarded, 1);
        return true;
}

static void match_init(struct nats_match *m, struct nats_sub **subs, struct nats_match_part *parts,
                       struct nats_match_group *groups)
{
        memset(m, 0, sizeof(*m));
        m->subs = subs;
        m->subs_cap = 1024;
        m->parts = parts;
        m->parts_cap = 256;
        m->groups = groups;
        m->groups_cap = 128;
}

static const struct nats_match_group *group_by_name(const struct nats_match *m, const uint8_t *name,
                                                    uint32_t len)
{
        for (uint32_t i = 0; i < m->ngroups; i++)
                if (m->groups[i].name_len == len && memcmp(m->groups[i].name, name, len) == 0)
                        return &m->groups[i];
        return NULL;
}

/* Local members of g that may receive from publisher c (echo rule). */
static struct nats_lsub *group_pick_local(struct nats_worker *nw, const struct nats_match *m,
                                          const struct nats_match_group *g,
                                          struct sl_conn *publisher, bool echo)
{
        if (!g || g->nmembers == 0)
                return NULL;
        uint32_t start = (uint32_t)(rng_next(nw) % g->nmembers);
        for (uint32_t k = 0; k < g->nmembers; k++) {
                struct nats_sub *e = nats_match_group_member(m, g, (start + k) % g->nmembers);
                struct nats_lsub *s = SL_CONTAINER_OF(e, struct nats_lsub, entry);
                if (!echo && s->conn == publisher)
                        continue;
                return s;
        }
        return NULL;
}

/* Remote weight of g: members over all other workers (optionally one
 * excluded); picks a worker by weight when pick != NULL. */
static uint32_t group_remote(struct nats_worker *nw, const struct nats_match *r,
                             const struct nats_match_group *g, int exclude, uint64_t ticket,
                             uint16_t *pick)
{
        if (!g)
                return 0;
        uint32_t total = 0;
        for (uint32_t i = 0; i < g->nmembers; i++) {
                struct nats_rsub *rs =
                    SL_CONTAINER_OF(nats_match_group_member(r, g, i), struct nats_rsub, entry);
                if ((int)rs->worker != exclude)
                        total += rs->refs;
        }
        if (!pick || total == 0)
                return total;
        uint64_t t = ticket % total;
        for (uint32_t i = 0; i < g->nmembers; i++) {
                struct nats_rsub *rs =
                    SL_CONTAINER_OF(nats_match_group_member(r, g, i), struct nats_rsub, entry);
                if ((int)rs->worker == exclude)
                        continue;
                if (t < rs->refs) {
                        *pick = rs->worker;
                        break;
                }
                t -= rs->refs;
        }
        (void)nw;
        return total;
}

/* Expired auto-unsubscribes found while delivering: removed after the
 * match result is no longer in use. */
struct expired {
        struct nats_lsub *s[1024];
        uint32_t n;
};

static void deliver_one(struct nats_worker *nw, struct nats_lsub *s, struct expired *ex,
                        const uint8_t *subject, uint32_t subject_len, const uint8_t *reply,
                        uint32_t reply_len, const uint8_t *payload, uint32_t hdr_len,
                        uint32_t total_len)
{
        if (s->max_msgs >= 0 && s->delivered >= (uint64_t)s->max_msgs)
                return; /* already used up, removal pending */
        if (!nats_deliver(nw, s, subject, subject_len, reply, reply_len, payload, hdr_len,
                          total_len))
                return;
        s->delivered++;
        if (s->max_msgs >= 0 && s->delivered >= (uint64_t)s->max_msgs && ex->n < 1024)
                ex->s[ex->n++] = s;
}

void nats_lsub_remove(struct sl_conn *c, struct nats_lsub *s, bool barrier);

static void expired_remove(struct expired *ex)
{
        for (uint32_t i = 0; i < ex->n; i++)
                nats_lsub_remove(ex->s[i]->conn, ex->s[i], false);
        ex->n = 0;
}

uint32_t nats_route_publish(struct nats_worker *nw, struct sl_conn *c, const struct nats_op *op)
{
        struct sl_worker *w = nw->w;
        struct nats_conn *nc = c->proto_state;
        const uint8_t *subject = op->subject.ptr, *reply = op->reply.ptr;
        uint32_t subject_len = (uint32_t)op->subject.len, reply_len = (uint32_t)op->reply.len;
        const uint8_t *payload = op->payload.ptr;
        uint32_t hdr_len = op->type == NATS_OP_HPUB ? op->hdr_len : 0, total = op->total_len;
        uint32_t reached = 0;
        static __thread struct expired ex;
        ex.n = 0;

        struct nats_match m, r;
        match_init(&m, nw->m_subs, nw->m_parts, nw->m_groups);
        nats_sublist_match(&nw->local, subject, subject_len, &m);
        for (uint32_t i = 0; i < m.nsubs; i++) {
                struct nats_lsub *s = SL_CONTAINER_OF(m.subs[i], struct nats_lsub, entry);
                if (!nc->echo && s->conn == c)
                        continue;
                deliver_one(nw, s, &ex, subject, subject_len, reply, reply_len, payload, hdr_len,
                            total);
                reached++;
        }

        uint64_t plain_mask = 0;
        /* Queue groups assigned to other workers: (worker, group) pairs,
         * gathered per destination when its record is written. */
        struct {
                uint16_t worker;
                struct fwd_queue q;
        } assigned[FWD_ASSIGNED_MAX];
        uint32_t nassigned = 0;
        uint64_t queue_mask = 0;
        if (w->nworkers > 1) {
                match_init(&r, nw->r_subs, nw->r_parts, nw->r_groups);
                nats_sublist_match(&nw->remote, subject, subject_len, &r);
                for (uint32_t i = 0; i < r.nsubs; i++) {
                        struct nats_rsub *rs = SL_CONTAINER_OF(r.subs[i], struct nats_rsub, entry);
                        plain_mask |= 1ull << rs->worker;
                }
        } else {
                memset(&r, 0, sizeof(r));
        }

        /* Queue groups: local ones (with any remote members of the same name),
         * then groups that only other workers have. */
        for (uint32_t pass = 0; pass < 2; pass++) {
                const struct nats_match *src = pass == 0 ? &m : &r;
                for (uint32_t i = 0; i < src->ngroups; i++) {
                        const struct nats_match_group *g = &src->groups[i];
                        const struct nats_match_group *lg =
                            pass == 0 ? g : group_by_name(&m, g->name, g->name_len);
                        if (pass == 1 && lg)
                                continue; /* handled in pass 0 */
                        const struct nats_match_group *rg =
                            pass == 0 ? group_by_name(&r, g->name, g->name_len) : g;
                        struct nats_lsub *mine = group_pick_local(nw, &m, lg, c, nc->echo);
                        uint32_t local_n = mine ? lg->nmembers : 0;
                        uint32_t remote_n = group_remote(nw, &r, rg, -1, 0, NULL);
                        if (local_n + remote_n == 0)
                                continue;
                        uint64_t t = rng_next(nw) % (local_n + remote_n);
                        reached++;
                        if (t < local_n) {
                                deliver_one(nw, mine, &ex, subject, subject_len, reply, reply_len,
                                            payload, hdr_len, total);
                                continue;
                        }
                        uint16_t to = 0;
                        group_remote(nw, &r, rg, -1, t - local_n, &to);
                        queue_mask |= 1ull << to;
                        if (nassigned < FWD_ASSIGNED_MAX) {
                                assigned[nassigned].worker = to;
                                assigned[nassigned].q =
                                    (struct fwd_queue){g->name, (uint16_t)g->name_len};
                                nassigned++;
                        }
                }
        }
        uint64_t dests = plain_mask | queue_mask;
        while (dests) {
                uint16_t d = (uint16_t)__builtin_ctzll(dests);
                dests &= dests - 1;
                bool plain = plain_mask & (1ull << d);
                struct fwd_queue qs[FWD_QUEUES_MAX];
                uint32_t nq = 0;
                for (uint32_t i = 0; i < nassigned && nq < FWD_QUEUES_MAX; i++)
                        if (assigned[i].worker == d)
                                qs[nq++] = assigned[i].q;
                fwd_append(nw, d, plain ? FWD_PLAIN : 0, 0, subject, subject_len, reply, reply_len,
                           qs, nq, payload, hdr_len, total);
                if (plain)
                        reached++;
        }
        expired_remove(&ex);
        return reached;
}

/* A batch from another worker: deliver each record locally; queue groups
 * with no local member left are bounced to another worker. */
static void batch_deliver(struct nats_worker *nw, struct sl_buf *b)
{
        struct sl_worker *w = nw->w;
        static __thread struct expired ex;
        ex.n = 0;
        uint32_t off = 0;
        while (off + sizeof(struct nats_fwd) <= b->len) {
                const struct nats_fwd *f = (const struct nats_fwd *)(b->data + off);
                SL_ASSERT(f->len >= sizeof(*f) && off + f->len <= b->len);
                const uint8_t *at = (const uint8_t *)(f + 1);
                const uint8_t *subject = at, *reply = at + f->subject_len;
                at = reply + f->reply_len;
                struct fwd_queue qs[FWD_QUEUES_MAX];
                for (uint32_t i = 0; i < f->nqueues; i++) {
                        memcpy(&qs[i].len, at, 2);
                        qs[i].name = at + 2;
                        at += 2 + qs[i].len;
                }
                const uint8_t *payload = at;
                struct nats_match m;
                match_init(&m, nw->m_subs, nw->m_parts, nw->m_groups);
                nats_sublist_match(&nw->local, subject, f->subject_len, &m);
                if (f->flags & FWD_PLAIN)
                        for (uint32_t i = 0; i < m.nsubs; i++)
                                deliver_one(nw, SL_CONTAINER_OF(m.subs[i], struct nats_lsub, entry),
                                            &ex, subject, f->subject_len, reply, f->reply_len,
                                            payload, f->hdr_len, f->total_len);
                for (uint32_t i = 0; i < f->nqueues; i++) {
                        const struct nats_match_group *g = group_by_name(&m, qs[i].name, qs[i].len);
                        struct nats_lsub *s = group_pick_local(nw, &m, g, NULL, true);
                        if (s) {
                                deliver_one(nw, s, &ex, subject, f->subject_len, reply,
                                            f->reply_len, payload, f->hdr_len, f->total_len);
                                continue;
                        }
                        /* No member here any more: pass it on, a bounded number
                         * of times. */
                        struct nats_match r;
                        match_init(&r, nw->r_subs, nw->r_parts, nw->r_groups);
                        nats_sublist_match(&nw->remote, subject, f->subject_len, &r);
                        const struct nats_match_group *rg =
                            group_by_name(&r, qs[i].name, qs[i].len);
                        uint16_t to = 0;
                        if (f->hops + 1u < w->nworkers &&
                            group_remote(nw, &r, rg, -1, rng_next(nw), &to) > 0) {
                                sl_counter_add(&nw->bounced, 1);
                                fwd_append(nw, to, 0, (uint8_t)(f->hops + 1), subject,
                                           f->subject_len, reply, f->reply_len, &qs[i], 1, payload,
                                           f->hdr_len, f->total_len);
                        } else {
                                sl_counter_add(&nw->dropped_no_member, 1);
                        }
                }
                off += f->len;
        }
        expired_remove(&ex);
}

void nats_route_msg(struct sl_worker *w, const struct sl_msg *m)
{
        struct nats_worker *nw = nats_worker_of(w);
        switch (m->type) {
        case NATS_MSG_INTEREST:
                if (m->flags & SL_MSG_F_REPLY) {
                        interest_acked(nw, m->a.ptr[0]);
                        pending_pump(nw);
                } else {
                        interest_apply(nw, m->src, m->a.ptr[0]);
                        struct sl_msg r = *m;
                        sl_mbox_reply(&w->mb, m->src, &r);
                }
                return;
        case NATS_MSG_BATCH: {
                struct sl_buf *b = m->a.ptr[0];
                batch_deliver(nw, b);
                sl_worker_buf_put(w, b);
                return;
        }
        default:
                SL_WARN("nats: unknown message type %u", m->type);
        }
}

/* End of each loop iteration: the open batches go out. */
uint32_t nats_route_poll(struct sl_worker *w, void *arg)
{
        struct nats_worker *nw = arg;
        uint32_t n = 0;
        for (uint16_t d = 0; d < w->nworkers; d++)
                if (nw->batch[d] && batch_send(nw, d))
                        n++;
        if (nw->pending)
                pending_pump(nw);
        return n;
}
