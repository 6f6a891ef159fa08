/* The routing table every worker holds a replica of: exchanges, bindings,
 * the queue directory, routing a publish (direct/fanout/topic/headers,
 * exchange-to-exchange), and the changes to it that arrive through the
 * control thread's sequencer (control/ctl_amqp.h). */

#include "amqp_internal.h"

/* ---- broker: exchanges, queues, routing ---------------------------------- */

struct amqp_exchange *amqp_ex_find(struct amqp_worker *aw, struct amqp_bytes name)
{
        for (struct amqp_exchange *e = aw->exchanges; e; e = e->next)
                if (name_eq(&e->name, name))
                        return e;
        return NULL;
}

struct amqp_qref *amqp_qref_find(struct amqp_worker *aw, struct amqp_bytes name)
{
        for (struct amqp_qref *r = aw->qrefs; r; r = r->next)
                if (name_eq(&r->name, name))
                        return r;
        return NULL;
}

struct amqp_qref *amqp_qref_by_qid(struct amqp_worker *aw, uint64_t qid)
{
        for (struct amqp_qref *r = aw->qrefs; r; r = r->next)
                if (r->qid == qid)
                        return r;
        return NULL;
}

/* A queue living here, by id (forwarded publishes name their queue so). */
struct amqp_queue *amqp_queue_by_qid(struct amqp_worker *aw, uint64_t qid)
{
        if (aw->qid_cache && aw->qid_cache->qid == qid)
                return aw->qid_cache;
        for (struct amqp_queue *q = aw->queues; q; q = q->next)
                if (q->qid == qid)
                        return aw->qid_cache = q;
        return NULL;
}

bool amqp_qref_local(struct amqp_worker *aw, const struct amqp_qref *r)
{
        return r->worker == aw->w->id;
}

struct amqp_exchange *amqp_ex_add(struct amqp_worker *aw, struct amqp_bytes name, uint8_t type)
{
        struct amqp_exchange *e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        name_set(&e->name, name);
        e->type = type;
        e->next = aw->exchanges;
        aw->exchanges = e;
        return e;
}

/* Topic match: words split by '.', '*' = one word, '#' = zero or more. */
static bool topic_match(const uint8_t *p, size_t pn, const uint8_t *k, size_t kn)
{
        if (pn == 0)
                return kn == 0;
        size_t pw = 0;
        while (pw < pn && p[pw] != '.')
                pw++;
        const uint8_t *prest = pw < pn ? p + pw + 1 : p + pn;
        size_t prn = pw < pn ? pn - pw - 1 : 0;
        bool plast = pw >= pn;
        if (pw == 1 && p[0] == '#') {
                if (plast)
                        return true;
                /* '#' eats zero words, or one word and tries again */
                if (topic_match(prest, prn, k, kn))
                        return true;
                size_t kw = 0;
                while (kw < kn && k[kw] != '.')
                        kw++;
                if (kw >= kn)
                        return false;
                return topic_match(p, pn, k + kw + 1, kn - kw - 1);
        }
        if (kn == 0)
                return false;
        size_t kw = 0;
        while (kw < kn && k[kw] != '.')
                kw++;
        bool klast = kw >= kn;
        if (!(pw == 1 && p[0] == '*') && (pw != kw || memcmp(p, k, pw) != 0))
                return false;
        if (plast || klast) {
                if (plast && klast)
                        return true;
                if (klast) /* pattern continues: only '#' words may match nothing */
                        return prn == 1 && prest[0] == '#';
                return false;
        }
        return topic_match(prest, prn, k + kw + 1, kn - kw - 1);
}

static uint8_t msg_level(const struct amqp_queue *q, const struct amqp_msg *m)
{
        return m->priority > q->qa.max_prio ? (uint8_t)q->qa.max_prio : m->priority;
}

/* Into a priority queue: at the end of its level, or (front: requeued) at
 * its start. */
static void queue_insert_prio(struct amqp_queue *q, struct amqp_msg *m, bool front)
{
        uint8_t p = msg_level(q, m);
        struct amqp_msg *after = NULL;
        for (int k = front ? p + 1 : p; k <= q->qa.max_prio && !after; k++)
                after = q->ptail[k]; /* the last message of a level >= the one we need */
        if (!after) {
                m->next = q->head;
                q->head = m;
                if (!q->tail)
                        q->tail = m;
        } else {
                m->next = after->next;
                after->next = m;
                if (q->tail == after)
                        q->tail = m;
        }
        if (!front || !q->ptail[p])
                q->ptail[p] = m;
        q->bytes += m->body_len;
        q->count++;
}

void amqp_queue_push(struct amqp_queue *q, struct amqp_msg *m)
{
        if (q->ptail) {
                queue_insert_prio(q, m, false);
                return;
        }
        q->bytes += m->body_len;
        amqp_list_append(&q->head, &q->tail, m);
        q->count++;
}

void amqp_queue_push_front(struct amqp_queue *q, struct amqp_msg *m)
{
        if (q->ptail) {
                queue_insert_prio(q, m, true);
                return;
        }
        q->bytes += m->body_len;
        m->next = q->head;
        q->head = m;
        if (!q->tail)
                q->tail = m;
        q->count++;
}

struct amqp_msg *amqp_queue_pop(struct amqp_queue *q)
{
        struct amqp_msg *m = q->head;
        if (!m)
                return NULL;
        q->head = m->next;
        if (!q->head)
                q->tail = NULL;
        if (q->ptail && q->ptail[msg_level(q, m)] == m)
                q->ptail[msg_level(q, m)] = NULL; /* it was the last of its level */
        q->count--;
        q->bytes -= m->body_len;
        m->next = NULL;
        return m;
}

static size_t msg_size(const struct amqp_msg *m)
{
        return sizeof(*m) + m->ex_len + m->rk_len + m->hdr_len + m->body_len;
}

struct amqp_route {
        /* the message's headers table, decoded at the first headers
         * exchange only (off the path of every other publish) */
        const struct amqp_msg *m;
        bool headers_known;
        struct amqp_bytes headers;
        struct amqp_qref *q[AMQP_ROUTE_QUEUES_MAX];
        uint32_t nq;
        struct amqp_exchange *seen[AMQP_ROUTE_EXCHANGES_MAX];
        uint32_t nseen;
};

/* Collects the queues e routes rk to, following exchange-to-exchange
 * bindings; an exchange is visited once (cycles), a queue listed once. */

/* Header values compare by value: integers whatever their width, strings
 * and tables by bytes, void (a binding's 'V') by presence. */
static bool field_matches(const struct amqp_field *want, const struct amqp_field *have)
{
        int64_t x, y;
        if (want->tag == 'V')
                return true;
        if (amqp_field_int(want, &x) && amqp_field_int(have, &y))
                return x == y;
        if (want->tag != have->tag)
                return false;
        switch (want->tag) {
        case 'S':
        case 'x':
        case 'F':
        case 'A':
                return want->v.b.len == have->v.b.len &&
                       memcmp(want->v.b.ptr, have->v.b.ptr, want->v.b.len) == 0;
        case 'f':
                return want->v.f == have->v.f;
        case 'd':
                return want->v.d == have->v.d;
        case 'D':
                return want->v.dec.scale == have->v.dec.scale &&
                       want->v.dec.value == have->v.dec.value;
        default:
                return want->v.u == have->v.u;
        }
}

/* A headers exchange binding against the message's headers, with x-match
 * all (the default), any, all-with-x or any-with-x. */
static bool headers_match(struct amqp_bytes args, struct amqp_bytes headers)
{
        struct amqp_table_iter it;
        struct amqp_field f, mode;
        bool any = false, with_x = false;
        if (amqp_table_find(args, "x-match", &mode) == 1 && mode.tag == 'S') {
                any = amqp_bytes_is(mode.v.b, "any") || amqp_bytes_is(mode.v.b, "any-with-x");
                with_x =
                    amqp_bytes_is(mode.v.b, "all-with-x") || amqp_bytes_is(mode.v.b, "any-with-x");
        }
        uint32_t n = 0, hits = 0;
        amqp_table_iter_init(&it, args, false);
        while (amqp_table_next(&it, &f) == 1) {
                if (amqp_field_is(&f, "x-match") ||
                    (!with_x && f.name.len >= 2 && !memcmp(f.name.ptr, "x-", 2)))
                        continue;
                n++;
                char key[256];
                memcpy(key, f.name.ptr, f.name.len);
                key[f.name.len] = 0;
                struct amqp_field h;
                bool hit =
                    headers.len && amqp_table_find(headers, key, &h) == 1 && field_matches(&f, &h);
                hits += hit;
                if (any && hit)
                        return true;
                if (!any && !hit)
                        return false;
        }
        return any ? false : n == hits;
}

static struct amqp_bytes route_headers(struct amqp_route *r)
{
        if (!r->headers_known) {
                struct amqp_header h;
                const struct amqp_msg *m = r->m;
                r->headers_known = true;
                if (amqp_header_decode(amqp_msg_bytes(m) + m->ex_len + m->rk_len, m->hdr_len, &h) ==
                        0 &&
                    amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS))
                        r->headers = h.props[AMQP_BASIC_PROP_HEADERS].b; /* a view into m */
        }
        return r->headers;
}

static void route_ex(struct amqp_route *r, struct amqp_exchange *e, struct amqp_bytes rk)
{
        for (uint32_t i = 0; i < r->nseen; i++)
                if (r->seen[i] == e)
                        return;
        if (r->nseen == AMQP_ROUTE_EXCHANGES_MAX)
                return;
        r->seen[r->nseen++] = e;
        for (struct amqp_binding *b = e->bindings; b; b = b->next) {
                bool hit =
                    e->type == AMQP_EX_FANOUT ||
                    (e->type == AMQP_EX_DIRECT && name_eq(&b->key, rk)) ||
                    (e->type == AMQP_EX_TOPIC &&
                     topic_match((const uint8_t *)b->key.s, b->key.len, rk.ptr, rk.len)) ||
                    (e->type == AMQP_EX_HEADERS &&
                     headers_match((struct amqp_bytes){b->args, b->args_len}, route_headers(r)));
                if (!hit)
                        continue;
                if (b->dst) {
                        route_ex(r, b->dst, rk);
                        continue;
                }
                bool dup = false;
                for (uint32_t i = 0; i < r->nq && !dup; i++)
                        dup = r->q[i] == b->q;
                if (!dup && r->nq < AMQP_ROUTE_QUEUES_MAX)
                        r->q[r->nq++] = b->q;
        }
}

struct amqp_fwd;
struct amqp_fwd;

/* Hands m to the queue r names: here, or in the batch for its worker. */
static void route_one(struct amqp_worker *aw, struct amqp_qref *r, struct amqp_msg *m,
                      const struct amqp_origin *o, uint32_t *nremote, uint32_t *nrejected)
{
        if (amqp_qref_local(aw, r)) {
                /* a persistent message to a durable queue: its confirm
                 * waits for the log (counted like a queue elsewhere) */
                int rc = amqp_queue_enqueue(aw, r->q, m, o, NULL);
                if (rc > 0)
                        (*nremote)++;
                else if (rc < 0)
                        (*nrejected)++;
                amqp_queue_dispatch(aw, r->q);
                return;
        }
        m = amqp_msg_own(m); /* leaves this worker */
        m->qid = r->qid;
        m->o_conn = o->conn;
        m->o_seq = o->seq;
        m->o_slot = o->slot;
        m->o_gen = o->gen;
        m->o_epoch = o->epoch;
        m->o_chan = o->chan;
        amqp_fwd_push(aw, r->worker, m);
        (*nremote)++;
}

/* Routes a complete message: the first matching queue takes m, further ones
 * a copy (allocated per extra queue). Returns the number of queues; those
 * on other workers are counted in *nremote (their confirm comes later). */
static uint32_t route_at(struct amqp_worker *aw, struct amqp_route *r, struct amqp_msg *m,
                         const struct amqp_origin *o, uint32_t *nremote, uint32_t *nrejected);

uint32_t amqp_route(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o,
                    uint32_t *nremote, uint32_t *nrejected)
{
        /* Dead-lettering routes again from inside an amqp_route() (max-length,
         * expiry): one 2.3 KiB struct per nesting level, off the stack. */
        static _Thread_local struct amqp_route stack[AMQP_ROUTE_DEPTH_MAX];
        static _Thread_local uint32_t depth;
        *nremote = *nrejected = 0;
        if (depth == AMQP_ROUTE_DEPTH_MAX)
                return 0; /* a dead-letter chain this deep is dropped */
        struct amqp_route *r = &stack[depth++];
        uint32_t nt = route_at(aw, r, m, o, nremote, nrejected);
        depth--;
        return nt;
}

static uint32_t route_at(struct amqp_worker *aw, struct amqp_route *r, struct amqp_msg *m,
                         const struct amqp_origin *o, uint32_t *nremote, uint32_t *nrejected)
{
        struct amqp_bytes ex = {amqp_msg_bytes(m), m->ex_len};
        struct amqp_bytes rk = {amqp_msg_bytes(m) + m->ex_len, m->rk_len};
        r->nq = r->nseen = 0;
        r->m = m;
        r->headers_known = false;
        r->headers = (struct amqp_bytes){NULL, 0};
        *nremote = *nrejected = 0;
        if (ex.len == 0) {
                struct amqp_qref *q = amqp_qref_find(aw, rk);
                if (q)
                        r->q[r->nq++] = q;
        } else {
                struct amqp_exchange *e = amqp_ex_find(aw, ex);
                if (e)
                        route_ex(r, e, rk);
        }
        /* a queue deleted here whose removal is not applied yet */
        uint32_t nt = 0;
        for (uint32_t i = 0; i < r->nq; i++)
                if (!amqp_qref_local(aw, r->q[i]) || r->q[i]->q)
                        r->q[nt++] = r->q[i];
        struct amqp_qref **targets = r->q;
        if (nt == 0)
                return 0; /* m stays the caller's (basic.return) */
        /* m itself goes to a queue here when there is one: the copies for
         * the other queues here share its bytes (one body per worker);
         * those for queues elsewhere are whole (they leave the worker) */
        for (uint32_t i = 1; i < nt && !amqp_qref_local(aw, targets[0]); i++)
                if (amqp_qref_local(aw, targets[i])) {
                        struct amqp_qref *t = targets[0];
                        targets[0] = targets[i];
                        targets[i] = t;
                }
        bool share = amqp_qref_local(aw, targets[0]);
        for (uint32_t i = 1; i < nt; i++) {
                struct amqp_msg *cp;
                if (share && amqp_qref_local(aw, targets[i])) {
                        cp = amqp_msg_share(m);
                } else {
                        cp = amqp_msg_alloc(msg_size(m));
                        if (cp) {
                                memcpy(cp, m, msg_size(m));
                                cp->alloc_bytes = msg_size(m); /* m's may be larger */
                                cp->body_refs = 0;
                        }
                }
                if (!cp)
                        break;
                route_one(aw, targets[i], cp, o, nremote, nrejected);
        }
        route_one(aw, targets[0], m, o, nremote, nrejected);
        return nt;
}

/* ---- routing-table changes (through the control thread) ------------------ */

#define AMQP_DEF_VERSION 1

static uint32_t topo_encode(const struct amqp_topo *t, uint8_t *b)
{
        uint32_t n = 0;
        b[n++] = AMQP_DEF_VERSION;
        b[n++] = t->op;
        b[n++] = t->ex_type;
        b[n++] = (uint8_t)(t->durable | t->auto_delete << 1);
        b[n++] = (uint8_t)(t->worker >> 8);
        b[n++] = (uint8_t)t->worker;
        const struct amqp_name *names[5] = {&t->a, &t->b, &t->key, &t->qa.dlx, &t->qa.dlrk};
        for (int i = 0; i < 5; i++) {
                b[n++] = names[i]->len;
                memcpy(b + n, names[i]->s, names[i]->len);
                n += names[i]->len;
        }
        /* queue arguments */
        int64_t nums[5] = {t->qa.ttl_ms, t->qa.max_len, t->qa.max_bytes, t->qa.max_prio,
                           t->qa.expires_ms};
        for (int i = 0; i < 5; i++, n += 8)
                for (int j = 0; j < 8; j++)
                        b[n + (uint32_t)j] = (uint8_t)((uint64_t)nums[i] >> (56 - 8 * j));
        b[n++] = t->qa.overflow;
        b[n++] = (uint8_t)(t->qa.dlx_set | t->qa.dlrk_set << 1);
        b[n++] = (uint8_t)(t->bargs_len >> 8);
        b[n++] = (uint8_t)t->bargs_len;
        memcpy(b + n, t->bargs, t->bargs_len);
        n += t->bargs_len;
        return n;
}

int amqp_topo_decode(const uint8_t *b, uint32_t len, struct amqp_topo *t)
{
        memset(t, 0, sizeof(*t));
        if (len < 6 || b[0] != AMQP_DEF_VERSION)
                return -EBADMSG;
        t->op = b[1];
        t->ex_type = b[2];
        t->durable = b[3] & 1;
        t->auto_delete = (b[3] >> 1) & 1;
        t->worker = (uint16_t)(b[4] << 8 | b[5]);
        uint32_t n = 6;
        amqp_qargs_default(&t->qa);
        struct amqp_name *names[5] = {&t->a, &t->b, &t->key, &t->qa.dlx, &t->qa.dlrk};
        for (int i = 0; i < 5; i++) {
                if (n >= len || n + 1 + b[n] > len)
                        return -EBADMSG;
                names[i]->len = b[n];
                memcpy(names[i]->s, b + n + 1, b[n]);
                names[i]->s[b[n]] = 0;
                n += 1 + b[n];
        }
        if (n + 42 > len)
                return -EBADMSG;
        int64_t *nums[5] = {&t->qa.ttl_ms, &t->qa.max_len, &t->qa.max_bytes, &t->qa.max_prio,
                            &t->qa.expires_ms};
        for (int i = 0; i < 5; i++, n += 8)
                *nums[i] = (int64_t)amqp_get_be64(b + n);
        t->qa.overflow = b[n++];
        t->qa.dlx_set = b[n] & 1;
        t->qa.dlrk_set = (b[n] >> 1) & 1;
        n++;
        if (n + 2 > len)
                return -EBADMSG;
        t->bargs_len = (uint16_t)(b[n] << 8 | b[n + 1]);
        n += 2;
        if (t->bargs_len > AMQP_BIND_ARGS_MAX || n + t->bargs_len > len)
                return -EBADMSG;
        memcpy(t->bargs, b + n, t->bargs_len);
        return 0;
}

static int hex_put(char *dst, size_t cap, const struct amqp_name *n)
{
        int off = 0;
        for (uint32_t i = 0; i < n->len && (size_t)off + 3 < cap; i++)
                off += snprintf(dst + off, cap - (size_t)off, "%02x", (uint8_t)n->s[i]);
        return off;
}

int amqp_topo_bind_args(struct amqp_topo *t, struct amqp_bytes args)
{
        if (args.len > AMQP_BIND_ARGS_MAX)
                return -E2BIG;
        t->bargs_len = (uint16_t)args.len;
        memcpy(t->bargs, args.ptr, args.len);
        return 0;
}

/* Makes t durable: PUT of its object (the key from its names), or a delete. */
void amqp_topo_def(struct amqp_topo *t, uint8_t op)
{
        struct ctl_amqp_def *d = &t->def;
        char *k = d->key;
        size_t cap = sizeof(d->key);
        int n = 0;
        switch (t->op) {
        case AMQP_TOPO_EX_DECLARE:
        case AMQP_TOPO_EX_DELETE:
                n = snprintf(k, cap, "e:");
                hex_put(k + n, cap - (size_t)n, &t->a);
                break;
        case AMQP_TOPO_Q_DECLARE:
        case AMQP_TOPO_Q_DELETE:
                n = snprintf(k, cap, "q:");
                hex_put(k + n, cap - (size_t)n, &t->a);
                break;
        default: /* bindings: source, destination kind + name, key */
                n = snprintf(k, cap, "b:");
                n += hex_put(k + n, cap - (size_t)n, &t->b);
                n += snprintf(k + n, cap - (size_t)n, ":%c",
                              t->op == AMQP_TOPO_Q_BIND || t->op == AMQP_TOPO_Q_UNBIND ? 'q' : 'e');
                n += hex_put(k + n, cap - (size_t)n, &t->a);
                n += snprintf(k + n, cap - (size_t)n, ":");
                n += hex_put(k + n, cap - (size_t)n, &t->key);
                if (t->bargs_len) /* bindings differing only in arguments */
                        snprintf(k + n, cap - (size_t)n, ":%08x",
                                 log_crc32c(0, t->bargs, t->bargs_len));
                break;
        }
        d->op = op;
        d->len = op == CTL_AMQP_DEF_PUT ? topo_encode(t, d->val) : 0;
        t->has_def = true;
}

struct amqp_topo *amqp_topo_new(struct sl_conn *c, struct amqp_channel *ch, uint8_t op,
                                uint32_t method)
{
        struct amqp_topo *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->op = op;
        t->method = method;
        if (c) {
                t->conn = c->id;
                t->slot = c->slot;
                t->gen = c->gen;
                t->chan = ch->id;
                t->epoch = ch->epoch;
        }
        return t;
}

/* Sends t to the sequencer; the client's input waits for the barrier. */
long amqp_topo_submit(struct amqp_worker *aw, struct sl_conn *c, struct amqp_topo *t)
{
        struct sl_msg m = {.type = CTL_AMQP_MSG_CHANGE, .u16 = aw->w->id};
        m.a.ptr[0] = t;
        m.a.ptr[1] = t->has_def ? &t->def : NULL;
        amqp_out_msg(aw, aw->w->rt->control_ep, &m);
        if (c)
                amqp_conn_wait(c);
        return 0;
}

static void bindings_drop_queue(struct amqp_worker *aw, struct amqp_qref *r)
{
        for (struct amqp_exchange *e = aw->exchanges; e; e = e->next)
                for (struct amqp_binding **bp = &e->bindings; *bp;) {
                        struct amqp_binding *b = *bp;
                        if (b->q == r) {
                                *bp = b->next;
                                free(b);
                        } else {
                                bp = &b->next;
                        }
                }
}

static void ex_remove(struct amqp_worker *aw, struct amqp_bytes name)
{
        struct amqp_exchange **pp = &aw->exchanges;
        while (*pp && !name_eq(&(*pp)->name, name))
                pp = &(*pp)->next;
        struct amqp_exchange *e = *pp;
        if (!e)
                return;
        *pp = e->next;
        aw->delayed_exchanges -= e->delayed;
        while (e->bindings) {
                struct amqp_binding *b = e->bindings;
                e->bindings = b->next;
                free(b);
        }
        /* and the exchange-to-exchange bindings that lead to it */
        for (struct amqp_exchange *o = aw->exchanges; o; o = o->next)
                for (struct amqp_binding **bp = &o->bindings; *bp;) {
                        struct amqp_binding *b = *bp;
                        if (b->dst == e) {
                                *bp = b->next;
                                free(b);
                        } else {
                                bp = &b->next;
                        }
                }
        free(e);
}

/* Binding arguments are equal as tables, not as bytes: RabbitMQ compares
 * them sorted, and clients such as amqp091-go encode a table in random map
 * order, so an unbind must find the bind whatever order its fields come in.
 * Types must match exactly (RabbitMQ compares typed values). */
static bool bargs_equal(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
        if (alen == blen && memcmp(a, b, alen) == 0)
                return true;
        struct amqp_bytes ta = {.ptr = a, .len = alen}, tb = {.ptr = b, .len = blen};
        struct amqp_table_iter it;
        struct amqp_field f, g;
        uint32_t na = 0, nb = 0;
        amqp_table_iter_init(&it, tb, false);
        while (amqp_table_next(&it, &g) == 1)
                nb++;
        amqp_table_iter_init(&it, ta, false);
        while (amqp_table_next(&it, &f) == 1) {
                char key[256];
                memcpy(key, f.name.ptr, f.name.len);
                key[f.name.len] = 0;
                if (amqp_table_find(tb, key, &g) != 1 || g.tag != f.tag || !field_matches(&f, &g))
                        return false;
                na++;
        }
        return na == nb;
}

static void binding_set(struct amqp_exchange *src, struct amqp_qref *q, struct amqp_exchange *dst,
                        const struct amqp_topo *t, bool bind)
{
        const struct amqp_name *key = &t->key;
        struct amqp_binding **bp = &src->bindings;
        /* a binding is (source, destination, key, arguments), as in RabbitMQ */
        while (*bp &&
               !((*bp)->q == q && (*bp)->dst == dst && name_eq(&(*bp)->key, name_view(key)) &&
                 bargs_equal((*bp)->args, (*bp)->args_len, t->bargs, t->bargs_len)))
                bp = &(*bp)->next;
        if (bind && !*bp) {
                struct amqp_binding *b = calloc(1, sizeof(*b));
                SL_ASSERT(b); /* replicas must not diverge */
                b->q = q;
                b->dst = dst;
                b->key = *key;
                b->args_len = t->bargs_len;
                memcpy(b->args, t->bargs, t->bargs_len);
                b->next = src->bindings;
                src->bindings = b;
        } else if (!bind && *bp) {
                struct amqp_binding *b = *bp;
                *bp = b->next;
                free(b);
        }
}

/* Applies a change to this worker's replica (the same on every worker:
 * deterministic, idempotent against what is already there). */
void amqp_topo_apply(struct amqp_worker *aw, const struct amqp_topo *t, uint64_t seq)
{
        switch (t->op) {
        case AMQP_TOPO_EX_DECLARE:
                if (!amqp_ex_find(aw, name_view(&t->a))) {
                        struct amqp_exchange *e =
                            amqp_ex_add(aw, name_view(&t->a), t->ex_type & ~AMQP_EX_DELAYED);
                        SL_ASSERT(e);
                        e->durable = t->durable;
                        e->delayed = t->ex_type & AMQP_EX_DELAYED;
                        aw->delayed_exchanges += e->delayed;
                }
                return;
        case AMQP_TOPO_EX_DELETE:
                ex_remove(aw, name_view(&t->a));
                return;
        case AMQP_TOPO_Q_DECLARE: {
                if (amqp_qref_find(aw, name_view(&t->a)))
                        return;
                struct amqp_qref *r = calloc(1, sizeof(*r));
                SL_ASSERT(r);
                r->name = t->a;
                r->qid = seq;
                r->worker = (uint16_t)(t->worker % aw->w->nworkers);
                r->durable = t->durable;
                r->exclusive = t->exclusive;
                r->auto_delete = t->auto_delete;
                r->owner_conn = t->owner_conn;
                r->qa = t->qa;
                if (amqp_qref_local(aw, r)) {
                        struct amqp_queue *q = calloc(1, sizeof(*q));
                        SL_ASSERT(q);
                        q->name = t->a;
                        q->qid = seq;
                        q->auto_delete = t->auto_delete;
                        q->durable = t->durable;
                        q->qa = t->qa;
                        q->aw = aw;
                        q->last_used_ms = aw->w->now_ms;
                        if (q->qa.max_prio > 0) {
                                q->ptail = calloc((size_t)q->qa.max_prio + 1, sizeof(*q->ptail));
                                SL_ASSERT(q->ptail);
                        }
                        if (q->durable) {
                                int rc = amqp_dq_open(aw, q);
                                if (rc)
                                        SL_WARN("amqp: durable queue %s: storage: %s", q->name.s,
                                                strerror(-rc));
                        }
                        /* the owner, if still here (it may have closed) */
                        if (t->exclusive)
                                q->owner = amqp_conn_find(aw->w, t->slot, t->gen, t->owner_conn);
                        q->next = aw->queues;
                        aw->queues = q;
                        sl_counter_add(&aw->queues_n, 1);
                        r->q = q;
                        if (t->exclusive && !q->owner)
                                amqp_queue_delete_announce(aw, q, NULL);
                }
                r->next = aw->qrefs;
                aw->qrefs = r;
                return;
        }
        case AMQP_TOPO_Q_DELETE: {
                for (struct amqp_qref **pp = &aw->qrefs; *pp; pp = &(*pp)->next)
                        if ((*pp)->qid == t->qid) {
                                struct amqp_qref *r = *pp;
                                *pp = r->next;
                                bindings_drop_queue(aw, r);
                                free(r);
                                break;
                        }
                return;
        }
        case AMQP_TOPO_Q_BIND:
        case AMQP_TOPO_Q_UNBIND: {
                struct amqp_qref *r = amqp_qref_find(aw, name_view(&t->a));
                struct amqp_exchange *e = amqp_ex_find(aw, name_view(&t->b));
                if (r && e)
                        binding_set(e, r, NULL, t, t->op == AMQP_TOPO_Q_BIND);
                return;
        }
        case AMQP_TOPO_EX_BIND:
        case AMQP_TOPO_EX_UNBIND: {
                struct amqp_exchange *d = amqp_ex_find(aw, name_view(&t->a));
                struct amqp_exchange *e = amqp_ex_find(aw, name_view(&t->b));
                if (d && e)
                        binding_set(e, NULL, d, t, t->op == AMQP_TOPO_EX_BIND);
                return;
        }
        default:
                SL_ASSERT(!"unknown routing-table change");
        }
}

long amqp_queue_declare_ok(struct sl_conn *c, struct amqp_channel *ch, struct amqp_bytes name,
                           uint64_t count, uint32_t consumers)
{
        struct amqp_method r;
        amqp_method_init(&r, AMQP_QUEUE_DECLARE_OK);
        r.args[AMQP_QUEUE_DECLARE_OK_QUEUE].b = name;
        r.args[AMQP_QUEUE_DECLARE_OK_MESSAGE_COUNT].u = (uint32_t)count;
        r.args[AMQP_QUEUE_DECLARE_OK_CONSUMER_COUNT].u = consumers;
        return amqp_send_method(c, ch->id, &r);
}

/* Every worker applied t: answer the client that waits for it. */
void amqp_topo_done(struct amqp_worker *aw, struct amqp_topo *t)
{
        struct sl_conn *c = t->conn ? amqp_conn_find(aw->w, t->slot, t->gen, t->conn) : NULL;
        struct amqp_channel *ch = c ? amqp_chan_find(c, t->chan, t->epoch) : NULL;
        if (ch && !t->nowait) {
                switch (t->method) {
                case AMQP_EXCHANGE_DECLARE: {
                        struct amqp_exchange *e = amqp_ex_find(aw, name_view(&t->a));
                        if (!e)
                                amqp_chan_error(c, ch, 404, "exchange deleted meanwhile",
                                                t->method);
                        else if ((e->type | (e->delayed ? AMQP_EX_DELAYED : 0)) != t->ex_type)
                                amqp_chan_error(c, ch, 406, "inequivalent arg 'type'", t->method);
                        else
                                amqp_send_simple(c, ch->id, AMQP_EXCHANGE_DECLARE_OK);
                        break;
                }
                case AMQP_QUEUE_DECLARE: {
                        struct amqp_qref *r = amqp_qref_find(aw, name_view(&t->a));
                        if (!r) {
                                amqp_chan_error(c, ch, 404, "queue deleted meanwhile", t->method);
                                break;
                        }
                        if (amqp_queue_check_equivalent(c, ch, r, t->durable, t->exclusive,
                                                        t->auto_delete, &t->qa, t->method))
                                break;
                        uint64_t n = amqp_qref_local(aw, r) && r->q ? r->q->count : 0;
                        uint32_t k = amqp_qref_local(aw, r) && r->q ? r->q->nconsumers : 0;
                        amqp_queue_declare_ok(c, ch, name_view(&r->name), n, k);
                        break;
                }
                case AMQP_QUEUE_DELETE: {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_QUEUE_DELETE_OK);
                        r.args[AMQP_QUEUE_DELETE_OK_MESSAGE_COUNT].u = (uint32_t)t->count;
                        amqp_send_method(c, ch->id, &r);
                        break;
                }
                case AMQP_EXCHANGE_DELETE:
                        amqp_send_simple(c, ch->id, AMQP_EXCHANGE_DELETE_OK);
                        break;
                case AMQP_QUEUE_BIND:
                        amqp_send_simple(c, ch->id, AMQP_QUEUE_BIND_OK);
                        break;
                case AMQP_QUEUE_UNBIND:
                        amqp_send_simple(c, ch->id, AMQP_QUEUE_UNBIND_OK);
                        break;
                case AMQP_EXCHANGE_BIND:
                        amqp_send_simple(c, ch->id, AMQP_EXCHANGE_BIND_OK);
                        break;
                case AMQP_EXCHANGE_UNBIND:
                        amqp_send_simple(c, ch->id, AMQP_EXCHANGE_UNBIND_OK);
                        break;
                default:
                        break;
                }
        }
        if (c)
                amqp_conn_resume(c);
        free(t);
}

/* A queue here went away (deleted, auto-delete, exclusive owner closed):
 * the routing table forgets it everywhere, and its stored definition goes
 * with it (only a durable, non-exclusive queue has one). o: the
 * queue.delete that asked (its client gets delete-ok with the message
 * count once every worker applied the change), NULL for none. */
void amqp_queue_delete_announce(struct amqp_worker *aw, struct amqp_queue *q,
                                const struct amqp_qop *o)
{
        struct amqp_topo *t = amqp_topo_new(NULL, NULL, AMQP_TOPO_Q_DELETE, 0);
        SL_ASSERT(t);
        t->qid = q->qid;
        t->a = q->name;
        uint16_t from = aw->w->id;
        if (o) {
                t->method = AMQP_QUEUE_DELETE;
                t->conn = o->conn;
                t->slot = o->slot;
                t->gen = o->gen;
                t->chan = o->chan;
                t->epoch = o->epoch;
                t->nowait = o->nowait;
                from = o->from;
        }
        if (q->durable && !q->owner)
                amqp_topo_def(t, CTL_AMQP_DEF_DELETE_QUEUE);
        t->count = amqp_queue_delete(aw, q);
        /* the sequencer tells the worker named here when it is applied */
        struct sl_msg m = {.type = CTL_AMQP_MSG_CHANGE, .u16 = from};
        m.a.ptr[0] = t;
        m.a.ptr[1] = t->has_def ? &t->def : NULL;
        amqp_out_msg(aw, aw->w->rt->control_ep, &m);
}
