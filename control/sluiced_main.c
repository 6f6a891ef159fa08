/* sluiced: parse the config, lock the data directory, bind listeners, start
 * the pinned workers, then become the control thread until a signal says
 * stop. `--check` validates a config and prints the effective settings and
 * core plan without starting anything. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_config.h"
#include "ctl_plane.h"
#include "net/net_dpdk.h"
#include "sl_build.h"
#include "sl_log.h"
#include "sl_testproto.h"
#include "sl_worker.h"
#include "sluiced_protos.h"

static void usage(FILE *out)
{
        fprintf(out,
                "usage: sluiced [--config FILE] [--check]\n"
                "  --config FILE  configuration (INI); defaults apply to absent keys\n"
                "  --check        validate FILE, print the effective config and core plan, exit\n"
                "  --version      print the version\n");
}

int main(int argc, char **argv)
{
        const char *path = NULL;
        bool check = false;
        static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                             {"check", no_argument, 0, 'k'},
                                             {"version", no_argument, 0, 'v'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
        int o;
        while ((o = getopt_long(argc, argv, "c:kvh", opts, NULL)) != -1) {
                switch (o) {
                case 'c':
                        path = optarg;
                        break;
                case 'k':
                        check = true;
                        break;
                case 'v':
                        printf("sluiced %s\n", SL_VERSION);
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        /* `sluiced --check FILE` is accepted as well as --config FILE --check. */
        if (!path && optind < argc)
                path = argv[optind];

        struct ctl_config *cfg = malloc(sizeof(*cfg));
        if (!cfg)
                return 1;
        char err[1024];
        ctl_config_defaults(cfg);
        /* Until the plane owns cfg, the early exits free it (a leak report
         * from an ASan build's --check would otherwise fail its test). */
        if ((path && ctl_config_load(cfg, path, err, sizeof(err)) != 0) ||
            ctl_config_validate(cfg, err, sizeof(err), stderr) != 0) {
                fprintf(stderr, "sluiced: %s\n", err);
                free(cfg);
                return 1;
        }
        if (check) {
                ctl_config_print(cfg, stdout);
                free(cfg);
                return 0;
        }
        atomic_store(&sl_log_level, (int)cfg->log_level);

        struct ctl_plane cp = {0};
        struct sl_runtime rt;
        memset(&rt, 0, sizeof(rt));
        int rc = ctl_datadir_lock(&cp, cfg->data_dir, err, sizeof(err));
        if (rc) {
                fprintf(stderr, "sluiced: %s\n", err);
                return 1;
        }
        ctl_signals_block(); /* workers inherit the mask; signals go to signalfd */
        if (cfg->mode == CTL_MODE_DPDK) {
#if SL_HAVE_DPDK
                /* After the signal mask (the EAL's own threads inherit it, or
                 * SIGTERM would kill instead of drain) and before the workers:
                 * a port that cannot start is a refusal to run, never a quiet
                 * fallback to kernel sockets. */
                if (net_dpdk_setup(cfg, err, sizeof(err)) != 0) {
                        fprintf(stderr, "sluiced: %s\n", err);
                        return 1;
                }
#else
                fprintf(stderr, "sluiced: mode = dpdk, but this build has no DPDK support\n");
                return 1;
#endif
        }

        const struct sl_proto_ops *protos[CTL_PROTO_COUNT] = {0};
        sluiced_protos_fill(protos);
        protos[CTL_PROTO_TEST] = &sl_testproto_ops;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                if (cfg->listeners[p].enabled && !protos[p])
                        SL_WARN("listener %s is configured but this build has no %s front-end yet",
                                ctl_proto_name((enum ctl_proto)p),
                                ctl_proto_name((enum ctl_proto)p));

        rc = sl_runtime_init(&rt, cfg, protos, err, sizeof(err));
        if (rc == 0)
                rc = ctl_plane_init(&cp, cfg, &rt, err, sizeof(err));
        if (rc == 0)
                rc = sl_runtime_start(&rt, err, sizeof(err));
        if (rc) {
                fprintf(stderr, "sluiced: %s\n", err);
                sl_runtime_stop(&rt);
                ctl_plane_fini(&cp);
                sl_runtime_fini(&rt);
                return 1;
        }
        SL_INFO("sluiced %s started: %u workers, data dir %s", SL_VERSION, rt.nworkers,
                cfg->data_dir);
        /* the plane owns cfg from here (a reload replaces it): read now */
        bool dpdk_mode = cfg->mode == CTL_MODE_DPDK;
        ctl_plane_run(&cp);
        sl_runtime_stop(&rt);
        int exit_code = 0;
        for (uint16_t i = 0; i < rt.nworkers; i++)
                if (rt.workers[i].exit_code)
                        exit_code = 1;
        ctl_plane_fini(&cp);
        sl_runtime_fini(&rt);
#if SL_HAVE_DPDK
        if (dpdk_mode)
                net_dpdk_teardown();
#else
        (void)dpdk_mode;
#endif
        return exit_code;
}
