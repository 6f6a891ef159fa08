/* The control thread's loop and its duties that are not HTTP: data-dir
 * lock, ports file, signals, reload through the workers' rings, draining
 * worker logs, sampling busy ratios. */
#include "ctl_plane.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl_amqp.h"
#include "ctl_kafka.h"
#include "ctl_text.h"

#define CTL_LOOP_MS 50

const struct ctl_config *ctl_plane_config(const struct ctl_plane *cp)
{
        return cp->current;
}

int ctl_datadir_lock(struct ctl_plane *cp, const char *data_dir, char *err, size_t err_len)
{
        if (mkdir(data_dir, 0750) != 0 && errno != EEXIST) {
                snprintf(err, err_len, "cannot create data directory %s: %s", data_dir,
                         strerror(errno));
                return -errno;
        }
        char path[CTL_PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/LOCK", data_dir);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
                snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
                return -errno;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
                char pid[32] = "?";
                ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
                if (n > 0) {
                        pid[n] = 0;
                        pid[strcspn(pid, "\n")] = 0;
                }
                snprintf(
                    err, err_len,
                    "data directory %s is in use by another sluiced (pid %s); refusing to start",
                    data_dir, pid);
                close(fd);
                return -EBUSY;
        }
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
                /* The lock is what matters; the pid is for the message above. */
        }
        cp->lock_fd = fd;
        return 0;
}

void ctl_signals_block(void)
{
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int ports_file_write(struct ctl_plane *cp)
{
        struct ctl_text t = {0};
        ctl_ports_render(cp, &t);
        char tmp[sizeof(cp->ports_path) + 8];
        snprintf(tmp, sizeof(tmp), "%s.tmp", cp->ports_path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int rc = 0;
        if (fd < 0 || write(fd, t.p, t.len) != (ssize_t)t.len || fsync(fd) != 0)
                rc = -errno;
        if (fd >= 0)
                close(fd);
        if (rc == 0 && rename(tmp, cp->ports_path) != 0)
                rc = -errno;
        ctl_text_free(&t);
        return rc;
}

int ctl_plane_init(struct ctl_plane *cp, struct ctl_config *cfg, struct sl_runtime *rt, char *err,
                   size_t err_len)
{
        cp->rt = rt;
        cp->boot = cfg;
        cp->current = cfg;
        int rc = sl_mbox_init(&cp->mb, &rt->fabric, rt->control_ep);
        if (rc)
                return rc;
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        cp->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (cp->sigfd < 0) {
                snprintf(err, err_len, "signalfd: %s", strerror(errno));
                return -errno;
        }
        rc = ctl_kafka_init(cp, err, err_len);
        if (rc)
                return rc;
        ctl_amqp_init(cp);
        if (cfg->admin_enabled) {
                rc = ctl_http_start(cp, err, err_len);
                if (rc)
                        return rc;
        }
        snprintf(cp->ports_path, sizeof(cp->ports_path), "%s/ports.json", cfg->data_dir);
        rc = ports_file_write(cp);
        if (rc) {
                snprintf(err, err_len, "cannot write %s: %s", cp->ports_path, strerror(-rc));
                return rc;
        }
        return 0;
}

/* SIGHUP: re-read the file; apply what may change; refuse the rest. */
static void plane_reload(struct ctl_plane *cp)
{
        if (cp->reload_acks_waiting) {
                cp->reload_again = true; /* after the one in flight */
                return;
        }
        const struct ctl_config *cur = ctl_plane_config(cp);
        struct ctl_config *next = malloc(sizeof(*next));
        struct ctl_config *applied = malloc(sizeof(*applied));
        char err[1024];
        if (!next || !applied)
                goto out;
        ctl_config_defaults(next);
        if (ctl_config_load(next, cur->path, err, sizeof(err)) != 0 ||
            ctl_config_validate(next, err, sizeof(err), NULL) != 0) {
                sl_log(SL_LOG_ERROR, "reload refused: %s", err);
                goto out;
        }
        *applied = *cur;
        if (ctl_config_reload(applied, next, err, sizeof(err)) != 0) {
                sl_log(SL_LOG_ERROR, "reload refused: %s", err);
                goto out;
        }
        /* Publish the new snapshot; the oldest one is free once no worker can
         * still point at it, i.e. now (the previous reload was acknowledged). */
        uint32_t slot = cp->reload_slot;
        cp->reload_slot ^= 1;
        free(cp->reloaded[slot]);
        cp->reloaded[slot] = applied;
        cp->current = applied;
        applied = NULL;
        atomic_store(&sl_log_level, (int)cp->current->log_level);
        for (uint16_t i = 0; i < cp->rt->nworkers; i++) {
                struct sl_msg m = {.type = SL_MSG_RELOAD, .cookie = slot};
                m.a.ptr[0] = (void *)cp->current;
                if (sl_mbox_request(&cp->mb, i, &m) == 0)
                        cp->reload_acks_waiting++;
                else
                        sl_log(SL_LOG_ERROR, "reload: worker %u ring full; retry with SIGHUP", i);
        }
        sl_mbox_flush(&cp->mb);
        sl_log(SL_LOG_INFO, "configuration reloaded from %s", cp->current->path);
out:
        free(next);
        free(applied);
}

static void plane_on_msg(void *ctx, const struct sl_msg *m)
{
        struct ctl_plane *cp = ctx;
        if (m->type == SL_MSG_RELOAD && (m->flags & SL_MSG_F_REPLY)) {
                if (cp->reload_acks_waiting && --cp->reload_acks_waiting == 0)
                        sl_log(SL_LOG_INFO, "reload applied by all workers");
                return;
        }
        if (ctl_kafka_on_msg(cp, m))
                return;
        if (ctl_amqp_on_msg(cp, m))
                return;
        if (m->flags & SL_MSG_F_REQUEST) {
                struct sl_msg r = {.type = m->type, .cookie = m->cookie};
                sl_mbox_reply(&cp->mb, m->src, &r);
        }
}

static void plane_sample(struct ctl_plane *cp, uint64_t now_ms)
{
        if (now_ms - cp->sample_ms < 1000)
                return;
        uint64_t dt_ns = (now_ms - cp->sample_ms) * 1000000ull;
        for (uint16_t i = 0; i < cp->rt->nworkers; i++) {
                uint64_t busy =
                    atomic_load_explicit(&cp->rt->workers[i].stats.busy_ns, memory_order_relaxed);
                if (cp->sample_ms)
                        cp->busy_ratio[i] = (double)(busy - cp->busy_ns_prev[i]) / (double)dt_ns;
                cp->busy_ns_prev[i] = busy;
        }
        cp->sample_ms = now_ms;
}

static void plane_signals(struct ctl_plane *cp)
{
        struct signalfd_siginfo si;
        while (read(cp->sigfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGHUP)
                        plane_reload(cp);
                else
                        cp->stop = true;
        }
}

int ctl_plane_run(struct ctl_plane *cp)
{
        const struct ctl_config *cfg = ctl_plane_config(cp);
        if (cfg->control_core >= 0) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(cfg->control_core, &set);
                pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        }
        pthread_setname_np(pthread_self(), "sl-control");
        bool busy = false;
        while (!cp->stop) {
                struct pollfd pfd[3] = {
                    {.fd = cp->sigfd, .events = POLLIN},
                    {.fd = cp->mb.wake->eventfd, .events = POLLIN},
                    {.fd = ctl_http_fd(cp), .events = POLLIN},
                };
                bool slept = sl_mbox_sleep_begin(&cp->mb);
                int n = poll(pfd, pfd[2].fd >= 0 ? 3 : 2, slept && !busy ? CTL_LOOP_MS : 0);
                sl_mbox_sleep_end(&cp->mb);
                if (n > 0 && (pfd[0].revents & POLLIN))
                        plane_signals(cp);
                sl_mbox_drain(&cp->mb, plane_on_msg, cp, 1024);
                if (!cp->reload_acks_waiting && cp->reload_again) {
                        cp->reload_again = false;
                        plane_reload(cp);
                }
                ctl_http_run(cp);
                busy = ctl_kafka_poll(cp);
                busy |= ctl_amqp_poll(cp);
                for (uint16_t i = 0; i < cp->rt->nworkers; i++)
                        sl_logq_drain(&cp->rt->workers[i].logq, stderr);
                plane_sample(cp, sl_time_ms());
                sl_mbox_flush(&cp->mb);
        }
        sl_log(SL_LOG_INFO, "shutting down");
        return 0;
}

void ctl_plane_fini(struct ctl_plane *cp)
{
        ctl_http_stop(cp);
        ctl_kafka_fini(cp);
        ctl_amqp_fini(cp);
        if (cp->rt)
                for (uint16_t i = 0; i < cp->rt->nworkers; i++)
                        sl_logq_drain(&cp->rt->workers[i].logq, stderr);
        if (cp->sigfd > 0)
                close(cp->sigfd);
        sl_mbox_fini(&cp->mb);
        if (cp->ports_path[0])
                unlink(cp->ports_path);
        free(cp->reloaded[0]);
        free(cp->reloaded[1]);
        free(cp->boot);
        if (cp->lock_fd > 0)
                close(cp->lock_fd);
}
