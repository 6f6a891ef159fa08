/* Message features: queue arguments (x-message-ttl, x-max-length,
 * x-overflow, x-dead-letter-*, x-max-priority, x-expires), TTL expiry,
 * dead-lettering with x-death, and x-delayed-message holding. */

#include <time.h>

#include "amqp_internal.h"

/* ---- queue arguments, TTL, max-length, dead-lettering -------------------- */

void amqp_qargs_default(struct amqp_qargs *a)
{
        memset(a, 0, sizeof(*a));
        a->ttl_ms = a->max_len = a->max_bytes = a->max_prio = a->expires_ms = -1;
        a->overflow = AMQP_OVERFLOW_DROP_HEAD;
}

bool amqp_field_int(const struct amqp_field *f, int64_t *v)
{
        switch (f->tag) {
        case 'b':
        case 's':
        case 'I':
        case 'l':
        case 'L':
                *v = f->v.i;
                return true;
        case 'B':
        case 'u':
        case 'i':
                *v = (int64_t)f->v.u;
                return true;
        default:
                return false;
        }
}

bool amqp_field_is(const struct amqp_field *f, const char *name)
{
        size_t n = strlen(name);
        return f->name.len == n && memcmp(f->name.ptr, name, n) == 0;
}

bool amqp_bytes_is(struct amqp_bytes b, const char *s)
{
        size_t n = strlen(s);
        return b.len == n && memcmp(b.ptr, s, n) == 0;
}

/* queue.declare arguments: the ones RabbitMQ checks are checked the same
 * way (406 with its wording); others are ignored, as RabbitMQ does. */
int amqp_qargs_parse(struct amqp_bytes tbl, const struct amqp_name *qname, struct amqp_qargs *a,
                     char *text, size_t n)
{
        amqp_qargs_default(a);
        struct amqp_table_iter it;
        struct amqp_field f;
        amqp_table_iter_init(&it, tbl, false);
        int rc;
        while ((rc = amqp_table_next(&it, &f)) == 1) {
                int64_t v = 0;
                int64_t *slot = amqp_field_is(&f, "x-message-ttl")        ? &a->ttl_ms
                                : amqp_field_is(&f, "x-max-length")       ? &a->max_len
                                : amqp_field_is(&f, "x-max-length-bytes") ? &a->max_bytes
                                : amqp_field_is(&f, "x-max-priority")     ? &a->max_prio
                                : amqp_field_is(&f, "x-expires")          ? &a->expires_ms
                                                                          : NULL;
                const char *bad = NULL;
                if (slot) {
                        if (!amqp_field_int(&f, &v))
                                bad = "not an integer";
                        else if (v < 0)
                                bad = "value_negative";
                        else if (slot == &a->max_prio && v > 255)
                                bad = "value_out_of_range (max 255)";
                        else if (slot == &a->expires_ms && v == 0)
                                bad = "value_zero";
                        else
                                *slot = v;
                } else if (amqp_field_is(&f, "x-overflow")) {
                        if (f.tag != 'S')
                                bad = "not a string";
                        else if (amqp_bytes_is(f.v.b, "drop-head"))
                                a->overflow = AMQP_OVERFLOW_DROP_HEAD;
                        else if (amqp_bytes_is(f.v.b, "reject-publish"))
                                a->overflow = AMQP_OVERFLOW_REJECT_PUBLISH;
                        else if (amqp_bytes_is(f.v.b, "reject-publish-dlx"))
                                a->overflow = AMQP_OVERFLOW_REJECT_PUBLISH_DLX;
                        else
                                bad = "not one of drop-head, reject-publish, reject-publish-dlx";
                } else if (amqp_field_is(&f, "x-dead-letter-exchange") ||
                           amqp_field_is(&f, "x-dead-letter-routing-key")) {
                        bool ex = amqp_field_is(&f, "x-dead-letter-exchange");
                        if (f.tag != 'S' || f.v.b.len > 255) {
                                bad = "not a short string";
                        } else {
                                name_set(ex ? &a->dlx : &a->dlrk, f.v.b);
                                *(ex ? &a->dlx_set : &a->dlrk_set) = true;
                        }
                }
                if (bad) {
                        snprintf(text, n, "invalid arg '%.*s' for queue '%s' in vhost '/': %s",
                                 (int)f.name.len, (const char *)f.name.ptr, qname->s, bad);
                        return 406;
                }
        }
        if (rc < 0) {
                snprintf(text, n, "malformed arguments");
                return 406;
        }
        if (a->dlrk_set && !a->dlx_set) {
                snprintf(text, n,
                         "invalid arg 'x-dead-letter-routing-key' for queue '%s' in vhost '/': "
                         "Key x-dead-letter-routing-key should be specified together with "
                         "x-dead-letter-exchange",
                         qname->s);
                return 406;
        }
        return 0;
}

/* The first argument two declarations disagree on, or NULL. */
const char *amqp_qargs_differ(const struct amqp_qargs *x, const struct amqp_qargs *y)
{
        if (x->ttl_ms != y->ttl_ms)
                return "x-message-ttl";
        if (x->max_len != y->max_len)
                return "x-max-length";
        if (x->max_bytes != y->max_bytes)
                return "x-max-length-bytes";
        if (x->overflow != y->overflow)
                return "x-overflow";
        if (x->max_prio != y->max_prio)
                return "x-max-priority";
        if (x->expires_ms != y->expires_ms)
                return "x-expires";
        if (x->dlx_set != y->dlx_set || (x->dlx_set && !name_eq(&x->dlx, name_view(&y->dlx))))
                return "x-dead-letter-exchange";
        if (x->dlrk_set != y->dlrk_set || (x->dlrk_set && !name_eq(&x->dlrk, name_view(&y->dlrk))))
                return "x-dead-letter-routing-key";
        return NULL;
}

/* The expiration property: milliseconds as a decimal string. */
int64_t amqp_expiration_ms(const struct amqp_header *h)
{
        if (!amqp_header_has(h, AMQP_BASIC_PROP_EXPIRATION))
                return -1;
        struct amqp_bytes e = h->props[AMQP_BASIC_PROP_EXPIRATION].b;
        if (e.len == 0 || e.len > 18)
                return -1;
        int64_t v = 0;
        for (uint32_t i = 0; i < e.len; i++) {
                if (e.ptr[i] < '0' || e.ptr[i] > '9')
                        return -1;
                v = v * 10 + (e.ptr[i] - '0');
        }
        return v;
}

/* Is the x-death history a cycle through q without a rejection? (RabbitMQ:
 * a message dead-lettered around a loop by expiry or max-length alone is
 * dropped.) Also returns the count of the (q, reason) entry. */
static bool xdeath_scan(struct amqp_bytes xdeath, const struct amqp_queue *q, const char *reason,
                        int64_t *count)
{
        struct amqp_table_iter it;
        struct amqp_field item;
        bool rejected_seen = false, cycle = false;
        *count = 0;
        amqp_table_iter_init(&it, xdeath, true);
        while (amqp_table_next(&it, &item) == 1) {
                if (item.tag != 'F')
                        continue;
                struct amqp_field fq, fr, fc;
                bool same_q = amqp_table_find(item.v.b, "queue", &fq) == 1 && fq.tag == 'S' &&
                              name_eq(&q->name, fq.v.b);
                bool has_r = amqp_table_find(item.v.b, "reason", &fr) == 1 && fr.tag == 'S';
                if (same_q && has_r && amqp_bytes_is(fr.v.b, reason) &&
                    amqp_table_find(item.v.b, "count", &fc) == 1)
                        amqp_field_int(&fc, count);
                if (same_q && !rejected_seen)
                        cycle = true;
                if (has_r && amqp_bytes_is(fr.v.b, "rejected"))
                        rejected_seen = true;
        }
        return cycle && strcmp(reason, "rejected") != 0;
}

/* The dead-lettered copy of m from q: exchange and routing key from the
 * queue's arguments, headers with x-death updated as RabbitMQ writes it.
 * NULL: dropped (cycle, or no memory). */
static struct amqp_msg *dl_build(struct amqp_worker *aw, const struct amqp_queue *q,
                                 const struct amqp_msg *m, const char *reason)
{
        struct amqp_header h;
        const uint8_t *hdr = amqp_msg_bytes(m) + m->ex_len + m->rk_len;
        if (amqp_header_decode(hdr, m->hdr_len, &h) < 0)
                return NULL;
        struct amqp_bytes old = amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS)
                                    ? h.props[AMQP_BASIC_PROP_HEADERS].b
                                    : (struct amqp_bytes){NULL, 0};
        struct amqp_field xd = {0};
        bool have_xd = old.len && amqp_table_find(old, "x-death", &xd) == 1 && xd.tag == 'A';
        int64_t count = 0;
        if (have_xd && xdeath_scan(xd.v.b, q, reason, &count))
                return NULL;
        struct amqp_bytes ex = {amqp_msg_bytes(m), m->ex_len},
                          rk = {amqp_msg_bytes(m) + m->ex_len, m->rk_len};
        size_t cap = old.len + 2048 + 4 * 256;
        uint8_t *tb = malloc(cap), *hb = malloc(m->hdr_len + cap + 64);
        struct amqp_msg *nm = NULL;
        if (!tb || !hb)
                goto out;
        struct amqp_table_writer w;
        amqp_table_writer_init(&w, tb, cap);
        bool have_first = false;
        struct amqp_table_iter it;
        struct amqp_field f;
        amqp_table_iter_init(&it, old, false);
        while (amqp_table_next(&it, &f) == 1) {
                if (amqp_field_is(&f, "x-death"))
                        continue;
                have_first |= amqp_field_is(&f, "x-first-death-reason");
                amqp_table_put(&w, &f);
        }
        amqp_table_begin(&w, "x-death", 'A');
        amqp_table_begin(&w, "", 'F');
        amqp_table_put_i64(&w, "count", count + 1);
        amqp_table_put_str(&w, "reason", amqp_cstr(reason));
        amqp_table_put_str(&w, "queue", name_view(&q->name));
        /* An AMQP timestamp is Unix time: the wall clock, not the monotonic
         * clock the loop runs on (dead-lettering is not the hot path). */
        struct amqp_field tf = {.name = amqp_cstr("time"), .tag = 'T', .v.u = (uint64_t)time(NULL)};
        amqp_table_put(&w, &tf);
        amqp_table_put_str(&w, "exchange", ex);
        amqp_table_begin(&w, "routing-keys", 'A');
        amqp_table_put_str(&w, "", rk);
        amqp_table_end(&w);
        amqp_table_end(&w);
        if (have_xd) {
                amqp_table_iter_init(&it, xd.v.b, true);
                while (amqp_table_next(&it, &f) == 1) {
                        struct amqp_field fq, fr;
                        if (f.tag == 'F' && amqp_table_find(f.v.b, "queue", &fq) == 1 &&
                            fq.tag == 'S' && name_eq(&q->name, fq.v.b) &&
                            amqp_table_find(f.v.b, "reason", &fr) == 1 && fr.tag == 'S' &&
                            amqp_bytes_is(fr.v.b, reason))
                                continue; /* replaced by the entry above */
                        amqp_table_put(&w, &f);
                }
        }
        amqp_table_end(&w);
        if (!have_first) {
                amqp_table_put_str(&w, "x-first-death-reason", amqp_cstr(reason));
                amqp_table_put_str(&w, "x-first-death-queue", name_view(&q->name));
                amqp_table_put_str(&w, "x-first-death-exchange", ex);
        }
        struct amqp_bytes tbl;
        if (amqp_table_writer_finish(&w, &tbl) != 0)
                goto out;
        h.props[AMQP_BASIC_PROP_HEADERS].b = tbl;
        h.present |= 1u << AMQP_BASIC_PROP_HEADERS;
        if (!strcmp(reason, "expired"))
                h.present &= ~(1u << AMQP_BASIC_PROP_EXPIRATION); /* as RabbitMQ */
        int hl = amqp_header_encode(&h, hb, m->hdr_len + cap + 64);
        if (hl < 0)
                goto out;
        struct amqp_bytes nrk = q->qa.dlrk_set ? name_view(&q->qa.dlrk) : rk;
        nm = amqp_msg_new(name_view(&q->qa.dlx), nrk, (uint64_t)hl, m->body_len);
        if (!nm)
                goto out;
        nm->hdr_len = (uint32_t)hl;
        nm->got = m->body_len;
        nm->persistent = m->persistent;
        nm->priority = m->priority;
        nm->ttl_ms = -1;
        memcpy(nm->data + nm->ex_len + nm->rk_len, hb, (size_t)hl);
        memcpy(nm->data + nm->ex_len + nm->rk_len + hl, hdr + m->hdr_len, m->body_len);
out:
        (void)aw;
        free(tb);
        free(hb);
        return nm;
}

/* m leaves q for good without being acked (reject/nack without requeue,
 * expiry, max-length): to the dead-letter exchange if q has one, else
 * dropped. Consumes m. */
void amqp_dead_letter(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                      const char *reason)
{
        struct amqp_msg *nm = q && q->qa.dlx_set ? dl_build(aw, q, m, reason) : NULL;
        amqp_dq_ack(aw, q, m);
        amqp_msg_free(m);
        if (!nm)
                return;
        static const struct amqp_origin none;
        uint32_t pending = 0, rejected = 0;
        if (amqp_route(aw, nm, &none, &pending, &rejected) == 0)
                amqp_msg_free(nm);
}

/* Drops expired messages at the head (never delivered; RabbitMQ expires
 * from the head too). */
void amqp_queue_expire(struct amqp_worker *aw, struct amqp_queue *q)
{
        while (q->head && q->head->expires_ms && aw->w->now_ms >= q->head->expires_ms)
                amqp_dead_letter(aw, q, amqp_queue_pop(q), "expired");
}

/* m enters q: TTL stamped, max-length applied, stored if durable.
 * Returns 1 when its confirm must wait for the log, 0 when accepted, -1
 * when refused (x-overflow reject-publish: m is consumed). */
int amqp_queue_enqueue(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                       const struct amqp_origin *o, struct amqp_fwd *f)
{
        const struct amqp_qargs *a = &q->qa;
        if (a->overflow != AMQP_OVERFLOW_DROP_HEAD &&
            ((a->max_len >= 0 && q->count + 1 > (uint64_t)a->max_len) ||
             (a->max_bytes >= 0 && q->bytes + m->body_len > (uint64_t)a->max_bytes))) {
                if (a->overflow == AMQP_OVERFLOW_REJECT_PUBLISH_DLX)
                        amqp_dead_letter(aw, q, m, "maxlen");
                else
                        amqp_msg_free(m);
                return -1;
        }
        int64_t ttl = a->ttl_ms;
        if (m->ttl_ms >= 0 && (ttl < 0 || m->ttl_ms < ttl))
                ttl = m->ttl_ms;
        m->expires_ms = ttl >= 0 ? aw->w->now_ms + (uint64_t)ttl : 0;
        if (ttl == 0)
                m->expires_ms = aw->w->now_ms ? aw->w->now_ms : 1;
        amqp_queue_push(q, m);
        int rc = amqp_dq_store(aw, q, m, o, f);
        while ((a->max_len >= 0 && q->count > (uint64_t)a->max_len) ||
               (a->max_bytes >= 0 && q->bytes > (uint64_t)a->max_bytes))
                amqp_dead_letter(aw, q, amqp_queue_pop(q), "maxlen");
        return rc;
}

/* ---- x-delayed-message ------------------------------------------------------ */

static bool delayed_before(const struct amqp_delayed *a, const struct amqp_delayed *b)
{
        return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

/* Into the heap, due at due_ms (the worker's clock). false: no memory. */
static bool delayed_push(struct amqp_worker *aw, struct amqp_msg *m, uint64_t due_ms)
{
        if (aw->ndelayed == aw->delayed_cap) {
                uint32_t cap = aw->delayed_cap ? aw->delayed_cap * 2 : 64;
                struct amqp_delayed *n = realloc(aw->delayed, cap * sizeof(*n));
                if (!n)
                        return false;
                aw->delayed = n;
                aw->delayed_cap = cap;
        }
        uint32_t i = aw->ndelayed++;
        struct amqp_delayed d = {due_ms, ++aw->delayed_seq, m};
        while (i > 0 && delayed_before(&d, &aw->delayed[(i - 1) / 2])) {
                aw->delayed[i] = aw->delayed[(i - 1) / 2];
                i = (i - 1) / 2;
        }
        aw->delayed[i] = d;
        return true;
}

/* Holds m when it goes to a delayed exchange with a positive x-delay
 * header. Returns 0 (not held), 1 (held: m is the heap's) or 2 (held and
 * being stored: the confirm for o waits for the delayed log). */
int amqp_delayed_hold(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o)
{
        if (!m->ex_len || !aw->delayed_exchanges)
                return 0;
        struct amqp_exchange *e =
            amqp_ex_find(aw, (struct amqp_bytes){amqp_msg_bytes(m), m->ex_len});
        if (!e || !e->delayed)
                return 0;
        struct amqp_header h;
        struct amqp_field f;
        int64_t delay = 0;
        if (amqp_header_decode(amqp_msg_bytes(m) + m->ex_len + m->rk_len, m->hdr_len, &h) != 0 ||
            !amqp_header_has(&h, AMQP_BASIC_PROP_HEADERS) ||
            amqp_table_find(h.props[AMQP_BASIC_PROP_HEADERS].b, "x-delay", &f) != 1 ||
            !amqp_field_int(&f, &delay) || delay <= 0)
                return 0;
        if (!delayed_push(aw, m, aw->w->now_ms + (uint64_t)delay))
                return 0; /* routed now rather than lost */
        m->loff = -1;
        if (e->durable && m->persistent &&
            amqp_dq_store_delayed(aw, m, o, sl_realtime_ms() + (uint64_t)delay) > 0)
                return 2;
        return 1;
}

/* At start (once the stored exchanges are applied): the messages of this
 * worker's delayed log that were not released go back into the heap, due
 * when they were (by the wall clock; overdue ones at once). */
void amqp_delayed_recover(struct amqp_worker *aw)
{
        if (!amqp_dq_delayed_exists(aw) || amqp_dq_delayed_open(aw) != 0)
                return;
        struct amqp_queue *q = aw->delayq;
        uint64_t now_wall = sl_realtime_ms();
        uint32_t n = 0;
        struct amqp_msg *m;
        while ((m = amqp_queue_pop(q))) {
                uint64_t due_wall = m->expires_ms;
                m->expires_ms = 0;
                m->redelivered = false; /* never delivered: it was held */
                struct amqp_exchange *e =
                    amqp_ex_find(aw, (struct amqp_bytes){amqp_msg_bytes(m), m->ex_len});
                uint64_t wait = due_wall > now_wall ? due_wall - now_wall : 0;
                if (!e || !e->delayed || !delayed_push(aw, m, aw->w->now_ms + wait)) {
                        amqp_dq_ack(aw, q, m); /* its exchange is gone */
                        amqp_msg_free(m);
                        continue;
                }
                n++;
        }
        if (n)
                SL_INFO("amqp: %u delayed messages held again", n);
}

/* A released message's target queue has it (durably where it must): once
 * all have, it is acked in the delayed log. */
void amqp_delayed_released(struct amqp_worker *aw, int64_t loff)
{
        for (uint32_t i = 0; i < aw->nrel; i++) {
                if (aw->rel[i].loff != loff)
                        continue;
                if (--aw->rel[i].pending == 0) {
                        amqp_dq_ack_off(aw, aw->delayq, loff);
                        aw->rel[i] = aw->rel[--aw->nrel];
                }
                return;
        }
}

/* Routes the held messages that are due (through the exchange's type). */
uint32_t amqp_delayed_poll(struct amqp_worker *aw)
{
        uint32_t n = 0;
        if (aw->delayq && aw->delayq->trim_wanted)
                amqp_dq_trim(aw, aw->delayq);
        while (aw->ndelayed && aw->delayed[0].due_ms <= aw->w->now_ms) {
                struct amqp_msg *m = aw->delayed[0].m;
                struct amqp_delayed last = aw->delayed[--aw->ndelayed];
                uint32_t i = 0;
                for (;;) {
                        uint32_t c = 2 * i + 1;
                        if (c >= aw->ndelayed)
                                break;
                        if (c + 1 < aw->ndelayed &&
                            delayed_before(&aw->delayed[c + 1], &aw->delayed[c]))
                                c++;
                        if (!delayed_before(&aw->delayed[c], &last))
                                break;
                        aw->delayed[i] = aw->delayed[c];
                        i = c;
                }
                if (aw->ndelayed)
                        aw->delayed[i] = last;
                /* A stored one is acked in the delayed log only once every
                 * queue it reaches has it (their appends, or the other
                 * workers' acceptances, answer this origin): a crash in
                 * between brings it back rather than losing it. */
                int64_t loff = m->loff;
                struct amqp_origin o = {0};
                if (loff >= 0) {
                        o.slot = AMQP_SLOT_DELAYED;
                        o.seq = (uint64_t)loff + 1;
                }
                uint32_t pending, rejected;
                if (amqp_route(aw, m, &o, &pending, &rejected) == 0) {
                        sl_counter_add(&aw->unroutable, 1);
                        amqp_msg_free(m);
                        pending = 0;
                }
                if (loff >= 0 && pending == 0) {
                        amqp_dq_ack_off(aw, aw->delayq, loff);
                } else if (loff >= 0) {
                        if (aw->nrel == aw->rel_cap) {
                                uint32_t cap = aw->rel_cap ? aw->rel_cap * 2 : 64;
                                struct amqp_release *r = realloc(aw->rel, cap * sizeof(*r));
                                SL_ASSERT(r); /* grown, kept; bounded by the releases in flight */
                                aw->rel = r;
                                aw->rel_cap = cap;
                        }
                        aw->rel[aw->nrel++] = (struct amqp_release){loff, pending};
                }
                n++;
        }
        return n;
}
