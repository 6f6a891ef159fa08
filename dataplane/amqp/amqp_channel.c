/* Channel-level methods of the AMQP broker: exchange/queue declare, bind,
 * delete, purge, publish (method, header and body frames), consume, cancel,
 * get, ack/nack/reject and tx. Runs on the connection's worker. */

#include "amqp_internal.h"

/* ---- channel-level methods ------------------------------------------------- */

_Thread_local int64_t amqp_msg_held_bytes;

/* Returns the message with its header zeroed, NULL if out of memory. */
struct amqp_msg *amqp_msg_alloc(uint64_t bytes)
{
        struct amqp_msg *m = malloc(bytes);
        if (!m)
                return NULL;
        memset(m, 0, sizeof(*m));
        m->alloc_bytes = bytes;
        amqp_msg_held_bytes += (int64_t)bytes;
        return m;
}

static void msg_release(struct amqp_msg *m)
{
        amqp_msg_held_bytes -= (int64_t)m->alloc_bytes;
        free(m);
}

/* Like free(), NULL is nothing to do. A fan-out copy lets go of its
 * owner's bytes; an owner still read by copies stays until the last goes. */
void amqp_msg_free(struct amqp_msg *m)
{
        if (!m)
                return;
        struct amqp_msg *owner = m->body_of;
        if (owner) {
                msg_release(m);
                if (--owner->body_refs == 0 && owner->body_dead)
                        msg_release(owner);
                return;
        }
        if (m->body_refs) {
                m->body_dead = true;
                m->next = NULL;
                return;
        }
        msg_release(m);
}

/* A copy of owner's header for another queue on this worker, reading
 * owner's bytes (fan-out without copying the body). NULL if out of memory. */
struct amqp_msg *amqp_msg_share(struct amqp_msg *owner)
{
        SL_DASSERT(!owner->body_of && !owner->body_dead);
        struct amqp_msg *cp = amqp_msg_alloc(sizeof(*cp));
        if (!cp)
                return NULL;
        uint64_t bytes = cp->alloc_bytes;
        memcpy(cp, owner, sizeof(*cp));
        cp->alloc_bytes = bytes;
        cp->next = NULL;
        cp->body_of = owner;
        cp->body_refs = 0;
        owner->body_refs++;
        return cp;
}

/* m is about to leave this worker (to a consumer, a get or a queue on
 * another): the bytes must go with it, shared with nobody. Returns m, or a
 * whole copy replacing it (m is then freed). */
struct amqp_msg *amqp_msg_own(struct amqp_msg *m)
{
        if (!m->body_of && !m->body_refs)
                return m;
        uint64_t n = (uint64_t)m->ex_len + m->rk_len + m->hdr_len + m->body_len;
        struct amqp_msg *w = amqp_msg_alloc(sizeof(*w) + n);
        SL_ASSERT(w); /* as the cross-worker batches: no way to refuse here */
        uint64_t bytes = w->alloc_bytes;
        memcpy(w, m, sizeof(*w));
        memcpy(w->data, amqp_msg_bytes(m), n);
        w->alloc_bytes = bytes;
        w->body_of = NULL;
        w->body_refs = 0;
        w->body_dead = false;
        m->next = NULL;
        amqp_msg_free(m);
        return w;
}

struct amqp_msg *amqp_msg_new(struct amqp_bytes ex, struct amqp_bytes rk, uint64_t hdr_max,
                              uint64_t body_len)
{
        struct amqp_msg *m = amqp_msg_alloc(sizeof(*m) + ex.len + rk.len + hdr_max + body_len);
        if (!m)
                return NULL;
        m->loff = -1;
        m->ttl_ms = -1;
        m->ex_len = (uint8_t)ex.len;
        m->rk_len = (uint8_t)rk.len;
        memcpy(m->data, ex.ptr, ex.len);
        memcpy(m->data + ex.len, rk.ptr, rk.len);
        m->body_len = body_len;
        return m;
}

long amqp_on_exchange_declare(struct sl_conn *c, struct amqp_channel *ch,
                              const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_EXCHANGE_DECLARE_EXCHANGE].b;
        struct amqp_bytes type = m->args[AMQP_EXCHANGE_DECLARE_TYPE].b;
        bool passive = m->args[AMQP_EXCHANGE_DECLARE_PASSIVE].u;
        int t = -1;
        if (type.len == 6 && !memcmp(type.ptr, "direct", 6))
                t = AMQP_EX_DIRECT;
        else if (type.len == 6 && !memcmp(type.ptr, "fanout", 6))
                t = AMQP_EX_FANOUT;
        else if (type.len == 5 && !memcmp(type.ptr, "topic", 5))
                t = AMQP_EX_TOPIC;
        else if (amqp_bytes_is(type, "headers"))
                t = AMQP_EX_HEADERS;
        else if (amqp_bytes_is(type, "x-delayed-message")) {
                struct amqp_field dt;
                int sub = -1;
                if (amqp_table_find(m->args[AMQP_EXCHANGE_DECLARE_ARGUMENTS].b, "x-delayed-type",
                                    &dt) == 1 &&
                    dt.tag == 'S')
                        sub = amqp_bytes_is(dt.v.b, "direct")    ? AMQP_EX_DIRECT
                              : amqp_bytes_is(dt.v.b, "fanout")  ? AMQP_EX_FANOUT
                              : amqp_bytes_is(dt.v.b, "topic")   ? AMQP_EX_TOPIC
                              : amqp_bytes_is(dt.v.b, "headers") ? AMQP_EX_HEADERS
                                                                 : -1;
                if (sub < 0 && !passive)
                        return amqp_chan_error(
                            c, ch, 406,
                            "Invalid argument, 'x-delayed-type' must be an existing "
                            "exchange type",
                            m->key);
                t = sub | AMQP_EX_DELAYED;
        }
        struct amqp_exchange *e = amqp_ex_find(aw, name);
        if (passive) {
                if (!e)
                        return amqp_chan_error(c, ch, 404, "no exchange", m->key);
        } else if (name.len == 0) {
                return amqp_chan_error(c, ch, 403, "the default exchange cannot be declared",
                                       m->key);
        } else if (t < 0) {
                return amqp_conn_error(c, 503, "invalid exchange type", m->key);
        } else if (e && (e->type | (e->delayed ? AMQP_EX_DELAYED : 0)) != t) {
                return amqp_chan_error(c, ch, 406, "inequivalent arg 'type'", m->key);
        } else if (!e) {
                if (name.len >= 4 && !memcmp(name.ptr, "amq.", 4))
                        return amqp_chan_error(c, ch, 403, "exchange names amq.* are reserved",
                                               m->key);
                struct amqp_topo *x = amqp_topo_new(c, ch, AMQP_TOPO_EX_DECLARE, m->key);
                if (!x)
                        return amqp_conn_error(c, 541, "out of memory", m->key);
                name_set(&x->a, name);
                x->ex_type = (uint8_t)t;
                x->nowait = m->args[AMQP_EXCHANGE_DECLARE_NOWAIT].u;
                x->durable = m->args[AMQP_EXCHANGE_DECLARE_DURABLE].u;
                if (x->durable)
                        amqp_topo_def(x, CTL_AMQP_DEF_PUT);
                return amqp_topo_submit(aw, c, x);
        }
        if (m->args[AMQP_EXCHANGE_DECLARE_NOWAIT].u)
                return 0;
        return amqp_send_simple(c, ch->id, AMQP_EXCHANGE_DECLARE_OK);
}

/* 406 when a redeclaration differs from the queue; 405 when another
 * connection holds it exclusively. Returns non-zero after an error. */
long amqp_queue_check_equivalent(struct sl_conn *c, struct amqp_channel *ch,
                                 const struct amqp_qref *r, bool durable, bool exclusive,
                                 bool auto_delete, const struct amqp_qargs *qa, uint32_t key)
{
        if (r->owner_conn && r->owner_conn != c->id) {
                amqp_chan_error(c, ch, 405, "queue is exclusive to another connection", key);
                return 1;
        }
        const char *what = r->durable != durable           ? "durable"
                           : r->exclusive != exclusive     ? "exclusive"
                           : r->auto_delete != auto_delete ? "auto_delete"
                                                           : amqp_qargs_differ(&r->qa, qa);
        if (!what)
                return 0;
        char t[320];
        snprintf(t, sizeof(t), "inequivalent arg '%s' for queue '%s'", what, r->name.s);
        amqp_chan_error(c, ch, 406, t, key);
        return 1;
}

long amqp_on_queue_declare(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_QUEUE_DECLARE_QUEUE].b;
        char gen[64];
        if (name.len == 0) {
                snprintf(gen, sizeof(gen), "amq.gen-%u-%llx", c->w->id,
                         (unsigned long long)++aw->gen_seq * 0x9e3779b97f4a7c15ull);
                name = amqp_cstr(gen);
        }
        struct amqp_qref *r = amqp_qref_find(aw, name);
        if (r && amqp_qref_local(aw, r) && !r->q)
                r = NULL; /* deleted here; its Q_DELETE is ahead of any new declare */
        bool passive = m->args[AMQP_QUEUE_DECLARE_PASSIVE].u;
        bool durable = m->args[AMQP_QUEUE_DECLARE_DURABLE].u;
        bool exclusive = m->args[AMQP_QUEUE_DECLARE_EXCLUSIVE].u;
        bool auto_delete = m->args[AMQP_QUEUE_DECLARE_AUTO_DELETE].u;
        bool nowait = m->args[AMQP_QUEUE_DECLARE_NOWAIT].u;
        struct amqp_qargs qa;
        struct amqp_name qn;
        name_set(&qn, name);
        char text[700];
        if (!passive) {
                int code = amqp_qargs_parse(m->args[AMQP_QUEUE_DECLARE_ARGUMENTS].b, &qn, &qa, text,
                                            sizeof(text));
                if (code)
                        return amqp_chan_error(c, ch, (uint16_t)code, text, m->key);
        }
        if (!r && !passive && name.ptr != (const uint8_t *)gen && name.len >= 4 &&
            !memcmp(name.ptr, "amq.", 4))
                return amqp_chan_error(c, ch, 403, "queue names amq.* are reserved", m->key);
        if (!r) {
                if (passive)
                        return amqp_chan_error(c, ch, 404, "no queue", m->key);
                struct amqp_topo *t = amqp_topo_new(c, ch, AMQP_TOPO_Q_DECLARE, m->key);
                if (!t)
                        return amqp_conn_error(c, 541, "out of memory", m->key);
                name_set(&t->a, name);
                /* Placed on the declaring connection's worker: the usual
                 * declarer is also the consumer (and always is for
                 * exclusive and server-named queues), so delivery stays
                 * local and an exclusive queue dies with its owner here. */
                t->worker = c->w->id;
                t->durable = durable;
                t->exclusive = exclusive;
                t->auto_delete = auto_delete;
                t->owner_conn = exclusive ? c->id : 0;
                t->nowait = nowait;
                t->qa = qa;
                /* exclusive queues die with their connection: never stored */
                if (durable && !exclusive)
                        amqp_topo_def(t, CTL_AMQP_DEF_PUT);
                return amqp_topo_submit(aw, c, t);
        }
        if (passive) {
                if (r->owner_conn && r->owner_conn != c->id)
                        return amqp_chan_error(c, ch, 405,
                                               "queue is exclusive to another connection", m->key);
        } else if (amqp_queue_check_equivalent(c, ch, r, durable, exclusive, auto_delete, &qa,
                                               m->key)) {
                return 0;
        }
        if (nowait)
                return 0;
        if (amqp_qref_local(aw, r) && r->q) {
                amqp_queue_expire(aw, r->q);
                r->q->last_used_ms = aw->w->now_ms;
        }
        if (amqp_qref_local(aw, r))
                return amqp_queue_declare_ok(c, ch, name_view(&r->name), r->q ? r->q->count : 0,
                                             r->q ? r->q->nconsumers : 0);
        struct amqp_qop *o = amqp_qop_new(c, ch, AMQP_QOP_STAT, r, m->key);
        if (!o)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        return amqp_qop_submit(aw, c, r->worker, o);
}

/* Finds a queue in the routing table for a channel method: 404 if missing,
 * 405 if another connection holds it exclusively. */
static struct amqp_qref *queue_lookup(struct sl_conn *c, struct amqp_channel *ch,
                                      struct amqp_bytes name, uint32_t key, long *err)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_qref *r = amqp_qref_find(aw, name);
        if (!r || (amqp_qref_local(aw, r) && !r->q)) {
                char t[300];
                snprintf(t, sizeof(t), "no queue '%.*s' in vhost '/'", (int)name.len,
                         (const char *)name.ptr);
                *err = amqp_chan_error(c, ch, 404, t, key);
                return NULL;
        }
        if (r->owner_conn && r->owner_conn != c->id) {
                *err = amqp_chan_error(c, ch, 405, "queue is exclusive to another connection", key);
                return NULL;
        }
        return r;
}

long amqp_on_queue_bind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        bool bind = m->key == AMQP_QUEUE_BIND;
        /* queue, exchange and routing key share their positions */
        long err = 0;
        struct amqp_qref *r = queue_lookup(c, ch, m->args[AMQP_QUEUE_BIND_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        struct amqp_bytes exn = m->args[AMQP_QUEUE_BIND_EXCHANGE].b;
        if (exn.len == 0)
                return amqp_chan_error(c, ch, 403,
                                       "operation not permitted on the default exchange", m->key);
        struct amqp_exchange *e = amqp_ex_find(aw, exn);
        if (!e)
                return amqp_chan_error(c, ch, 404, "no exchange", m->key);
        struct amqp_topo *t =
            amqp_topo_new(c, ch, bind ? AMQP_TOPO_Q_BIND : AMQP_TOPO_Q_UNBIND, m->key);
        if (!t)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        t->a = r->name;
        name_set(&t->b, exn);
        name_set(&t->key, m->args[AMQP_QUEUE_BIND_ROUTING_KEY].b);
        t->nowait = bind && m->args[AMQP_QUEUE_BIND_NOWAIT].u;
        if (amqp_topo_bind_args(
                t, m->args[bind ? AMQP_QUEUE_BIND_ARGUMENTS : AMQP_QUEUE_UNBIND_ARGUMENTS].b)) {
                free(t);
                return amqp_chan_error(c, ch, 406, "binding arguments over 512 bytes", m->key);
        }
        /* a binding is durable when both ends are (as in RabbitMQ) */
        if (r->durable && !r->exclusive && e->durable)
                amqp_topo_def(t, bind ? CTL_AMQP_DEF_PUT : CTL_AMQP_DEF_DELETE);
        return amqp_topo_submit(aw, c, t);
}

/* Unlinks q here: consumers cancelled (notified when the client asked for
 * it; remote ones through their stubs), ready messages freed. Unacked ones
 * keep q alive until they settle. The routing table forgets q when the
 * caller's Q_DELETE change is applied. Returns the ready messages dropped. */
uint64_t amqp_queue_delete(struct amqp_worker *aw, struct amqp_queue *q)
{
        for (struct amqp_queue **pp = &aw->queues; *pp; pp = &(*pp)->next)
                if (*pp == q) {
                        *pp = q->next;
                        break;
                }
        if (aw->qid_cache == q)
                aw->qid_cache = NULL;
        struct amqp_qref *r = amqp_qref_by_qid(aw, q->qid);
        if (r)
                r->q = NULL;
        q->deleted = true;
        amqp_dq_remove(aw, q);
        sl_counter_add(&aw->queues_n, -1);
        while (q->consumers) {
                struct amqp_consumer *k = q->consumers;
                if (k->proxy) {
                        struct sl_msg m = {.type = CTL_AMQP_MSG_CANCELLED};
                        m.a.ptr[0] = k->peer;
                        amqp_out_msg(aw, k->rworker, &m);
                        amqp_proxy_unlink(k);
                        continue;
                }
                struct amqp_conn *kc = k->c->proto_state;
                if (kc->cancel_notify && k->c->state == SL_CONN_OPEN && !k->ch->closing) {
                        struct amqp_method cm;
                        amqp_method_init(&cm, AMQP_BASIC_CANCEL);
                        cm.args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b = name_view(&k->tag);
                        cm.args[AMQP_BASIC_CANCEL_NOWAIT].u = 1;
                        amqp_send_method(k->c, k->ch->id, &cm);
                }
                amqp_consumer_remove(k);
        }
        uint64_t n = q->count;
        struct amqp_msg *m;
        while ((m = amqp_queue_pop(q)))
                amqp_msg_free(m);
        if (!q->unacked_refs)
                amqp_queue_free(q);
        return n;
}

long amqp_on_queue_delete(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_QUEUE_DELETE_QUEUE].b;
        struct amqp_qref *r = amqp_qref_find(aw, name);
        bool nowait = m->args[AMQP_QUEUE_DELETE_NOWAIT].u;
        /* A missing queue is deleted already: delete-ok, as RabbitMQ does. */
        if (!r || (amqp_qref_local(aw, r) && !r->q)) {
                if (nowait)
                        return 0;
                struct amqp_method ok;
                amqp_method_init(&ok, AMQP_QUEUE_DELETE_OK);
                return amqp_send_method(c, ch->id, &ok);
        }
        long err = 0;
        if (!queue_lookup(c, ch, name, m->key, &err))
                return err;
        struct amqp_qop *o = amqp_qop_new(c, ch, AMQP_QOP_DELETE, r, m->key);
        if (!o)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        o->if_unused = m->args[AMQP_QUEUE_DELETE_IF_UNUSED].u;
        o->if_empty = m->args[AMQP_QUEUE_DELETE_IF_EMPTY].u;
        o->nowait = nowait;
        if (!amqp_qref_local(aw, r))
                return amqp_qop_submit(aw, c, r->worker, o);
        /* here: run it now; the client waits for the routing-table change
         * (or gets the error) */
        o->reply = true;
        amqp_conn_wait(c);
        amqp_qop_exec(aw, o);
        return 0;
}

long amqp_on_queue_purge(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_qref *r = queue_lookup(c, ch, m->args[AMQP_QUEUE_PURGE_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        struct amqp_qop *o = amqp_qop_new(c, ch, AMQP_QOP_PURGE, r, m->key);
        if (!o)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        o->nowait = m->args[AMQP_QUEUE_PURGE_NOWAIT].u;
        if (!amqp_qref_local(aw, r))
                return amqp_qop_submit(aw, c, r->worker, o);
        amqp_conn_wait(c);
        amqp_qop_exec(aw, o);
        return 0;
}

/* exchange.bind / exchange.unbind: messages flow from source to
 * destination. */
long amqp_on_exchange_bind(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        bool bind = m->key == AMQP_EXCHANGE_BIND;
        struct amqp_bytes dn = m->args[AMQP_EXCHANGE_BIND_DESTINATION].b;
        struct amqp_bytes sn = m->args[AMQP_EXCHANGE_BIND_SOURCE].b;
        struct amqp_bytes key = m->args[AMQP_EXCHANGE_BIND_ROUTING_KEY].b;
        if (dn.len == 0 || sn.len == 0)
                return amqp_chan_error(c, ch, 403,
                                       "operation not permitted on the default exchange", m->key);
        struct amqp_exchange *dst = amqp_ex_find(aw, dn), *src = amqp_ex_find(aw, sn);
        if (!dst || !src)
                return amqp_chan_error(
                    c, ch, 404, !dst ? "no destination exchange" : "no source exchange", m->key);
        struct amqp_topo *t =
            amqp_topo_new(c, ch, bind ? AMQP_TOPO_EX_BIND : AMQP_TOPO_EX_UNBIND, m->key);
        if (!t)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        name_set(&t->a, dn);
        name_set(&t->b, sn);
        name_set(&t->key, key);
        t->nowait = m->args[AMQP_EXCHANGE_BIND_NOWAIT].u;
        if (amqp_topo_bind_args(t, m->args[AMQP_EXCHANGE_BIND_ARGUMENTS].b)) {
                free(t);
                return amqp_chan_error(c, ch, 406, "binding arguments over 512 bytes", m->key);
        }
        if (src->durable && dst->durable)
                amqp_topo_def(t, bind ? CTL_AMQP_DEF_PUT : CTL_AMQP_DEF_DELETE);
        return amqp_topo_submit(aw, c, t);
}

long amqp_on_exchange_delete(struct sl_conn *c, struct amqp_channel *ch,
                             const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_bytes name = m->args[AMQP_EXCHANGE_DELETE_EXCHANGE].b;
        if (name.len == 0 || (name.len >= 4 && !memcmp(name.ptr, "amq.", 4)))
                return amqp_chan_error(c, ch, 403, "cannot delete a built-in exchange", m->key);
        struct amqp_exchange *e = amqp_ex_find(aw, name);
        bool nowait = m->args[AMQP_EXCHANGE_DELETE_NOWAIT].u;
        if (!e)
                return nowait ? 0 : amqp_send_simple(c, ch->id, AMQP_EXCHANGE_DELETE_OK);
        if (m->args[AMQP_EXCHANGE_DELETE_IF_UNUSED].u && e->bindings)
                return amqp_chan_error(c, ch, 406, "exchange in use", m->key);
        struct amqp_topo *t = amqp_topo_new(c, ch, AMQP_TOPO_EX_DELETE, m->key);
        if (!t)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        name_set(&t->a, name);
        t->nowait = nowait;
        if (e->durable)
                amqp_topo_def(t, CTL_AMQP_DEF_DELETE_EXCHANGE);
        return amqp_topo_submit(aw, c, t);
}

long amqp_on_publish(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        if (m->args[AMQP_BASIC_PUBLISH_IMMEDIATE].u)
                return amqp_conn_error(c, 540, "immediate=true", m->key);
        struct amqp_bytes ex = m->args[AMQP_BASIC_PUBLISH_EXCHANGE].b;
        if (ex.len && !amqp_ex_find(aw, ex)) {
                char t[300];
                snprintf(t, sizeof(t), "no exchange '%.*s' in vhost '/'", (int)ex.len,
                         (const char *)ex.ptr);
                return amqp_chan_error(c, ch, 404, t, m->key);
        }
        /* The message is allocated once its header gives the body size. */
        name_set(&ch->pub_ex, ex);
        name_set(&ch->pub_rk, m->args[AMQP_BASIC_PUBLISH_ROUTING_KEY].b);
        ch->publishing = true;
        ch->mandatory = m->args[AMQP_BASIC_PUBLISH_MANDATORY].u;
        ch->want_header = true;
        return 0;
}

/* Routes a published message; basic.return when unroutable and mandatory.
 * seq: its confirm number (0: none); *nremote: queues elsewhere. */
static long publish_route(struct sl_conn *c, struct amqp_channel *ch, struct amqp_msg *m,
                          bool mandatory, uint64_t seq, uint32_t *nremote, uint32_t *nrejected)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_origin o = {c->id, seq, c->slot, c->gen, ch->epoch, ch->id, false};
        *nremote = *nrejected = 0;
        int held = amqp_delayed_hold(aw, m, &o);
        if (held) {
                /* accepted by the exchange, routed when due; a persistent
                 * one in a durable exchange is confirmed once stored */
                *nremote = held == 2;
                return 0;
        }
        if (amqp_route(aw, m, &o, nremote, nrejected) == 0) {
                sl_counter_add(&aw->unroutable, 1);
                if (mandatory) {
                        sl_counter_add(&aw->returned, 1);
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_RETURN);
                        r.args[AMQP_BASIC_RETURN_REPLY_CODE].u = 312;
                        r.args[AMQP_BASIC_RETURN_REPLY_TEXT].b = amqp_cstr("NO_ROUTE");
                        r.args[AMQP_BASIC_RETURN_EXCHANGE].b =
                            (struct amqp_bytes){amqp_msg_bytes(m), m->ex_len};
                        r.args[AMQP_BASIC_RETURN_ROUTING_KEY].b =
                            (struct amqp_bytes){amqp_msg_bytes(m) + m->ex_len, m->rk_len};
                        /* no room: the return is dropped (output is full) */
                        int rc = amqp_send_content(c, ch->id, &r, m);
                        if (rc == -ENOBUFS) {
                                amqp_msg_free(m);
                                return -1;
                        }
                }
                amqp_msg_free(m);
        }
        return 0;
}

static long publish_done(struct sl_conn *c, struct amqp_channel *ch)
{
        struct amqp_msg *m = ch->pub;
        ch->pub = NULL;
        ch->publishing = false;
        sl_counter_add(&aw_of(c->w)->published, 1);
        if (aw_of(c->w)->alarm) {
                struct amqp_conn *ac = c->proto_state;
                ac->block_after = true; /* stop reading once this frame is handled */
        }
        if (ch->tx) {
                m->mandatory = ch->mandatory;
                amqp_list_append(&ch->txp_head, &ch->txp_tail, m);
                return 0;
        }
        uint64_t seq = ch->confirm ? ++ch->pub_seq : 0;
        uint32_t nremote = 0, nrejected = 0;
        if (publish_route(c, ch, m, ch->mandatory, seq, &nremote, &nrejected))
                return -1;
        if (ch->confirm)
                return amqp_confirm_add(c, ch, seq, nremote, nrejected > 0);
        return 0;
}

long amqp_on_header(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_frame *f)
{
        struct amqp_header h;
        int rc = amqp_header_decode(f->payload, f->size, &h);
        if (rc < 0)
                return amqp_conn_error(c, (uint16_t)-rc, "bad content header", AMQP_BASIC_PUBLISH);
        if (h.class_id != AMQP_CLASS_BASIC)
                return amqp_conn_error(c, 505, "content header for a class other than basic",
                                       AMQP_BASIC_PUBLISH);
        /* A delivery goes out whole or waits for room (amqp_send_content), so a
         * message must fit in a consumer's output cap with room to spare. */
        uint64_t max = SL_MIN(c->w->limits.amqp_message_bytes_max,
                              c->w->limits.pending_response_bytes_max / 2);
        if (h.body_size > max) {
                char t[96];
                snprintf(t, sizeof(t), "message size %llu larger than max size %llu",
                         (unsigned long long)h.body_size, (unsigned long long)max);
                return amqp_chan_error(c, ch, 406, t, AMQP_BASIC_PUBLISH);
        }
        /* The one allocation per message (freed on ack or no-ack delivery). */
        struct amqp_msg *m =
            amqp_msg_new(name_view(&ch->pub_ex), name_view(&ch->pub_rk), f->size, h.body_size);
        ch->pub = m;
        if (!m)
                return amqp_conn_error(c, 541, "out of memory", AMQP_BASIC_PUBLISH);
        m->hdr_len = f->size;
        m->persistent = amqp_header_has(&h, AMQP_BASIC_PROP_DELIVERY_MODE) &&
                        h.props[AMQP_BASIC_PROP_DELIVERY_MODE].u == 2;
        m->ttl_ms = amqp_expiration_ms(&h);
        if (amqp_header_has(&h, AMQP_BASIC_PROP_PRIORITY))
                m->priority = (uint8_t)h.props[AMQP_BASIC_PROP_PRIORITY].u;
        memcpy(m->data + m->ex_len + m->rk_len, f->payload, f->size);
        ch->want_header = false;
        if (m->body_len == 0)
                return publish_done(c, ch);
        return 0;
}

long amqp_on_body(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_frame *f)
{
        struct amqp_conn *ac = c->proto_state;
        if ((uint64_t)f->size + AMQP_FRAME_OVERHEAD > ac->frame_max)
                return amqp_conn_error(c, 501, "body frame larger than the negotiated frame_max",
                                       AMQP_BASIC_PUBLISH);
        struct amqp_msg *m = ch->pub;
        if (m->got + f->size > m->body_len)
                return amqp_conn_error(c, 501, "body frames longer than body-size",
                                       AMQP_BASIC_PUBLISH);
        memcpy(m->data + m->ex_len + m->rk_len + m->hdr_len + m->got, f->payload, f->size);
        m->got += f->size;
        if (m->got == m->body_len)
                return publish_done(c, ch);
        return 0;
}

long amqp_on_consume(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_qref *r =
            queue_lookup(c, ch, m->args[AMQP_BASIC_CONSUME_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        struct amqp_bytes tag = m->args[AMQP_BASIC_CONSUME_CONSUMER_TAG].b;
        char gen[48];
        if (tag.len == 0) {
                snprintf(gen, sizeof(gen), "amq.ctag-%llu-%u-%llu", (unsigned long long)c->id,
                         ch->id, (unsigned long long)++ch->ctag_seq);
                tag = amqp_cstr(gen);
        }
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                if (name_eq(&k->tag, tag))
                        return amqp_conn_error(c, 530, "attempt to reuse consumer tag", m->key);
        bool exclusive = m->args[AMQP_BASIC_CONSUME_EXCLUSIVE].u;
        if (!amqp_qref_local(aw, r)) {
                /* The stub is linked to the channel once the queue's worker
                 * has its proxy (amqp_qop_reply). */
                struct amqp_consumer *k = calloc(1, sizeof(*k));
                struct amqp_qop *o = amqp_qop_new(c, ch, AMQP_QOP_CONSUME, r, m->key);
                if (!k || !o) {
                        free(k);
                        free(o);
                        return amqp_conn_error(c, 541, "out of memory", m->key);
                }
                name_set(&k->tag, tag);
                k->stub = true;
                k->c = c;
                k->ch = ch;
                k->rworker = r->worker;
                k->qid = r->qid;
                k->no_ack = m->args[AMQP_BASIC_CONSUME_NO_ACK].u;
                /* The per-consumer prefetch is counted by the queue's worker;
                 * basic.qos global=1 by this one (amqp_stub_write holds what
                 * would pass it), with the hop's window no larger. */
                k->prefetch = ch->prefetch;
                o->window =
                    ch->gprefetch ? SL_MIN(ch->gprefetch, AMQP_REMOTE_WINDOW) : AMQP_REMOTE_WINDOW;
                o->stub = k;
                o->no_ack = k->no_ack;
                o->exclusive = exclusive;
                o->prefetch = k->prefetch;
                o->nowait = m->args[AMQP_BASIC_CONSUME_NOWAIT].u;
                return amqp_qop_submit(aw, c, r->worker, o);
        }
        struct amqp_queue *q = r->q;
        if (q->exclusive_consumer || (exclusive && q->nconsumers))
                return amqp_chan_error(c, ch, 403, "queue has an exclusive consumer or is in use",
                                       m->key);
        struct amqp_consumer *k = calloc(1, sizeof(*k));
        if (!k)
                return amqp_conn_error(c, 541, "out of memory", m->key);
        name_set(&k->tag, tag);
        k->q = q;
        k->c = c;
        k->ch = ch;
        k->no_ack = m->args[AMQP_BASIC_CONSUME_NO_ACK].u;
        q->exclusive_consumer = exclusive;
        k->prefetch = ch->prefetch;
        k->next_in_chan = ch->consumers;
        ch->consumers = k;
        amqp_consumer_append(q, k);
        q->nconsumers++;
        if (!m->args[AMQP_BASIC_CONSUME_NOWAIT].u) {
                struct amqp_method ok;
                amqp_method_init(&ok, AMQP_BASIC_CONSUME_OK);
                ok.args[AMQP_BASIC_CONSUME_OK_CONSUMER_TAG].b = name_view(&k->tag);
                if (amqp_send_method(c, ch->id, &ok))
                        return -1;
        }
        amqp_queue_dispatch(aw, q);
        return 0;
}

long amqp_on_cancel(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_bytes tag = m->args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b;
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                if (name_eq(&k->tag, tag)) {
                        if (k->stub) {
                                /* cancel-ok once the proxy is gone: nothing
                                 * is delivered after it */
                                amqp_stub_cancel(aw_of(c->w), k, c, ch->id, m->key,
                                                 m->args[AMQP_BASIC_CANCEL_NOWAIT].u);
                                return 0;
                        }
                        amqp_consumer_remove(k);
                        break;
                }
        if (m->args[AMQP_BASIC_CANCEL_NOWAIT].u)
                return 0;
        struct amqp_method r;
        amqp_method_init(&r, AMQP_BASIC_CANCEL_OK);
        r.args[AMQP_BASIC_CANCEL_OK_CONSUMER_TAG].b = tag;
        return amqp_send_method(c, ch->id, &r);
}

/* basic.get-ok for msg (from a queue here or elsewhere); it joins the
 * unacked list unless no_ack. Non-zero: not sent (msg still the caller's). */
long amqp_get_ok_send(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch,
                      struct amqp_msg *msg, uint64_t left, bool no_ack)
{
        struct amqp_method r;
        amqp_method_init(&r, AMQP_BASIC_GET_OK);
        r.args[AMQP_BASIC_GET_OK_DELIVERY_TAG].u = ch->next_tag + 1;
        r.args[AMQP_BASIC_GET_OK_REDELIVERED].u = msg->redelivered;
        r.args[AMQP_BASIC_GET_OK_EXCHANGE].b =
            (struct amqp_bytes){amqp_msg_bytes(msg), msg->ex_len};
        r.args[AMQP_BASIC_GET_OK_ROUTING_KEY].b =
            (struct amqp_bytes){amqp_msg_bytes(msg) + msg->ex_len, msg->rk_len};
        r.args[AMQP_BASIC_GET_OK_MESSAGE_COUNT].u = (uint32_t)left;
        int rc = amqp_send_content(c, ch->id, &r, msg);
        if (rc == -EAGAIN)
                amqp_doom(c);
        if (rc)
                return -1;
        ch->next_tag++;
        if (no_ack) {
                amqp_msg_free(msg);
        } else {
                msg->dtag = ch->next_tag;
                amqp_unacked_add(aw, ch, msg);
        }
        return 0;
}

long amqp_on_get(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        struct amqp_worker *aw = aw_of(c->w);
        long err = 0;
        struct amqp_qref *r = queue_lookup(c, ch, m->args[AMQP_BASIC_GET_QUEUE].b, m->key, &err);
        if (!r)
                return err;
        bool no_ack = m->args[AMQP_BASIC_GET_NO_ACK].u;
        if (!amqp_qref_local(aw, r)) {
                struct amqp_qop *o = amqp_qop_new(c, ch, AMQP_QOP_GET, r, m->key);
                if (!o)
                        return amqp_conn_error(c, 541, "out of memory", m->key);
                o->no_ack = no_ack;
                return amqp_qop_submit(aw, c, r->worker, o);
        }
        struct amqp_queue *q = r->q;
        amqp_queue_expire(aw, q);
        q->last_used_ms = aw->w->now_ms;
        struct amqp_msg *msg = amqp_queue_pop(q);
        if (!msg)
                return amqp_send_simple(c, ch->id, AMQP_BASIC_GET_EMPTY);
        msg->home = aw->w->id;
        msg->uq = q;
        msg->ucons = NULL;
        msg->tracked = !no_ack;
        if (no_ack)
                amqp_dq_ack(aw, q, msg);
        if (amqp_get_ok_send(aw, c, ch, msg, q->count, no_ack)) {
                amqp_queue_push_front(q, msg);
                return -1;
        }
        sl_counter_add(&aw->delivered, 1);
        return 0;
}

/* basic.ack / reject / nack: settle tag (or everything up to it). */
long amqp_settle(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m,
                 uint64_t tag, bool multiple, bool requeue)
{
        struct amqp_worker *aw = aw_of(c->w);
        struct amqp_msg *req = NULL, **req_tail = &req;
        bool found = false;
        struct amqp_msg **pp = &ch->unacked_head, *prev = NULL;
        while (*pp) {
                struct amqp_msg *x = *pp;
                bool hit = multiple ? (tag == 0 || x->dtag <= tag) : x->dtag == tag;
                if (!hit) {
                        prev = x;
                        pp = &x->next;
                        continue;
                }
                found = true;
                ch->nunacked--;
                *pp = x->next;
                if (ch->unacked_tail == x)
                        ch->unacked_tail = prev;
                x->next = NULL;
                if (requeue) {
                        *req_tail = x;
                        req_tail = &x->next;
                } else if (x->home != aw->w->id) {
                        sl_counter_add(&aw->acked, 1);
                        amqp_stl_push(
                            aw, x, m->key == AMQP_BASIC_ACK ? AMQP_SETTLE_ACK : AMQP_SETTLE_REJECT);
                } else {
                        if (x->ucons)
                                x->ucons->unacked--;
                        sl_counter_add(&aw->acked, 1);
                        struct amqp_queue *q = x->uq;
                        if (m->key == AMQP_BASIC_ACK || q->deleted) {
                                amqp_dq_ack(aw, q, x);
                                amqp_msg_free(x);
                        } else {
                                amqp_dead_letter(aw, q, x, "rejected");
                        }
                        amqp_queue_unref(q);
                }
                if (!multiple)
                        break;
        }
        if (!found && !(multiple && tag == 0)) {
                char t[64];
                snprintf(t, sizeof(t), "unknown delivery tag %llu", (unsigned long long)tag);
                return amqp_chan_error(c, ch, 406, t, m->key);
        }
        /* Credit came back to this channel's consumers; requeued messages
         * may go to anyone (amqp_requeue_list marks their queues). Dispatch
         * only those queues: the hot path of every ack. */
        amqp_requeue_list(aw, req);
        for (struct amqp_consumer *k = ch->consumers; k; k = k->next_in_chan)
                if (!k->stub)
                        amqp_queue_mark(aw, k->q);
        amqp_dispatch_marked(aw);
        if (ch->gprefetch)
                amqp_stubs_writable(aw, c, ch);
        return 0;
}

long amqp_tx_hold_settle(struct sl_conn *c, struct amqp_channel *ch, const struct amqp_method *m)
{
        if (ch->ntxa == ch->txa_cap) {
                uint32_t cap = ch->txa_cap ? ch->txa_cap * 2 : 16;
                struct amqp_txack *n = realloc(ch->txa, cap * sizeof(*n));
                if (!n)
                        return amqp_conn_error(c, 541, "out of memory", m->key);
                ch->txa = n;
                ch->txa_cap = cap;
        }
        struct amqp_txack *a = &ch->txa[ch->ntxa++];
        a->key = m->key;
        a->tag = m->args[0].u; /* delivery-tag is the first argument of all three */
        a->multiple = m->key != AMQP_BASIC_REJECT && m->args[1].u;
        a->requeue = m->key == AMQP_BASIC_REJECT ? m->args[AMQP_BASIC_REJECT_REQUEUE].u
                     : m->key == AMQP_BASIC_NACK ? m->args[AMQP_BASIC_NACK_REQUEUE].u
                                                 : false;
        return 0;
}

long amqp_tx_commit(struct sl_conn *c, struct amqp_channel *ch)
{
        struct amqp_conn *ac = c->proto_state;
        uint16_t id = ch->id;
        struct amqp_msg *p = ch->txp_head;
        ch->txp_head = ch->txp_tail = NULL;
        struct amqp_txack *txa = ch->txa;
        uint32_t n = ch->ntxa;
        ch->txa = NULL;
        ch->ntxa = ch->txa_cap = 0;
        long rc = 0;
        while (p) {
                struct amqp_msg *next = p->next;
                uint32_t nremote, nrejected;
                if (rc == 0)
                        rc = publish_route(c, ch, p, p->mandatory, 0, &nremote, &nrejected);
                else
                        amqp_msg_free(p);
                p = next;
        }
        for (uint32_t i = 0; i < n && rc == 0 && ac->chans[id] == ch; i++) {
                struct amqp_method fake = {.key = txa[i].key};
                rc = amqp_settle(c, ch, &fake, txa[i].tag, txa[i].multiple,
                                 txa[i].key != AMQP_BASIC_ACK && txa[i].requeue);
        }
        free(txa);
        if (rc || ac->chans[id] != ch)
                return rc; /* the channel was closed by an error */
        return amqp_send_simple(c, id, AMQP_TX_COMMIT_OK);
}

long amqp_tx_rollback(struct sl_conn *c, struct amqp_channel *ch)
{
        while (ch->txp_head) {
                struct amqp_msg *m = ch->txp_head;
                ch->txp_head = m->next;
                amqp_msg_free(m);
        }
        ch->txp_tail = NULL;
        ch->ntxa = 0;
        return amqp_send_simple(c, ch->id, AMQP_TX_ROLLBACK_OK);
}
