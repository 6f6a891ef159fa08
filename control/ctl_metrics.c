/* What the admin API shows: Prometheus text aggregated from the workers'
 * published counters, the connection table, the effective config and the
 * bound ports. Reads only fields that owners publish with atomics. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl_amqp.h"
#include "ctl_kafka.h"
#include "meta.h"
#include "ctl_plane.h"
#include "ctl_text.h"
#include "net/net_dpdk.h"
#include "sl_build.h"

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void metric_head(struct ctl_text *t, const char *name, const char *type, const char *help)
{
        ctl_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One line per worker of a per-worker counter. */
#define PER_WORKER(t, rt, name, type, help, field)                                                 \
        do {                                                                                       \
                metric_head(t, name, type, help);                                                  \
                for (uint16_t i_ = 0; i_ < (rt)->nworkers; i_++)                                   \
                        ctl_text_printf(t, "%s{worker=\"%u\"} %llu\n", name, i_,                   \
                                        (unsigned long long)LOAD((rt)->workers[i_].field));        \
        } while (0)

struct proto_emit {
        struct ctl_text *t;
        uint16_t worker;
        bool headers; /* print HELP/TYPE before each sample */
};

/* name may carry labels of its own, name{label="v"}: they follow the
 * worker's, and HELP/TYPE name the metric without them. */
static void proto_emit(void *ctx, const char *name, const char *type, const char *help, double v)
{
        struct proto_emit *pe = ctx;
        const char *labels = strchr(name, '{');
        int base = labels ? (int)(labels - name) : (int)strlen(name);
        if (pe->headers)
                ctl_text_printf(pe->t, "# HELP %.*s %s\n# TYPE %.*s %s\n", base, name, help, base,
                                name, type);
        if (labels)
                ctl_text_printf(pe->t, "%.*s{worker=\"%u\",%s %.17g\n", base, name, pe->worker,
                                labels + 1, v);
        else
                ctl_text_printf(pe->t, "%s{worker=\"%u\"} %.17g\n", name, pe->worker, v);
}

/* The k-th line of text (0-based), without its newline. */
static const char *text_line(const struct ctl_text *t, uint32_t k, int *len)
{
        const char *q = t->p;
        for (uint32_t i = 0; q && i < k; i++) {
                q = strchr(q, '\n');
                q = q ? q + 1 : NULL;
        }
        if (!q || !*q)
                return NULL;
        const char *e = strchr(q, '\n');
        *len = (int)(e ? e - q : (long)strlen(q));
        return q;
}

typedef void (*worker_metrics_fn)(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx);
static void grouped_metrics(struct sl_runtime *rt, struct ctl_text *t, worker_metrics_fn fn);

/* Protocol counters: each front-end reports per worker, always the same
 * names in the same order; samples of one name are grouped under one
 * HELP/TYPE as Prometheus expects. */
static void proto_metrics(struct sl_runtime *rt, struct ctl_text *t)
{
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                const struct sl_proto_ops *ops = rt->protos[p];
                if (!ops || !ops->metrics || !rt->cfg->listeners[p].enabled)
                        continue;
                grouped_metrics(rt, t, ops->metrics);
        }
#if SL_HAVE_DPDK
        if (rt->cfg->mode == CTL_MODE_DPDK)
                grouped_metrics(rt, t, net_dpdk_metrics); /* the TCP/IP stacks */
#endif
}

/* One function's per-worker samples, grouped by name under one HELP/TYPE. */
static void grouped_metrics(struct sl_runtime *rt, struct ctl_text *t, worker_metrics_fn fn)
{
        struct ctl_text heads = {0}, per[CTL_WORKERS_MAX] = {0};
        struct proto_emit h = {.t = &heads, .worker = 0, .headers = true};
        fn(&rt->workers[0], proto_emit, &h);
        for (uint16_t i = 0; i < rt->nworkers; i++) {
                struct proto_emit pe = {.t = &per[i], .worker = i, .headers = false};
                fn(&rt->workers[i], proto_emit, &pe);
        }
        /* heads: HELP, TYPE, sample, HELP, TYPE, sample, ... ; samples of
         * one name with their own labels come in a row: one HELP/TYPE */
        const char *prev_help = NULL;
        int prev_hl = 0;
        for (uint32_t k = 0;; k++) {
                int hl, tl, len;
                const char *help = text_line(&heads, 3 * k, &hl);
                const char *type = text_line(&heads, 3 * k + 1, &tl);
                if (!help || !type)
                        break;
                if (!prev_help || hl != prev_hl || memcmp(help, prev_help, (size_t)hl) != 0)
                        ctl_text_printf(t, "%.*s\n%.*s\n", hl, help, tl, type);
                prev_help = help;
                prev_hl = hl;
                for (uint16_t i = 0; i < rt->nworkers; i++) {
                        const char *line = text_line(&per[i], k, &len);
                        if (line)
                                ctl_text_printf(t, "%.*s\n", len, line);
                }
        }
        ctl_text_free(&heads);
        for (uint16_t i = 0; i < rt->nworkers; i++)
                ctl_text_free(&per[i]);
}

/* The metadata log (Kafka's registry, or AMQP's own when Kafka is off):
 * how far it has grown since its last snapshot. Read on the control
 * thread, which owns it. */
static void meta_metrics(struct ctl_text *t)
{
        struct meta_log *m = ctl_amqp_meta(); /* Kafka's when Kafka is on */
        if (!m)
                return;
        metric_head(t, "sluice_meta_log_bytes", "gauge",
                    "Metadata log bytes since the last snapshot (including unwritten).");
        ctl_text_printf(t, "sluice_meta_log_bytes %llu\n", (unsigned long long)meta_log_bytes(m));
        metric_head(t, "sluice_meta_snapshots_total", "counter",
                    "Metadata snapshots written by this process.");
        ctl_text_printf(t, "sluice_meta_snapshots_total %llu\n",
                        (unsigned long long)meta_snapshot_count(m));
}

void ctl_metrics_render(struct ctl_plane *cp, struct ctl_text *t)
{
        struct sl_runtime *rt = cp->rt;
        proto_metrics(rt, t);
        ctl_kafka_metrics(t);
        if (rt->cfg->listeners[CTL_PROTO_AMQP].enabled)
                ctl_amqp_metrics(t);
        meta_metrics(t);

        PER_WORKER(t, rt, "sluice_connections", "gauge", "Open client connections.",
                   stats.conns_open);
        PER_WORKER(t, rt, "sluice_connections_accepted_total", "counter", "Connections accepted.",
                   stats.conns_accepted);
        PER_WORKER(t, rt, "sluice_connections_refused_total", "counter",
                   "Connections refused by limits.", stats.conns_refused);
        metric_head(t, "sluice_connections_closed_total", "counter",
                    "Connections closed, by reason.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                for (int r = 1; r < SL_CLOSE_REASONS; r++)
                        ctl_text_printf(
                            t,
                            "sluice_connections_closed_total{worker=\"%u\",reason=\"%s\"} %llu\n",
                            i, sl_close_reason_name((enum sl_close_reason)r),
                            (unsigned long long)LOAD(rt->workers[i].stats.close_reasons[r]));
        metric_head(t, "sluice_received_bytes_total", "counter", "Bytes received from clients.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                for (int p = 0; p < CTL_PROTO_COUNT; p++)
                        if (rt->protos[p])
                                ctl_text_printf(
                                    t,
                                    "sluice_received_bytes_total{worker=\"%u\",protocol=\"%s\"} "
                                    "%llu\n",
                                    i, ctl_proto_name((enum ctl_proto)p),
                                    (unsigned long long)LOAD(rt->workers[i].stats.rx_bytes[p]));
        metric_head(t, "sluice_sent_bytes_total", "counter", "Bytes sent to clients.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                for (int p = 0; p < CTL_PROTO_COUNT; p++)
                        if (rt->protos[p])
                                ctl_text_printf(
                                    t,
                                    "sluice_sent_bytes_total{worker=\"%u\",protocol=\"%s\"} %llu\n",
                                    i, ctl_proto_name((enum ctl_proto)p),
                                    (unsigned long long)LOAD(rt->workers[i].stats.tx_bytes[p]));
        PER_WORKER(t, rt, "sluice_ring_full_total", "counter",
                   "Messages refused because a ring to another thread was full.",
                   mb.stats.ring_full);
        PER_WORKER(t, rt, "sluice_credit_stall_total", "counter",
                   "Requests refused for lack of credit.", mb.stats.credit_stall);
        PER_WORKER(t, rt, "sluice_ring_messages_sent_total", "counter",
                   "Messages sent to other threads.", mb.stats.msgs_out);
        PER_WORKER(t, rt, "sluice_ring_messages_received_total", "counter",
                   "Messages received from other threads.", mb.stats.msgs_in);
        PER_WORKER(t, rt, "sluice_wakeups_sent_total", "counter",
                   "Sleeping threads woken by this worker.", mb.stats.wakeups_sent);
        metric_head(t, "sluice_pool_exhausted_total", "counter",
                    "Buffer allocations refused because the pool was empty.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                for (int c = 0; c < SL_BUF_CLASSES; c++)
                        ctl_text_printf(
                            t, "sluice_pool_exhausted_total{worker=\"%u\",class=\"%s\"} %llu\n", i,
                            c == SL_BUF_CHUNK ? "chunk" : "large",
                            (unsigned long long)LOAD(rt->workers[i].pool.stats.exhausted[c]));
        metric_head(t, "sluice_pool_in_use", "gauge", "Buffers in use.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                for (int c = 0; c < SL_BUF_CLASSES; c++)
                        ctl_text_printf(
                            t, "sluice_pool_in_use{worker=\"%u\",class=\"%s\"} %llu\n", i,
                            c == SL_BUF_CHUNK ? "chunk" : "large",
                            (unsigned long long)LOAD(rt->workers[i].pool.stats.in_use[c]));
        PER_WORKER(t, rt, "sluice_pinned_receive_bytes", "gauge",
                   "Received bytes held by connections whose protocol has not consumed them.",
                   stats.pinned_bytes);
        PER_WORKER(t, rt, "sluice_pending_send_bytes", "gauge",
                   "Output queued for clients and not yet sent.", stats.tx_pending_bytes);
        PER_WORKER(t, rt, "sluice_receive_held_total", "counter",
                   "Times a protocol left received bytes unconsumed (backpressure).",
                   stats.rx_held_events);
        PER_WORKER(t, rt, "sluice_receive_nobufs_total", "counter",
                   "Receives that found no free buffer.", stats.rx_nobufs);
        PER_WORKER(t, rt, "sluice_send_cap_refusals_total", "counter",
                   "Sends refused at the per-connection pending cap.", stats.tx_cap_refusals);
        PER_WORKER(t, rt, "sluice_loop_iterations_total", "counter", "Worker loop iterations.",
                   stats.loops);
        PER_WORKER(t, rt, "sluice_worker_sleeps_total", "counter",
                   "Times a worker blocked waiting for work.", stats.sleeps);
        PER_WORKER(t, rt, "sluice_submission_queue_full_total", "counter",
                   "io_uring submission queue found full.", stats.sqe_full);
        PER_WORKER(t, rt, "sluice_log_dropped_total", "counter",
                   "Worker log lines dropped by rate limiting.", logq.dropped);
        metric_head(t, "sluice_worker_busy_ratio", "gauge",
                    "Share of the last second a worker spent on iterations that did work.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                ctl_text_printf(t, "sluice_worker_busy_ratio{worker=\"%u\"} %.4f\n", i,
                                cp->busy_ratio[i]);
        metric_head(t, "sluice_worker_busy_seconds_total", "counter",
                    "Time workers spent on iterations that did work.");
        for (uint16_t i = 0; i < rt->nworkers; i++)
                ctl_text_printf(t, "sluice_worker_busy_seconds_total{worker=\"%u\"} %.6f\n", i,
                                (double)LOAD(rt->workers[i].stats.busy_ns) / 1e9);
        metric_head(t, "sluice_connection_pending_send_bytes_max", "gauge",
                    "Largest output queue of any single connection.");
        for (uint16_t i = 0; i < rt->nworkers; i++) {
                struct sl_worker *w = &rt->workers[i];
                uint64_t mx = 0;
                for (uint32_t s = 0, n = __atomic_load_n(&w->conns_high, __ATOMIC_ACQUIRE); s < n;
                     s++) {
                        if (atomic_load_explicit(&w->conns[s].pub.state, memory_order_acquire) ==
                            SL_CONN_FREE)
                                continue;
                        uint64_t v = LOAD(w->conns[s].pub.tx_pending);
                        mx = v > mx ? v : mx;
                }
                ctl_text_printf(t, "sluice_connection_pending_send_bytes_max{worker=\"%u\"} %llu\n",
                                i, (unsigned long long)mx);
        }
}

static const char *const state_names[] = {"free", "open", "closing", "draining"};

void ctl_connections_render(struct ctl_plane *cp, struct ctl_text *t)
{
        struct sl_runtime *rt = cp->rt;
        ctl_text_printf(t, "{\"connections\":[");
        bool first = true;
        for (uint16_t i = 0; i < rt->nworkers; i++) {
                struct sl_worker *w = &rt->workers[i];
                for (uint32_t s = 0, n = __atomic_load_n(&w->conns_high, __ATOMIC_ACQUIRE); s < n;
                     s++) {
                        struct sl_conn *c = &w->conns[s];
                        uint8_t st = atomic_load_explicit(&c->pub.state, memory_order_acquire);
                        if (st == SL_CONN_FREE || st > SL_CONN_DRAINING)
                                continue;
                        /* A slot being reused meanwhile is skipped; one that
                         * closes meanwhile may show its last counters. */
                        struct sl_conn_identity who;
                        if (!sl_conn_identity_read(c, &who))
                                continue;
                        ctl_text_printf(
                            t, "%s{\"id\":%llu,\"worker\":%u,\"protocol\":\"%s\",\"peer\":",
                            first ? "" : ",", (unsigned long long)who.id, i,
                            ctl_proto_name((enum ctl_proto)who.proto));
                        ctl_text_json_str(t, who.peer);
                        ctl_text_printf(t,
                                        ",\"state\":\"%s\",\"rx_bytes\":%llu,\"tx_bytes\":%llu,"
                                        "\"tx_pending\":%llu}",
                                        state_names[st], (unsigned long long)LOAD(c->pub.rx_bytes),
                                        (unsigned long long)LOAD(c->pub.tx_bytes),
                                        (unsigned long long)LOAD(c->pub.tx_pending));
                        first = false;
                }
        }
        ctl_text_printf(t, "]}\n");
}

void ctl_ports_render(struct ctl_plane *cp, struct ctl_text *t)
{
        struct sl_runtime *rt = cp->rt;
        ctl_text_printf(t, "{\"pid\":%d", (int)getpid());
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                if (rt->bound_ports[p])
                        ctl_text_printf(t, ",\"%s\":%u", ctl_proto_name((enum ctl_proto)p),
                                        rt->bound_ports[p]);
        if (cp->mhd)
                ctl_text_printf(t, ",\"admin\":%u", cp->admin_port);
        ctl_text_printf(t, "}\n");
}

static const char *const mode_names[] = {"kernel", "dpdk"};
static const char *const idle_names[] = {"poll", "adaptive", "sleep"};
static const char *const backend_names[] = {"auto", "uring", "epoll", "chaos"};
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void ctl_config_render_json(const struct ctl_config *cfg, struct ctl_text *t)
{
        const struct ctl_limits *l = &cfg->limits;
        ctl_text_printf(t, "{\"path\":");
        ctl_text_json_str(t, cfg->path);
        ctl_text_printf(t, ",\"server\":{\"mode\":\"%s\",\"data_dir\":", mode_names[cfg->mode]);
        ctl_text_json_str(t, cfg->data_dir);
        ctl_text_printf(t, ",\"name\":");
        ctl_text_json_str(t, cfg->name);
        ctl_text_printf(t, ",\"log_level\":\"%s\"}", level_names[cfg->log_level]);
        ctl_text_printf(t, ",\"cores\":{\"workers\":[");
        for (uint32_t i = 0; i < cfg->worker_count; i++)
                ctl_text_printf(t, "%s%d", i ? "," : "", cfg->worker_cores[i]);
        ctl_text_printf(t, "],\"control\":%d,\"idle\":\"%s\",\"idle_spin_us\":%u}",
                        cfg->control_core, idle_names[cfg->idle], cfg->idle_spin_us);
        ctl_text_printf(t,
                        ",\"net\":{\"backend\":\"%s\",\"recv_buffers\":%u,\"recv_buffer_bytes\":%u,"
                        "\"ring_slots\":%u}",
                        backend_names[cfg->net_backend], cfg->recv_buffers, cfg->recv_buffer_bytes,
                        cfg->ring_slots);
        ctl_text_printf(t, ",\"listeners\":{");
        bool first = true;
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                const struct ctl_listener *li = &cfg->listeners[p];
                if (!li->enabled)
                        continue;
                ctl_text_printf(t, "%s\"%s\":{\"host\":", first ? "" : ",",
                                ctl_proto_name((enum ctl_proto)p));
                ctl_text_json_str(t, li->host);
                ctl_text_printf(t, ",\"port\":%u}", li->port);
                first = false;
        }
        ctl_text_printf(t, "}");
        ctl_text_printf(t,
                        ",\"limits\":{\"connections_max\":%u,\"connections_per_ip_max\":%u,"
                        "\"frame_bytes_max\":%u,\"control_line_bytes_max\":%u,"
                        "\"inflight_requests_max\":%u,\"pending_response_bytes_max\":%llu,"
                        "\"pinned_bytes_per_conn_max\":%llu,\"pinned_bytes_per_worker_max\":%llu,"
                        "\"partial_frame_timeout_ms\":%u,\"idle_timeout_ms\":%u,"
                        "\"write_deadline_ms\":%u,\"subscriptions_max\":%u}",
                        l->connections_max, l->connections_per_ip_max, l->frame_bytes_max,
                        l->control_line_bytes_max, l->inflight_requests_max,
                        (unsigned long long)l->pending_response_bytes_max,
                        (unsigned long long)l->pinned_bytes_per_conn_max,
                        (unsigned long long)l->pinned_bytes_per_worker_max,
                        l->partial_frame_timeout_ms, l->idle_timeout_ms, l->write_deadline_ms,
                        l->subscriptions_max);
        ctl_text_printf(t,
                        ",\"nats\":{\"ping_interval_ms\":%u,\"ping_max_outstanding\":%u,"
                        "\"auth_timeout_ms\":%u,\"auth\":%s}}\n",
                        cfg->nats_ping_interval_ms, cfg->nats_ping_max_outstanding,
                        cfg->nats_auth_timeout_ms,
                        (cfg->nats_token[0] || cfg->nats_user_count) ? "true" : "false");
}
