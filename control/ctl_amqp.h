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
         * the worker that answers the client), u16 = that worker, a.ptr[1]
         * = what it makes durable (struct ctl_amqp_def, inside the change)
         * or NULL. */
        CTL_AMQP_MSG_CHANGE = SL_MSG_AMQP,
        /* control -> worker request: a.ptr[0] = change (read only),
         * a.u64[1] = its sequence number (unique, increasing: the id of a
         * queue the change creates). The worker applies it and replies.
         * u16 = 1: a change restored from the metadata log at start:
         * a.ptr[0] = its stored bytes (struct ctl_amqp_def value), u32 =
         * their length. u16 = 2: every stored object is applied; the
         * worker starts serving AMQP clients. */
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
        /* control -> worker, one-way: the resource alarms now on (u16,
         * CTL_AMQP_ALARM_* bits; 0 = clear). */
        CTL_AMQP_MSG_ALARM,
        /* worker -> control, one-way: a.u64[0] = bytes of messages held in
         * the worker's queues, u16 = the worker (sent when it changed,
         * at most every 100 ms). */
        CTL_AMQP_MSG_HELD,
};
#define CTL_AMQP_ALARM_MEMORY 1
#define CTL_AMQP_ALARM_DISK   2

/* What a change of a durable object writes to the metadata log (before any
 * worker applies it). Keys: "e:<hex name>" exchanges, "q:<hex name>"
 * queues, "b:<hex source>:<q|e><hex destination>:<hex routing key>"
 * bindings; values are the front-end's own encoding of the change, handed
 * back to the workers at start (exchanges, then queues, then bindings). */
enum ctl_amqp_def_op {
        CTL_AMQP_DEF_PUT,
        CTL_AMQP_DEF_DELETE,
        CTL_AMQP_DEF_DELETE_QUEUE,    /* key "q:H" and every binding to queue H */
        CTL_AMQP_DEF_DELETE_EXCHANGE, /* key "e:H" and every binding from or to it */
};
#define CTL_AMQP_DEF_KEY_MAX 1600
#define CTL_AMQP_DEF_VAL_MAX 2048
struct ctl_amqp_def {
        uint8_t op;
        uint32_t len;
        char key[CTL_AMQP_DEF_KEY_MAX];
        uint8_t val[CTL_AMQP_DEF_VAL_MAX];
};

int ctl_amqp_init(struct ctl_plane *cp);
void ctl_amqp_fini(struct ctl_plane *cp);
/* True when m was an AMQP message (handled). */
bool ctl_amqp_on_msg(struct ctl_plane *cp, const struct sl_msg *m);
/* Starts queued changes; true while work is pending. */
bool ctl_amqp_poll(struct ctl_plane *cp);
/* sluice_amqp_alarm{kind} for /metrics. */
struct ctl_text;
void ctl_amqp_metrics(struct ctl_text *t);
/* The metadata log AMQP writes to: its own when Kafka is off, else
 * Kafka's; NULL when neither is on. */
struct meta_log *ctl_amqp_meta(void);

#endif
