/* Drives sluiced with the real nats.c client library. One scenario per
 * invocation: nats_c_client URL NWORKERS SCENARIO. Prints "ok SCENARIO"
 * and exits 0 when every check holds; otherwise names the failed check
 * and exits 1. Which worker owns a connection is client_id % NWORKERS (the
 * admin API reports the same; the Python side cross-checks). */
#include <inttypes.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *url;
static unsigned nworkers;

#define CHECK(cond, ...)                                                                           \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);          \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fprintf(stderr, "\n");                                                     \
                        exit(1);                                                                   \
                }                                                                                  \
        } while (0)
#define OK(expr)                                                                                   \
        do {                                                                                       \
                natsStatus st_ = (expr);                                                           \
                CHECK(st_ == NATS_OK, "%s (%s)", natsStatus_GetText(st_),                          \
                      nats_GetLastError(NULL));                                                    \
        } while (0)

static natsConnection *connect_to(void)
{
        natsOptions *o;
        natsConnection *nc;
        OK(natsOptions_Create(&o));
        OK(natsOptions_SetURL(o, url));
        OK(natsOptions_SetSendAsap(o, true));
        /* CI machines are busy: do not fail on the 2 s default. */
        OK(natsOptions_SetTimeout(o, 10000));
        OK(natsConnection_Connect(&nc, o));
        natsOptions_Destroy(o);
        return nc;
}

static unsigned worker_of(natsConnection *nc)
{
        uint64_t id = 0;
        OK(natsConnection_GetClientID(nc, &id));
        return (unsigned)(id % nworkers);
}

/* A connection on the given worker (connections land by the kernel's hash:
 * open until one lands there). */
static natsConnection *connect_on(unsigned worker)
{
        natsConnection *spare[64];
        int n = 0;
        for (;;) {
                natsConnection *nc = connect_to();
                if (worker_of(nc) == worker || nworkers == 1) {
                        while (n)
                                natsConnection_Destroy(spare[--n]);
                        return nc;
                }
                CHECK(n < 64, "no connection landed on worker %u", worker);
                spare[n++] = nc;
        }
}

static void pubsub(void)
{
        natsConnection *sub_c = connect_on(0), *pub_c = connect_on(nworkers - 1);
        natsSubscription *sub;
        OK(natsConnection_SubscribeSync(&sub, sub_c, "orders.new"));
        OK(natsConnection_Flush(sub_c));
        for (int i = 0; i < 1000; i++) {
                char buf[32];
                snprintf(buf, sizeof(buf), "order-%d", i);
                OK(natsConnection_PublishString(pub_c, "orders.new", buf));
        }
        OK(natsConnection_Flush(pub_c));
        for (int i = 0; i < 1000; i++) {
                natsMsg *m;
                OK(natsSubscription_NextMsg(&m, sub, 5000));
                char want[32];
                snprintf(want, sizeof(want), "order-%d", i);
                CHECK(natsMsg_GetDataLength(m) == (int)strlen(want) &&
                          memcmp(natsMsg_GetData(m), want, strlen(want)) == 0,
                      "message %d out of order or wrong", i);
                CHECK(strcmp(natsMsg_GetSubject(m), "orders.new") == 0, "subject");
                natsMsg_Destroy(m);
        }
        natsSubscription_Destroy(sub);
        natsConnection_Destroy(sub_c);
        natsConnection_Destroy(pub_c);
}

static int drain_count(natsSubscription *sub, int wait_ms)
{
        int n = 0;
        natsMsg *m;
        while (natsSubscription_NextMsg(&m, sub, wait_ms) == NATS_OK) {
                natsMsg_Destroy(m);
                n++;
        }
        return n;
}

static void wildcards(void)
{
        natsConnection *a = connect_on(0), *b = connect_on(nworkers - 1);
        natsSubscription *star, *gt, *exact, *remote_star;
        OK(natsConnection_SubscribeSync(&star, a, "time.*.east"));
        OK(natsConnection_SubscribeSync(&gt, a, "time.>"));
        OK(natsConnection_SubscribeSync(&exact, a, "time.us.east"));
        OK(natsConnection_SubscribeSync(&remote_star, b, "*.us.*"));
        OK(natsConnection_Flush(a));
        OK(natsConnection_Flush(b));
        const char *subjects[] = {"time.us.east",   "time.eu.east", "time.us.west",
                                  "time.us.east.1", "time",         "other.us.x"};
        for (size_t i = 0; i < sizeof(subjects) / sizeof(*subjects); i++)
                OK(natsConnection_PublishString(b, subjects[i], "x"));
        OK(natsConnection_Flush(b));
        /* A PING round trip on a after b's flush: b's messages to a's worker
         * were delivered before b's PONG was sent, so a has them queued. */
        OK(natsConnection_Flush(a));
        CHECK(drain_count(star, 300) == 2, "time.*.east");
        CHECK(drain_count(gt, 50) == 4, "time.>");
        CHECK(drain_count(exact, 50) == 1, "time.us.east");
        CHECK(drain_count(remote_star, 300) == 3, "*.us.*");
        natsConnection_Destroy(a);
        natsConnection_Destroy(b);
}

#define QMEMBERS 4
#define QMSGS    2000

static void queue_groups(void)
{
        natsConnection *members[QMEMBERS];
        natsSubscription *subs[QMEMBERS], *plain;
        unsigned on_worker[QMEMBERS];
        for (int i = 0; i < QMEMBERS; i++) {
                members[i] = connect_on((unsigned)i % nworkers);
                on_worker[i] = worker_of(members[i]);
                OK(natsConnection_QueueSubscribeSync(&subs[i], members[i], "work.>", "workers"));
                OK(natsConnection_Flush(members[i]));
        }
        natsConnection *pc = connect_on(0);
        OK(natsConnection_SubscribeSync(&plain, pc, "work.>"));
        OK(natsConnection_Flush(pc));
        for (int i = 0; i < QMSGS; i++) {
                char buf[16];
                snprintf(buf, sizeof(buf), "%d", i);
                OK(natsConnection_PublishString(pc, "work.item", buf));
        }
        OK(natsConnection_Flush(pc));
        static unsigned char seen[QMSGS];
        int got = 0, per_worker[64] = {0};
        for (int i = 0; i < QMEMBERS; i++) {
                natsMsg *m;
                while (natsSubscription_NextMsg(&m, subs[i], 500) == NATS_OK) {
                        int seq = atoi(natsMsg_GetData(m));
                        CHECK(seq >= 0 && seq < QMSGS, "bad payload");
                        CHECK(!seen[seq], "message %d delivered to two members", seq);
                        seen[seq] = 1;
                        got++;
                        per_worker[on_worker[i]]++;
                        natsMsg_Destroy(m);
                }
        }
        CHECK(got == QMSGS, "group got %d of %d", got, QMSGS);
        for (unsigned w = 0; w < nworkers; w++)
                CHECK(per_worker[w] > QMSGS / 10, "worker %u members got only %d", w,
                      per_worker[w]);
        CHECK(drain_count(plain, 500) == QMSGS, "plain subscriber misses messages");
        for (int i = 0; i < QMEMBERS; i++)
                natsConnection_Destroy(members[i]);
        natsConnection_Destroy(pc);
}

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
        (void)sub;
        (void)closure;
        char out[128];
        snprintf(out, sizeof(out), "re:%.*s", natsMsg_GetDataLength(msg), natsMsg_GetData(msg));
        natsConnection_PublishString(nc, natsMsg_GetReply(msg), out);
        natsMsg_Destroy(msg);
}

static void request_reply(void)
{
        natsConnection *srv = connect_on(0), *cli = connect_on(nworkers - 1);
        natsSubscription *sub;
        OK(natsConnection_Subscribe(&sub, srv, "svc.echo", on_request, NULL));
        OK(natsConnection_Flush(srv));
        for (int i = 0; i < 2000; i++) {
                natsMsg *reply;
                char buf[32], want[40];
                snprintf(buf, sizeof(buf), "q%d", i);
                snprintf(want, sizeof(want), "re:q%d", i);
                OK(natsConnection_RequestString(&reply, cli, "svc.echo", buf, 2000));
                CHECK(strcmp(natsMsg_GetData(reply), want) == 0, "reply %d", i);
                natsMsg_Destroy(reply);
        }
        natsSubscription_Destroy(sub);
        natsConnection_Destroy(srv);
        natsConnection_Destroy(cli);
}

static void no_responders(void)
{
        natsConnection *nc = connect_to();
        natsMsg *reply = NULL;
        int64_t t0 = nats_Now();
        natsStatus s = natsConnection_RequestString(&reply, nc, "nobody.home", "hi", 5000);
        CHECK(s == NATS_NO_RESPONDERS, "got %s", natsStatus_GetText(s));
        CHECK(nats_Now() - t0 < 1000, "no-responders took %" PRId64 " ms", nats_Now() - t0);
        natsConnection_Destroy(nc);
}

static void headers(void)
{
        natsConnection *a = connect_on(0), *b = connect_on(nworkers - 1);
        natsSubscription *sub;
        OK(natsConnection_SubscribeSync(&sub, a, "hdr.test"));
        OK(natsConnection_Flush(a));
        natsMsg *m;
        OK(natsMsg_Create(&m, "hdr.test", NULL, "body", 4));
        OK(natsMsgHeader_Set(m, "Trace-Id", "abc-123"));
        OK(natsMsgHeader_Add(m, "Multi", "one"));
        OK(natsMsgHeader_Add(m, "Multi", "two"));
        OK(natsConnection_PublishMsg(b, m));
        natsMsg_Destroy(m);
        OK(natsConnection_Flush(b));
        natsMsg *r;
        OK(natsSubscription_NextMsg(&r, sub, 5000));
        const char *v = NULL;
        OK(natsMsgHeader_Get(r, "Trace-Id", &v));
        CHECK(strcmp(v, "abc-123") == 0, "header value %s", v);
        const char **vals = NULL;
        int count = 0;
        OK(natsMsgHeader_Values(r, "Multi", &vals, &count));
        CHECK(count == 2, "multi-value header count %d", count);
        free((void *)vals);
        CHECK(natsMsg_GetDataLength(r) == 4 && memcmp(natsMsg_GetData(r), "body", 4) == 0, "body");
        natsMsg_Destroy(r);
        natsConnection_Destroy(a);
        natsConnection_Destroy(b);
}

/* The interest barrier: SUB + Flush on one worker, PUB at once from the
 * other; a single lost message fails the run. */
static void flush_rounds(void)
{
        natsConnection *a = connect_on(0), *b = connect_on(nworkers - 1);
        CHECK(nworkers == 1 || worker_of(a) != worker_of(b), "need two workers");
        for (int i = 0; i < 10000; i++) {
                char subj[32];
                snprintf(subj, sizeof(subj), "round.%d", i);
                natsSubscription *sub;
                OK(natsConnection_SubscribeSync(&sub, a, subj));
                OK(natsConnection_Flush(a));
                OK(natsConnection_PublishString(b, subj, "x"));
                natsMsg *m;
                natsStatus s = natsSubscription_NextMsg(&m, sub, 2000);
                CHECK(s == NATS_OK, "round %d lost its message (%s)", i, natsStatus_GetText(s));
                natsMsg_Destroy(m);
                OK(natsSubscription_Unsubscribe(sub));
                natsSubscription_Destroy(sub);
        }
        natsConnection_Destroy(a);
        natsConnection_Destroy(b);
}

/* Connected with unlimited reconnects; reports "ready", waits for the
 * harness to restart sluiced ("go" on stdin), then proves the subscription
 * was re-established. */
static void reconnect(void)
{
        natsOptions *o;
        natsConnection *nc;
        OK(natsOptions_Create(&o));
        OK(natsOptions_SetURL(o, url));
        OK(natsOptions_SetMaxReconnect(o, -1));
        OK(natsOptions_SetReconnectWait(o, 50));
        OK(natsConnection_Connect(&nc, o));
        natsSubscription *sub;
        OK(natsConnection_SubscribeSync(&sub, nc, "after.restart"));
        OK(natsConnection_Flush(nc));
        printf("ready\n");
        fflush(stdout);
        char line[16];
        CHECK(fgets(line, sizeof(line), stdin) != NULL, "harness went away");
        /* Publish until the subscription, replayed on reconnect, sees one. */
        natsMsg *m = NULL;
        for (int i = 0; i < 200 && !m; i++) {
                if (natsConnection_PublishString(nc, "after.restart", "back") == NATS_OK)
                        natsConnection_FlushTimeout(nc, 200);
                if (natsSubscription_NextMsg(&m, sub, 100) != NATS_OK)
                        m = NULL;
        }
        CHECK(m != NULL, "no message after the restart");
        natsStatistics *st;
        uint64_t reconnects = 0;
        OK(natsStatistics_Create(&st));
        OK(natsConnection_GetStats(nc, st));
        OK(natsStatistics_GetCounts(st, NULL, NULL, NULL, NULL, &reconnects));
        natsStatistics_Destroy(st);
        CHECK(reconnects >= 1, "did not reconnect");
        natsMsg_Destroy(m);
        natsConnection_Destroy(nc);
        natsOptions_Destroy(o);
}

int main(int argc, char **argv)
{
        if (argc != 4) {
                fprintf(stderr, "usage: %s URL NWORKERS SCENARIO\n", argv[0]);
                return 2;
        }
        url = argv[1];
        nworkers = (unsigned)atoi(argv[2]);
        const char *s = argv[3];
        struct {
                const char *name;
                void (*fn)(void);
        } scenarios[] = {{"pubsub", pubsub},
                         {"wildcards", wildcards},
                         {"queue_groups", queue_groups},
                         {"request_reply", request_reply},
                         {"no_responders", no_responders},
                         {"headers", headers},
                         {"flush_rounds", flush_rounds},
                         {"reconnect", reconnect}};
        for (size_t i = 0; i < sizeof(scenarios) / sizeof(*scenarios); i++)
                if (strcmp(s, scenarios[i].name) == 0) {
                        scenarios[i].fn();
                        nats_Close();
                        printf("ok %s\n", s);
                        return 0;
                }
        fprintf(stderr, "unknown scenario %s\n", s);
        return 2;
}
