/* Admin HTTP on libmicrohttpd, driven from the control thread's poll loop
 * (MHD's epoll fd in our poll set, MHD_run after each wake-up): no extra
 * thread and nothing shared with workers but their published counters. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "ctl_plane.h"
#include "ctl_text.h"

extern const char ctl_dashboard_html[];

static enum MHD_Result http_reply(struct MHD_Connection *conn, unsigned status, const char *type,
                                  struct ctl_text *t)
{
        struct MHD_Response *r;
        if (t->oom) {
                ctl_text_free(t);
                static const char oom[] = "out of memory\n";
                r = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom,
                                                    MHD_RESPMEM_PERSISTENT);
                status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        } else {
                r = MHD_create_response_from_buffer(t->len, t->p, MHD_RESPMEM_MUST_FREE);
                t->p = NULL; /* MHD frees it */
        }
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, "Content-Type", type);
        MHD_add_response_header(r, "Cache-Control", "no-store");
        enum MHD_Result ret = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result http_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **req_cls)
{
        (void)version;
        (void)upload;
        (void)upload_size;
        (void)req_cls;
        struct ctl_plane *cp = cls;
        struct ctl_text t = {0};
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                ctl_text_printf(&t, "{\"error\":\"method not allowed\"}\n");
                return http_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json", &t);
        }
        if (strcmp(url, "/metrics") == 0) {
                ctl_metrics_render(cp, &t);
                return http_reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", &t);
        }
        if (strcmp(url, "/healthz") == 0) {
                ctl_text_printf(&t, "ok\n");
                return http_reply(conn, MHD_HTTP_OK, "text/plain", &t);
        }
        if (strcmp(url, "/api/v1/connections") == 0) {
                ctl_connections_render(cp, &t);
                return http_reply(conn, MHD_HTTP_OK, "application/json", &t);
        }
        if (strcmp(url, "/api/v1/config") == 0) {
                ctl_config_render_json(ctl_plane_config(cp), &t);
                return http_reply(conn, MHD_HTTP_OK, "application/json", &t);
        }
        if (strcmp(url, "/api/v1/ports") == 0) {
                ctl_ports_render(cp, &t);
                return http_reply(conn, MHD_HTTP_OK, "application/json", &t);
        }
        if (strcmp(url, "/") == 0 || strcmp(url, "/dashboard") == 0) {
                ctl_text_printf(&t, "%s", ctl_dashboard_html);
                return http_reply(conn, MHD_HTTP_OK, "text/html; charset=utf-8", &t);
        }
        ctl_text_printf(&t, "{\"error\":\"not found\"}\n");
        return http_reply(conn, MHD_HTTP_NOT_FOUND, "application/json", &t);
}

int ctl_http_start(struct ctl_plane *cp, char *err, size_t err_len)
{
        const struct ctl_config *cfg = ctl_plane_config(cp);
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        socklen_t len;
        if (strchr(cfg->admin_host, ':')) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons(cfg->admin_port);
                if (inet_pton(AF_INET6, cfg->admin_host, &a->sin6_addr) != 1)
                        goto bad;
                len = sizeof(*a);
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *)&ss;
                a->sin_family = AF_INET;
                a->sin_port = htons(cfg->admin_port);
                if (inet_pton(AF_INET, cfg->admin_host, &a->sin_addr) != 1)
                        goto bad;
                len = sizeof(*a);
        }
        (void)len;
        unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
        if (ss.ss_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        cp->mhd = MHD_start_daemon(flags, cfg->admin_port, NULL, NULL, http_handle, cp,
                                   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                   MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT,
                                   10u, MHD_OPTION_END);
        if (!cp->mhd) {
                snprintf(err, err_len, "cannot start admin HTTP on %s:%u", cfg->admin_host,
                         cfg->admin_port);
                return -EADDRINUSE;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(cp->mhd, MHD_DAEMON_INFO_BIND_PORT);
        cp->admin_port = info ? info->port : cfg->admin_port;
        return 0;
bad:
        snprintf(err, err_len, "admin listen address %s is not numeric", cfg->admin_host);
        return -EINVAL;
}

void ctl_http_stop(struct ctl_plane *cp)
{
        if (cp->mhd)
                MHD_stop_daemon(cp->mhd);
        cp->mhd = NULL;
}

int ctl_http_fd(struct ctl_plane *cp)
{
        if (!cp->mhd)
                return -1;
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(cp->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        return info ? info->epoll_fd : -1;
}

void ctl_http_run(struct ctl_plane *cp)
{
        if (cp->mhd)
                MHD_run(cp->mhd);
}
