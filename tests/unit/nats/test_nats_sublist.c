/* Unit tests of subject validation and the subscription index: the
 * nats-server validity cases, wildcard and queue-group matching, pruning,
 * and a randomised comparison against a brute-force matcher. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nats_subject.h"
#include "nats_sublist.h"

#define U(s) (const uint8_t *)(s), strlen(s)

static void test_valid_subjects(void **state)
{
        (void)state;
        /* nats-server TestSublistValidSubjects */
        static const struct {
                const char *s;
                bool ok;
        } cases[] = {
            {".", false},        {".foo", false},      {"foo.", false},      {"foo..bar", false},
            {">.bar", false},    {"foo.>.bar", false}, {"foo", true},        {"foo.bar.*", true},
            {"foo.bar.>", true}, {"*", true},          {">", true},          {"foo*", true},
            {"foo**", true},     {"foo.**", true},     {"foo*bar", true},    {"foo.*bar", true},
            {"foo*.bar", true},  {"*bar", true},       {"foo>", true},       {"foo.>>", true},
            {"foo>bar", true},   {"foo.>bar", true},   {"foo>.bar", true},   {">bar", true},
            {"", false},         {"foo bar", false},   {"foo\tbar", false},  {"foo.\r", false},
            {"*.*.>", true},     {"a.*.b", true},      {"foo.*.>.x", false},
        };
        for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++)
                if (nats_subject_valid(U(cases[i].s)) != cases[i].ok)
                        fail_msg("nats_subject_valid(\"%s\") != %d", cases[i].s, cases[i].ok);
        /* embedded NUL */
        assert_false(nats_subject_valid((const uint8_t *)"foo.bar.baz.\0", 13));
        assert_false(nats_subject_valid((const uint8_t *)"foo\0bar", 7));
}

static void test_valid_literal_subjects(void **state)
{
        (void)state;
        /* nats-server TestSublistValidLiteralSubjects */
        static const struct {
                const char *s;
                bool ok;
        } cases[] = {
            {"foo", true},        {".foo", false},      {"foo.", false},   {"foo..bar", false},
            {"foo.bar.*", false}, {"foo.bar.>", false}, {"*", false},      {">", false},
            {"foo*", true},       {"foo**", true},      {"foo.**", true},  {"foo*bar", true},
            {"foo.*bar", true},   {"foo*.bar", true},   {"*bar", true},    {"foo>", true},
            {"foo>>", true},      {"foo.>>", true},     {"foo>bar", true}, {"foo.>bar", true},
            {"foo>.bar", true},   {">bar", true},       {"a.*.b", false},  {"_INBOX.x.1", true},
        };
        for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++)
                if (nats_subject_valid_literal(U(cases[i].s)) != cases[i].ok)
                        fail_msg("nats_subject_valid_literal(\"%s\") != %d", cases[i].s,
                                 cases[i].ok);
        assert_true(nats_queue_valid(U("workers")));
        assert_true(nats_queue_valid(U("workers.eu")));
        assert_false(nats_queue_valid(U("*")));
        assert_false(nats_queue_valid(U("")));
}

static void test_tokens(void **state)
{
        (void)state;
        struct nats_view t[4];
        assert_int_equal(nats_subject_tokens(U("a.bb.ccc"), t, 4), 3);
        assert_int_equal(t[1].len, 2);
        assert_memory_equal(t[2].ptr, "ccc", 3);
        assert_int_equal(nats_subject_tokens(U("a..b"), t, 4), 3);
        assert_int_equal(t[1].len, 0);
        assert_int_equal(nats_subject_tokens(U("a.b.c.d.e"), t, 4), -E2BIG);
        assert_int_equal(nats_subject_tokens(U("x"), t, 4), 1);
}

/* a subscription as the caller would embed it */
struct tsub {
        struct nats_sub node;
        int id;
};

struct res {
        struct nats_sub *subs[256];
        struct nats_match_part parts[64];
        struct nats_match_group groups[64];
        struct nats_match m;
};

static void res_init(struct res *r)
{
        memset(r, 0, sizeof(*r));
        r->m.subs = r->subs;
        r->m.subs_cap = 256;
        r->m.parts = r->parts;
        r->m.parts_cap = 64;
        r->m.groups = r->groups;
        r->m.groups_cap = 64;
}

static int cmp_int(const void *a, const void *b)
{
        return *(const int *)a - *(const int *)b;
}

/* "1,2,3" of the plain ids, sorted; "|q:4,5" per group sorted by name */
static void describe(struct res *r, char *out, size_t cap)
{
        int ids[256];
        size_t n = 0, o = 0;
        for (uint32_t i = 0; i < r->m.nsubs; i++)
                ids[n++] = SL_CONTAINER_OF(r->m.subs[i], struct tsub, node)->id;
        qsort(ids, n, sizeof(int), cmp_int);
        out[0] = 0;
        for (size_t i = 0; i < n; i++)
                o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? "," : "", ids[i]);
        /* groups in name order */
        uint32_t order[64];
        for (uint32_t g = 0; g < r->m.ngroups; g++)
                order[g] = g;
        for (uint32_t a = 0; a < r->m.ngroups; a++)
                for (uint32_t b = a + 1; b < r->m.ngroups; b++) {
                        struct nats_match_group *x = &r->m.groups[order[a]],
                                                *y = &r->m.groups[order[b]];
                        size_t l = SL_MIN(x->name_len, y->name_len);
                        int c = memcmp(x->name, y->name, l);
                        if (c > 0 || (c == 0 && x->name_len > y->name_len)) {
                                uint32_t t = order[a];
                                order[a] = order[b];
                                order[b] = t;
                        }
                }
        for (uint32_t k = 0; k < r->m.ngroups; k++) {
                struct nats_match_group *g = &r->m.groups[order[k]];
                n = 0;
                for (uint32_t i = 0; i < g->nmembers; i++)
                        ids[n++] =
                            SL_CONTAINER_OF(nats_match_group_member(&r->m, g, i), struct tsub, node)
                                ->id;
                qsort(ids, n, sizeof(int), cmp_int);
                o += (size_t)snprintf(out + o, cap - o, "|%.*s:", (int)g->name_len, g->name);
                for (size_t i = 0; i < n; i++)
                        o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? "," : "", ids[i]);
        }
}

static void expect_match(struct nats_sublist *sl, const char *subj, const char *want)
{
        struct res r;
        char got[4096];
        res_init(&r);
        int rc = nats_sublist_match(sl, U(subj), &r.m);
        assert_int_equal(rc, (int)(r.m.nsubs + r.m.ngroups));
        assert_false(r.m.overflow);
        describe(&r, got, sizeof(got));
        if (strcmp(got, want) != 0)
                fail_msg("match(%s) = \"%s\", want \"%s\"", subj, got, want);
}

static void ins(struct nats_sublist *sl, struct tsub *s, int id, const char *subj, const char *q)
{
        memset(s, 0, sizeof(*s));
        s->id = id;
        assert_int_equal(
            nats_sublist_insert(sl, &s->node, U(subj), (const uint8_t *)q, q ? strlen(q) : 0), 0);
}

static void test_wildcards(void **state)
{
        (void)state;
        struct nats_sublist sl;
        struct tsub s[16];
        memset(s, 0, sizeof(s));
        assert_int_equal(nats_sublist_init(&sl, true), 0);
        ins(&sl, &s[0], 1, "foo.bar", NULL);
        ins(&sl, &s[1], 2, "foo.*", NULL);
        ins(&sl, &s[2], 3, "foo.>", NULL);
        ins(&sl, &s[3], 4, ">", NULL);
        ins(&sl, &s[4], 5, "*.bar", NULL);
        ins(&sl, &s[5], 6, "foo.*.baz", NULL);
        ins(&sl, &s[6], 7, "*.*.baz", NULL);
        ins(&sl, &s[7], 8, "foo", NULL);
        ins(&sl, &s[8], 9, "foo*.bar", NULL); /* literal token "foo*" */
        assert_int_equal(sl.count, 9);

        expect_match(&sl, "foo.bar", "1,2,3,4,5");
        expect_match(&sl, "foo", "4,8");
        expect_match(&sl, "foo.bar.baz", "3,4,6,7");
        expect_match(&sl, "foo.x.y.z", "3,4");
        expect_match(&sl, "bar", "4");
        expect_match(&sl, "x.bar", "4,5");
        expect_match(&sl, "foo*.bar", "4,5,9");
        expect_match(&sl, "foox.bar", "4,5");
        expect_match(&sl, "foo..bar", "");
        expect_match(&sl, ".foo", "");
        expect_match(&sl, "foo.", "");
        expect_match(&sl, "", "");

        /* a second subscription on the same subject */
        ins(&sl, &s[9], 10, "foo.bar", NULL);
        expect_match(&sl, "foo.bar", "1,2,3,4,5,10");
        nats_sublist_remove(&sl, &s[0].node);
        expect_match(&sl, "foo.bar", "2,3,4,5,10");

        assert_int_equal(nats_sublist_insert(&sl, &s[10].node, U("foo..bar"), NULL, 0), -EINVAL);
        assert_int_equal(nats_sublist_insert(&sl, &s[10].node, U("foo.>.bar"), NULL, 0), -EINVAL);
        assert_int_equal(nats_sublist_insert(&sl, &s[10].node, U("foo"), U("q.*")), -EINVAL);
        nats_sublist_fini(&sl);
}

static void test_queue_groups(void **state)
{
        (void)state;
        struct nats_sublist sl;
        struct tsub s[16];
        assert_int_equal(nats_sublist_init(&sl, true), 0);
        ins(&sl, &s[0], 1, "orders.new", "workers");
        ins(&sl, &s[1], 2, "orders.new", "workers");
        ins(&sl, &s[2], 3, "orders.*", "workers"); /* same group name, other node */
        ins(&sl, &s[3], 4, "orders.new", "audit");
        ins(&sl, &s[4], 5, "orders.new", NULL);
        ins(&sl, &s[5], 6, "orders.>", NULL);
        expect_match(&sl, "orders.new", "5,6|audit:4|workers:1,2,3");
        expect_match(&sl, "orders.old", "6|workers:3");

        /* removal swaps the last member into the hole */
        nats_sublist_remove(&sl, &s[0].node);
        expect_match(&sl, "orders.new", "5,6|audit:4|workers:2,3");
        nats_sublist_remove(&sl, &s[3].node);
        expect_match(&sl, "orders.new", "5,6|workers:2,3");
        nats_sublist_remove(&sl, &s[1].node);
        nats_sublist_remove(&sl, &s[2].node);
        expect_match(&sl, "orders.new", "5,6");
        nats_sublist_remove(&sl, &s[4].node);
        nats_sublist_remove(&sl, &s[5].node);
        expect_match(&sl, "orders.new", "");
        /* removing the last subscription pruned every node */
        assert_int_equal(sl.nodes, 0);
        assert_int_equal(sl.count, 0);
        nats_sublist_fini(&sl);
}

static void test_overflow_reported(void **state)
{
        (void)state;
        struct nats_sublist sl;
        struct tsub s[8];
        struct nats_sub *small[2];
        struct nats_match m = {.subs = small, .subs_cap = 2};
        assert_int_equal(nats_sublist_init(&sl, true), 0);
        for (int i = 0; i < 5; i++)
                ins(&sl, &s[i], i, "a.b", NULL);
        ins(&sl, &s[5], 5, "a.b", "q");
        assert_int_equal(nats_sublist_match(&sl, U("a.b"), &m), 6);
        assert_true(m.overflow);
        assert_int_equal(m.nsubs, 5); /* how many there were: retry with 5 */
        assert_int_equal(m.ngroups, 1);
        nats_sublist_fini(&sl);
}

/* ---- randomised: the trie against a brute-force matcher ---- */

static bool ref_match(const char *pat, const char *subj)
{
        struct nats_view pt[16], st[16];
        int np = nats_subject_tokens(U(pat), pt, 16);
        int ns = nats_subject_tokens(U(subj), st, 16);
        for (int i = 0; i < np; i++) {
                if (pt[i].len == 1 && pt[i].ptr[0] == '>')
                        return ns > i;
                if (i >= ns)
                        return false;
                if (pt[i].len == 1 && pt[i].ptr[0] == '*')
                        continue;
                if (pt[i].len != st[i].len || memcmp(pt[i].ptr, st[i].ptr, pt[i].len))
                        return false;
        }
        return np == ns;
}

#define RN 600

struct rsub {
        struct tsub t;
        char subj[64];
        char queue[8];
        bool in;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return (uint32_t)(rng_state % n);
}

static void rand_subject(char *out, bool wild)
{
        static const char *vocab[] = {"a", "b", "c", "dd", "e"};
        int n = 1 + (int)rnd(4);
        out[0] = 0;
        for (int i = 0; i < n; i++) {
                if (i)
                        strcat(out, ".");
                uint32_t r = rnd(10);
                if (wild && r == 0)
                        strcat(out, "*");
                else if (wild && r == 1 && i == n - 1)
                        strcat(out, ">");
                else
                        strcat(out, vocab[rnd(5)]);
        }
}

static void ref_describe(struct rsub *rs, const char *subj, char *out, size_t cap)
{
        /* same format as describe() */
        int ids[RN];
        size_t n = 0, o = 0;
        for (int i = 0; i < RN; i++)
                if (rs[i].in && !rs[i].queue[0] && ref_match(rs[i].subj, subj))
                        ids[n++] = rs[i].t.id;
        qsort(ids, n, sizeof(int), cmp_int);
        out[0] = 0;
        for (size_t i = 0; i < n; i++)
                o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? "," : "", ids[i]);
        static const char *qs[] = {"q1", "q2"};
        for (int q = 0; q < 2; q++) {
                n = 0;
                for (int i = 0; i < RN; i++)
                        if (rs[i].in && strcmp(rs[i].queue, qs[q]) == 0 &&
                            ref_match(rs[i].subj, subj))
                                ids[n++] = rs[i].t.id;
                if (!n)
                        continue;
                qsort(ids, n, sizeof(int), cmp_int);
                o += (size_t)snprintf(out + o, cap - o, "|%s:", qs[q]);
                for (size_t i = 0; i < n; i++)
                        o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? "," : "", ids[i]);
        }
}

static void check_random_matches_once(struct nats_sublist *sl, struct rsub *rs)
{
        static struct nats_sub *subs[RN];
        static struct nats_match_part parts[RN];
        static struct nats_match_group groups[8];
        static char got[16384], want[16384];
        for (int k = 0; k < 300; k++) {
                char subj[64];
                rand_subject(subj, false);
                struct nats_match m = {.subs = subs,
                                       .subs_cap = RN,
                                       .parts = parts,
                                       .parts_cap = RN,
                                       .groups = groups,
                                       .groups_cap = 8};
                nats_sublist_match(sl, U(subj), &m);
                assert_false(m.overflow);
                struct res r;
                r.m = m;
                describe(&r, got, sizeof(got));
                ref_describe(rs, subj, want, sizeof(want));
                if (strcmp(got, want) != 0)
                        fail_msg("match(%s):\n got  %s\n want %s", subj, got, want);
        }
}

/* twice: the second pass may hit the match cache (small results only) */
static void check_random_matches(struct nats_sublist *sl, struct rsub *rs)
{
        uint64_t seed = rng_state;
        check_random_matches_once(sl, rs);
        rng_state = seed; /* the same subjects again */
        check_random_matches_once(sl, rs);
}

/* A cached result is served until an insert or remove invalidates it. */
static void test_match_cache_invalidation(void **state)
{
        (void)state;
        struct nats_sublist sl;
        struct tsub s[4];
        assert_int_equal(nats_sublist_init(&sl, true), 0);
        ins(&sl, &s[0], 1, "a.b", NULL);
        ins(&sl, &s[1], 2, "a.*", "q");
        expect_match(&sl, "a.b", "1|q:2");
        assert_int_equal(sl.cache_hits, 0);
        expect_match(&sl, "a.b", "1|q:2");
        assert_int_equal(sl.cache_hits, 1);
        ins(&sl, &s[2], 3, "a.>", NULL);
        expect_match(&sl, "a.b", "1,3|q:2");
        assert_int_equal(sl.cache_hits, 1);
        expect_match(&sl, "a.b", "1,3|q:2");
        assert_int_equal(sl.cache_hits, 2);
        nats_sublist_remove(&sl, &s[1].node);
        expect_match(&sl, "a.b", "1,3");
        nats_sublist_remove(&sl, &s[0].node);
        expect_match(&sl, "a.b", "3");
        expect_match(&sl, "a.b", "3");
        assert_int_equal(sl.cache_hits, 3);
        nats_sublist_fini(&sl);
}

static void test_random_against_reference(void **state)
{
        (void)state;
        static struct rsub rs[RN];
        struct nats_sublist sl;
        assert_int_equal(nats_sublist_init(&sl, true), 0);
        for (int i = 0; i < RN; i++) {
                memset(&rs[i], 0, sizeof(rs[i]));
                rs[i].t.id = i;
                rand_subject(rs[i].subj, true);
                uint32_t q = rnd(4);
                if (q == 1)
                        strcpy(rs[i].queue, "q1");
                else if (q == 2)
                        strcpy(rs[i].queue, "q2");
                assert_int_equal(nats_sublist_insert(&sl, &rs[i].t.node, U(rs[i].subj),
                                                     (const uint8_t *)rs[i].queue,
                                                     strlen(rs[i].queue)),
                                 0);
                rs[i].in = true;
        }
        check_random_matches(&sl, rs);
        /* remove a random half, re-insert some, check again */
        for (int i = 0; i < RN; i++)
                if (rnd(2)) {
                        nats_sublist_remove(&sl, &rs[i].t.node);
                        rs[i].in = false;
                }
        check_random_matches(&sl, rs);
        for (int i = 0; i < RN; i++)
                if (!rs[i].in && rnd(2)) {
                        assert_int_equal(nats_sublist_insert(&sl, &rs[i].t.node, U(rs[i].subj),
                                                             (const uint8_t *)rs[i].queue,
                                                             strlen(rs[i].queue)),
                                         0);
                        rs[i].in = true;
                }
        check_random_matches(&sl, rs);
        for (int i = 0; i < RN; i++)
                if (rs[i].in)
                        nats_sublist_remove(&sl, &rs[i].t.node);
        assert_int_equal(sl.count, 0);
        assert_int_equal(sl.nodes, 0);
        nats_sublist_fini(&sl);
}

/* Many literal children on one level: exercises growth and backward-shift
 * deletion of the per-level hash map. */
static void test_wide_level(void **state)
{
        (void)state;
        enum { N = 5000 };
        static struct tsub s[N];
        struct nats_sublist sl;
        char subj[32];
        assert_int_equal(nats_sublist_init(&sl, false), 0);
        for (int i = 0; i < N; i++) {
                snprintf(subj, sizeof(subj), "t%d.x", i);
                ins(&sl, &s[i], i, subj, NULL);
        }
        for (int i = 0; i < N; i += 2)
                nats_sublist_remove(&sl, &s[i].node);
        for (int i = 0; i < N; i++) {
                char want[16];
                snprintf(subj, sizeof(subj), "t%d.x", i);
                snprintf(want, sizeof(want), "%d", i);
                expect_match(&sl, subj, i % 2 ? want : "");
        }
        for (int i = 1; i < N; i += 2)
                nats_sublist_remove(&sl, &s[i].node);
        assert_int_equal(sl.nodes, 0);
        nats_sublist_fini(&sl);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_valid_subjects),
            cmocka_unit_test(test_valid_literal_subjects),
            cmocka_unit_test(test_tokens),
            cmocka_unit_test(test_wildcards),
            cmocka_unit_test(test_queue_groups),
            cmocka_unit_test(test_overflow_reported),
            cmocka_unit_test(test_random_against_reference),
            cmocka_unit_test(test_match_cache_invalidation),
            cmocka_unit_test(test_wide_level),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
