/* The control thread: signals (stop, reload), the admin HTTP server, metrics
 * aggregation, draining worker logs, the ports file. It runs on the main
 * thread after the workers have started, on the configured control core. */
#ifndef CTL_PLANE_H
#define CTL_PLANE_H

#include "ctl_config.h"
#include "sl_worker.h"

struct ctl_text;

struct ctl_plane {
        struct sl_runtime *rt;
        /* The boot configuration (the runtime keeps pointing at it for keys
         * that never change) and two reload snapshots used in turn: workers may
         * read the older one until they acknowledge the newer. */
        struct ctl_config *boot;
        struct ctl_config *reloaded[2];
        const struct ctl_config *current;
        uint32_t reload_slot;
        uint32_t reload_acks_waiting;
        bool reload_again;

        struct sl_mbox mb;
        struct sl_logq logq; /* unused ring slot for symmetry: control logs to stderr */
        struct MHD_Daemon *mhd;
        uint16_t admin_port;
        int sigfd;
        bool stop;
        int lock_fd;
        char ports_path[CTL_PATH_MAX + 32];

        /* Busy ratio per worker, sampled once a second. */
        uint64_t sample_ms;
        uint64_t busy_ns_prev[CTL_WORKERS_MAX];
        double busy_ratio[CTL_WORKERS_MAX];
};

/* Takes the data-directory lock. -EBUSY with a message when another
 * process holds it. */
int ctl_datadir_lock(struct ctl_plane *cp, const char *data_dir, char *err, size_t err_len);

/* Binds admin HTTP, writes the ports file, blocks the signals it handles.
 * cfg (malloc'd) becomes owned by the plane. */
int ctl_plane_init(struct ctl_plane *cp, struct ctl_config *cfg, struct sl_runtime *rt, char *err,
                   size_t err_len);

/* Blocks the handled signals in the calling thread (call before starting
 * workers so they inherit the mask). */
void ctl_signals_block(void);

/* Runs until SIGINT/SIGTERM; returns 0. */
int ctl_plane_run(struct ctl_plane *cp);
void ctl_plane_fini(struct ctl_plane *cp);

const struct ctl_config *ctl_plane_config(const struct ctl_plane *cp);

/* Admin HTTP (ctl_http.c). */
int ctl_http_start(struct ctl_plane *cp, char *err, size_t err_len);
void ctl_http_stop(struct ctl_plane *cp);
int ctl_http_fd(struct ctl_plane *cp);
void ctl_http_run(struct ctl_plane *cp);

/* Renderers (ctl_metrics.c), also used by tests. */
void ctl_metrics_render(struct ctl_plane *cp, struct ctl_text *t);
void ctl_connections_render(struct ctl_plane *cp, struct ctl_text *t);
void ctl_config_render_json(const struct ctl_config *cfg, struct ctl_text *t);
void ctl_ports_render(struct ctl_plane *cp, struct ctl_text *t);

#endif
