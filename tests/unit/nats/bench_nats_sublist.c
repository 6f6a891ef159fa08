/* Micro-benchmark (not a test): ns per nats_sublist_match() for the same
 * probe subjects against 10 and against 100k subscriptions, and their
 * ratio. The index should keep the ratio under 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nats_sublist.h"

#define PROBES   1024
#define BIG      100000
#define SMALL    10
#define MATCHES  4000000
#define SUBJ_MAX 96

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(uint32_t n)
{
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (uint32_t)(rng % n);
}

/* 3-5 tokens; vocabularies grow with depth like real subject trees (few
 * services, many entities). Probes use tokens "t<n>". Extra subscriptions
 * share the probes' upper levels (so the maps on the probes' paths are the
 * big ones) but end in an "x<n>" token no probe has, so they never match;
 * about 1 in 10 has a '*' level or ends in "x<n>.>". */
static void gen(char *out, bool extra)
{
        static const uint32_t vocab[] = {50, 400, 5000, 20000, 20000};
        int n = 3 + (int)rnd(3);
        int star = extra && rnd(10) == 0 ? (int)rnd((uint32_t)n - 1) : -1;
        size_t o = 0;
        for (int i = 0; i < n; i++) {
                if (i)
                        out[o++] = '.';
                if (i == star)
                        o += (size_t)sprintf(out + o, "*");
                else if (extra && i == n - 1)
                        o += (size_t)sprintf(out + o, "x%u", rnd(vocab[i]));
                else
                        o += (size_t)sprintf(out + o, "t%u", rnd(vocab[i]));
        }
        if (extra && rnd(20) == 0)
                o += (size_t)sprintf(out + o, ".>");
        out[o] = 0;
}

static char probes[PROBES][SUBJ_MAX];

static double run(struct nats_sublist *sl, double *hits_avg)
{
        static struct nats_sub *subs[1024];
        static struct nats_match_part parts[64];
        static struct nats_match_group groups[64];
        struct nats_match m = {.subs = subs,
                               .subs_cap = 1024,
                               .parts = parts,
                               .parts_cap = 64,
                               .groups = groups,
                               .groups_cap = 64};
        size_t lens[PROBES];
        for (int i = 0; i < PROBES; i++)
                lens[i] = strlen(probes[i]);
        double best = 1e30;
        uint64_t hits = 0;
        for (int rep = 0; rep < 5; rep++) {
                hits = 0;
                uint64_t t0 = sl_time_ns();
                for (int i = 0; i < MATCHES; i++) {
                        int k = i & (PROBES - 1);
                        hits += (uint64_t)nats_sublist_match(sl, (const uint8_t *)probes[k],
                                                             lens[k], &m);
                }
                double ns = (double)(sl_time_ns() - t0) / MATCHES;
                if (ns < best)
                        best = ns;
        }
        *hits_avg = (double)hits / MATCHES;
        return best;
}

int main(int argc, char **argv)
{
        static struct nats_sub small_subs[SMALL];
        struct nats_sub *big_subs = calloc(BIG, sizeof(*big_subs));
        struct nats_sublist small, big;
        char s[SUBJ_MAX];

        for (int i = 0; i < PROBES; i++)
                gen(probes[i], false);
        bool cache = argc > 1 && strcmp(argv[1], "--cache") == 0;
        if (nats_sublist_init(&small, cache) || nats_sublist_init(&big, cache) || !big_subs)
                return 1;
        /* the 10: two wildcards every probe hits, eight probe subjects */
        static const char *wild[] = {">", "*.*.>"};
        for (int i = 0; i < SMALL; i++) {
                const char *subj = i < 2 ? wild[i] : probes[i * 7];
                nats_sublist_insert(&small, &small_subs[i], (const uint8_t *)subj, strlen(subj),
                                    NULL, 0);
                nats_sublist_insert(&big, &big_subs[i], (const uint8_t *)subj, strlen(subj), NULL,
                                    0);
        }
        for (int i = SMALL; i < BIG; i++) {
                gen(s, true);
                if (nats_sublist_insert(&big, &big_subs[i], (const uint8_t *)s, strlen(s), NULL,
                                        0) != 0)
                        return 1;
        }
        double h_small, h_big;
        double ns_small = run(&small, &h_small);
        double ns_big = run(&big, &h_big);
        printf("subscriptions %7d: %6.1f ns/match (avg %.2f hits)\n", SMALL, ns_small, h_small);
        printf("subscriptions %7d: %6.1f ns/match (avg %.2f hits, %llu trie nodes)\n", BIG, ns_big,
               h_big, (unsigned long long)big.nodes);
        printf("ratio 100k/10: %.2f (match cache %s)\n", ns_big / ns_small, cache ? "on" : "off");
        nats_sublist_fini(&small);
        nats_sublist_fini(&big);
        free(big_subs);
        return 0;
}
