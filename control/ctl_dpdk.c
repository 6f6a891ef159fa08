/* The [dpdk] section turned into what the EAL and the DPDK backend need:
 * the port list with each port's address, the EAL argument vector, and the
 * plan `sluiced --check` prints (hugepages, ports, lcores). Pure text and
 * sysfs/procfs reads: no DPDK header here, so it builds everywhere. */
#include "ctl_config.h"
#include "sl_build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void __attribute__((format(printf, 3, 4)))
why_set(char *err, size_t len, const char *fmt, ...)
{
        if (!err || len == 0)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
}

/* Next blank-separated word of *s into word (at most len - 1 bytes);
 * returns its length, 0 at the end, -E2BIG when it does not fit. */
static int word_next(const char **s, char *word, size_t len)
{
        const char *p = *s;
        while (*p == ' ' || *p == '\t')
                p++;
        size_t n = 0;
        while (p[n] && p[n] != ' ' && p[n] != '\t')
                n++;
        *s = p + n;
        if (n >= len)
                return -E2BIG;
        memcpy(word, p, n);
        word[n] = '\0';
        return (int)n;
}

static bool hex_run(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
                        return false;
        }
        return true;
}

/* DDDD:BB:DD.F (domain optional), the form dpdk-devbind.py and lspci -D
 * print. */
static bool pci_address_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 7)
                return hex_run(s, 2) && s[2] == ':' && hex_run(s + 3, 2) && s[5] == '.' &&
                       s[6] >= '0' && s[6] <= '7';
        if (n == 12)
                return hex_run(s, 4) && s[4] == ':' && pci_address_valid(s + 5);
        return false;
}

/* net_<driver><n>[,key=value...]: the EAL's vdev syntax. */
static bool vdev_valid(const char *s)
{
        if (strncmp(s, "net_", 4) != 0 || s[4] == '\0' || s[4] == ',')
                return false;
        for (const char *c = s; *c; c++)
                if ((unsigned char)*c <= 0x20)
                        return false;
        return true;
}

static int cidr_parse(const char *s, uint32_t *ip, uint8_t *prefix_len)
{
        char addr[32];
        const char *slash = strchr(s, '/');
        if (!slash || (size_t)(slash - s) >= sizeof(addr))
                return -EINVAL;
        memcpy(addr, s, (size_t)(slash - s));
        addr[slash - s] = '\0';
        struct in_addr a;
        if (inet_pton(AF_INET, addr, &a) != 1)
                return -EINVAL;
        char *end;
        const char *digits = slash + 1;
        if (*digits < '0' || *digits > '9')
                return -EINVAL;
        unsigned long p = strtoul(digits, &end, 10);
        if (*end != '\0' || p < 1 || p > 32)
                return -EINVAL;
        *ip = ntohl(a.s_addr);
        *prefix_len = (uint8_t)p;
        return 0;
}

int ctl_dpdk_ports_parse(const struct ctl_config *cfg, struct ctl_dpdk_port *ports, char *err,
                         size_t err_len)
{
        const char *s = cfg->dpdk_ports;
        char word[sizeof(ports[0].dev)];
        int n = 0, rc;
        while ((rc = word_next(&s, word, sizeof(word))) != 0) {
                if (rc < 0) {
                        why_set(err, err_len, "[dpdk] ports: an entry is longer than %zu bytes",
                                sizeof(word) - 1);
                        return -EINVAL;
                }
                if (n == CTL_DPDK_PORTS_MAX) {
                        why_set(err, err_len, "[dpdk] ports: more than %d ports",
                                CTL_DPDK_PORTS_MAX);
                        return -EINVAL;
                }
                struct ctl_dpdk_port *p = &ports[n];
                memset(p, 0, sizeof(*p));
                p->is_vdev = strncmp(word, "net_", 4) == 0;
                if (p->is_vdev ? !vdev_valid(word) : !pci_address_valid(word)) {
                        why_set(err, err_len,
                                "[dpdk] ports: \"%s\" is neither a PCI address (0000:03:00.0) "
                                "nor a vdev (net_tap0,iface=NAME)",
                                word);
                        return -EINVAL;
                }
                memcpy(p->dev, word, strlen(word) + 1);
                n++;
        }

        s = cfg->dpdk_addresses;
        char cidr[64];
        int na = 0;
        while ((rc = word_next(&s, cidr, sizeof(cidr))) != 0) {
                if (na == n) {
                        why_set(err, err_len,
                                "[dpdk] addresses: more addresses than ports (%d); give one "
                                "IPv4/prefix per port",
                                n);
                        return -EINVAL;
                }
                if (rc < 0 || cidr_parse(cidr, &ports[na].ip, &ports[na].prefix_len) < 0) {
                        why_set(err, err_len,
                                "[dpdk] addresses: expected IPv4/prefix such as 10.0.0.2/24, got "
                                "\"%.40s\"",
                                rc < 0 ? s : cidr);
                        return -EINVAL;
                }
                na++;
        }
        if (na != n) {
                why_set(err, err_len,
                        "[dpdk] addresses: %d address(es) for %d port(s); give one IPv4/prefix "
                        "per port",
                        na, n);
                return -EINVAL;
        }
        /* One gateway per port in the ports' order ("-": none for that
         * port); fewer words than ports leave the rest without one. A
         * gateway is a neighbour, so it must lie inside its port's prefix. */
        s = cfg->dpdk_gateway;
        char gw[64];
        int ng = 0;
        while ((rc = word_next(&s, gw, sizeof(gw))) != 0) {
                if (ng == n) {
                        why_set(err, err_len,
                                "[dpdk] gateway: more gateways than ports (%d); give one IPv4 "
                                "address (or -) per port",
                                n);
                        return -EINVAL;
                }
                struct in_addr g;
                if (rc > 0 && strcmp(gw, "-") == 0) {
                        ng++;
                        continue;
                }
                if (rc < 0 || inet_pton(AF_INET, gw, &g) != 1) {
                        why_set(err, err_len,
                                "[dpdk] gateway: expected an IPv4 address (or -), got \"%.40s\"",
                                rc < 0 ? s : gw);
                        return -EINVAL;
                }
                uint32_t ip = ntohl(g.s_addr), own = ports[ng].ip;
                uint8_t len = ports[ng].prefix_len;
                uint32_t mask = len == 0 ? 0 : ~0u << (32 - len);
                if (ip == own || ((ip ^ own) & mask) != 0) {
                        why_set(err, err_len,
                                "[dpdk] gateway: %s is not a neighbour on port %d's subnet "
                                "(%u.%u.%u.%u/%u); the next hop must be inside the prefix",
                                gw, ng, own >> 24, own >> 16 & 0xff, own >> 8 & 0xff, own & 0xff,
                                len);
                        return -EINVAL;
                }
                ports[ng].gateway = ip;
                ng++;
        }
        return n;
}

/* Appends one argument; false when buf or argv is full. */
static bool arg_add(char **argv, int *argc, int argv_max, char *buf, size_t len, size_t *pos,
                    const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static bool arg_add(char **argv, int *argc, int argv_max, char *buf, size_t len, size_t *pos,
                    const char *fmt, ...)
{
        if (*argc + 1 >= argv_max || *pos >= len)
                return false;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= len - *pos)
                return false;
        argv[(*argc)++] = buf + *pos;
        argv[*argc] = NULL;
        *pos += (size_t)n + 1;
        return true;
}

int ctl_dpdk_eal_argv(const struct ctl_config *cfg, const struct ctl_dpdk_port *ports, int nports,
                      char *buf, size_t buf_len, char **argv, int argv_max)
{
        size_t pos = 0;
        int argc = 0;
#define ADD(...)                                                                                   \
        do {                                                                                       \
                if (!arg_add(argv, &argc, argv_max, buf, buf_len, &pos, __VA_ARGS__))              \
                        return -E2BIG;                                                             \
        } while (0)

        ADD("sluiced");
        /* The EAL's main lcore is the control thread that calls
         * rte_eal_init (its affinity is restored afterwards); workers are
         * sluiced's own pinned threads and join as registered lcores
         * (rte_thread_register), each with its own queue pair. */
        int main_core = cfg->control_core >= 0      ? cfg->control_core
                        : cfg->worker_cores[0] >= 0 ? cfg->worker_cores[0]
                                                    : 0;
        ADD("--lcores=0@%d", main_core);
        ADD("--file-prefix=%s", cfg->dpdk_file_prefix);
        if (!cfg->dpdk_hugepages) {
                ADD("--no-huge");
                ADD("-m");
                ADD("%" PRIu32, cfg->dpdk_memory_mb);
        } else {
                ADD("--socket-mem=%" PRIu32, cfg->dpdk_memory_mb);
        }
        bool any_pci = false;
        for (int i = 0; i < nports; i++) {
                if (ports[i].is_vdev) {
                        ADD("--vdev=%s", ports[i].dev);
                } else {
                        ADD("--allow=%s", ports[i].dev);
                        any_pci = true;
                }
        }
        /* Without an allow-list the EAL would probe (and take) every PCI NIC
         * the kernel has handed to vfio, the management NIC included. */
        if (!any_pci)
                ADD("--no-pci");
        const char *s = cfg->dpdk_eal_args;
        char word[256];
        int rc;
        while ((rc = word_next(&s, word, sizeof(word))) != 0) {
                if (rc < 0)
                        return -E2BIG;
                ADD("%s", word);
        }
#undef ADD
        return argc;
}

/* /proc/meminfo's HugePages_* lines; false when the kernel has none. */
static bool hugepages_read(uint64_t *total, uint64_t *free_pages, uint64_t *page_kb)
{
        FILE *f = fopen("/proc/meminfo", "re");
        if (!f)
                return false;
        char line[256];
        *total = *free_pages = *page_kb = 0;
        while (fgets(line, sizeof(line), f)) {
                sscanf(line, "HugePages_Total: %" SCNu64, total);
                sscanf(line, "HugePages_Free: %" SCNu64, free_pages);
                sscanf(line, "Hugepagesize: %" SCNu64, page_kb);
        }
        fclose(f);
        return *page_kb != 0;
}

/* The kernel driver a PCI device is bound to, or "" when none. */
static void pci_driver_read(const char *addr, char *out, size_t len)
{
        char path[256], target[256];
        const char *full = addr;
        char with_domain[32];
        if (strlen(addr) == 7) {
                snprintf(with_domain, sizeof(with_domain), "0000:%s", addr);
                full = with_domain;
        }
        out[0] = '\0';
        snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", full);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0)
                return;
        target[n] = '\0';
        const char *base = strrchr(target, '/');
        base = base ? base + 1 : target;
        size_t bn = strnlen(base, len - 1);
        memcpy(out, base, bn);
        out[bn] = '\0';
}

static bool pci_exists(const char *addr)
{
        char path[256];
        struct stat st;
        snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s%s", strlen(addr) == 7 ? "0000:" : "",
                 addr);
        return stat(path, &st) == 0;
}

void ctl_dpdk_plan_print(const struct ctl_config *cfg, FILE *out)
{
        struct ctl_dpdk_port ports[CTL_DPDK_PORTS_MAX];
        char why[256];
        int n = ctl_dpdk_ports_parse(cfg, ports, why, sizeof(why));

        fprintf(out, "\n# dpdk plan (mode = %s, DPDK %s in this build)\n",
                cfg->mode == CTL_MODE_DPDK ? "dpdk" : "kernel",
                SL_HAVE_DPDK ? "available" : "not available");
        uint64_t total, free_pages, page_kb;
        if (!cfg->dpdk_hugepages) {
                fprintf(out, "#   memory: --no-huge, %" PRIu32 " MiB of ordinary pages\n",
                        cfg->dpdk_memory_mb);
        } else if (hugepages_read(&total, &free_pages, &page_kb)) {
                uint64_t free_mb = free_pages * page_kb / 1024;
                fprintf(out,
                        "#   hugepages: %" PRIu64 " of %" PRIu64 " free (%" PRIu64
                        " kB pages, %" PRIu64 " MiB free), %" PRIu32 " MiB wanted\n",
                        free_pages, total, page_kb, free_mb, cfg->dpdk_memory_mb);
                if (free_mb < cfg->dpdk_memory_mb)
                        fprintf(out, "#   warning: not enough free hugepages: reserve more "
                                     "(deploy/hugepages.sh) or set hugepages = false\n");
        } else {
                fprintf(out, "#   hugepages: none in this kernel: set hugepages = false\n");
        }
        if (n < 0) {
                fprintf(out, "#   ports: %s\n", why);
        } else if (n == 0) {
                fprintf(out, "#   ports: none configured\n");
        }
        for (int i = 0; i < n; i++) {
                struct in_addr a = {.s_addr = htonl(ports[i].ip)};
                char ip[INET_ADDRSTRLEN];
                inet_ntop(AF_INET, &a, ip, sizeof(ip));
                /* off-link clients are served only through a gateway: say so */
                char gw[64] = ", no gateway (on-link peers only)";
                if (ports[i].gateway) {
                        struct in_addr g = {.s_addr = htonl(ports[i].gateway)};
                        char gip[INET_ADDRSTRLEN];
                        inet_ntop(AF_INET, &g, gip, sizeof(gip));
                        snprintf(gw, sizeof(gw), ", gateway %s", gip);
                }
                if (ports[i].is_vdev) {
                        fprintf(out, "#   port %d: vdev %s, %s/%u%s\n", i, ports[i].dev, ip,
                                ports[i].prefix_len, gw);
                        continue;
                }
                char drv[64];
                pci_driver_read(ports[i].dev, drv, sizeof(drv));
                const char *state = !pci_exists(ports[i].dev)      ? "no such PCI device"
                                    : strcmp(drv, "vfio-pci") == 0 ? "bound to vfio-pci: ready"
                                    : drv[0] ? "bound to a kernel driver: run deploy/nic-bind.sh"
                                             : "bound to no driver: run deploy/nic-bind.sh";
                fprintf(out, "#   port %d: PCI %s, %s/%u%s, %s%s%s\n", i, ports[i].dev, ip,
                        ports[i].prefix_len, gw, state, drv[0] ? " " : "", drv);
        }
        fprintf(out, "#   EAL main lcore: the control thread (not a worker)\n");
        for (uint32_t i = 0; i < cfg->worker_count && i < CTL_WORKERS_MAX; i++) {
                if (cfg->worker_cores[i] >= 0)
                        fprintf(out, "#   worker %" PRIu32 ": core %d, registered lcore, ", i,
                                cfg->worker_cores[i]);
                else
                        fprintf(out, "#   worker %" PRIu32 ": unpinned, registered lcore, ", i);
                /* every worker serves its queue pair of every port */
                if (n > 1)
                        fprintf(out, "polls rx/tx queue %" PRIu32 " of ports 0..%d\n", i, n - 1);
                else
                        fprintf(out, "polls rx/tx queue %" PRIu32 " of port 0\n", i);
        }
        char buf[2048];
        char *argv[64];
        int argc = n >= 0 ? ctl_dpdk_eal_argv(cfg, ports, n, buf, sizeof(buf), argv, 64) : -EINVAL;
        if (argc > 0) {
                fprintf(out, "#   eal:");
                for (int i = 1; i < argc; i++)
                        fprintf(out, " %s", argv[i]);
                fprintf(out, "\n");
        }
}
