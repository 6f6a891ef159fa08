/* The NATS subscription index: a token trie (a hash map of literal tokens
 * plus '*' and '>' children per level, like nats-server's sublist.go) with
 * intrusive subscription entries. Match cost depends on the subject's
 * tokens and the hits, not on how many unrelated subscriptions exist. */
#ifndef NATS_SUBLIST_H
#define NATS_SUBLIST_H

#include "sl_common.h"

struct nats_sl_node;
struct nats_sl_qgroup;

/*
 * Embedded by the caller in its subscription object (find the object with
 * SL_CONTAINER_OF). Zero it before nats_sublist_insert(); all fields belong
 * to the sublist while inserted. The index does not allocate per
 * subscription: plain entries are linked through this struct; a queue
 * group keeps an array of member pointers (grown at subscribe time).
 */
struct nats_sub {
        struct nats_sub *prev, *next;
        struct nats_sl_node *node;
        struct nats_sl_qgroup *qg; /* NULL: plain subscription */
        uint32_t qidx;             /* index in qg's member array */
};

struct nats_sl_cache_entry;

/* Match cache: direct-mapped, keyed by subject, for results of up to a few
 * entries; every insert/remove bumps gen, which invalidates all of it. */
#define NATS_SL_CACHE_SLOTS    1024
#define NATS_SL_CACHE_SUBJ_MAX 48

/* Single-owner (one worker): no locking. */
struct nats_sublist {
        struct nats_sl_node *root;
        struct nats_sl_cache_entry *cache; /* NULL: no cache */
        uint64_t cache_hits, cache_misses;
        uint64_t gen;   /* bumped by every insert/remove: match results go stale */
        uint64_t count; /* subscriptions inserted */
        uint64_t nodes; /* trie nodes below the root */
};

/* Queue-group members of one trie node, part of a match result. */
struct nats_match_part {
        struct nats_sub *const *members;
        uint32_t n;
        uint32_t next; /* next part of the same group, or UINT32_MAX */
};

/* One queue group of a match: all members of all matching subscriptions
 * with this queue name (e.g. "foo.*" q and "foo.bar" q), from which the
 * caller picks one per message. */
struct nats_match_group {
        const uint8_t *name;
        uint32_t name_len;
        uint32_t nmembers;   /* over all its parts */
        uint32_t first_part; /* index into parts */
        uint32_t last_part;
};

/*
 * Result of nats_sublist_match(). The caller provides the arrays and their
 * capacities; match fills them without allocating. When any array is too
 * small, overflow is set and the counts say how much was found (subs) or at
 * least needed; retry with larger arrays. The result borrows the sublist's
 * storage and is valid until the next insert or remove.
 */
struct nats_match {
        struct nats_sub **subs; /* plain subscriptions */
        uint32_t subs_cap, nsubs;
        struct nats_match_part *parts;
        uint32_t parts_cap, nparts;
        struct nats_match_group *groups;
        uint32_t groups_cap, ngroups;
        bool overflow;
};

/* 0 or -ENOMEM. with_cache: allocate the match cache (~230 KiB). */
int nats_sublist_init(struct nats_sublist *sl, bool with_cache);
/* Frees the trie; subscriptions still inserted are simply forgotten. */
void nats_sublist_fini(struct nats_sublist *sl);

/*
 * Insert sub (zeroed; lent to the sublist until removed) under subject with
 * an optional queue group (queue_len 0 = plain). Subject and queue are
 * borrowed for the call only (tokens and names are copied into the trie).
 * Returns 0, -EINVAL (invalid subject or queue name) or -ENOMEM.
 */
int nats_sublist_insert(struct nats_sublist *sl, struct nats_sub *sub, const uint8_t *subject,
                        size_t subject_len, const uint8_t *queue, size_t queue_len);
/* Remove an inserted sub; empty trie nodes are pruned. */
void nats_sublist_remove(struct nats_sublist *sl, struct nats_sub *sub);

/*
 * Match a literal (publish) subject. Resets and fills *m (arrays set by the
 * caller). Returns nsubs + ngroups; a subject with an empty token matches
 * nothing. Does not allocate; may fill a cache entry (hence not const).
 */
int nats_sublist_match(struct nats_sublist *sl, const uint8_t *subject, size_t len,
                       struct nats_match *m);

/* The i-th member (i < g->nmembers) of a matched queue group. */
struct nats_sub *nats_match_group_member(const struct nats_match *m,
                                         const struct nats_match_group *g, uint32_t i);

#endif
