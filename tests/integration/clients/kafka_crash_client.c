/* Drives sluiced with the real librdkafka for the crash and consumer-group
 * test (tests/integration/test_kafka_librdkafka.py). It only reports what
 * the library saw, one line per event on stdout, flushed as it goes, so
 * the driver can follow progress while it kills and restarts the broker;
 * the driver judges the results.
 *
 *   kafka_crash_client produce BOOTSTRAP TOPIC COUNT WINDOW FIRST_FLUSH RATE
 *     Idempotent producer, acks=all. Message i has key and value "i". At
 *     most WINDOW messages are unreported at a time and at most RATE are
 *     sent per second after the first flush (0: unpaced), so the run spans
 *     the broker restarts however fast the broker is. After the first
 *     FIRST_FLUSH messages it flushes and prints "flushed N" before going on.
 *     Lines: "ack ID PARTITION OFFSET", "err ID CODE NAME", "done ACKED FAILED".
 *   kafka_crash_client consume BOOTSTRAP TOPIC
 *     Reads every partition from the start to its high watermark.
 *     Lines: "hw PARTITION OFFSET", "rec PARTITION OFFSET ID", "done N".
 *   kafka_crash_client member BOOTSTRAP TOPIC GROUP RATE
 *     A group member: subscribes, commits synchronously every COMMIT_EVERY
 *     records and before giving partitions up, consumes at most RATE
 *     records per second (so a run lasts long enough to be interrupted).
 *     SIGTERM makes it commit, leave the group and exit.
 *     Lines (T = CLOCK_MONOTONIC ns, comparable across processes):
 *     "assign T P...", "revoke T P...", "rec T P O", "commit T P O"
 *     (offset acknowledged by the broker: the next record to read).
 *
 * Exit status 0 unless the library reported a fatal error (exit 2) or the
 * arguments are wrong (exit 64). */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMMIT_EVERY 200

static volatile sig_atomic_t stop;
static unsigned long acked, failed;

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *why)
{
        fprintf(stderr, "kafka_crash_client: %s: %s\n", what, why);
        fflush(stdout);
        exit(2);
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
        char err[512];
        if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK)
                die(k, err);
}

/* Shared by every mode: reconnect quickly after a broker restart (the
 * defaults back off for up to 10 s), and stop at a fatal error. */
static rd_kafka_conf_t *base_conf(const char *bootstrap)
{
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        set(conf, "bootstrap.servers", bootstrap);
        set(conf, "reconnect.backoff.ms", "20");
        set(conf, "reconnect.backoff.max.ms", "300");
        set(conf, "topic.metadata.refresh.interval.ms", "1000");
        set(conf, "log_level", "4");
        const char *debug = getenv("KAFKA_CRASH_DEBUG"); /* e.g. cgrp,fetch,broker */
        if (debug)
                set(conf, "debug", debug);
        return conf;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
        (void)opaque;
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                char why[512];
                rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
                fprintf(stdout, "fatal %d %s\n", orig, why);
                die("fatal error", why);
        }
        /* Transport errors are expected while the broker is down. */
        fprintf(stderr, "error %s: %s\n", rd_kafka_err2name(err), reason);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
        (void)rk;
        (void)opaque;
        unsigned long id = (unsigned long)(uintptr_t)m->_private;
        if (m->err) {
                failed++;
                fprintf(stdout, "err %lu %d %s\n", id, m->err, rd_kafka_err2name(m->err));
        } else {
                acked++;
                fprintf(stdout, "ack %lu %" PRId32 " %" PRId64 "\n", id, m->partition, m->offset);
        }
}

static int produce(const char *bootstrap, const char *topic, unsigned long count,
                   unsigned long window, unsigned long first_flush, unsigned long rate)
{
        rd_kafka_conf_t *conf = base_conf(bootstrap);
        set(conf, "enable.idempotence", "true");
        set(conf, "acks", "all");
        set(conf, "message.timeout.ms", "180000");
        set(conf, "retry.backoff.ms", "20");
        set(conf, "linger.ms", "2");
        /* Small batches: many produce requests, so the broker's drop hook
         * and the kills hit requests in flight. */
        set(conf, "batch.num.messages", "250");
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
        rd_kafka_conf_set_error_cb(conf, error_cb);
        char err[512];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        if (!rk)
                die("rd_kafka_new", err);
        char buf[32];
        uint64_t due = 0;
        for (unsigned long i = 0; i < count; i++) {
                while (i - (acked + failed) >= window) {
                        rd_kafka_poll(rk, 50);
                        fflush(stdout);
                }
                /* Pacing, not synchronisation: no credit saved up while a
                 * restart stalls us, so a burst afterwards cannot run past
                 * the test's next kill point. */
                if (rate && i > first_flush) {
                        uint64_t t = now_ns();
                        due = (due > t ? due : t) + 1000000000ull / rate;
                        while ((t = now_ns()) < due) {
                                rd_kafka_poll(rk, (int)((due - t) / 1000000u));
                                fflush(stdout);
                        }
                }
                int n = snprintf(buf, sizeof(buf), "%lu", i);
                for (;;) {
                        rd_kafka_resp_err_t e = rd_kafka_producev(
                            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(buf, (size_t)n),
                            RD_KAFKA_V_VALUE(buf, (size_t)n),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i), RD_KAFKA_V_END);
                        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                                break;
                        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                                die("produce", rd_kafka_err2str(e));
                        rd_kafka_poll(rk, 50);
                }
                rd_kafka_poll(rk, 0);
                if (i + 1 == first_flush) {
                        while (rd_kafka_outq_len(rk) > 0) {
                                rd_kafka_poll(rk, 50);
                                fflush(stdout);
                        }
                        fprintf(stdout, "flushed %lu\n", first_flush);
                        fflush(stdout);
                }
        }
        while (rd_kafka_outq_len(rk) > 0) {
                rd_kafka_poll(rk, 50);
                fflush(stdout);
        }
        fprintf(stdout, "done %lu %lu\n", acked, failed);
        fflush(stdout);
        rd_kafka_destroy(rk);
        return 0;
}

static int consume(const char *bootstrap, const char *topic)
{
        rd_kafka_conf_t *conf = base_conf(bootstrap);
        set(conf, "group.id", "kafka-crash-verify"); /* required; never committed */
        set(conf, "enable.auto.commit", "false");
        rd_kafka_conf_set_error_cb(conf, error_cb);
        char err[512];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
        if (!rk)
                die("rd_kafka_new", err);
        const struct rd_kafka_metadata *md;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 30000);
        if (e || md->topic_cnt != 1 || md->topics[0].err)
                die("metadata", rd_kafka_err2str(e ? e : md->topics[0].err));
        int np = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(np);
        int64_t *hw = calloc((size_t)np, sizeof(*hw));
        int64_t *next = calloc((size_t)np, sizeof(*next));
        int left = 0;
        for (int p = 0; p < np; p++) {
                int64_t lo;
                e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hw[p], 30000);
                if (e)
                        die("watermarks", rd_kafka_err2str(e));
                fprintf(stdout, "hw %d %" PRId64 "\n", p, hw[p]);
                rd_kafka_topic_partition_list_add(tp, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
                left += hw[p] > 0;
        }
        e = rd_kafka_assign(rk, tp);
        if (e)
                die("assign", rd_kafka_err2str(e));
        unsigned long n = 0;
        uint64_t deadline = now_ns() + 120ull * 1000000000u;
        while (left > 0 && now_ns() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (!m->err && m->partition >= 0 && m->partition < np &&
                    m->offset >= next[m->partition]) {
                        fprintf(stdout, "rec %d %" PRId64 " %.*s\n", m->partition, m->offset,
                                (int)m->len, (const char *)m->payload);
                        n++;
                        next[m->partition] = m->offset + 1;
                        if (next[m->partition] == hw[m->partition])
                                left--;
                }
                rd_kafka_message_destroy(m);
        }
        fprintf(stdout, "done %lu\n", n);
        fflush(stdout);
        rd_kafka_topic_partition_list_destroy(tp);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        free(hw);
        free(next);
        return left > 0 ? 3 : 0;
}

static void print_parts(const char *what, const rd_kafka_topic_partition_list_t *tp)
{
        fprintf(stdout, "%s %" PRIu64, what, now_ns());
        for (int i = 0; i < tp->cnt; i++)
                fprintf(stdout, " %" PRId32, tp->elems[i].partition);
        fprintf(stdout, "\n");
        fflush(stdout);
}

/* Synchronous: a line means the broker acknowledged the offset. */
static void commit(rd_kafka_t *rk)
{
        rd_kafka_topic_partition_list_t *pos = NULL;
        if (rd_kafka_assignment(rk, &pos) || !pos)
                return;
        if (rd_kafka_position(rk, pos) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                rd_kafka_topic_partition_list_t *valid =
                    rd_kafka_topic_partition_list_new(pos->cnt);
                for (int i = 0; i < pos->cnt; i++)
                        if (pos->elems[i].offset >= 0)
                                rd_kafka_topic_partition_list_add(valid, pos->elems[i].topic,
                                                                  pos->elems[i].partition)
                                    ->offset = pos->elems[i].offset;
                if (valid->cnt && rd_kafka_commit(rk, valid, 0) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                        uint64_t t = now_ns();
                        for (int i = 0; i < valid->cnt; i++)
                                if (!valid->elems[i].err)
                                        fprintf(stdout,
                                                "commit %" PRIu64 " %" PRId32 " %" PRId64 "\n", t,
                                                valid->elems[i].partition, valid->elems[i].offset);
                }
                rd_kafka_topic_partition_list_destroy(valid);
        }
        rd_kafka_topic_partition_list_destroy(pos);
        fflush(stdout);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
        (void)opaque;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                print_parts("assign", parts);
                rd_kafka_assign(rk, parts);
        } else {
                /* Commit what was read before handing the partitions over, so
                 * the next owner re-reads as little as possible. */
                commit(rk);
                print_parts("revoke", parts);
                rd_kafka_assign(rk, NULL);
        }
}

static void on_term(int sig)
{
        (void)sig;
        stop = 1;
}

static int member(const char *bootstrap, const char *topic, const char *group, unsigned rate)
{
        rd_kafka_conf_t *conf = base_conf(bootstrap);
        set(conf, "group.id", group);
        set(conf, "enable.auto.commit", "false");
        set(conf, "auto.offset.reset", "earliest");
        set(conf, "session.timeout.ms", "6000");
        set(conf, "heartbeat.interval.ms", "300");
        set(conf, "fetch.wait.max.ms", "100");
        rd_kafka_conf_set_error_cb(conf, error_cb);
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
        char err[512];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
        if (!rk)
                die("rd_kafka_new", err);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, sub);
        rd_kafka_topic_partition_list_destroy(sub);
        if (e)
                die("subscribe", rd_kafka_err2str(e));
        signal(SIGTERM, on_term);
        unsigned since_commit = 0;
        uint64_t due = now_ns();
        while (!stop) {
                /* Pacing, not synchronisation: at most RATE records/s, with
                 * no credit saved up while a rebalance or restart stalls us
                 * (a burst afterwards could finish before the test's
                 * restart point). */
                uint64_t t = now_ns();
                if (t < due) {
                        struct timespec ts = {0, (long)(due - t < 50000000u ? due - t : 50000000u)};
                        nanosleep(&ts, NULL);
                        continue;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
                if (!m)
                        continue;
                if (!m->err) {
                        fprintf(stdout, "rec %" PRIu64 " %" PRId32 " %" PRId64 "\n", now_ns(),
                                m->partition, m->offset);
                        fflush(stdout); /* the driver waits for the last records */
                        uint64_t t2 = now_ns();
                        due = (due > t2 ? due : t2) + 1000000000u / rate;
                        if (++since_commit >= COMMIT_EVERY) {
                                since_commit = 0;
                                rd_kafka_message_destroy(m);
                                commit(rk);
                                continue;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        commit(rk);
        rd_kafka_consumer_close(rk); /* LeaveGroup; the revoke callback commits too */
        rd_kafka_destroy(rk);
        fprintf(stdout, "closed %" PRIu64 "\n", now_ns());
        fflush(stdout);
        return 0;
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOFBF, 1 << 16);
        if (argc == 8 && !strcmp(argv[1], "produce"))
                return produce(argv[2], argv[3], strtoul(argv[4], NULL, 10),
                               strtoul(argv[5], NULL, 10), strtoul(argv[6], NULL, 10),
                               strtoul(argv[7], NULL, 10));
        if (argc == 4 && !strcmp(argv[1], "consume"))
                return consume(argv[2], argv[3]);
        if (argc == 6 && !strcmp(argv[1], "member"))
                return member(argv[2], argv[3], argv[4], (unsigned)strtoul(argv[5], NULL, 10));
        fprintf(stderr, "usage: see the comment at the top of kafka_crash_client.c\n");
        return 64;
}
