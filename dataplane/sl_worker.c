/* The worker loop and the runtime that starts workers. One loop iteration
 * runs, in this order: net rx (and the protocol parsers it drives) ->
 * held bytes offered again -> inbound rings -> pollers (storage) -> chaos
 * completions -> timers -> net tx flush, ring publish and buffer returns ->
 * idle policy. Nothing in it blocks except the idle wait. */
#include "sl_worker.h"

#include <errno.h>
#include <netdb.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net.h"
#include "net/net_dpdk.h"
#include "sl_build.h"

#define WORKER_TICK_MS      100
#define WORKER_DRAIN_BUDGET 512
#define WORKER_SHUTDOWN_MS  2000
#define WORKER_LOG_SLOTS    1024
#define WORKER_LOG_PER_SEC  200

uint32_t sl_conn_retry_held(struct sl_worker *w);
uint32_t sl_conn_chaos_step(struct sl_worker *w);
uint32_t sl_conn_flush(struct sl_worker *w);
uint32_t sl_conn_writable_step(struct sl_worker *w);
void sl_conn_tick_all(struct sl_worker *w);
void sl_conn_close_all(struct sl_worker *w, enum sl_close_reason why);
void sl_conn_abort_all(struct sl_worker *w);

/* ---- buffers going home ------------------------------------------------ */

void sl_worker_buf_put(struct sl_worker *w, struct sl_buf *b)
{
        if (!sl_buf_unref(b))
                return;
        if (b->owner == w->id) {
                sl_buf_pool_give(&w->pool, b);
                return;
        }
        SL_ASSERT(b->owner < w->rt->nworkers);
        sl_buf_chain_push(&w->returns[b->owner], b);
}

static void worker_returns_flush(struct sl_worker *w)
{
        for (uint16_t o = 0; o < w->nworkers; o++) {
                struct sl_buf_chain *ch = &w->returns[o];
                if (!ch->head)
                        continue;
                struct sl_msg m = {.type = SL_MSG_BUF_RETURN, .u32 = ch->n};
                m.a.ptr[0] = ch->head;
                if (sl_mbox_send(&w->mb, o, &m) == 0)
                        memset(ch, 0, sizeof(*ch));
                /* else: stays queued (bounded by the buffers that exist). */
        }
}

/* ---- messages ------------------------------------------------------------ */

static enum ctl_proto msg_proto(uint16_t type)
{
        if (type >= SL_MSG_NATS && type < SL_MSG_KAFKA)
                return CTL_PROTO_NATS;
        if (type >= SL_MSG_KAFKA && type < SL_MSG_AMQP)
                return CTL_PROTO_KAFKA;
        if (type >= SL_MSG_AMQP && type < SL_MSG_STORAGE)
                return CTL_PROTO_AMQP;
        return CTL_PROTO_COUNT;
}

static void worker_on_msg(void *ctx, const struct sl_msg *m)
{
        struct sl_worker *w = ctx;
        switch (m->type) {
        case SL_MSG_BUF_RETURN: {
                struct sl_buf *b = m->a.ptr[0];
                uint32_t n = 0;
                while (b) {
                        struct sl_buf *next = b->next;
                        sl_buf_pool_give(&w->pool, b);
                        b = next;
                        n++;
                }
                SL_ASSERT(n == m->u32);
                sl_counter_add(&w->pool.stats.returned_remote, n);
                return;
        }
        case SL_MSG_SHUTDOWN:
                atomic_store(&w->quit, true);
                return;
        case SL_MSG_RELOAD: {
                const struct ctl_config *snap = m->a.ptr[0];
                w->cfg = snap;
                w->limits = snap->limits;
                atomic_store_explicit(&sl_log_level, (int)snap->log_level, memory_order_relaxed);
                struct sl_msg r = {.type = SL_MSG_RELOAD, .cookie = m->cookie};
                sl_mbox_reply(&w->mb, m->src, &r);
                return;
        }
        case SL_MSG_PING: {
                struct sl_msg r = *m;
                sl_mbox_reply(&w->mb, m->src, &r);
                return;
        }
        case SL_MSG_NET_FRAME:
#if SL_HAVE_DPDK
                net_dpdk_frame_msg(w, m);
#endif
                return;
        default:
                break;
        }
        enum ctl_proto p = msg_proto(m->type);
        const struct sl_proto_ops *ops = p < CTL_PROTO_COUNT ? w->rt->protos[p] : NULL;
        if (ops && ops->msg) {
                ops->msg(w, m);
                return;
        }
        SL_WARN("worker %u: message type %u has no handler", w->id, m->type);
        if (m->flags & SL_MSG_F_REQUEST) {
                struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                sl_mbox_reply(&w->mb, m->src, &r);
        }
}

int sl_worker_add_poller(struct sl_worker *w, sl_poll_fn fn, void *arg)
{
        if (w->npollers == SL_POLLERS_MAX)
                return -ENOSPC;
        w->pollers[w->npollers].fn = fn;
        w->pollers[w->npollers].arg = arg;
        w->npollers++;
        return 0;
}

/* ---- the loop ------------------------------------------------------------ */

static void worker_pin(struct sl_worker *w)
{
        char name[16];
        snprintf(name, sizeof(name), "sl-worker-%u", w->id);
        pthread_setname_np(pthread_self(), name);
        sl_log_bind_thread(&w->logq, name + 3);
        if (w->core < 0)
                return;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->core, &set);
        int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        if (rc != 0)
                SL_WARN("worker %u: cannot pin to core %d: %s", w->id, w->core, strerror(rc));
}

static int worker_net_init(struct sl_worker *w)
{
        /* A backend implements every operation: the loop calls them blindly. */
        SL_ASSERT(net_uring_ops.release && net_epoll_ops.release);

        const struct ctl_config *cfg = w->rt->cfg;
        if (cfg->mode == CTL_MODE_DPDK) {
#if SL_HAVE_DPDK
                w->net = &net_dpdk_ops;
                return w->net->init(w);
#else
                return -ENOTSUP; /* validation refuses this before we get here */
#endif
        }
        enum ctl_net_backend b = cfg->net_backend;
        if (b == CTL_NET_CHAOS) {
                w->chaos = net_chaos_create(cfg->chaos_seed + w->id * 7919u, w->id);
                if (!w->chaos)
                        return -ENOMEM;
        }
        if (b != CTL_NET_EPOLL) {
                w->net = &net_uring_ops;
                int rc = w->net->init(w);
                if (rc == 0)
                        return 0;
                if (b == CTL_NET_URING)
                        return rc;
                SL_WARN("worker %u: io_uring unavailable (%s), using epoll", w->id, strerror(-rc));
        }
        w->net = &net_epoll_ops;
        return w->net->init(w);
}

/* now_ns: the loop's own timestamp. clock_gettime was 23% of a DPDK
 * worker's time under a memif stream (three reads per loop); reading it
 * once more here for now_ms bought nothing. */
static uint32_t worker_step(struct sl_worker *w, uint64_t now_ns)
{
        uint32_t work = 0;
        w->now_ms = now_ns / 1000000ull;
        work += w->net->poll(w);
        if (w->held || w->starved)
                work += sl_conn_retry_held(w);
        work += sl_mbox_drain(&w->mb, worker_on_msg, w, WORKER_DRAIN_BUDGET);
        for (uint32_t i = 0; i < w->npollers; i++)
                work += w->pollers[i].fn(w, w->pollers[i].arg);
        if (w->chaos_delayed)
                work += sl_conn_chaos_step(w);
        if (w->want_writable)
                work += sl_conn_writable_step(w);

        if (w->now_ms >= w->next_tick_ms) {
                w->next_tick_ms = w->now_ms + WORKER_TICK_MS;
                sl_conn_tick_all(w);
        }
        work += sl_conn_flush(w);
        worker_returns_flush(w);
        sl_mbox_flush(&w->mb);
        w->net->flush(w);
        return work;
}

struct worker_idle_state {
        uint64_t since_ns; /* 0: not idle */
        struct sl_spin spin;
};

/* Work came: the idle period (and a spin in it) ended without a sleep. */
static inline void worker_idle_end(struct worker_idle_state *st)
{
        if (st->since_ns != 0)
                sl_spin_end(&st->spin, false);
        st->since_ns = 0;
}

/* Returns whether it slept (the loop's clock must be read again). */
static bool worker_idle(struct sl_worker *w, struct worker_idle_state *st, uint64_t now_ns)
{
        const struct ctl_config *cfg = w->rt->cfg;
        if (cfg->idle == CTL_IDLE_POLL)
                return false;
        if (st->since_ns == 0) {
                st->since_ns = now_ns;
                if (cfg->idle == CTL_IDLE_ADAPTIVE && sl_spin_begin(&st->spin))
                        return false;
        }
        if (st->spin.spinning && now_ns - st->since_ns < cfg->idle_spin_us * 1000ull) {
                __builtin_ia32_pause();
                return false;
        }
        /* Held bytes, starved receives and held-back completions are work we
         * cannot be woken for: keep polling while there are any. */
        if (w->held || w->starved || w->chaos_delayed || w->want_writable)

                return false;
        if (!sl_mbox_sleep_begin(&w->mb))
                return false;
        uint64_t now_ms = sl_time_ms();
        int timeout = w->next_tick_ms > now_ms ? (int)(w->next_tick_ms - now_ms) : 0;
        sl_counter_add(&w->stats.sleeps, 1);
        w->net->wait(w, timeout);
        sl_mbox_sleep_end(&w->mb);
        sl_spin_end(&st->spin, true);
        st->since_ns = 0;
        return true;
}

static void *worker_main(void *arg)
{
        struct sl_worker *w = arg;
        worker_pin(w);
        int rc = worker_net_init(w);
        if (rc != 0) {
                SL_ERR("worker %u: network backend failed: %s", w->id, strerror(-rc));
                w->exit_code = rc;
                return NULL;
        }
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                const struct sl_proto_ops *ops = w->rt->protos[p];
                if (ops && ops->worker_init && (rc = ops->worker_init(w)) != 0) {
                        SL_ERR("worker %u: %s init failed: %s", w->id, ops->name, strerror(-rc));
                        w->exit_code = rc;
                        return NULL;
                }
        }
        SL_INFO("worker %u up on core %d (%s%s)", w->id, w->core, w->net->name,
                w->chaos ? "+chaos" : "");

        /* One clock read per iteration: an iteration starts when the one
         * before ended, unless the worker slept in between (clock_gettime
         * was 15% of a DPDK worker under a memif stream at two reads). */
        struct worker_idle_state idle = {0};
        uint64_t shutdown_deadline = 0, t1 = sl_time_ns();
        for (;;) {
                uint64_t t0 = t1;
                uint32_t work = worker_step(w, t0);
                t1 = sl_time_ns();
                sl_counter_add(&w->stats.loops, 1);
                sl_counter_add(&w->stats.total_ns, t1 - t0);
                if (work) {
                        sl_counter_add(&w->stats.busy_ns, t1 - t0);
                        worker_idle_end(&idle);
                }
                if (sl_unlikely(atomic_load_explicit(&w->quit, memory_order_relaxed))) {
                        if (!w->draining) {
                                /* Stop accepting, let every connection flush what it
                                 * has queued, then drop what is left. */
                                w->draining = true;
                                shutdown_deadline = w->now_ms + WORKER_SHUTDOWN_MS;
                                w->net->listeners_close(w);
                                sl_conn_close_all(w, SL_CLOSE_SHUTDOWN);
                        } else if (w->now_ms > shutdown_deadline) {
                                sl_conn_abort_all(w);
                        }
                        if (w->conns_open == 0)
                                break;
                        if (!work) {
                                w->net->wait(w, 1);
                                t1 = sl_time_ns();
                        }
                        continue;
                }
                if (!work && worker_idle(w, &idle, t1))
                        t1 = sl_time_ns();
        }
        /* Flush replies and returns a last time. */
        worker_returns_flush(w);
        sl_mbox_flush(&w->mb);
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                const struct sl_proto_ops *ops = w->rt->protos[p];
                if (ops && ops->worker_fini)
                        ops->worker_fini(w);
        }
        w->net->fini(w);
        SL_INFO("worker %u stopped", w->id);
        return NULL;
}

/* ---- runtime ------------------------------------------------------------- */

static int listener_open(const struct ctl_listener *l, uint16_t port, char *err, size_t err_len)
{
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        char ports[8];
        snprintf(ports, sizeof(ports), "%u", port);
        int rc = getaddrinfo(l->host[0] ? l->host : NULL, ports, &hints, &ai);
        if (rc != 0) {
                snprintf(err, err_len, "listener %s: %s", l->host, gai_strerror(rc));
                return -EINVAL;
        }
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                rc = -errno;
                goto out;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
                rc = -errno;
                snprintf(err, err_len, "cannot listen on %s:%u: %s", l->host, port,
                         strerror(errno));
                close(fd);
                goto out;
        }
        rc = fd;
out:
        freeaddrinfo(ai);
        return rc;
}

static uint16_t socket_port(int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
                return 0;
        if (ss.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int runtime_listeners_open(struct sl_runtime *rt, char *err, size_t err_len)
{
        const struct ctl_config *cfg = rt->cfg;
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                for (uint16_t i = 0; i < rt->nworkers; i++)
                        rt->listen_fds[p][i] = -1;
                const struct ctl_listener *l = &cfg->listeners[p];
                if (!l->enabled || !rt->protos[p])
                        continue;
                if (cfg->mode == CTL_MODE_DPDK) {
                        /* The DPDK ports' TCP stack listens; the kernel
                         * never sees client traffic. */
                        rt->bound_ports[p] = l->port;
                        continue;
                }
                /* Port 0: the first socket lets the kernel choose, the others of
                 * the reuseport group join that port. */
                uint16_t port = l->port;
                for (uint16_t i = 0; i < rt->nworkers; i++) {
                        int fd = listener_open(l, port, err, err_len);
                        if (fd < 0)
                                return fd;
                        rt->listen_fds[p][i] = fd;
                        if (i == 0)
                                port = socket_port(fd);
                }
                rt->bound_ports[p] = port;
        }
        return 0;
}

static int worker_alloc(struct sl_runtime *rt, struct sl_worker *w, uint16_t id)
{
        const struct ctl_config *cfg = rt->cfg;
        w->id = id;
        w->nworkers = rt->nworkers;
        w->core = cfg->worker_cores[id];
        w->rt = rt;
        w->cfg = cfg;
        w->limits = cfg->limits;
        int rc = sl_mbox_init(&w->mb, &rt->fabric, id);
        if (rc)
                return rc;
        rc = sl_logq_init(&w->logq, WORKER_LOG_SLOTS, WORKER_LOG_PER_SEC);
        if (rc)
                return rc;
        /* Connections are spread by the kernel's hash; give each worker room
         * for all of them (slots are small) so a skewed spread is not refused. */
        w->conns_max = cfg->limits.connections_max + 16;
        w->conns = calloc(w->conns_max, sizeof(*w->conns));
        uint32_t state_bytes = 0;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                if (rt->protos[p])
                        state_bytes = SL_MAX(state_bytes, rt->protos[p]->conn_state_bytes);
        w->conn_state_bytes = SL_ALIGN_UP(SL_MAX(state_bytes, 8u), 64u);
        w->conn_state_mem = calloc(w->conns_max, w->conn_state_bytes);
        if (!w->conns || !w->conn_state_mem)
                return -ENOMEM;
        /* Slots are carved on first use (net_conn_accepted): the table's pages
         * are touched only as far as connections ever reached. */

        /* Chunk pool: enough to hold the pending caps of a good number of
         * connections at once; MAP_NORESERVE keeps untouched chunks free. */
        uint64_t chunk = 16384;
        uint64_t chunks = cfg->limits.pinned_bytes_per_worker_max / chunk;
        chunks = SL_MAX(chunks, 1024u);
        chunks = SL_MIN(chunks, 262144u);
        uint32_t counts[SL_BUF_CLASSES] = {(uint32_t)chunks, 64};
        uint32_t bytes[SL_BUF_CLASSES] = {(uint32_t)chunk, cfg->limits.frame_bytes_max + 4096};
        rc = sl_buf_pool_init(&w->pool, id, counts, bytes);
        if (rc)
                return rc;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                w->listen_fds[p] = rt->listen_fds[p][id];
        return 0;
}

int sl_runtime_init(struct sl_runtime *rt, const struct ctl_config *cfg,
                    const struct sl_proto_ops *const protos[CTL_PROTO_COUNT], char *err,
                    size_t err_len)
{
        memset(rt, 0, sizeof(*rt));
        rt->cfg = cfg;
        rt->nworkers = (uint16_t)cfg->worker_count;
        rt->control_ep = rt->nworkers;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                rt->protos[p] = protos[p];
        int rc = sl_fabric_init(&rt->fabric, rt->nworkers + 1, cfg->ring_slots);
        if (rc) {
                snprintf(err, err_len, "cannot allocate rings: %s", strerror(-rc));
                return rc;
        }
        rc = runtime_listeners_open(rt, err, err_len);
        if (rc)
                return rc;
        rt->workers = aligned_alloc(SL_CACHELINE, sizeof(*rt->workers) * rt->nworkers);
        if (!rt->workers)
                return -ENOMEM;
        memset(rt->workers, 0, sizeof(*rt->workers) * rt->nworkers);
        for (uint16_t i = 0; i < rt->nworkers; i++) {
                rc = worker_alloc(rt, &rt->workers[i], i);
                if (rc) {
                        snprintf(err, err_len, "worker %u: %s", i, strerror(-rc));
                        return rc;
                }
        }
        return 0;
}

int sl_runtime_start(struct sl_runtime *rt, char *err, size_t err_len)
{
        for (uint16_t i = 0; i < rt->nworkers; i++) {
                int rc = pthread_create(&rt->workers[i].thread, NULL, worker_main, &rt->workers[i]);
                if (rc) {
                        snprintf(err, err_len, "cannot start worker %u: %s", i, strerror(rc));
                        return -rc;
                }
        }
        atomic_store(&rt->started, true);
        return 0;
}

void sl_runtime_stop(struct sl_runtime *rt)
{
        if (!atomic_load(&rt->started))
                return;
        for (uint16_t i = 0; i < rt->nworkers; i++) {
                atomic_store(&rt->workers[i].quit, true);
                sl_wake_poke(&rt->fabric.wakes[i], NULL);
        }
        for (uint16_t i = 0; i < rt->nworkers; i++)
                pthread_join(rt->workers[i].thread, NULL);
        atomic_store(&rt->started, false);
}

void sl_runtime_fini(struct sl_runtime *rt)
{
        if (rt->workers) {
                for (uint16_t i = 0; i < rt->nworkers; i++) {
                        struct sl_worker *w = &rt->workers[i];
                        sl_mbox_fini(&w->mb);
                        sl_logq_fini(&w->logq);
                        sl_buf_pool_fini(&w->pool);
                        free(w->conns);
                        free(w->conn_state_mem);
                        if (w->chaos)
                                net_chaos_destroy(w->chaos);
                }
                free(rt->workers);
        }
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                for (uint16_t i = 0; i < rt->nworkers; i++)
                        if (rt->listen_fds[p][i] > 0)
                                close(rt->listen_fds[p][i]);
        sl_fabric_fini(&rt->fabric);
        memset(rt, 0, sizeof(*rt));
}
