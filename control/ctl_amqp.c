/* The AMQP routing-table sequencer (see ctl_amqp.h): one change at a time,
 * applied by every worker before the next starts, so the replicas never
 * diverge and a declare-ok/bind-ok is sent only once every worker routes
 * with the change. Changes wait in a FIFO bounded by the workers' own
 * pacing: a connection waits for its change before sending another. */
#include "ctl_amqp.h"

#include <stdlib.h>

#include "ctl_plane.h"

struct amqp_pending {
        struct amqp_pending *next;
        void *change;
        uint16_t reply_worker;
};

static struct {
        struct ctl_plane *cp;
        struct amqp_pending *head, *tail;
        struct amqp_pending *cur; /* being applied */
        uint16_t next_worker;     /* next worker to send cur to */
        uint16_t acks_waiting;
        uint64_t seq;
} A;

int ctl_amqp_init(struct ctl_plane *cp)
{
        A.cp = cp;
        A.seq = 0;
        return 0;
}

void ctl_amqp_fini(struct ctl_plane *cp)
{
        (void)cp;
        /* Changes belong to the workers (freed in their fini); drop ours. */
        while (A.head) {
                struct amqp_pending *p = A.head;
                A.head = p->next;
                free(p);
        }
        free(A.cur);
        A.cur = NULL;
        A.tail = NULL;
}

/* Sends cur to the workers not yet reached (a worker without credit is
 * retried on the next poll). */
static void cur_pump(void)
{
        struct sl_runtime *rt = A.cp->rt;
        while (A.cur && A.next_worker < rt->nworkers) {
                struct sl_msg m = {.type = CTL_AMQP_MSG_APPLY};
                m.a.ptr[0] = A.cur->change;
                m.a.u64[1] = A.seq;
                if (sl_mbox_request(&A.cp->mb, A.next_worker, &m) != 0)
                        return;
                A.next_worker++;
                A.acks_waiting++;
        }
}

static void cur_start(void)
{
        if (A.cur || !A.head)
                return;
        A.cur = A.head;
        A.head = A.cur->next;
        if (!A.head)
                A.tail = NULL;
        A.seq++;
        A.next_worker = 0;
        A.acks_waiting = 0;
        cur_pump();
}

static void cur_finish(void)
{
        struct sl_msg m = {.type = CTL_AMQP_MSG_DONE};
        m.a.ptr[0] = A.cur->change;
        m.a.u64[1] = A.seq;
        /* One-way to a worker that is waiting for it: the worker keeps ring
         * room for control traffic by never sending more changes than it has
         * connections waiting; a refusal is retried from poll. */
        if (sl_mbox_send(&A.cp->mb, A.cur->reply_worker, &m) != 0)
                return;
        free(A.cur);
        A.cur = NULL;
        cur_start();
}

bool ctl_amqp_on_msg(struct ctl_plane *cp, const struct sl_msg *m)
{
        (void)cp;
        if (m->type < SL_MSG_AMQP || m->type >= SL_MSG_STORAGE)
                return false;
        if (m->type == CTL_AMQP_MSG_CHANGE) {
                struct amqp_pending *p = calloc(1, sizeof(*p));
                SL_ASSERT(p); /* control-plane rate; the worker waits for it */
                p->change = m->a.ptr[0];
                p->reply_worker = m->u16;
                if (A.tail)
                        A.tail->next = p;
                else
                        A.head = p;
                A.tail = p;
                cur_start();
                return true;
        }
        if (m->type == CTL_AMQP_MSG_APPLY && (m->flags & SL_MSG_F_REPLY)) {
                SL_ASSERT(A.cur && A.acks_waiting > 0);
                A.acks_waiting--;
                if (A.acks_waiting == 0 && A.next_worker == A.cp->rt->nworkers)
                        cur_finish();
                return true;
        }
        return true;
}

bool ctl_amqp_poll(struct ctl_plane *cp)
{
        (void)cp;
        if (A.cur && A.next_worker < A.cp->rt->nworkers)
                cur_pump();
        if (A.cur && A.acks_waiting == 0 && A.next_worker == A.cp->rt->nworkers)
                cur_finish();
        return A.cur != NULL;
}
