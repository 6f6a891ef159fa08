/* Mailboxes: how one thread (a worker or the control thread) talks to every
 * other over bounded SPSC rings, one per ordered pair, with credits so that a
 * reply always has a slot and sleeping peers are woken without a syscall per
 * message and without lost wake-ups.
 *
 * Credit rule: endpoint A may have at most `credits` requests outstanding at
 * B. B keeps, in A's ring, a reserve of free slots equal to the requests it
 * owes A (`owed_replies`), so one-way messages and B's own requests only use
 * slots beyond that reserve and a reply can always be pushed. */
#ifndef SL_MBOX_H
#define SL_MBOX_H

#include <stdatomic.h>

#include "sl_common.h"
#include "sl_ring.h"

enum sl_msg_flag {
        SL_MSG_F_REQUEST = 1, /* the receiver owes exactly one reply */
        SL_MSG_F_REPLY = 2,   /* returns one credit to the receiver */
};

/* Message type ranges: each subsystem owns one so handlers can be tables. */
enum sl_msg_range {
        SL_MSG_CORE = 0,     /* runtime: buffer returns, shutdown, reload, conn handoff */
        SL_MSG_CONTROL = 32, /* control-plane requests and commands */
        SL_MSG_NATS = 64,
        SL_MSG_KAFKA = 96,
        SL_MSG_AMQP = 128,
        SL_MSG_STORAGE = 160,
        SL_MSG_TYPES = 192,
};

/* One ring slot: a small descriptor; bulk data travels by pointer to a
 * reference-counted sl_buf owned by the sender's pool. */
struct sl_msg {
        uint16_t type;
        uint16_t src;   /* sending endpoint index (filled by sl_mbox_*) */
        uint16_t flags; /* sl_msg_flag */
        uint16_t u16;   /* free for the message's own use */
        uint32_t u32;
        uint32_t pad;
        uint64_t cookie; /* request id, echoed in the reply */
        union {
                uint64_t u64[5];
                int64_t i64[5];
                void *ptr[5];
                uint8_t bytes[40];
        } a;
};
_Static_assert(sizeof(struct sl_msg) == 64, "one cache line per ring slot");

struct sl_wake {
        _Atomic uint32_t sleeping; /* 1 while the owner may block */
        int eventfd;               /* written by whoever finds sleeping == 1 */
} sl_cacheline_aligned;

struct sl_link {
        struct sl_ring *out;       /* self -> peer */
        struct sl_ring *in;        /* peer -> self */
        struct sl_wake *peer_wake; /* to wake the peer after publishing */
        uint32_t owed_replies;     /* requests from peer not yet answered */
        uint32_t credits;          /* requests self may still send to peer */
        uint32_t credits_max;
};

struct sl_mbox_stats {
        _Atomic uint64_t ring_full;    /* one-way/request refused: no slot */
        _Atomic uint64_t credit_stall; /* request refused: no credit */
        _Atomic uint64_t wakeups_sent;
        _Atomic uint64_t msgs_in;
        _Atomic uint64_t msgs_out;
};

struct sl_mbox {
        uint16_t self;
        uint16_t count; /* endpoints in the fabric */
        struct sl_link *links;
        struct sl_wake *wake; /* own */
        struct sl_mbox_stats stats;
};

/* All rings of a process: count endpoints, rings[i][j] carries i -> j. */
struct sl_fabric {
        uint16_t count;
        uint32_t slots;
        struct sl_ring **rings; /* count * count, diagonal NULL */
        struct sl_wake *wakes;  /* count */
};

int sl_fabric_init(struct sl_fabric *f, uint16_t count, uint32_t slots);
void sl_fabric_fini(struct sl_fabric *f);

/* Binds endpoint `self` of f. credits per peer = slots / 4. */
int sl_mbox_init(struct sl_mbox *mb, struct sl_fabric *f, uint16_t self);
void sl_mbox_fini(struct sl_mbox *mb);

/* One-way message. 0, or -EAGAIN when the ring has no slot beyond the
 * reply reserve (counted in ring_full; the caller stops reading input). */
int sl_mbox_send(struct sl_mbox *mb, uint16_t dst, struct sl_msg *m);

/* Request: takes one credit. -EAGAIN without credit or slot. */
int sl_mbox_request(struct sl_mbox *mb, uint16_t dst, struct sl_msg *m);

/* Reply to a request received from dst: always succeeds (the slot is
 * reserved); m->cookie should echo the request's. */
void sl_mbox_reply(struct sl_mbox *mb, uint16_t dst, struct sl_msg *m);

/* True when a one-way message to dst would be accepted now. */
bool sl_mbox_can_send(struct sl_mbox *mb, uint16_t dst, uint32_t n);

/* Publishes everything pushed since the last flush and wakes sleeping
 * receivers. Called once per loop iteration. */
void sl_mbox_flush(struct sl_mbox *mb);

typedef void (*sl_msg_fn)(void *ctx, const struct sl_msg *m);

/* Hands up to budget inbound messages to fn in per-peer order. Returns the
 * number handled. */
uint32_t sl_mbox_drain(struct sl_mbox *mb, sl_msg_fn fn, void *ctx, uint32_t budget);

/* Sleep protocol. sl_mbox_sleep_begin() announces the intent and re-checks
 * the inbound rings: false means something arrived meanwhile (do not
 * block). After blocking (on anything that includes the eventfd), call
 * sl_mbox_sleep_end(). */
bool sl_mbox_sleep_begin(struct sl_mbox *mb);
void sl_mbox_sleep_end(struct sl_mbox *mb);

/* Wakes endpoint `who` if it sleeps (for non-ring events, e.g. shutdown). */
void sl_wake_poke(struct sl_wake *w, _Atomic uint64_t *counter);

#endif
