/* The AMQP routing-table sequencer on the control thread. Workers keep
 * identical replicas of the AMQP topology (exchanges, bindings, the queue
 * directory with each queue's worker); every change goes through here so
 * that all replicas apply the same changes in the same order. The control
 * thread treats a change as opaque: it numbers it, hands it to every worker
 * in turn and, once all have applied it (the barrier), tells the worker that
 * answers the client. */
#ifndef CTL_AMQP_H
#define CTL_AMQP_H

#include <stdbool.h>
#include <stdint.h>

#include "sl_mbox.h"

struct ctl_plane;

/* Ring messages of the AMQP range (SL_MSG_AMQP .. +31). */
enum ctl_amqp_msg {
        /* worker -> control, one-way: a.ptr[0] = change (opaque, owned by
         * the worker that answers the client), u16 = that worker. */
        CTL_AMQP_MSG_CHANGE = SL_MSG_AMQP,
        /* control -> worker request: a.ptr[0] = change (read only),
         * a.u64[1] = its sequence number (unique, increasing: the id of a
         * queue the change creates). The worker applies it and replies. */
        CTL_AMQP_MSG_APPLY,
        /* control -> worker, one-way: every worker applied a.ptr[0]
         * (sequence a.u64[1]); the receiver answers the client and frees it. */
        CTL_AMQP_MSG_DONE,
        /* worker <-> worker, see amqp_server.c */
        CTL_AMQP_MSG_FWD,
        CTL_AMQP_MSG_ACCEPT,
        CTL_AMQP_MSG_DELIVER,
        CTL_AMQP_MSG_SETTLE,
        CTL_AMQP_MSG_CREDIT,
        CTL_AMQP_MSG_QOP,
        CTL_AMQP_MSG_QOP_REPLY,
        CTL_AMQP_MSG_CANCELLED,
};

int ctl_amqp_init(struct ctl_plane *cp);
void ctl_amqp_fini(struct ctl_plane *cp);
/* True when m was an AMQP message (handled). */
bool ctl_amqp_on_msg(struct ctl_plane *cp, const struct sl_msg *m);
/* Starts queued changes; true while work is pending. */
bool ctl_amqp_poll(struct ctl_plane *cp);

#endif
