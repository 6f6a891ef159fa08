/* Across workers: per-destination batches (forwarded publishes,
 * deliveries, settlements) over the mailbox ring, publisher confirms that
 * wait for other workers, remote queue operations, consumer stubs and
 * proxies, and the messages that arrive from other workers and the
 * control thread. */

#include "amqp_internal.h"

/* ---- across workers: links, ordered output ------------------------------- */

static struct amqp_link *link_of(struct amqp_worker *aw, uint16_t dst)
{
        SL_DASSERT(dst <= aw->w->nworkers && dst != aw->w->id);
        return &aw->link[dst];
}

/* Queues one ring message to dst behind everything queued before it. */
static void out_push(struct amqp_worker *aw, uint16_t dst, const struct sl_msg *m)
{
        struct amqp_link *l = link_of(aw, dst);
        struct sl_msg copy = *m;
        if (l->out_n == 0 && sl_mbox_send(&aw->w->mb, dst, &copy) == 0)
                return;
        if (l->out_n == l->out_cap) {
                /* The ring is full: the peer is behind. Keep order; what
                 * is queued is bounded by the windows and by connections
                 * waiting (rx paused) for their replies. */
                uint32_t cap = l->out_cap ? l->out_cap * 2 : 64;
                struct sl_msg *n = malloc(cap * sizeof(*n));
                SL_ASSERT(n);
                for (uint32_t i = 0; i < l->out_n; i++)
                        n[i] = l->out[(l->out_head + i) % l->out_cap];
                free(l->out);
                l->out = n;
                l->out_cap = cap;
                l->out_head = 0;
        }
        l->out[(l->out_head + l->out_n++) % l->out_cap] = *m;
        aw->links_dirty = true;
}

static void fwd_flush(struct amqp_worker *aw, uint16_t dst);

/* Batches for dst become ring messages (before anything else goes to dst). */
static void link_flush(struct amqp_worker *aw, uint16_t dst)
{
        struct amqp_link *l = link_of(aw, dst);
        /* settlements before publishes: an ack is recorded before any
         * message published after it */
        if (l->stl_head) {
                struct sl_msg m = {.type = CTL_AMQP_MSG_SETTLE};
                m.a.ptr[0] = l->stl_head;
                l->stl_head = l->stl_tail = NULL;
                out_push(aw, dst, &m);
        }
        if (l->fwd_head)
                fwd_flush(aw, dst);
        if (l->dlv_head) {
                struct sl_msg m = {.type = CTL_AMQP_MSG_DELIVER};
                m.a.ptr[0] = l->dlv_head;
                l->dlv_head = l->dlv_tail = NULL;
                out_push(aw, dst, &m);
        }
}

/* A one-off message to dst, after the batches already bound for it. */
void amqp_out_msg(struct amqp_worker *aw, uint16_t dst, const struct sl_msg *m)
{
        if (dst < aw->w->nworkers)
                link_flush(aw, dst);
        out_push(aw, dst, m);
}

void amqp_list_append(struct amqp_msg **head, struct amqp_msg **tail, struct amqp_msg *m)
{
        m->next = NULL;
        if (*tail)
                (*tail)->next = m;
        else
                *head = m;
        *tail = m;
}

/* Queue m on one of the link's outgoing lists; flushed once per loop
 * iteration. Shutting down, every worker drops its (in-memory) messages. */
static void link_push(struct amqp_worker *aw, struct amqp_msg **head, struct amqp_msg **tail,
                      struct amqp_msg *m)
{
        if (aw->w->draining) {
                amqp_msg_free(m);
                return;
        }
        amqp_list_append(head, tail, m);
        aw->links_dirty = true;
}

void amqp_fwd_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m)
{
        struct amqp_link *l = link_of(aw, dst);
        link_push(aw, &l->fwd_head, &l->fwd_tail, m);
}

void amqp_dlv_push(struct amqp_worker *aw, uint16_t dst, struct amqp_msg *m)
{
        struct amqp_link *l = link_of(aw, dst);
        link_push(aw, &l->dlv_head, &l->dlv_tail, m);
}

void amqp_stl_push(struct amqp_worker *aw, struct amqp_msg *m, uint8_t op)
{
        struct amqp_link *l = link_of(aw, m->home);
        m->op = op;
        link_push(aw, &l->stl_head, &l->stl_tail, m);
}

static void fwd_flush(struct amqp_worker *aw, uint16_t dst)
{
        struct amqp_link *l = link_of(aw, dst);
        uint32_t n = 0;
        for (struct amqp_msg *m = l->fwd_head; m; m = m->next)
                n += m->o_seq != 0;
        /* One allocation per batch (per destination and loop iteration),
         * not per message. */
        struct amqp_fwd *f = malloc(sizeof(*f) + n * sizeof(f->o[0]));
        SL_ASSERT(f);
        f->msgs = l->fwd_head;
        f->n = 0;
        for (struct amqp_msg *m = l->fwd_head; m; m = m->next)
                if (m->o_seq)
                        f->o[f->n++] = (struct amqp_origin){m->o_conn, m->o_seq,   m->o_slot,
                                                            m->o_gen,  m->o_epoch, m->o_chan};
        l->fwd_head = l->fwd_tail = NULL;
        struct sl_msg msg = {.type = CTL_AMQP_MSG_FWD};
        msg.a.ptr[0] = f;
        out_push(aw, dst, &msg);
}

static void stub_flush_credit(struct amqp_worker *aw)
{
        for (struct amqp_consumer *k = aw->stubs; k; k = k->next_stub) {
                if (!k->credit_owed)
                        continue;
                struct sl_msg m = {.type = CTL_AMQP_MSG_CREDIT, .u32 = k->credit_owed};
                m.a.ptr[0] = k->peer;
                k->credit_owed = 0;
                amqp_out_msg(aw, k->rworker, &m);
        }
}

/* Once per loop iteration: batches out, then the ordered FIFOs into the
 * rings (the runtime publishes them with one flush). */
uint32_t amqp_links_poll(struct sl_worker *w, void *arg)
{
        struct amqp_worker *aw = arg;
        uint32_t work = amqp_dq_poll(aw) + amqp_delayed_poll(aw);
        uint64_t held = (uint64_t)amqp_msg_held_bytes;
        atomic_store_explicit(&aw->held_bytes_pub, amqp_msg_held_bytes, memory_order_relaxed);
        if (held != aw->held_told && w->now_ms - aw->held_told_ms >= 100) {
                /* the memory alarm's input: summed over workers there, in
                 * uint64 arithmetic, which wraps to the right total even
                 * when one worker's count is negative */
                struct sl_msg m = {.type = CTL_AMQP_MSG_HELD, .u16 = w->id};
                m.a.u64[0] = held;
                amqp_out_msg(aw, w->rt->control_ep, &m);
                aw->held_told = held;
                aw->held_told_ms = w->now_ms;
        }
        if (w->now_ms >= aw->next_expire_ms) {
                /* TTL: heads expire even where nobody consumes */
                aw->next_expire_ms = w->now_ms + 50;
                for (struct amqp_queue *q = aw->queues, *next; q; q = next) {
                        next = q->next;
                        amqp_queue_expire(aw, q);
                        if (q->trim_wanted)
                                amqp_dq_trim(aw, q);
                        /* x-expires: unused (no consumer, no get or
                         * declare) for that long, the queue goes */
                        if (q->nconsumers)
                                q->last_used_ms = w->now_ms;
                        else if (q->qa.expires_ms > 0 &&
                                 w->now_ms - q->last_used_ms >= (uint64_t)q->qa.expires_ms)
                                amqp_queue_delete_announce(aw, q, NULL);
                }
        }
        amqp_confirms_flush(aw);
        if (!aw->links_dirty)
                return work;
        aw->links_dirty = false;
        stub_flush_credit(aw);
        for (uint16_t d = 0; d <= w->nworkers; d++) {
                if (d == w->id)
                        continue;
                if (d < w->nworkers)
                        link_flush(aw, d);
                struct amqp_link *l = &aw->link[d];
                while (l->out_n) {
                        if (sl_mbox_send(&w->mb, d, &l->out[l->out_head]) != 0) {
                                aw->links_dirty = true; /* retried next iteration */
                                break;
                        }
                        l->out_head = (l->out_head + 1) % l->out_cap;
                        l->out_n--;
                        work++;
                }
        }
        /* A peer's ring is full: stay awake to retry (nothing else would
         * wake this worker when the peer catches up). */
        return work + (aw->links_dirty ? 1 : 0);
}

struct sl_conn *amqp_conn_find(struct sl_worker *w, uint32_t slot, uint32_t gen, uint64_t id)
{
        if (slot >= w->conns_max)
                return NULL;
        struct sl_conn *c = &w->conns[slot];
        if (c->gen != gen || c->id != id || c->state != SL_CONN_OPEN || c->proto != CTL_PROTO_AMQP)
                return NULL;
        return c;
}

/* The channel a reply is for, if it is still the same open channel. */
struct amqp_channel *amqp_chan_find(struct sl_conn *c, uint16_t chan, uint32_t epoch)
{
        struct amqp_conn *ac = c->proto_state;
        if (!ac->chans || chan > ac->channel_max)
                return NULL;
        struct amqp_channel *ch = ac->chans[chan];
        if (!ch || ch->closing || (epoch && ch->epoch != epoch))
                return NULL;
        return ch;
}

void amqp_conn_wait(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        ac->waiting = true;
        sl_conn_rx_pause(c);
}

void amqp_conn_resume(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        if (!ac->waiting)
                return;
        ac->waiting = false;
        if (ac->doomed || ac->blocked)
                return; /* closed from the next tick, or resumed when the alarm clears */
        sl_conn_rx_resume(c);
}

/* ---- publisher confirms across workers ------------------------------------ */

static long confirm_send(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq, bool multiple)
{
        struct amqp_method a;
        amqp_method_init(&a, AMQP_BASIC_ACK);
        a.args[AMQP_BASIC_ACK_DELIVERY_TAG].u = seq;
        a.args[AMQP_BASIC_ACK_MULTIPLE].u = multiple;
        return amqp_send_method(c, ch->id, &a);
}

/* Sends the channel's deferred acks as one basic.ack. Every confirm up to
 * ack_last is decided (the FIFO pops in order and nacks flush first), so
 * multiple=1 covers exactly the ones not answered yet, as RabbitMQ does. */
static long confirm_flush_chan(struct amqp_channel *ch)
{
        if (!ch->ack_n)
                return 0;
        long rc = confirm_send(ch->ack_conn, ch, ch->ack_last, ch->ack_n > 1);
        ch->ack_n = 0;
        return rc;
}

/* Positive confirms up to seq (n of them) are decided: sent at the end
 * of the iteration, coalesced with any others decided meanwhile. */
static void confirm_defer(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq, uint32_t n)
{
        if (!ch->ack_n && !ch->ack_conn) {
                struct amqp_worker *aw = aw_of(c->w);
                ch->ack_conn = c;
                ch->ack_next = aw->acks_dirty;
                aw->acks_dirty = ch;
        }
        ch->ack_last = seq;
        ch->ack_n += n;
}

/* End of a loop iteration (and of each received chunk): one basic.ack per
 * channel for everything decided since the last flush. */
void amqp_confirms_flush(struct amqp_worker *aw)
{
        while (aw->acks_dirty) {
                struct amqp_channel *ch = aw->acks_dirty;
                aw->acks_dirty = ch->ack_next;
                ch->ack_next = NULL;
                if (ch->ack_n && amqp_conn_usable(ch->ack_conn))
                        confirm_flush_chan(ch);
                ch->ack_n = 0;
                ch->ack_conn = NULL;
        }
}

/* ch is being freed: its decided acks leave first if the connection still
 * writes (a channel.close right after publishes must not swallow their
 * confirms), then it is off the list. */
void amqp_confirms_forget(struct amqp_worker *aw, struct amqp_channel *ch)
{
        if (!ch->ack_conn)
                return;
        if (ch->ack_n && amqp_conn_usable(ch->ack_conn))
                confirm_flush_chan(ch);
        for (struct amqp_channel **pp = &aw->acks_dirty; *pp; pp = &(*pp)->ack_next)
                if (*pp == ch) {
                        *pp = ch->ack_next;
                        break;
                }
        ch->ack_n = 0;
        ch->ack_conn = NULL;
}

static void confirm_nack(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq)
{
        confirm_flush_chan(ch); /* acks before it leave first, in order */
        struct amqp_method a;
        amqp_method_init(&a, AMQP_BASIC_NACK);
        a.args[AMQP_BASIC_NACK_DELIVERY_TAG].u = seq;
        amqp_send_method(c, ch->id, &a);
}

/* Answers every confirm at the head whose queues have all answered: acks
 * deferred to coalesce, nacks one by one. */
static void confirm_pump(struct sl_conn *c, struct amqp_channel *ch)
{
        uint32_t popped = 0;
        uint64_t last = 0;
        while (ch->conf_n && ch->conf[ch->conf_head].pending == 0) {
                struct amqp_confirm *e = &ch->conf[ch->conf_head];
                if (e->nack) {
                        if (popped)
                                confirm_defer(c, ch, last, popped);
                        popped = 0;
                        confirm_nack(c, ch, e->seq);
                } else {
                        last = e->seq;
                        popped++;
                }
                ch->conf_head++;
                ch->conf_n--;
        }
        if (ch->conf_n == 0)
                ch->conf_head = 0;
        if (popped)
                confirm_defer(c, ch, last, popped);
}

/* Publish seq went to nremote queues on other workers: ack now when none
 * and nothing earlier waits, else when the last accepts. */
long amqp_confirm_add(struct sl_conn *c, struct amqp_channel *ch, uint64_t seq, uint32_t nremote,
                      bool nack)
{
        if (nremote == 0 && ch->conf_n == 0) {
                if (nack) {
                        confirm_nack(c, ch, seq);
                        return 0;
                }
                confirm_defer(c, ch, seq, 1);
                return 0;
        }
        if (ch->conf_head + ch->conf_n == ch->conf_cap) {
                if (ch->conf_head) {
                        memmove(ch->conf, ch->conf + ch->conf_head, ch->conf_n * sizeof(*ch->conf));
                        ch->conf_head = 0;
                } else {
                        uint32_t cap = ch->conf_cap ? ch->conf_cap * 2 : 64;
                        struct amqp_confirm *n = realloc(ch->conf, cap * sizeof(*n));
                        if (!n)
                                return amqp_conn_error(c, 541, "out of memory", AMQP_BASIC_PUBLISH);
                        ch->conf = n;
                        ch->conf_cap = cap;
                }
        }
        ch->conf[ch->conf_head + ch->conf_n++] = (struct amqp_confirm){seq, nremote, nack};
        confirm_pump(c, ch);
        return 0;
}

void amqp_confirm_accepted(struct sl_worker *w, const struct amqp_origin *o)
{
        if (o->slot == AMQP_SLOT_DELAYED) {
                amqp_delayed_released(aw_of(w), (int64_t)o->seq - 1);
                return;
        }
        struct sl_conn *c = amqp_conn_find(w, o->slot, o->gen, o->conn);
        if (!c)
                return;
        struct amqp_channel *ch = amqp_chan_find(c, o->chan, o->epoch);
        if (!ch || !ch->conf_n)
                return;
        uint64_t i = o->seq - ch->conf[ch->conf_head].seq;
        if (o->seq < ch->conf[ch->conf_head].seq || i >= ch->conf_n)
                return;
        SL_ASSERT(ch->conf[ch->conf_head + i].pending > 0);
        ch->conf[ch->conf_head + i].pending--;
        ch->conf[ch->conf_head + i].nack |= o->nack;
        confirm_pump(c, ch);
}

/* ---- operations on a queue that lives on another worker ------------------ */

struct amqp_qop *amqp_qop_new(struct sl_conn *c, struct amqp_channel *ch, uint8_t op,
                              const struct amqp_qref *r, uint32_t method)
{
        struct amqp_qop *o = calloc(1, sizeof(*o));
        if (!o)
                return NULL;
        o->op = op;
        o->from = c->w->id;
        o->qid = r->qid;
        o->name = r->name;
        o->conn = c->id;
        o->slot = c->slot;
        o->gen = c->gen;
        o->chan = ch->id;
        o->epoch = ch->epoch;
        o->method = method;
        o->reply = true;
        return o;
}

long amqp_qop_submit(struct amqp_worker *aw, struct sl_conn *c, uint16_t dst, struct amqp_qop *o)
{
        struct sl_msg m = {.type = CTL_AMQP_MSG_QOP};
        m.a.ptr[0] = o;
        amqp_out_msg(aw, dst, &m);
        if (c && o->reply)
                amqp_conn_wait(c);
        return 0;
}

void amqp_stub_unlink(struct amqp_worker *aw, struct amqp_consumer *k)
{
        (void)aw;
        if (!k->prev_stub)
                return;
        *k->prev_stub = k->next_stub;
        if (k->next_stub)
                k->next_stub->prev_stub = k->prev_stub;
        k->prev_stub = NULL;
        k->next_stub = NULL;
}

static void stub_link(struct amqp_worker *aw, struct amqp_consumer *k)
{
        k->next_stub = aw->stubs;
        if (aw->stubs)
                aw->stubs->prev_stub = &k->next_stub;
        aw->stubs = k;
        k->prev_stub = &aw->stubs;
}

/* The channel no longer has stub k: what waits for room goes home, and the
 * proxy is told goodbye (its answer frees k). method != 0: the client
 * waits for cancel-ok. */
void amqp_stub_cancel(struct amqp_worker *aw, struct amqp_consumer *k, struct sl_conn *c,
                      uint16_t chan, uint32_t method, bool nowait)
{
        if (k->ch) {
                for (struct amqp_consumer **pp = &k->ch->consumers; *pp; pp = &(*pp)->next_in_chan)
                        if (*pp == k) {
                                *pp = k->next_in_chan;
                                break;
                        }
        }
        while (k->pend_head) {
                struct amqp_msg *m = k->pend_head;
                k->pend_head = m->next;
                amqp_stl_push(aw, m, AMQP_SETTLE_RETURN);
        }
        k->pend_tail = NULL;
        if (aw->w->draining) {
                /* Shutting down: the proxy's worker stops too, nobody would
                 * answer (nor send more). */
                amqp_stub_unlink(aw, k);
                free(k);
                return;
        }
        struct amqp_qop *o = calloc(1, sizeof(*o));
        SL_ASSERT(o);
        o->op = AMQP_QOP_CANCEL;
        o->from = aw->w->id;
        o->qid = k->qid;
        o->stub = k;
        o->proxy = k->peer;
        o->name = k->tag;
        o->method = method;
        o->nowait = nowait;
        o->reply = method != 0;
        if (c) {
                o->conn = c->id;
                o->slot = c->slot;
                o->gen = c->gen;
                o->chan = chan;
                o->epoch = k->ch ? k->ch->epoch : 0;
        }
        k->detached = true;
        k->c = NULL;
        k->ch = NULL;
        struct sl_msg m = {.type = CTL_AMQP_MSG_QOP};
        m.a.ptr[0] = o;
        amqp_out_msg(aw, k->rworker, &m);
        if (c && method)
                amqp_conn_wait(c);
}

/* Writes a delivery that came from another worker to the stub's client.
 * 0, -EAGAIN (no room: keep it), -ENOBUFS (connection gone). */
int amqp_stub_write(struct amqp_worker *aw, struct amqp_consumer *k, struct amqp_msg *m)
{
        struct amqp_channel *ch = k->ch;
        struct amqp_conn *ac = k->c->proto_state;
        if (ac->phase != AMQP_PH_RUNNING)
                return -ENOBUFS;
        if (m->tracked && ch->gprefetch && ch->nunacked >= ch->gprefetch)
                return -EAGAIN; /* basic.qos global: written once an ack makes room */
        struct amqp_method meth;
        amqp_method_init(&meth, AMQP_BASIC_DELIVER);
        meth.args[AMQP_BASIC_DELIVER_CONSUMER_TAG].b = name_view(&k->tag);
        meth.args[AMQP_BASIC_DELIVER_DELIVERY_TAG].u = ch->next_tag + 1;
        meth.args[AMQP_BASIC_DELIVER_REDELIVERED].u = m->redelivered;
        meth.args[AMQP_BASIC_DELIVER_EXCHANGE].b =
            (struct amqp_bytes){amqp_msg_bytes(m), m->ex_len};
        meth.args[AMQP_BASIC_DELIVER_ROUTING_KEY].b =
            (struct amqp_bytes){amqp_msg_bytes(m) + m->ex_len, m->rk_len};
        int rc = amqp_send_content(k->c, ch->id, &meth, m);
        if (rc)
                return rc;
        ch->next_tag++;
        k->credit_owed++;
        aw->links_dirty = true;
        if (!m->tracked) {
                amqp_msg_free(m);
        } else {
                m->dtag = ch->next_tag;
                amqp_unacked_add(aw, ch, m);
        }
        return 0;
}

static void stub_deliver(struct amqp_worker *aw, struct amqp_consumer *k, struct amqp_msg *m)
{
        if (k->detached) {
                amqp_stl_push(aw, m, AMQP_SETTLE_RETURN);
                return;
        }
        if (!k->pend_head) {
                int rc = amqp_stub_write(aw, k, m);
                if (rc == 0)
                        return;
                if (rc == -ENOBUFS) {
                        amqp_stl_push(aw, m, AMQP_SETTLE_RETURN);
                        return;
                }
        }
        amqp_list_append(&k->pend_head, &k->pend_tail, m);
}

/* Output room came back on c, or (ch) acks made room under basic.qos
 * global: stubs write what waits. */
void amqp_stubs_writable(struct amqp_worker *aw, struct sl_conn *c, struct amqp_channel *ch)
{
        for (struct amqp_consumer *k = aw->stubs; k; k = k->next_stub) {
                if (k->c != c || k->detached || (ch && k->ch != ch))
                        continue;
                while (k->pend_head) {
                        struct amqp_msg *m = k->pend_head;
                        struct amqp_msg *next = m->next;
                        int rc = amqp_stub_write(aw, k, m);
                        if (rc == -EAGAIN)
                                break;
                        k->pend_head = next;
                        if (!next)
                                k->pend_tail = NULL;
                        if (rc)
                                amqp_stl_push(aw, m, AMQP_SETTLE_RETURN);
                }
        }
}

static void proxy_maybe_free(struct amqp_consumer *k)
{
        if (k->released && !k->q && k->inflight == 0 && k->unacked == 0)
                free(k);
}

/* Unlinks a proxy from its queue (cancel or queue deletion). */
void amqp_proxy_unlink(struct amqp_consumer *k)
{
        struct amqp_queue *q = k->q;
        if (!q)
                return;
        for (struct amqp_consumer **pp = &q->consumers; *pp; pp = &(*pp)->next_in_queue)
                if (*pp == k) {
                        amqp_consumer_unlink_at(q, pp);
                        break;
                }
        q->nconsumers--;
        q->exclusive_consumer = false;
        k->q = NULL;
}

static void qop_answer(struct amqp_worker *aw, struct amqp_qop *o)
{
        if (o->from == aw->w->id) {
                amqp_qop_reply(aw, o);
                return;
        }
        struct sl_msg m = {.type = CTL_AMQP_MSG_QOP_REPLY};
        m.a.ptr[0] = o;
        amqp_out_msg(aw, o->from, &m);
}

/* The queue's worker runs o (it lives here, or o finds it gone). */
void amqp_qop_exec(struct amqp_worker *aw, struct amqp_qop *o)
{
        struct amqp_queue *q = amqp_queue_by_qid(aw, o->qid);
        if (o->op == AMQP_QOP_CANCEL) {
                struct amqp_consumer *k = o->proxy;
                if (k) {
                        struct amqp_queue *kq = k->q;
                        amqp_proxy_unlink(k);
                        k->released = true;
                        proxy_maybe_free(k);
                        if (kq && kq->auto_delete && !kq->deleted && kq->nconsumers == 0)
                                amqp_queue_delete_announce(aw, kq, NULL);
                }
                goto reply;
        }
        if (!q) {
                o->code = 404;
                snprintf(o->text, sizeof(o->text), "no queue '%s' in vhost '/'", o->name.s);
                goto reply;
        }
        amqp_queue_expire(aw, q);
        q->last_used_ms = aw->w->now_ms;
        switch (o->op) {
        case AMQP_QOP_STAT:
                o->count = q->count;
                o->consumers = q->nconsumers;
                break;
        case AMQP_QOP_CONSUME: {
                if (q->exclusive_consumer || (o->exclusive && q->nconsumers)) {
                        o->code = 403;
                        snprintf(o->text, sizeof(o->text),
                                 "queue has an exclusive consumer or is in use");
                        break;
                }
                struct amqp_consumer *k = calloc(1, sizeof(*k));
                if (!k) {
                        o->code = 541;
                        break;
                }
                k->proxy = true;
                k->q = q;
                k->tag = o->stub->tag; /* copied by the channel's worker before sending */
                k->no_ack = o->no_ack;
                k->prefetch = o->prefetch;
                k->window = o->window ? o->window : AMQP_REMOTE_WINDOW;
                k->rworker = o->from;
                k->peer = o->stub;
                q->exclusive_consumer = o->exclusive;
                amqp_consumer_append(q, k);
                q->nconsumers++;
                o->proxy = k;
                break;
        }
        case AMQP_QOP_GET: {
                struct amqp_msg *m = amqp_queue_pop(q);
                o->count = q->count;
                if (m) {
                        m = amqp_msg_own(m); /* the answer may leave this worker */
                        m->home = aw->w->id;
                        m->qid = q->qid;
                        m->ucons = NULL;
                        m->tracked = !o->no_ack;
                        m->uq = m->tracked ? q : NULL;
                        if (m->tracked)
                                q->unacked_refs++;
                        else
                                amqp_dq_ack(aw, q, m);
                        sl_counter_add(&aw->delivered, 1);
                }
                o->msg = m;
                break;
        }
        case AMQP_QOP_PURGE: {
                o->count = q->count;
                struct amqp_msg *x;
                while ((x = amqp_queue_pop(q))) {
                        amqp_dq_ack(aw, q, x);
                        amqp_msg_free(x);
                }
                break;
        }
        case AMQP_QOP_DELETE: {
                if (o->if_unused && q->nconsumers) {
                        o->code = 406;
                        snprintf(o->text, sizeof(o->text), "queue in use");
                        break;
                }
                if (o->if_empty && q->count) {
                        o->code = 406;
                        snprintf(o->text, sizeof(o->text), "queue not empty");
                        break;
                }
                /* delete-ok once every worker forgot the queue */
                amqp_queue_delete_announce(aw, q, o);
                free(o);
                return;
        }
        default:
                break;
        }
        if (o->op == AMQP_QOP_CONSUME && o->code == 0) {
                /* reply first: deliveries must follow consume-ok */
                qop_answer(aw, o);
                amqp_queue_dispatch(aw, q);
                return;
        }
reply:
        qop_answer(aw, o);
}

/* The queue's worker answered o: finish the method for the client. */
void amqp_qop_reply(struct amqp_worker *aw, struct amqp_qop *o)
{
        struct sl_conn *c = o->conn ? amqp_conn_find(aw->w, o->slot, o->gen, o->conn) : NULL;
        struct amqp_channel *ch = c ? amqp_chan_find(c, o->chan, o->epoch) : NULL;
        switch (o->op) {
        case AMQP_QOP_CANCEL:
                amqp_stub_unlink(aw, o->stub);
                free(o->stub);
                if (ch && o->method && !o->nowait) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_CANCEL_OK);
                        r.args[AMQP_BASIC_CANCEL_OK_CONSUMER_TAG].b = name_view(&o->name);
                        amqp_send_method(c, ch->id, &r);
                }
                break;
        case AMQP_QOP_CONSUME: {
                struct amqp_consumer *k = o->stub;
                if (o->code) {
                        free(k);
                        if (ch)
                                amqp_chan_error(c, ch, o->code, o->text, o->method);
                        break;
                }
                k->peer = o->proxy;
                stub_link(aw, k);
                if (!ch) {
                        k->c = NULL;
                        k->ch = NULL;
                        amqp_stub_cancel(aw, k, NULL, 0, 0, false);
                        break;
                }
                k->c = c;
                k->ch = ch;
                k->next_in_chan = ch->consumers;
                ch->consumers = k;
                if (!o->nowait) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_BASIC_CONSUME_OK);
                        r.args[AMQP_BASIC_CONSUME_OK_CONSUMER_TAG].b = name_view(&k->tag);
                        amqp_send_method(c, ch->id, &r);
                }
                break;
        }
        case AMQP_QOP_GET:
                if (!ch) {
                        if (o->msg)
                                amqp_stl_push(aw, o->msg, AMQP_SETTLE_RETURN);
                        break;
                }
                if (o->code) {
                        amqp_chan_error(c, ch, o->code, o->text, o->method);
                        break;
                }
                if (!o->msg) {
                        amqp_send_simple(c, ch->id, AMQP_BASIC_GET_EMPTY);
                        break;
                }
                if (amqp_get_ok_send(aw, c, ch, o->msg, o->count, o->no_ack))
                        amqp_stl_push(aw, o->msg, AMQP_SETTLE_RETURN);
                break;
        default:
                if (!ch)
                        break;
                if (o->code) {
                        amqp_chan_error(c, ch, o->code, o->text, o->method);
                        break;
                }
                if (o->op == AMQP_QOP_STAT) {
                        amqp_queue_declare_ok(c, ch, name_view(&o->name), o->count, o->consumers);
                } else if (o->op == AMQP_QOP_PURGE && !o->nowait) {
                        struct amqp_method r;
                        amqp_method_init(&r, AMQP_QUEUE_PURGE_OK);
                        r.args[AMQP_QUEUE_PURGE_OK_MESSAGE_COUNT].u = (uint32_t)o->count;
                        amqp_send_method(c, ch->id, &r);
                } else if (o->op == AMQP_QOP_DELETE) {
                        amqp_chan_error(c, ch, 541, "delete failed", o->method);
                }
                break;
        }
        if (c && o->reply)
                amqp_conn_resume(c);
        free(o);
}

/* ---- messages from other workers and the control thread ----------------- */

static void on_fwd(struct amqp_worker *aw, const struct sl_msg *msg)
{
        struct amqp_fwd *f = msg->a.ptr[0];
        f->src = msg->src;
        f->waiting = 1; /* until every message below is in */
        uint32_t oi = 0;
        for (struct amqp_msg *m = f->msgs, *next; m; m = next) {
                next = m->next;
                struct amqp_queue *q = amqp_queue_by_qid(aw, m->qid);
                uint32_t o = m->o_seq ? oi++ : UINT32_MAX;
                if (!q) {
                        amqp_msg_free(m); /* deleted meanwhile: as if it had been dropped there */
                        continue;
                }
                if (amqp_queue_enqueue(aw, q, m, NULL, f) < 0 && o != UINT32_MAX)
                        f->o[o].nack = true;
                amqp_queue_mark(aw, q);
        }
        f->msgs = NULL;
        if (--f->waiting == 0)
                amqp_fwd_accepted(aw, f);
        amqp_dispatch_marked(aw);
}

static void on_settle(struct amqp_worker *aw, struct amqp_msg *m)
{
        for (struct amqp_msg *next; m; m = next) {
                next = m->next;
                m->next = NULL;
                struct amqp_consumer *k = m->ucons;
                bool tracked = m->tracked;
                struct amqp_queue *q = tracked ? m->uq : amqp_queue_by_qid(aw, m->qid);
                if (m->op == AMQP_SETTLE_RETURN && k)
                        k->inflight--;
                if (tracked && k)
                        k->unacked--;
                if (m->op == AMQP_SETTLE_ACK || (m->op == AMQP_SETTLE_REJECT && q->deleted)) {
                        sl_counter_add(&aw->acked, 1);
                        amqp_dq_ack(aw, q, m);
                        amqp_msg_free(m);
                } else if (m->op == AMQP_SETTLE_REJECT) {
                        sl_counter_add(&aw->acked, 1);
                        amqp_dead_letter(aw, q, m, "rejected");
                } else {
                        if (m->op == AMQP_SETTLE_REQUEUE)
                                m->redelivered = true;
                        if (!q || q->deleted)
                                amqp_msg_free(m);
                        else
                                amqp_queue_push_front(q, m);
                }
                /* credit back to k, or a message back in q */
                amqp_queue_mark(aw, q);
                if (k)
                        amqp_queue_mark(aw, k->q);
                if (tracked)
                        amqp_queue_unref(q);
                if (k)
                        proxy_maybe_free(k);
        }
        amqp_dispatch_marked(aw);
}

/* The queue of stub k went away on its worker: tell the client (when it
 * asked for consumer_cancel_notify) and say goodbye to the proxy. */
static void on_cancelled(struct amqp_worker *aw, struct amqp_consumer *k)
{
        if (k->detached)
                return; /* our goodbye is on its way already */
        struct sl_conn *c = k->c;
        struct amqp_conn *kc = c->proto_state;
        if (kc->cancel_notify && c->state == SL_CONN_OPEN && !k->ch->closing) {
                struct amqp_method r;
                amqp_method_init(&r, AMQP_BASIC_CANCEL);
                r.args[AMQP_BASIC_CANCEL_CONSUMER_TAG].b = name_view(&k->tag);
                r.args[AMQP_BASIC_CANCEL_NOWAIT].u = 1;
                amqp_send_method(c, k->ch->id, &r);
        }
        amqp_stub_cancel(aw, k, NULL, 0, 0, false);
}

void amqp_msg_in(struct sl_worker *w, const struct sl_msg *m)
{
        struct amqp_worker *aw = aw_of(w);
        switch (m->type) {
        case CTL_AMQP_MSG_APPLY: {
                if (m->u16 == 2) {
                        amqp_delayed_recover(aw); /* the exchanges are known now */
                        aw->ready = true;
                } else if (m->u16 == 1) {
                        /* restored from the metadata log at start */
                        static _Thread_local struct amqp_topo t;
                        if (amqp_topo_decode(m->a.ptr[0], m->u32, &t) == 0)
                                amqp_topo_apply(aw, &t, m->a.u64[1]);
                        else
                                SL_WARN("amqp: stored definition not understood; skipped");
                } else {
                        amqp_topo_apply(aw, m->a.ptr[0], m->a.u64[1]);
                }
                struct sl_msg r = {.type = CTL_AMQP_MSG_APPLY, .cookie = m->cookie};
                sl_mbox_reply(&w->mb, m->src, &r);
                return;
        }
        case CTL_AMQP_MSG_DONE:
                amqp_topo_done(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_ALARM:
                amqp_alarm_set(aw, (uint8_t)m->u16);
                return;
        case CTL_AMQP_MSG_FWD:
                on_fwd(aw, m);
                return;
        case CTL_AMQP_MSG_ACCEPT: {
                struct amqp_fwd *f = m->a.ptr[0];
                for (uint32_t i = 0; i < f->n; i++)
                        amqp_confirm_accepted(w, &f->o[i]);
                free(f);
                return;
        }
        case CTL_AMQP_MSG_DELIVER:
                for (struct amqp_msg *x = m->a.ptr[0], *next; x; x = next) {
                        next = x->next;
                        x->next = NULL;
                        stub_deliver(aw, x->rstub, x);
                }
                return;
        case CTL_AMQP_MSG_SETTLE:
                on_settle(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_CREDIT: {
                struct amqp_consumer *k = m->a.ptr[0];
                SL_ASSERT(k->inflight >= m->u32);
                k->inflight -= m->u32;
                struct amqp_queue *q = k->q;
                proxy_maybe_free(k);
                if (q)
                        amqp_queue_dispatch(aw, q);
                return;
        }
        case CTL_AMQP_MSG_QOP:
                amqp_qop_exec(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_QOP_REPLY:
                amqp_qop_reply(aw, m->a.ptr[0]);
                return;
        case CTL_AMQP_MSG_CANCELLED:
                on_cancelled(aw, m->a.ptr[0]);
                return;
        default:
                SL_WARN("amqp: worker %u: unexpected message %u", w->id, m->type);
        }
}
