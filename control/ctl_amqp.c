/* The AMQP routing-table sequencer (see ctl_amqp.h): one change at a time,
 * applied by every worker before the next starts, so the replicas never
 * diverge and a declare-ok/bind-ok is sent only once every worker routes
 * with the change. A change of a durable object is written to the metadata
 * log first (record first, then apply), and at start the stored objects
 * are applied again before anything else. Changes wait in a FIFO bounded
 * by the workers' own pacing: a connection waits for its change before
 * sending another. */
#include "ctl_amqp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ctl_kafka.h"
#include "ctl_plane.h"
#include "ctl_text.h"
#include "meta.h"

struct amqp_pending {
        struct amqp_pending *next;
        void *change;
        const struct ctl_amqp_def *def; /* NULL: nothing durable */
        uint8_t *restored;              /* a stored change (owned here) */
        uint32_t restored_len;
        uint16_t reply_worker;
        bool ready; /* the restored objects are applied: workers may serve */
};

static struct {
        struct ctl_plane *cp;
        struct amqp_pending *head, *tail;
        struct amqp_pending *cur; /* being applied */
        bool cur_durable;         /* its record is in the log (or none needed) */
        uint16_t next_worker;     /* next worker to send cur to */
        uint16_t acks_waiting;
        uint64_t seq;
        /* The metadata log is the Kafka registry's when Kafka is on;
         * otherwise opened here (never both: one owner per directory). */
        struct meta_log *own_meta;
        /* Resource alarms: what each worker last reported holding (bytes
         * allocated minus freed there, an int64 carried as uint64), the
         * alarms on (CTL_AMQP_ALARM_*), what each worker was told. */
        uint64_t held[CTL_WORKERS_MAX];
        uint8_t alarm;
        uint8_t alarm_told[CTL_WORKERS_MAX];
        uint64_t mem_check_ms, disk_check_ms;
        uint64_t ram_bytes;
} A;

static struct meta_log *meta(void)
{
        return A.own_meta ? A.own_meta : ctl_kafka_meta();
}

struct meta_log *ctl_amqp_meta(void)
{
        return meta();
}

static void pending_push(struct amqp_pending *p)
{
        if (A.tail)
                A.tail->next = p;
        else
                A.head = p;
        A.tail = p;
}

/* The stored objects, as changes to apply first: exchanges, queues, then
 * bindings (which name both). */
static void restore_defs(void)
{
        struct meta_log *m = meta();
        static const char prefixes[][3] = {"e:", "q:", "b:"};
        uint32_t n = 0;
        for (int pass = 0; pass < 3 && m; pass++)
                for (uint32_t i = 0; i < meta_def_count(m); i++) {
                        const uint8_t *val;
                        uint32_t len;
                        const char *key = meta_def_at(m, i, &val, &len);
                        if (!key || strncmp(key, prefixes[pass], 2) != 0)
                                continue;
                        struct amqp_pending *p = calloc(1, sizeof(*p));
                        uint8_t *copy = malloc(len);
                        SL_ASSERT(p && copy); /* start-up */
                        memcpy(copy, val, len);
                        p->restored = copy;
                        p->restored_len = len;
                        pending_push(p);
                        n++;
                }
        struct amqp_pending *ready = calloc(1, sizeof(*ready));
        SL_ASSERT(ready);
        ready->ready = true;
        pending_push(ready);
        if (n)
                sl_log(SL_LOG_INFO, "amqp: %u durable exchanges, queues and bindings restored", n);
}

static void cur_start(void);

int ctl_amqp_init(struct ctl_plane *cp)
{
        A.cp = cp;
        A.seq = 0;
        if (!ctl_kafka_meta() && cp->current->listeners[CTL_PROTO_AMQP].enabled) {
                char dir[CTL_PATH_MAX + 16];
                snprintf(dir, sizeof(dir), "%s/meta", cp->current->data_dir);
                int rc = 0;
                A.own_meta = meta_open(dir, NULL, &rc);
                if (!A.own_meta)
                        sl_log(SL_LOG_ERROR, "amqp: no metadata log in %s (%s): nothing is durable",
                               dir, strerror(-rc));
        }
        restore_defs();
        cur_start();
        return 0;
}

void ctl_amqp_fini(struct ctl_plane *cp)
{
        (void)cp;
        /* Changes belong to the workers (freed in their fini); drop ours. */
        while (A.head) {
                struct amqp_pending *p = A.head;
                A.head = p->next;
                free(p->restored);
                free(p);
        }
        if (A.cur)
                free(A.cur->restored);
        free(A.cur);
        A.cur = NULL;
        A.tail = NULL;
        if (A.own_meta) {
                meta_drain(A.own_meta);
                meta_close(A.own_meta);
                A.own_meta = NULL;
        }
}

/* Sends cur to the workers not yet reached (a worker without credit is
 * retried on the next poll). */
static void cur_pump(void)
{
        struct sl_runtime *rt = A.cp->rt;
        while (A.cur && A.cur_durable && A.next_worker < rt->nworkers) {
                struct sl_msg m = {.type = CTL_AMQP_MSG_APPLY};
                if (A.cur->ready) {
                        m.u16 = 2;
                } else if (A.cur->restored) {
                        m.u16 = 1;
                        m.u32 = A.cur->restored_len;
                        m.a.ptr[0] = A.cur->restored;
                } else {
                        m.a.ptr[0] = A.cur->change;
                }
                m.a.u64[1] = A.seq;
                if (sl_mbox_request(&A.cp->mb, A.next_worker, &m) != 0)
                        return;
                A.next_worker++;
                A.acks_waiting++;
        }
}

static void def_durable(void *ctx, int res)
{
        (void)ctx;
        if (res < 0)
                sl_log(SL_LOG_ERROR, "amqp: definition not stored: %s", strerror(-res));
        A.cur_durable = true;
}

/* Every stored key of a binding whose destination (or, for exchanges,
 * source) is the deleted object goes with it. */
static void defs_delete_related(struct meta_log *m, const char *key)
{
        bool exchange = key[0] == 'e';
        const char *hex = key + 2;
        size_t hn = strlen(hex);
        for (uint32_t i = 0; i < meta_def_count(m); i++) {
                const uint8_t *val;
                uint32_t len;
                const char *k = meta_def_at(m, i, &val, &len);
                if (!k || strncmp(k, "b:", 2) != 0)
                        continue;
                const char *src = k + 2, *dst = strchr(src, ':');
                if (!dst)
                        continue;
                dst++;
                bool hit = dst[0] == (exchange ? 'e' : 'q') && strncmp(dst + 1, hex, hn) == 0 &&
                           dst[1 + hn] == ':';
                if (exchange)
                        hit |= (size_t)(dst - 1 - src) == hn && strncmp(src, hex, hn) == 0;
                if (hit) {
                        char copy[CTL_AMQP_DEF_KEY_MAX];
                        snprintf(copy, sizeof(copy), "%s", k);
                        meta_def_put(m, copy, NULL, 0, NULL, NULL);
                }
        }
}

/* Writes cur's record (if any); the broadcast starts once it is durable. */
static void cur_store(void)
{
        const struct ctl_amqp_def *d = A.cur->def;
        struct meta_log *m = meta();
        if (!d || !m) {
                A.cur_durable = true;
                return;
        }
        A.cur_durable = false;
        int rc = 0;
        switch (d->op) {
        case CTL_AMQP_DEF_PUT:
                rc = meta_def_put(m, d->key, d->val, d->len, def_durable, NULL);
                break;
        case CTL_AMQP_DEF_DELETE_QUEUE:
        case CTL_AMQP_DEF_DELETE_EXCHANGE:
                defs_delete_related(m, d->key);
                /* fall through */
        case CTL_AMQP_DEF_DELETE:
                rc = meta_def_put(m, d->key, NULL, 0, def_durable, NULL);
                break;
        default:
                rc = -1;
        }
        if (rc) {
                sl_log(SL_LOG_ERROR, "amqp: definition %s not stored (%d)", d->key, rc);
                A.cur_durable = true;
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
        cur_store();
        cur_pump();
}

static void cur_finish(void)
{
        if (A.cur->restored || A.cur->ready) {
                free(A.cur->restored);
        } else {
                struct sl_msg m = {.type = CTL_AMQP_MSG_DONE};
                m.a.ptr[0] = A.cur->change;
                m.a.u64[1] = A.seq;
                /* One-way to a worker that waits for it; a refusal (ring
                 * full) is retried from poll. */
                if (sl_mbox_send(&A.cp->mb, A.cur->reply_worker, &m) != 0)
                        return;
        }
        free(A.cur);
        A.cur = NULL;
        cur_start();
}

static bool cur_applied(void)
{
        return A.cur && A.cur_durable && A.acks_waiting == 0 && A.next_worker == A.cp->rt->nworkers;
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
                p->def = m->a.ptr[1];
                p->reply_worker = m->u16;
                pending_push(p);
                cur_start();
                return true;
        }
        if (m->type == CTL_AMQP_MSG_HELD) {
                if (m->u16 < CTL_WORKERS_MAX)
                        A.held[m->u16] = m->a.u64[0];
                return true;
        }
        if (m->type == CTL_AMQP_MSG_APPLY && (m->flags & SL_MSG_F_REPLY)) {
                SL_ASSERT(A.cur && A.acks_waiting > 0);
                A.acks_waiting--;
                if (cur_applied())
                        cur_finish();
                return true;
        }
        return true;
}

/* ---- resource alarms ----------------------------------------------------
 *
 * Memory: the bytes of messages the workers hold in their queues (each
 * reports its own) against limits.amqp_memory_high_watermark_bytes, every
 * 100 ms. Disk: the data directory's free space against
 * limits.amqp_disk_free_limit_bytes, every second (one statvfs). A change
 * is told to every worker (retried while a ring is full); the workers
 * block publishing connections while any alarm is on. */

static uint64_t memory_limit(const struct ctl_limits *l)
{
        if (l->amqp_memory_high_watermark_bytes)
                return l->amqp_memory_high_watermark_bytes;
        if (!A.ram_bytes) {
                long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
                A.ram_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 1ull << 32;
        }
        return A.ram_bytes / 10 * 4;
}

static void alarms_check(void)
{
        const struct ctl_config *cfg = A.cp->current;
        uint64_t now = sl_time_ms();
        uint8_t alarm = A.alarm;
        if (now - A.mem_check_ms >= 100) {
                A.mem_check_ms = now;
                /* A worker's count is negative when it frees more than it
                 * allocates (messages from other workers); the reports
                 * arrive at different times, so the sum can be briefly
                 * negative too: that is nothing held, not an alarm. */
                int64_t held = 0;
                for (uint16_t i = 0; i < A.cp->rt->nworkers; i++)
                        held += (int64_t)A.held[i];
                if (held > 0 && (uint64_t)held > memory_limit(&cfg->limits))
                        alarm |= CTL_AMQP_ALARM_MEMORY;
                else
                        alarm &= (uint8_t)~CTL_AMQP_ALARM_MEMORY;
        }
        if (now - A.disk_check_ms >= 1000) {
                A.disk_check_ms = now;
                struct statvfs sv;
                uint64_t limit = cfg->limits.amqp_disk_free_limit_bytes;
                if (limit && statvfs(cfg->data_dir, &sv) == 0 &&
                    (uint64_t)sv.f_bavail * sv.f_frsize < limit)
                        alarm |= CTL_AMQP_ALARM_DISK;
                else
                        alarm &= (uint8_t)~CTL_AMQP_ALARM_DISK;
        }
        if (alarm != A.alarm) {
                if (alarm & ~A.alarm)
                        sl_log(SL_LOG_WARN, "amqp: resource alarm on (%s): publishers blocked",
                               alarm & ~A.alarm & CTL_AMQP_ALARM_MEMORY ? "memory" : "disk");
                else if (!alarm)
                        sl_log(SL_LOG_INFO, "amqp: resource alarms cleared");
                A.alarm = alarm;
        }
        for (uint16_t i = 0; i < A.cp->rt->nworkers; i++) {
                if (A.alarm_told[i] == A.alarm)
                        continue;
                struct sl_msg m = {.type = CTL_AMQP_MSG_ALARM, .u16 = A.alarm};
                if (sl_mbox_send(&A.cp->mb, i, &m) == 0)
                        A.alarm_told[i] = A.alarm;
        }
}

void ctl_amqp_metrics(struct ctl_text *t)
{
        ctl_text_printf(t,
                        "# HELP sluice_amqp_alarm AMQP resource alarm on (publishers blocked).\n"
                        "# TYPE sluice_amqp_alarm gauge\n"
                        "sluice_amqp_alarm{kind=\"memory\"} %d\n"
                        "sluice_amqp_alarm{kind=\"disk\"} %d\n",
                        (A.alarm & CTL_AMQP_ALARM_MEMORY) != 0,
                        (A.alarm & CTL_AMQP_ALARM_DISK) != 0);
}

bool ctl_amqp_poll(struct ctl_plane *cp)
{
        (void)cp;
        alarms_check();
        if (A.own_meta)
                meta_poll(A.own_meta);
        cur_pump();
        if (cur_applied())
                cur_finish();
        return A.cur != NULL;
}
