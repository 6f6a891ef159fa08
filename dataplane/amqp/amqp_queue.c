/* Queues on their own worker: the ready list (priority levels), delivery
 * to consumers (local, or proxies for consumers on other workers),
 * unacked bookkeeping and requeueing. */

#include "amqp_internal.h"

/* ---- delivery ------------------------------------------------------------- */

/* Writes method frame + content header + body frames of m; all or nothing
 * as far as the room check goes. Returns 0, -EAGAIN (no room: try when
 * writable), -ENOBUFS (connection dropped). */
int amqp_send_content(struct sl_conn *c, uint16_t chan, const struct amqp_method *meth,
                      const struct amqp_msg *m)
{
        struct amqp_conn *ac = c->proto_state;
        uint8_t buf[AMQP_CTL_BUF];
        int n = amqp_method_frame_encode(chan, meth, buf, sizeof(buf));
        SL_ASSERT(n > 0);
        uint32_t chunk = ac->frame_max - AMQP_FRAME_OVERHEAD;
        uint64_t nframes = (m->body_len + chunk - 1) / chunk;
        uint64_t need = (uint64_t)n + AMQP_FRAME_OVERHEAD + m->hdr_len +
                        nframes * AMQP_FRAME_OVERHEAD + m->body_len;
        if (!amqp_conn_usable(c))
                return -ENOBUFS;
        if (sl_conn_tx_room(c) < need) {
                sl_conn_want_writable(c);
                return -EAGAIN;
        }
        const uint8_t *hdr = amqp_msg_bytes(m) + m->ex_len + m->rk_len;
        const uint8_t *body = hdr + m->hdr_len;
        uint8_t end = AMQP_FRAME_END;
        uint8_t fh[7] = {
            AMQP_FRAME_HEADER,           (uint8_t)(chan >> 8),        (uint8_t)chan,
            (uint8_t)(m->hdr_len >> 24), (uint8_t)(m->hdr_len >> 16), (uint8_t)(m->hdr_len >> 8),
            (uint8_t)m->hdr_len};
        struct iovec iov[3] = {{buf, (size_t)n}, {fh, 7}, {(void *)hdr, m->hdr_len}};
        struct iovec iov_end = {&end, 1};
        struct iovec all[4] = {iov[0], iov[1], iov[2], iov_end};
        if (sl_conn_sendv(c, all, 4) != 0)
                goto fail;
        for (uint64_t off = 0; off < m->body_len; off += chunk) {
                uint32_t len = (uint32_t)SL_MIN((uint64_t)chunk, m->body_len - off);
                uint8_t bh[7] = {AMQP_FRAME_BODY,      (uint8_t)(chan >> 8), (uint8_t)chan,
                                 (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                                 (uint8_t)len};
                struct iovec bv[3] = {{bh, 7}, {(void *)(body + off), len}, {&end, 1}};
                if (sl_conn_sendv(c, bv, 3) != 0)
                        goto fail;
        }
        return 0;
fail:
        /* Half a message is on the wire: the stream cannot be repaired. */
        amqp_doom(c);
        return -ENOBUFS;
}

void amqp_queue_free(struct amqp_queue *q)
{
        free(q->ptail);
        free(q->pend);
        free(q->acks);
        free(q->live);
        free(q);
}

void amqp_queue_unref(struct amqp_queue *q)
{
        SL_ASSERT(q->unacked_refs > 0);
        if (--q->unacked_refs == 0 && q->deleted)
                amqp_queue_free(q);
}

/* m (delivered with a tag) joins its channel's unacked list; a message from
 * a queue here holds a reference on the queue (remote ones hold it at
 * home). */
void amqp_unacked_add(struct amqp_worker *aw, struct amqp_channel *ch, struct amqp_msg *m)
{
        if (m->home == aw->w->id)
                m->uq->unacked_refs++;
        ch->nunacked++;
        amqp_list_append(&ch->unacked_head, &ch->unacked_tail, m);
}

/* k joins the end of q's consumers (the round robin's last turn). */
void amqp_consumer_append(struct amqp_queue *q, struct amqp_consumer *k)
{
        struct amqp_consumer **tail = q->ctail ? q->ctail : &q->consumers;
        k->next_in_queue = NULL;
        *tail = k;
        q->ctail = &k->next_in_queue;
}

/* Takes *pp out of q's consumers. */
void amqp_consumer_unlink_at(struct amqp_queue *q, struct amqp_consumer **pp)
{
        struct amqp_consumer *k = *pp;
        if (q->ctail == &k->next_in_queue)
                q->ctail = pp;
        *pp = k->next_in_queue;
        k->next_in_queue = NULL;
}

/* An event may let q deliver again: dispatched at amqp_dispatch_marked
 * (once however often it is marked; the mark holds a reference). */
void amqp_queue_mark(struct amqp_worker *aw, struct amqp_queue *q)
{
        if (!q || q->marked || q->deleted)
                return;
        q->marked = true;
        q->unacked_refs++;
        q->next_marked = aw->marked;
        aw->marked = q;
}

void amqp_dispatch_marked(struct amqp_worker *aw)
{
        while (aw->marked) {
                struct amqp_queue *q = aw->marked;
                aw->marked = q->next_marked;
                q->marked = false;
                if (!q->deleted)
                        amqp_queue_dispatch(aw, q);
                amqp_queue_unref(q);
        }
}

/* q's next delivery to c waits for output room: writable() resumes it. */
static void wait_room(struct sl_conn *c, struct amqp_queue *q)
{
        struct amqp_conn *ac = c->proto_state;
        if (ac->room_all)
                return;
        for (uint32_t i = 0; i < ac->nroom_q; i++)
                if (ac->room_q[i] == q)
                        return;
        if (ac->nroom_q == SL_ARRAY_LEN(ac->room_q)) {
                ac->room_all = true;
                return;
        }
        q->unacked_refs++;
        ac->room_q[ac->nroom_q++] = q;
}

/* c has output room again: the queues that waited for it deliver. */
void amqp_conn_room(struct amqp_worker *aw, struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        bool all = ac->room_all;
        ac->room_all = false;
        for (uint32_t i = 0; i < ac->nroom_q; i++) {
                amqp_queue_mark(aw, ac->room_q[i]);
                amqp_queue_unref(ac->room_q[i]);
        }
        ac->nroom_q = 0;
        if (all)
                for (struct amqp_queue *q = aw->queues; q; q = q->next)
                        amqp_queue_mark(aw, q);
        amqp_dispatch_marked(aw);
}

/* c is gone: its waits are dropped. */
void amqp_conn_room_release(struct sl_conn *c)
{
        struct amqp_conn *ac = c->proto_state;
        for (uint32_t i = 0; i < ac->nroom_q; i++)
                amqp_queue_unref(ac->room_q[i]);
        ac->nroom_q = 0;
        ac->room_all = false;
}

/* The consumer at *pp was served: it goes to the end of the round. */
static void consumer_rotate(struct amqp_queue *q, struct amqp_consumer **pp)
{
        if (q->ctail == &(*pp)->next_in_queue)
                return; /* last already */
        struct amqp_consumer *k = *pp;
        amqp_consumer_unlink_at(q, pp);
        amqp_consumer_append(q, k);
}

/* Delivers from q to its consumers, round robin, while they have credit
 * and room. */

/* Hands the head of q to a consumer on another worker (through its proxy). */
static void proxy_send(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_consumer *k)
{
        struct amqp_msg *m = amqp_msg_own(amqp_queue_pop(q)); /* leaves this worker */
        m->home = aw->w->id;
        m->qid = q->qid;
        m->rstub = k->peer;
        m->ucons = k;
        m->tracked = !k->no_ack;
        m->uq = m->tracked ? q : NULL;
        if (m->tracked) {
                q->unacked_refs++;
                k->unacked++;
        } else {
                amqp_dq_ack(aw, q, m); /* no-ack: settled as it leaves */
        }
        k->inflight++;
        amqp_dlv_push(aw, k->rworker, m);
}

void amqp_queue_dispatch(struct amqp_worker *aw, struct amqp_queue *q)
{
        amqp_queue_expire(aw, q);
        while (q->head && q->consumers) {
                struct amqp_consumer *pick = NULL;
                /* round robin: the head of the list is next; rotate after use */
                struct amqp_consumer **pp = &q->consumers;
                for (; *pp; pp = &(*pp)->next_in_queue) {
                        struct amqp_consumer *k = *pp;
                        if (k->proxy) {
                                if (k->inflight >= k->window ||
                                    (!k->no_ack && k->prefetch && k->unacked >= k->prefetch))
                                        continue;
                                pick = k;
                                break;
                        }
                        struct amqp_conn *ac = k->c->proto_state;
                        if (!amqp_conn_usable(k->c) || ac->phase != AMQP_PH_RUNNING)
                                continue;
                        if (!k->no_ack && k->prefetch && k->unacked >= k->prefetch)
                                continue;
                        if (!k->no_ack && k->ch->gprefetch && k->ch->nunacked >= k->ch->gprefetch)
                                continue;
                        pick = k;
                        break;
                }
                if (!pick)
                        return;
                if (pick->proxy) {
                        consumer_rotate(q, pp);
                        proxy_send(aw, q, pick);
                        sl_counter_add(&aw->delivered, 1);
                        continue;
                }
                struct amqp_msg *m = q->head;
                struct amqp_channel *ch = pick->ch;
                struct amqp_method meth;
                amqp_method_init(&meth, AMQP_BASIC_DELIVER);
                meth.args[AMQP_BASIC_DELIVER_CONSUMER_TAG].b = name_view(&pick->tag);
                meth.args[AMQP_BASIC_DELIVER_DELIVERY_TAG].u = ch->next_tag + 1;
                meth.args[AMQP_BASIC_DELIVER_REDELIVERED].u = m->redelivered;
                meth.args[AMQP_BASIC_DELIVER_EXCHANGE].b =
                    (struct amqp_bytes){amqp_msg_bytes(m), m->ex_len};
                meth.args[AMQP_BASIC_DELIVER_ROUTING_KEY].b =
                    (struct amqp_bytes){amqp_msg_bytes(m) + m->ex_len, m->rk_len};
                int rc = amqp_send_content(pick->c, ch->id, &meth, m);
                if (rc != 0) {
                        /* resumed from writable() (or the conn is gone) */
                        if (amqp_conn_usable(pick->c))
                                wait_room(pick->c, q);
                        return;
                }
                consumer_rotate(q, pp);
                amqp_queue_pop(q);
                ch->next_tag++;
                sl_counter_add(&aw->delivered, 1);
                if (pick->no_ack) {
                        amqp_dq_ack(aw, q, m);
                        amqp_msg_free(m);
                } else {
                        m->dtag = ch->next_tag;
                        m->uq = q;
                        m->ucons = pick;
                        m->home = aw->w->id;
                        pick->unacked++;
                        amqp_unacked_add(aw, ch, m);
                }
        }
}

void amqp_consumer_remove(struct amqp_consumer *k)
{
        struct amqp_worker *aw = aw_of(k->c->w);
        if (k->stub) {
                amqp_stub_cancel(aw, k, NULL, 0, 0, false);
                return;
        }
        struct amqp_queue *q = k->q;
        for (struct amqp_consumer **pp = &q->consumers; *pp; pp = &(*pp)->next_in_queue)
                if (*pp == k) {
                        amqp_consumer_unlink_at(q, pp);
                        break;
                }
        q->nconsumers--;
        q->exclusive_consumer = false; /* it was the only one if set */
        for (struct amqp_consumer **pp = &k->ch->consumers; *pp; pp = &(*pp)->next_in_chan)
                if (*pp == k) {
                        *pp = k->next_in_chan;
                        break;
                }
        for (struct amqp_msg *m = k->ch->unacked_head; m; m = m->next)
                if (m->ucons == k)
                        m->ucons = NULL;
        free(k);
        /* auto-delete: the queue goes with its last consumer */
        if (q->auto_delete && !q->deleted && q->nconsumers == 0)
                amqp_queue_delete_announce(aw, q, NULL);
}

/* Puts unacked messages back at the head of their queues, in order; those
 * from queues on other workers travel home. */
void amqp_requeue_list(struct amqp_worker *aw, struct amqp_msg *m)
{
        /* reverse, so pushing to the front keeps the original order */
        struct amqp_msg *rev = NULL;
        while (m) {
                struct amqp_msg *n = m->next;
                m->next = rev;
                rev = m;
                m = n;
        }
        while (rev) {
                struct amqp_msg *n = rev->next;
                if (rev->home != aw->w->id) {
                        /* home pushes each to the front as it arrives: in
                         * this reversed order, that restores the original */
                        rev->next = NULL;
                        amqp_stl_push(aw, rev, AMQP_SETTLE_REQUEUE);
                        rev = n;
                        continue;
                }
                rev->redelivered = true;
                if (rev->ucons)
                        rev->ucons->unacked--;
                struct amqp_queue *q = rev->uq;
                if (q->deleted) {
                        amqp_msg_free(rev); /* keeps the memory alarm's count */
                } else {
                        amqp_queue_push_front(q, rev);
                        amqp_queue_mark(aw, q);
                }
                amqp_queue_unref(q);
                rev = n;
        }
}

void amqp_chan_free(struct sl_conn *c, struct amqp_channel *ch)
{
        struct amqp_conn *ac = c->proto_state;
        struct amqp_worker *aw = aw_of(c->w);
        while (ch->consumers)
                amqp_consumer_remove(ch->consumers);
        struct amqp_msg *un = ch->unacked_head;
        ch->unacked_head = ch->unacked_tail = NULL;
        ch->nunacked = 0;
        amqp_requeue_list(aw, un);
        amqp_confirms_forget(aw, ch);
        amqp_msg_free(ch->pub);
        free(ch->conf);
        while (ch->txp_head) {
                struct amqp_msg *m = ch->txp_head;
                ch->txp_head = m->next;
                amqp_msg_free(m);
        }
        free(ch->txa);
        ac->chans[ch->id] = NULL;
        free(ch);
        sl_counter_add(&aw->channels, -1);
        /* requeued messages may go to other consumers */
        amqp_dispatch_marked(aw);
}
