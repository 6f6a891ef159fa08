/* Token trie for NATS subscriptions. Each node owns an open-addressing hash
 * map of its literal children (linear probing, backward-shift deletion, so no
 * tombstones), plus '*' and '>' children, plain subscriptions (intrusive
 * list) and queue groups (member arrays, for O(1) random picks). */
#include "nats_sublist.h"
#include "nats_subject.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { NODE_LITERAL, NODE_PWC, NODE_FWC };

struct nats_sl_slot {
        uint64_t hash;
        struct nats_sl_node *node; /* NULL: empty */
};

struct nats_sl_map {
        struct nats_sl_slot *slots;
        uint32_t cap; /* 0 or a power of two */
        uint32_t n;
};

struct nats_sl_qgroup {
        struct nats_sl_qgroup *next;
        struct nats_sub **members;
        uint32_t n, cap;
        uint32_t name_len;
        uint8_t name[];
};

struct nats_sl_node {
        struct nats_sl_node *parent;
        struct nats_sl_node *pwc, *fwc;
        struct nats_sl_map map;
        struct nats_sub *psubs;
        struct nats_sl_qgroup *qgroups;
        uint64_t hash;
        uint32_t npsubs;
        uint32_t tok_len;
        uint8_t kind;
        uint8_t tok[];
};

#define CACHE_SUBS   6
#define CACHE_GROUPS 2

struct nats_sl_cache_entry {
        uint64_t gen; /* sl->gen when filled */
        uint16_t subj_len;
        uint8_t nsubs, nparts, ngroups;
        uint8_t subj[NATS_SL_CACHE_SUBJ_MAX];
        struct nats_sub *subs[CACHE_SUBS];
        struct nats_match_part parts[CACHE_GROUPS];
        struct nats_match_group groups[CACHE_GROUPS];
};

/* Whole-subject hash for the cache: 8 bytes per step. */
static uint64_t subj_hash(const uint8_t *s, size_t len)
{
        uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
        while (len >= 8) {
                uint64_t w;
                memcpy(&w, s, 8);
                h = (h ^ w) * 0xff51afd7ed558ccdull;
                h ^= h >> 32;
                s += 8;
                len -= 8;
        }
        uint64_t w = 0;
        memcpy(&w, s, len);
        h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
        return h ^ (h >> 29);
}

/* FNV-1a; tokens are short, so a byte loop is as fast as anything. */
static uint64_t tok_hash(const uint8_t *s, size_t len)
{
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < len; i++) {
                h ^= s[i];
                h *= 0x100000001b3ull;
        }
        return h;
}

static struct nats_sl_node *map_find(const struct nats_sl_map *m, uint64_t h, const uint8_t *tok,
                                     size_t len)
{
        if (!m->n)
                return NULL;
        uint32_t mask = m->cap - 1;
        for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
                const struct nats_sl_slot *s = &m->slots[i];
                if (!s->node)
                        return NULL;
                if (s->hash == h && s->node->tok_len == len && memcmp(s->node->tok, tok, len) == 0)
                        return s->node;
        }
}

static void map_place(struct nats_sl_slot *slots, uint32_t cap, struct nats_sl_node *node)
{
        uint32_t mask = cap - 1;
        uint32_t i = (uint32_t)node->hash & mask;
        while (slots[i].node)
                i = (i + 1) & mask;
        slots[i].hash = node->hash;
        slots[i].node = node;
}

/* Keeps the load at most 3/4; 0 or -ENOMEM. */
static int map_add(struct nats_sl_map *m, struct nats_sl_node *node)
{
        if ((m->n + 1) * 4 > m->cap * 3) {
                uint32_t ncap = m->cap ? m->cap * 2 : 4;
                struct nats_sl_slot *ns = calloc(ncap, sizeof(*ns));
                if (!ns)
                        return -ENOMEM;
                for (uint32_t i = 0; i < m->cap; i++)
                        if (m->slots[i].node)
                                map_place(ns, ncap, m->slots[i].node);
                free(m->slots);
                m->slots = ns;
                m->cap = ncap;
        }
        map_place(m->slots, m->cap, node);
        m->n++;
        return 0;
}

/* Backward-shift deletion: later entries of the probe run move up so
 * lookups never need tombstones. */
static void map_del(struct nats_sl_map *m, struct nats_sl_node *node)
{
        uint32_t mask = m->cap - 1;
        uint32_t i = (uint32_t)node->hash & mask;
        while (m->slots[i].node != node) {
                SL_ASSERT(m->slots[i].node);
                i = (i + 1) & mask;
        }
        uint32_t j = i;
        for (;;) {
                j = (j + 1) & mask;
                if (!m->slots[j].node)
                        break;
                uint32_t home = (uint32_t)m->slots[j].hash & mask;
                /* move j into the hole at i unless home lies cyclically in (i, j] */
                bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
                if (!stays) {
                        m->slots[i] = m->slots[j];
                        i = j;
                }
        }
        m->slots[i].node = NULL;
        m->slots[i].hash = 0;
        m->n--;
        if (!m->n) {
                free(m->slots);
                m->slots = NULL;
                m->cap = 0;
        }
}

static struct nats_sl_node *node_new(const uint8_t *tok, size_t len, uint8_t kind)
{
        struct nats_sl_node *n = calloc(1, sizeof(*n) + len);
        if (!n)
                return NULL;
        if (len) /* the root has no token */
                memcpy(n->tok, tok, len);
        n->tok_len = (uint32_t)len;
        n->hash = tok_hash(tok, len);
        n->kind = kind;
        return n;
}

static bool node_empty(const struct nats_sl_node *n)
{
        return !n->psubs && !n->qgroups && !n->pwc && !n->fwc && !n->map.n;
}

/* Free empty nodes from n up to (not including) the root. */
static void prune(struct nats_sublist *sl, struct nats_sl_node *n)
{
        while (n != sl->root && node_empty(n)) {
                struct nats_sl_node *parent = n->parent;
                if (n->kind == NODE_PWC)
                        parent->pwc = NULL;
                else if (n->kind == NODE_FWC)
                        parent->fwc = NULL;
                else
                        map_del(&parent->map, n);
                free(n);
                sl->nodes--;
                n = parent;
        }
}

int nats_sublist_init(struct nats_sublist *sl, bool with_cache)
{
        memset(sl, 0, sizeof(*sl));
        sl->gen = 1; /* zeroed cache entries (gen 0) are stale */
        sl->root = node_new(NULL, 0, NODE_LITERAL);
        if (!sl->root)
                return -ENOMEM;
        if (with_cache) {
                sl->cache = calloc(NATS_SL_CACHE_SLOTS, sizeof(*sl->cache));
                if (!sl->cache) {
                        free(sl->root);
                        sl->root = NULL;
                        return -ENOMEM;
                }
        }
        return 0;
}

static void node_free_all(struct nats_sl_node *n)
{
        if (n->pwc)
                node_free_all(n->pwc);
        if (n->fwc)
                node_free_all(n->fwc);
        for (uint32_t i = 0; i < n->map.cap; i++)
                if (n->map.slots[i].node)
                        node_free_all(n->map.slots[i].node);
        free(n->map.slots);
        struct nats_sl_qgroup *q = n->qgroups;
        while (q) {
                struct nats_sl_qgroup *next = q->next;
                free(q->members);
                free(q);
                q = next;
        }
        free(n);
}

void nats_sublist_fini(struct nats_sublist *sl)
{
        if (sl->root)
                node_free_all(sl->root);
        free(sl->cache);
        memset(sl, 0, sizeof(*sl));
}

/* Child of n for one token, created when missing; NULL on -ENOMEM. */
static struct nats_sl_node *child_get(struct nats_sublist *sl, struct nats_sl_node *n,
                                      const uint8_t *tok, size_t len)
{
        struct nats_sl_node **wc = NULL;
        uint8_t kind = NODE_LITERAL;
        if (len == 1 && tok[0] == '*') {
                wc = &n->pwc;
                kind = NODE_PWC;
        } else if (len == 1 && tok[0] == '>') {
                wc = &n->fwc;
                kind = NODE_FWC;
        }
        if (wc && *wc)
                return *wc;
        if (!wc) {
                struct nats_sl_node *c = map_find(&n->map, tok_hash(tok, len), tok, len);
                if (c)
                        return c;
        }
        struct nats_sl_node *c = node_new(tok, len, kind);
        if (!c)
                return NULL;
        c->parent = n;
        if (wc) {
                *wc = c;
        } else if (map_add(&n->map, c) < 0) {
                free(c);
                return NULL;
        }
        sl->nodes++;
        return c;
}

static int qgroup_add(struct nats_sl_node *n, struct nats_sub *sub, const uint8_t *q, size_t qlen)
{
        struct nats_sl_qgroup *g = n->qgroups;
        while (g && !(g->name_len == qlen && memcmp(g->name, q, qlen) == 0))
                g = g->next;
        bool fresh = !g;
        if (fresh) {
                g = calloc(1, sizeof(*g) + qlen);
                if (!g)
                        return -ENOMEM;
                memcpy(g->name, q, qlen);
                g->name_len = (uint32_t)qlen;
        }
        if (g->n == g->cap) {
                uint32_t ncap = g->cap ? g->cap * 2 : 4;
                struct nats_sub **nm = realloc(g->members, ncap * sizeof(*nm));
                if (!nm) {
                        if (fresh)
                                free(g);
                        return -ENOMEM;
                }
                g->members = nm;
                g->cap = ncap;
        }
        if (fresh) {
                g->next = n->qgroups;
                n->qgroups = g;
        }
        sub->qg = g;
        sub->qidx = g->n;
        g->members[g->n++] = sub;
        return 0;
}

int nats_sublist_insert(struct nats_sublist *sl, struct nats_sub *sub, const uint8_t *subject,
                        size_t subject_len, const uint8_t *queue, size_t queue_len)
{
        SL_ASSERT(!sub->node);
        if (!nats_subject_valid(subject, subject_len))
                return -EINVAL;
        if (queue_len && !nats_queue_valid(queue, queue_len))
                return -EINVAL;

        struct nats_sl_node *n = sl->root;
        const uint8_t *p = subject, *end = subject + subject_len;
        for (;;) {
                const uint8_t *dot = memchr(p, '.', (size_t)(end - p));
                const uint8_t *tend = dot ? dot : end;
                struct nats_sl_node *c = child_get(sl, n, p, (size_t)(tend - p));
                if (!c) {
                        prune(sl, n);
                        return -ENOMEM;
                }
                n = c;
                if (!dot)
                        break;
                p = dot + 1;
        }

        if (queue_len) {
                if (qgroup_add(n, sub, queue, queue_len) < 0) {
                        prune(sl, n);
                        return -ENOMEM;
                }
        } else {
                sub->qg = NULL;
                sub->prev = NULL;
                sub->next = n->psubs;
                if (n->psubs)
                        n->psubs->prev = sub;
                n->psubs = sub;
                n->npsubs++;
        }
        sub->node = n;
        sl->count++;
        sl->gen++;
        return 0;
}

void nats_sublist_remove(struct nats_sublist *sl, struct nats_sub *sub)
{
        struct nats_sl_node *n = sub->node;
        SL_ASSERT(n);
        struct nats_sl_qgroup *g = sub->qg;
        if (g) {
                SL_ASSERT(sub->qidx < g->n && g->members[sub->qidx] == sub);
                struct nats_sub *last = g->members[--g->n];
                g->members[sub->qidx] = last;
                last->qidx = sub->qidx;
                if (!g->n) {
                        struct nats_sl_qgroup **pp = &n->qgroups;
                        while (*pp != g)
                                pp = &(*pp)->next;
                        *pp = g->next;
                        free(g->members);
                        free(g);
                }
        } else {
                if (sub->prev)
                        sub->prev->next = sub->next;
                else
                        n->psubs = sub->next;
                if (sub->next)
                        sub->next->prev = sub->prev;
                n->npsubs--;
        }
        memset(sub, 0, sizeof(*sub));
        sl->count--;
        sl->gen++;
        prune(sl, n);
}

static void add_group(struct nats_match *m, const struct nats_sl_qgroup *g)
{
        struct nats_match_group *mg = NULL;
        for (uint32_t k = 0; k < m->ngroups && k < m->groups_cap; k++) {
                struct nats_match_group *x = &m->groups[k];
                if (x->name_len == g->name_len && memcmp(x->name, g->name, g->name_len) == 0) {
                        mg = x;
                        break;
                }
        }
        if (m->nparts >= m->parts_cap || (!mg && m->ngroups >= m->groups_cap)) {
                m->overflow = true;
                m->nparts++;
                if (!mg)
                        m->ngroups++;
                return;
        }
        uint32_t pi = m->nparts++;
        m->parts[pi].members = g->members;
        m->parts[pi].n = g->n;
        m->parts[pi].next = UINT32_MAX;
        if (!mg) {
                mg = &m->groups[m->ngroups++];
                mg->name = g->name;
                mg->name_len = g->name_len;
                mg->nmembers = 0;
                mg->first_part = pi;
        } else {
                m->parts[mg->last_part].next = pi;
        }
        mg->last_part = pi;
        mg->nmembers += g->n;
}

static void add_node(struct nats_match *m, const struct nats_sl_node *n)
{
        for (const struct nats_sub *s = n->psubs; s; s = s->next) {
                if (m->nsubs < m->subs_cap)
                        m->subs[m->nsubs] = (struct nats_sub *)s;
                else
                        m->overflow = true;
                m->nsubs++;
        }
        for (const struct nats_sl_qgroup *g = n->qgroups; g; g = g->next)
                add_group(m, g);
}

/* p..end holds at least one token. Mirrors nats-server's matchLevel: at
 * each level '>' takes the rest, '*' recurses on the rest, the literal
 * child continues the walk. */
static void match_level(const struct nats_sl_node *n, const uint8_t *p, const uint8_t *end,
                        struct nats_match *m)
{
        for (;;) {
                const uint8_t *dot = memchr(p, '.', (size_t)(end - p));
                const uint8_t *tend = dot ? dot : end;
                if (n->fwc)
                        add_node(m, n->fwc);
                if (n->pwc) {
                        if (dot)
                                match_level(n->pwc, dot + 1, end, m);
                        else
                                add_node(m, n->pwc);
                }
                size_t len = (size_t)(tend - p);
                if (!n->map.n)
                        return; /* skip hashing on leaves */
                n = map_find(&n->map, tok_hash(p, len), p, len);
                if (!n)
                        return;
                if (!dot)
                        break;
                p = dot + 1;
        }
        add_node(m, n);
}

static bool cache_get(const struct nats_sl_cache_entry *e, uint64_t gen, const uint8_t *subject,
                      size_t len, struct nats_match *m)
{
        if (e->gen != gen || e->subj_len != len || memcmp(e->subj, subject, len) != 0)
                return false;
        if (e->nsubs > m->subs_cap || e->nparts > m->parts_cap || e->ngroups > m->groups_cap)
                return false; /* caller's arrays too small: take the slow path */
        memcpy(m->subs, e->subs, e->nsubs * sizeof(e->subs[0]));
        memcpy(m->parts, e->parts, e->nparts * sizeof(e->parts[0]));
        memcpy(m->groups, e->groups, e->ngroups * sizeof(e->groups[0]));
        m->nsubs = e->nsubs;
        m->nparts = e->nparts;
        m->ngroups = e->ngroups;
        return true;
}

static void cache_put(struct nats_sl_cache_entry *e, uint64_t gen, const uint8_t *subject,
                      size_t len, const struct nats_match *m)
{
        if (m->overflow || m->nsubs > CACHE_SUBS || m->nparts > CACHE_GROUPS ||
            m->ngroups > CACHE_GROUPS)
                return;
        e->gen = gen;
        e->subj_len = (uint16_t)len;
        memcpy(e->subj, subject, len);
        memcpy(e->subs, m->subs, m->nsubs * sizeof(e->subs[0]));
        memcpy(e->parts, m->parts, m->nparts * sizeof(e->parts[0]));
        memcpy(e->groups, m->groups, m->ngroups * sizeof(e->groups[0]));
        e->nsubs = (uint8_t)m->nsubs;
        e->nparts = (uint8_t)m->nparts;
        e->ngroups = (uint8_t)m->ngroups;
}

int nats_sublist_match(struct nats_sublist *sl, const uint8_t *subject, size_t len,
                       struct nats_match *m)
{
        m->nsubs = m->nparts = m->ngroups = 0;
        m->overflow = false;
        if (len == 0)
                return 0;
        /* The cache holds only subjects that passed the empty-token check
         * below, so a hit skips it (it was a visible cost per message). */
        struct nats_sl_cache_entry *e = NULL;
        if (sl->cache && len <= NATS_SL_CACHE_SUBJ_MAX) {
                e = &sl->cache[subj_hash(subject, len) & (NATS_SL_CACHE_SLOTS - 1)];
                if (cache_get(e, sl->gen, subject, len, m)) {
                        sl->cache_hits++;
                        return (int)(m->nsubs + m->ngroups);
                }
                sl->cache_misses++;
        }
        if (subject[0] == '.' || subject[len - 1] == '.' || memmem(subject, len, "..", 2))
                return 0;

        match_level(sl->root, subject, subject + len, m);
        if (e)
                cache_put(e, sl->gen, subject, len, m);
        return (int)(m->nsubs + m->ngroups);
}

struct nats_sub *nats_match_group_member(const struct nats_match *m,
                                         const struct nats_match_group *g, uint32_t i)
{
        SL_DASSERT(i < g->nmembers);
        for (uint32_t k = g->first_part; k != UINT32_MAX; k = m->parts[k].next) {
                if (i < m->parts[k].n)
                        return m->parts[k].members[i];
                i -= m->parts[k].n;
        }
        return NULL;
}
