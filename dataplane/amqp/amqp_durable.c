/* Durable queues: a storage log per queue holding its persistent
 * messages and ack records, appended on the queue's worker, read back at
 * start (messages without an ack record return, redelivered). */

#include "amqp_internal.h"

/* ---- durable queues: a storage log per queue ------------------------------
 *
 * A durable queue keeps a partition log (storage/log.h) in
 * <data_dir>/amqp/q-<hex name>, owned by the queue's worker. Persistent
 * messages are appended as they enter the queue (one record per v2 batch);
 * a publisher confirm for such a message waits for the append's ack, i.e.
 * the group-committed fdatasync. Settlements (ack, reject without requeue,
 * no-ack deliveries, purge) are appended as ack records listing the
 * offsets, once per loop iteration, and always before the next message
 * append of the queue, so an ack is durable once any later confirm is.
 * At open the log is read back: messages without an ack record return,
 * marked redelivered. The in-memory queue stays the source of deliveries;
 * the log is for recovery only. */

uint64_t amqp_get_be64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t)v;
}

static int dq_owner(struct amqp_worker *aw)
{
        if (aw->owner)
                return 0;
        aw->io = log_io_uring_create(NULL, 256, 0);
        if (!aw->io)
                return -ENOMEM;
        /* Completions wake the worker, so it sleeps while I/O is in flight;
         * without this it keeps polling until the I/O is done. */
        if (log_io_notify(aw->io, aw->w->mb.wake->eventfd) != 0)
                SL_WARN("worker %u: storage completions cannot wake it; it polls instead",
                        aw->w->id);
        aw->owner = log_owner_create(aw->io);
        aw->scratch = aligned_alloc(4096, DQ_BATCH_MAX + 4096);
        if (!aw->owner || !aw->scratch)
                return -ENOMEM;
        return 0;
}

static void dq_dir(struct amqp_worker *aw, const struct amqp_name *name, char *buf, size_t n)
{
        int off = snprintf(buf, n, "%s/amqp/q-", aw->w->cfg->data_dir);
        for (uint32_t i = 0; i < name->len && (size_t)off + 3 < n; i++)
                off += snprintf(buf + off, n - (size_t)off, "%02x", (uint8_t)name->s[i]);
}

static void dq_append_cb(void *ctx, int64_t base_offset, int res);
static void dq_noop_cb(void *ctx, int64_t base_offset, int res)
{
        (void)ctx;
        (void)base_offset;
        if (res < 0)
                SL_WARN("amqp: ack record not stored: %s", strerror(-res));
}

static void dq_pend_push(struct amqp_queue *q, const struct amqp_pend *pe)
{
        if (q->pend_n == q->pend_cap) {
                uint32_t cap = q->pend_cap ? q->pend_cap * 2 : 64;
                struct amqp_pend *n = malloc(cap * sizeof(*n));
                SL_ASSERT(n);
                for (uint32_t i = 0; i < q->pend_n; i++)
                        n[i] = q->pend[(q->pend_head + i) % q->pend_cap];
                free(q->pend);
                q->pend = n;
                q->pend_cap = cap;
                q->pend_head = 0;
        }
        q->pend[(q->pend_head + q->pend_n++) % q->pend_cap] = *pe;
        q->unacked_refs++; /* alive until the append is acked */
}

static void dq_pend_done(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_pend *e,
                         int res);

/* Hands the record b (len bytes) to q's log in order: at once when the log
 * has room and nothing waits before it, else as a copy in q's spill list
 * (appended by amqp_dq_poll as room frees). piece: a message record whose
 * ack releases pe. Returns 0 with its offset (predicted for a spilled
 * one), or a negative error (nothing stored). */
static int dq_put(struct amqp_worker *aw, struct amqp_queue *q, const uint8_t *b, uint32_t len,
                  bool piece, const struct amqp_pend *pe, int64_t *off)
{
        if (!q->spill_head) {
                int rc = piece ? log_append(q->log, b, len, dq_append_cb, q, off)
                               : log_append(q->log, b, len, dq_noop_cb, NULL, off);
                if (rc == 0 && piece)
                        dq_pend_push(q, pe);
                if (rc != -ENOBUFS)
                        return rc;
        }
        struct amqp_spill *s = malloc(sizeof(*s) + len);
        if (!s)
                return -ENOMEM;
        /* a copy of message bytes: the memory alarm counts it */
        amqp_msg_held_bytes += (int64_t)len;
        s->next = NULL;
        s->off = log_end_offset(q->log) + q->spill_n;
        s->piece = piece;
        s->pend = piece ? *pe : (struct amqp_pend){0};
        s->len = len;
        memcpy(s->b, b, len);
        if (q->spill_tail)
                q->spill_tail->next = s;
        else {
                q->spill_head = s;
                q->next_spill = aw->spilled;
                aw->spilled = q;
                q->unacked_refs++; /* alive until the spill is appended */
        }
        q->spill_tail = s;
        q->spill_n++;
        sl_counter_add(&aw->persist_spilled, 1);
        *off = s->off;
        return 0;
}

/* Appends what q's spill list holds while the log takes it. Returns true
 * when it is empty. */
static bool dq_spill_drain(struct amqp_worker *aw, struct amqp_queue *q)
{
        struct amqp_spill *s;
        while ((s = q->spill_head)) {
                int64_t off;
                int rc = s->piece ? log_append(q->log, s->b, s->len, dq_append_cb, q, &off)
                                  : log_append(q->log, s->b, s->len, dq_noop_cb, NULL, &off);
                if (rc == -ENOBUFS)
                        return false;
                q->spill_head = s->next;
                q->spill_n--;
                if (rc == 0) {
                        /* offsets were promised on the log's order */
                        SL_ASSERT(off == s->off);
                        if (s->piece)
                                dq_pend_push(q, &s->pend);
                } else {
                        SL_WARN("amqp: queue %s: record not stored: %s", q->name.s, strerror(-rc));
                        if (s->piece) {
                                q->unacked_refs++; /* what dq_pend_done gives back */
                                dq_pend_done(aw, q, &s->pend, rc);
                        }
                }
                amqp_msg_held_bytes -= (int64_t)s->len;
                free(s);
        }
        q->spill_tail = NULL;
        return true;
}

/* Appends the queue's pending ack records (before anything newer). */
static void dq_acks_flush(struct amqp_worker *aw, struct amqp_queue *q)
{
        uint32_t per = (DQ_BATCH_MAX - LOG_BATCH_HEADER_BYTES - 1) / 8;
        for (uint32_t i = 0; i < q->nacks; i += per) {
                uint32_t n = SL_MIN(per, q->nacks - i);
                uint8_t *b = aw->scratch;
                b[LOG_BATCH_HEADER_BYTES] = DQ_REC_ACK;
                for (uint32_t j = 0; j < n; j++)
                        put_be64(b + LOG_BATCH_HEADER_BYTES + 1 + 8 * j, q->acks[i + j]);
                uint32_t len = amqp_qrec_frame(b, 1 + 8 * n, aw->w->now_ms);
                int64_t off;
                int rc = dq_put(aw, q, b, len, false, NULL, &off);
                if (rc)
                        SL_WARN("amqp: queue %s: ack record refused: %s", q->name.s, strerror(-rc));
        }
        q->nacks = 0;
}

/* ---- the lowest live offset -------------------------------------------- */

static uint64_t *live_at(struct amqp_queue *q, uint32_t i)
{
        return &q->live[(q->live_head + i) % q->live_cap];
}

/* A persistent message is in the log at off (appended in offset order). */
static void live_push(struct amqp_queue *q, int64_t off)
{
        if (q->live_n == q->live_cap) {
                uint32_t cap = q->live_cap ? q->live_cap * 2 : 256;
                uint64_t *n = malloc(cap * sizeof(*n));
                SL_ASSERT(n); /* as the other per-queue rings: grown, kept */
                for (uint32_t i = 0; i < q->live_n; i++)
                        n[i] = *live_at(q, i);
                free(q->live);
                q->live = n;
                q->live_cap = cap;
                q->live_head = 0;
        }
        SL_DASSERT(!q->live_n || (*live_at(q, q->live_n - 1) & ~AMQP_LIVE_SETTLED) < (uint64_t)off);
        *live_at(q, q->live_n++) = (uint64_t)off;
}

/* The message at off is settled: marked (binary search), and the settled
 * head dropped so the head is the lowest live offset. */
static void live_settle(struct amqp_queue *q, int64_t off)
{
        uint32_t lo = 0, hi = q->live_n;
        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if ((*live_at(q, mid) & ~AMQP_LIVE_SETTLED) < (uint64_t)off)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo < q->live_n && (*live_at(q, lo) & ~AMQP_LIVE_SETTLED) == (uint64_t)off)
                *live_at(q, lo) |= AMQP_LIVE_SETTLED;
        while (q->live_n && (*live_at(q, 0) & AMQP_LIVE_SETTLED)) {
                q->live_head = (q->live_head + 1) % q->live_cap;
                q->live_n--;
        }
        if (!q->live_n)
                q->live_head = 0;
}

/* m left q for good: remember its offset for the next ack record. */
void amqp_dq_ack(struct amqp_worker *aw, struct amqp_queue *q, const struct amqp_msg *m)
{
        amqp_dq_ack_off(aw, q, m->loff);
}

void amqp_dq_ack_off(struct amqp_worker *aw, struct amqp_queue *q, int64_t off)
{
        if (!q || !q->log || off < 0 || q->deleted)
                return;
        live_settle(q, off);
        if (q->nacks == q->acks_cap) {
                uint32_t cap = q->acks_cap ? q->acks_cap * 2 : 256;
                uint64_t *n = realloc(q->acks, cap * sizeof(*n));
                SL_ASSERT(n);
                q->acks = n;
                q->acks_cap = cap;
        }
        q->acks[q->nacks++] = (uint64_t)off;
        if (!q->ack_dirty) {
                q->ack_dirty = true;
                q->unacked_refs++; /* alive until flushed */
                q->next_dirty = aw->ack_dirty;
                aw->ack_dirty = q;
        }
}

/* Appends m to q's log as a record of type rec ('D': due_wall_ms before
 * the data), in pieces when it is larger than one batch; the confirm (o,
 * or the forwarded batch f) waits for the ack of its last piece (the log
 * acks in order, so every piece is durable then). Returns 1 when the
 * caller must wait, 0 when nothing was stored. */
static int dq_append_msg(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                         const struct amqp_origin *o, struct amqp_fwd *f, uint8_t rec,
                         uint64_t due_wall_ms)
{
        if (q->nacks)
                dq_acks_flush(aw, q);
        struct amqp_qrec_head h = {.type = rec,
                                   .ex_len = m->ex_len,
                                   .rk_len = m->rk_len,
                                   .redelivered = m->redelivered,
                                   .hdr_len = m->hdr_len,
                                   .body_len = m->body_len,
                                   .due_wall_ms = due_wall_ms};
        uint32_t pieces = amqp_qrec_pieces(&h, DQ_BATCH_MAX);
        if (pieces > 1)
                sl_counter_add(&aw->persist_split, 1);
        struct amqp_pend none = {0}, last = {.o = o ? *o : (struct amqp_origin){0}, .f = f};
        int64_t first = -1;
        for (uint32_t i = 0; i < pieces; i++) {
                uint32_t len = amqp_qrec_build(aw->scratch, DQ_BATCH_MAX, &h, amqp_msg_bytes(m), i,
                                               first, aw->w->now_ms);
                int64_t off;
                int rc =
                    dq_put(aw, q, aw->scratch, len, true, i + 1 == pieces ? &last : &none, &off);
                if (rc) {
                        /* only an I/O error or no memory: the log is broken
                         * (pieces already in are a torn message, dropped at
                         * recovery) */
                        SL_WARN("amqp: queue %s: message not stored: %s", q->name.s, strerror(-rc));
                        return 0;
                }
                if (i == 0)
                        first = off;
        }
        m->loff = first;
        live_push(q, first);
        if (f)
                f->waiting++;
        return o && o->seq ? 1 : 0;
}

/* Appends persistent m entering durable q; the confirm (o, or the
 * forwarded batch f) waits for the append's ack. Returns 1 when the
 * caller must wait, 0 when nothing was stored. */
int amqp_dq_store(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_msg *m,
                  const struct amqp_origin *o, struct amqp_fwd *f)
{
        m->loff = -1;
        if (!q->log || !m->persistent)
                return 0;
        return dq_append_msg(aw, q, m, o, f, DQ_REC_MSG, 0);
}

/* Persistent m held by a durable delayed exchange: into this worker's
 * delayed log (opened on first use). Returns 1 when the confirm waits. */
int amqp_dq_store_delayed(struct amqp_worker *aw, struct amqp_msg *m, const struct amqp_origin *o,
                          uint64_t due_wall_ms)
{
        m->loff = -1;
        if (!m->persistent || (!aw->delayq && amqp_dq_delayed_open(aw) != 0))
                return 0;
        return dq_append_msg(aw, aw->delayq, m, o, NULL, DQ_REC_DELAYED, due_wall_ms);
}

/* Every message of forwarded batch f is in its queue (and durable where
 * it must be): the block goes back as the confirm, if anyone waits. */
void amqp_fwd_accepted(struct amqp_worker *aw, struct amqp_fwd *f)
{
        if (!f->n) {
                free(f);
                return;
        }
        struct sl_msg r = {.type = CTL_AMQP_MSG_ACCEPT};
        r.a.ptr[0] = f;
        amqp_out_msg(aw, f->src, &r);
}

static void dq_pend_done(struct amqp_worker *aw, struct amqp_queue *q, struct amqp_pend *e, int res)
{
        if (res < 0)
                SL_WARN("amqp: queue %s: append failed: %s", q->name.s, strerror(-res));
        if (e->f) {
                if (--e->f->waiting == 0)
                        amqp_fwd_accepted(aw, e->f);
        } else if (e->o.seq) {
                amqp_confirm_accepted(aw->w, &e->o);
        }
        amqp_queue_unref(q);
}

static void dq_append_cb(void *ctx, int64_t base_offset, int res)
{
        (void)base_offset;
        struct amqp_queue *q = ctx;
        SL_ASSERT(q->pend_n > 0);
        struct amqp_pend e = q->pend[q->pend_head];
        q->pend_head = (q->pend_head + 1) % q->pend_cap;
        q->pend_n--;
        dq_pend_done(q->aw, q, &e, res);
}

static int dq_rmdir(const char *dir)
{
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
        return rmdir(dir) ? -errno : 0;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

struct dq_reader {
        bool done;
        int res;
};

static void dq_read_cb(struct log_read *r, int res)
{
        struct dq_reader *rd = r->ctx;
        rd->done = true;
        rd->res = res;
}

/* A message read back goes into an amqp_msg of its own size (the data
 * lands in place, pieces included). */
static uint8_t *dq_recover_alloc(void *ctx, const struct amqp_qrec_head *h)
{
        (void)ctx;
        uint64_t n = amqp_qrec_data_len(h);
        if (n > AMQP_MSG_LIMIT)
                return NULL; /* not one we could have stored */
        struct amqp_msg *m = amqp_msg_alloc(sizeof(*m) + n);
        SL_ASSERT(m);
        m->ex_len = h->ex_len;
        m->rk_len = h->rk_len;
        m->hdr_len = h->hdr_len;
        m->body_len = m->got = h->body_len;
        m->persistent = true;
        m->loff = -1;
        m->ttl_ms = -1;
        return m->data;
}

/* A split message whose tail never reached the log (a crash between its
 * pieces): never delivered. */
static void dq_recover_drop(void *ctx, uint8_t *data)
{
        (void)ctx;
        amqp_msg_free((struct amqp_msg *)(data - offsetof(struct amqp_msg, data)));
}

/* Reads the whole log back (at queue open: synchronous, start-up only). */
static int dq_recover(struct amqp_worker *aw, struct amqp_queue *q)
{
        int64_t off = log_start_offset(q->log), hw = log_high_watermark(q->log);
        if (off >= hw)
                return 0;
        uint32_t align = log_dio_align(q->log);
        uint32_t cap = DQ_BATCH_MAX + 2 * 4096 + 2 * align + 4096;
        uint8_t *buf = aligned_alloc(4096, SL_ALIGN_UP(cap, 4096u));
        struct amqp_msg *head = NULL, *tail = NULL;
        uint64_t *acked = NULL;
        uint32_t nacked = 0, acked_cap = 0;
        struct amqp_qrec_asm as = {0};
        int rc = buf ? 0 : -ENOMEM;
        while (rc == 0 && off < hw) {
                struct dq_reader rd = {0};
                struct log_read r = {.offset = off,
                                     .max_bytes = DQ_BATCH_MAX,
                                     .buf = buf,
                                     .buf_cap = cap,
                                     .cb = dq_read_cb,
                                     .ctx = &rd};
                int n = log_read_submit(q->log, &r);
                if (n == 0) {
                        while (!rd.done)
                                log_owner_drain(aw->owner);
                        n = rd.res < 0 ? rd.res : (int)r.data_len;
                }
                if (n < 0) {
                        rc = n;
                        break;
                }
                const uint8_t *p = buf + r.data_off, *end = p + r.data_len;
                if (p == end)
                        break;
                while (end - p >= LOG_BATCH_HEADER_BYTES) {
                        uint32_t blen = log_batch_len(p);
                        if (blen > (size_t)(end - p))
                                break;
                        int64_t boff = log_batch_base_offset(p);
                        const uint8_t *pl = p + LOG_BATCH_HEADER_BYTES;
                        uint32_t plen = blen - LOG_BATCH_HEADER_BYTES;
                        enum amqp_qrec_kind k =
                            boff >= off ? amqp_qrec_feed(&as, pl, plen, boff, dq_recover_alloc,
                                                         dq_recover_drop, NULL)
                                        : AMQP_QREC_NONE;
                        if (k == AMQP_QREC_ACK) {
                                for (uint32_t i = 0; 1 + 8 * (i + 1) <= plen; i++) {
                                        if (nacked == acked_cap) {
                                                acked_cap = acked_cap ? acked_cap * 2 : 256;
                                                acked = realloc(acked, acked_cap * 8);
                                                SL_ASSERT(acked);
                                        }
                                        acked[nacked++] = amqp_get_be64(pl + 1 + 8 * i);
                                }
                        } else if (k == AMQP_QREC_MSG) {
                                struct amqp_msg *m =
                                    (struct amqp_msg *)(as.data - offsetof(struct amqp_msg, data));
                                m->loff = as.off;
                                /* a delayed one carries its due time (wall
                                 * clock), kept in expires_ms until re-held */
                                m->expires_ms = as.h.due_wall_ms;
                                struct amqp_header h;
                                if (amqp_header_decode(amqp_msg_bytes(m) + m->ex_len + m->rk_len,
                                                       m->hdr_len, &h) == 0 &&
                                    amqp_header_has(&h, AMQP_BASIC_PROP_PRIORITY))
                                        m->priority = (uint8_t)h.props[AMQP_BASIC_PROP_PRIORITY].u;
                                amqp_list_append(&head, &tail, m);
                        }
                        off = boff + log_batch_last_delta(p) + 1;
                        p += blen;
                }
        }
        amqp_qrec_finish(&as, dq_recover_drop, NULL);
        if (nacked)
                qsort(acked, nacked, 8, cmp_u64);
        uint32_t back = 0;
        for (struct amqp_msg *m = head, *next; m; m = next) {
                next = m->next;
                uint64_t key = (uint64_t)m->loff;
                if (nacked && bsearch(&key, acked, nacked, 8, cmp_u64)) {
                        amqp_msg_free(m);
                        continue;
                }
                /* it may have been delivered before the crash */
                m->redelivered = true;
                live_push(q, m->loff);
                amqp_queue_push(q, m);
                back++;
        }
        free(acked);
        free(buf);
        if (back)
                SL_INFO("amqp: queue %s: %u messages recovered", q->name.s, back);
        return rc;
}

static int dq_open_at(struct amqp_worker *aw, struct amqp_queue *q, const char *dir);

/* Opens (creating) the log of durable queue q on its worker. */
int amqp_dq_open(struct amqp_worker *aw, struct amqp_queue *q)
{
        char dir[CTL_PATH_MAX + 600];
        dq_dir(aw, &q->name, dir, sizeof(dir));
        return dq_open_at(aw, q, dir);
}

static void dq_delayed_dir(struct amqp_worker *aw, char *buf, size_t n)
{
        snprintf(buf, n, "%s/amqp/delayed-w%u", aw->w->cfg->data_dir, (unsigned)aw->w->id);
}

/* This worker's delayed log (messages held by durable x-delayed-message
 * exchanges), read back into aw->delayq's list (see amqp_delayed_recover). */
int amqp_dq_delayed_open(struct amqp_worker *aw)
{
        if (aw->delayq)
                return 0;
        struct amqp_queue *q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->aw = aw;
        amqp_qargs_default(&q->qa);
        name_set(&q->name, amqp_cstr("(delayed)"));
        char dir[CTL_PATH_MAX + 600];
        dq_delayed_dir(aw, dir, sizeof(dir));
        int rc = dq_open_at(aw, q, dir);
        if (rc && !q->log) {
                amqp_queue_free(q);
                return rc;
        }
        aw->delayq = q;
        return rc;
}

/* At start: the delayed log exists when a durable delayed exchange held
 * persistent messages on this worker before. */
bool amqp_dq_delayed_exists(struct amqp_worker *aw)
{
        char dir[CTL_PATH_MAX + 600];
        struct stat st;
        dq_delayed_dir(aw, dir, sizeof(dir));
        return stat(dir, &st) == 0;
}

static int dq_open_at(struct amqp_worker *aw, struct amqp_queue *q, const char *dir)
{
        int rc = dq_owner(aw);
        if (rc)
                return rc;
        char top[CTL_PATH_MAX + 16];
        snprintf(top, sizeof(top), "%s/amqp", aw->w->cfg->data_dir);
        if (mkdir(top, 0750) && errno != EEXIST)
                return -errno;
        struct log_config cfg;
        log_config_default(&cfg);
        cfg.max_batch_bytes = DQ_BATCH_MAX;
        cfg.segment_bytes = DQ_SEGMENT_BYTES;
        /* Only settlement removes messages: never retention (whose clock is
         * the wall clock, while the batches carry the worker's monotonic
         * time, so every rolled segment would look a week old). */
        cfg.retention_ms = -1;
        cfg.retention_bytes = -1;
        /* Many queues, most of them short: preallocate 1 MiB ahead, not a
         * whole segment per queue. */
        cfg.prealloc_bytes = 1u << 20;
        cfg.recycle_segments = aw->w->cfg->recycle_segments;
        struct amqp_plog *pl = calloc(1, sizeof(*pl));
        if (!pl)
                return -ENOMEM;
        rc = log_partition_open(aw->owner, dir, &cfg, 0, &pl->log);
        if (rc) {
                free(pl);
                return rc;
        }
        /* Kept until the worker stops, even after the queue is deleted:
         * closing needs its I/O finished (see amqp_worker_fini). */
        pl->next = aw->plogs;
        aw->plogs = pl;
        q->log = pl->log;
        return dq_recover(aw, q);
}

/* The durable queue q is deleted: its files go (the open log writes to
 * unlinked files until the worker stops). */
void amqp_dq_remove(struct amqp_worker *aw, struct amqp_queue *q)
{
        if (!q->log)
                return;
        char dir[CTL_PATH_MAX + 600];
        dq_dir(aw, &q->name, dir, sizeof(dir));
        dq_rmdir(dir);
        q->nacks = 0;
}

/* Some of q's log is still live: everything below the lowest live offset
 * is settled (acked, or its ack record is on its way), so it can go; at
 * most every AMQP_TRIM_MS (a trim persists the start offset), else later
 * from the worker's 50 ms queue sweep. */
void amqp_dq_trim(struct amqp_worker *aw, struct amqp_queue *q)
{
        if (!q->trim_wanted || q->deleted || !q->log || !q->live_n ||
            aw->w->now_ms - q->trim_ms < AMQP_TRIM_MS)
                return;
        q->trim_wanted = false;
        q->trim_ms = aw->w->now_ms;
        int64_t lo = (int64_t)(*live_at(q, 0) & ~AMQP_LIVE_SETTLED);
        /* (a live message still spilled has an offset past the log end) */
        if (lo > log_start_offset(q->log) && lo <= log_end_offset(q->log) &&
            log_trim(q->log, lo) == 0)
                sl_counter_add(&aw->log_trims, 1);
}

static void dq_spill_drain_all(struct amqp_worker *aw)
{
        for (struct amqp_queue **pq = &aw->spilled; *pq;) {
                struct amqp_queue *q = *pq;
                if (!dq_spill_drain(aw, q)) {
                        pq = &q->next_spill;
                        continue;
                }
                *pq = q->next_spill;
                q->next_spill = NULL;
                amqp_queue_unref(q);
        }
}

/* Worker stop: records never appended are dropped (their confirms were
 * never sent, so nothing promised is lost). */
void amqp_dq_spill_discard(struct amqp_worker *aw)
{
        while (aw->spilled) {
                struct amqp_queue *q = aw->spilled;
                aw->spilled = q->next_spill;
                while (q->spill_head) {
                        struct amqp_spill *s = q->spill_head;
                        q->spill_head = s->next;
                        amqp_msg_held_bytes -= (int64_t)s->len;
                        free(s);
                }
                q->spill_tail = NULL;
                q->spill_n = 0;
                amqp_queue_unref(q);
        }
}

uint32_t amqp_dq_poll(struct amqp_worker *aw)
{
        while (aw->ack_dirty) {
                struct amqp_queue *q = aw->ack_dirty;
                aw->ack_dirty = q->next_dirty;
                q->ack_dirty = false;
                if (q->nacks && !q->deleted)
                        dq_acks_flush(aw, q);
                /* Everything settled and nothing out (our list's reference
                 * is the only one): the whole durable log before the high
                 * watermark is dead, so its segments can go. */
                int64_t hw = q->log ? log_high_watermark(q->log) : 0;
                /* (the delayed log's messages are in the heap, not its list:
                 * only its live offsets say what is settled) */
                bool empty =
                    q == aw->delayq ? q->live_n == 0 : q->count == 0 && q->unacked_refs == 1;
                if (!q->deleted && q->log && empty && q->pend_n == 0 && !q->spill_head &&
                    hw > log_start_offset(q->log)) {
                        if (log_trim(q->log, hw) == 0)
                                sl_counter_add(&aw->log_trims, 1);
                } else {
                        q->trim_wanted = true;
                        amqp_dq_trim(aw, q);
                }
                amqp_queue_unref(q);
        }
        if (!aw->owner)
                return 0;
        dq_spill_drain_all(aw);
        int n = log_owner_poll(aw->owner);
        /* the poll freed room (written, synced): fill it now, so the next
         * iteration writes it (log_owner_ready keeps the worker awake) */
        dq_spill_drain_all(aw);
        /* Storage I/O in flight is not work: its completions wake us. */
        return (n > 0 ? (uint32_t)n : 0) + (log_owner_ready(aw->owner) ? 1 : 0);
}
