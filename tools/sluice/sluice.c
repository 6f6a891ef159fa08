/* sluice: the operator's command line over sluiced's admin HTTP API. It
 * finds the API from --admin HOST:PORT, or from the ports file a running
 * sluiced wrote into its data directory (--data-dir), and prints what the
 * API returns. Plain HTTP/1.0 over a socket: nothing to install. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const struct {
        const char *cmd;
        const char *path;
        const char *help;
} commands[] = {
    {"health", "/healthz", "is sluiced up (exit status 0 if so)"},
    {"metrics", "/metrics", "Prometheus metrics"},
    {"connections", "/api/v1/connections", "client connections and their workers (JSON)"},
    {"config", "/api/v1/config", "the effective configuration (JSON)"},
    {"ports", "/api/v1/ports", "the ports sluiced bound (JSON)"},
};

static void usage(FILE *out)
{
        fprintf(out, "usage: sluice [--admin HOST:PORT | --data-dir DIR] COMMAND\n\ncommands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
                fprintf(out, "  %-12s %s\n", commands[i].cmd, commands[i].help);
        fprintf(out, "\nWithout --admin, the admin port is read from DIR/ports.json "
                     "(default DIR: /var/lib/sluice).\n");
}

/* Reads "admin":PORT from DATA_DIR/ports.json. */
static int port_from_data_dir(const char *dir, char *port, size_t len)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/ports.json", dir);
        FILE *f = fopen(path, "r");
        if (!f)
                return -errno;
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strstr(buf, "\"admin\":");
        if (!p)
                return -ENOENT;
        p += strlen("\"admin\":");
        size_t k = strspn(p, "0123456789");
        if (k == 0 || k >= len)
                return -EINVAL;
        memcpy(port, p, k);
        port[k] = 0;
        return 0;
}

static int http_get(const char *host, const char *port, const char *path, FILE *out)
{
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
        int rc = getaddrinfo(host, port, &hints, &ai);
        if (rc) {
                fprintf(stderr, "sluice: %s:%s: %s\n", host, port, gai_strerror(rc));
                return -1;
        }
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
                fprintf(stderr, "sluice: cannot reach sluiced's admin API at %s:%s: %s\n", host,
                        port, strerror(errno));
                freeaddrinfo(ai);
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        freeaddrinfo(ai);
        char req[512];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
        if (write(fd, req, (size_t)n) != n) {
                close(fd);
                return -1;
        }
        /* Status line and headers, then the body verbatim. */
        char buf[65536];
        size_t have = 0;
        int status = 0;
        char *body = NULL;
        ssize_t r;
        while (!body && (r = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0) {
                have += (size_t)r;
                buf[have] = 0;
                char *end = strstr(buf, "\r\n\r\n");
                if (end) {
                        body = end + 4;
                        sscanf(buf, "HTTP/%*s %d", &status);
                } else if (have == sizeof(buf) - 1) {
                        break;
                }
        }
        if (!body) {
                fprintf(stderr, "sluice: bad HTTP response\n");
                close(fd);
                return -1;
        }
        fwrite(body, 1, have - (size_t)(body - buf), out);
        while ((r = read(fd, buf, sizeof(buf))) > 0)
                fwrite(buf, 1, (size_t)r, out);
        close(fd);
        return status == 200 ? 0 : -1;
}

int main(int argc, char **argv)
{
        const char *admin = NULL, *data_dir = "/var/lib/sluice";
        static const struct option opts[] = {{"admin", required_argument, 0, 'a'},
                                             {"data-dir", required_argument, 0, 'd'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
        int o;
        while ((o = getopt_long(argc, argv, "a:d:h", opts, NULL)) != -1) {
                switch (o) {
                case 'a':
                        admin = optarg;
                        break;
                case 'd':
                        data_dir = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind != argc - 1) {
                usage(stderr);
                return 2;
        }
        const char *path = NULL;
        for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
                if (strcmp(argv[optind], commands[i].cmd) == 0)
                        path = commands[i].path;
        if (!path) {
                fprintf(stderr, "sluice: unknown command '%s'\n", argv[optind]);
                usage(stderr);
                return 2;
        }
        char host[256] = "127.0.0.1", port[16];
        if (admin) {
                const char *colon = strrchr(admin, ':');
                if (!colon || (size_t)(colon - admin) >= sizeof(host) ||
                    strlen(colon + 1) >= sizeof(port)) {
                        fprintf(stderr, "sluice: --admin wants HOST:PORT\n");
                        return 2;
                }
                memcpy(host, admin, (size_t)(colon - admin));
                host[colon - admin] = 0;
                strcpy(port, colon + 1);
        } else if (port_from_data_dir(data_dir, port, sizeof(port)) != 0) {
                fprintf(stderr,
                        "sluice: no running sluiced found in %s (no ports.json); use --admin\n",
                        data_dir);
                return 1;
        }
        return http_get(host, port, path, stdout) == 0 ? 0 : 1;
}
