/* The configuration subsystem: defaults, the INI parser (libinih) with
 * file:line:key messages, cross-key checks against this machine's CPUs, the
 * printer behind `sluiced --check` and the SIGHUP reload rules. Control
 * thread only; workers receive copies. */
#include "ctl_config.h"
#include "sl_common.h"
#include "sl_build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KIB ((uint64_t)1024)
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

/* A front-end's listener defaults to on once it serves its clients across
 * workers (AMQP: since queues are reachable from every worker). */
#define CTL_KAFKA_DEFAULT_ENABLED true
#define CTL_AMQP_DEFAULT_ENABLED  true

#define CTL_CPU_ID_MAX     (CPU_SETSIZE - 1)
#define CTL_FILE_BYTES_MAX (1u << 20) /* a config file is a page or two */
#define CTL_VALUE_TEXT_MAX 1024       /* longest formatted value (a path) */
#define CTL_MS_MAX         86400000u  /* one day: any longer is a typo */

enum key_type {
        KT_U32,
        KT_U64,
        KT_ENUM,
        KT_STR,
        KT_WORKERS,      /* [cores] workers: CPU list, pins workers */
        KT_WORKER_COUNT, /* [cores] worker_count: unpinned workers */
        KT_CORE,         /* CPU id or none */
        KT_LISTEN,       /* HOST:PORT or off, aux = protocol */
        KT_ADVERTISED,   /* HOST:PORT or empty, aux = protocol */
        KT_ADMIN,        /* HOST:PORT or off */
};

enum key_flag {
        KF_RELOAD = 1, /* may change on SIGHUP */
        KF_BYTES = 2,  /* accepts k/m/g suffixes */
        KF_POW2 = 4,   /* must be a power of two */
        KF_ALIAS = 8,  /* a second spelling of a key printed elsewhere */
        KF_AUTO = 16,  /* U64: "auto" is UINT64_MAX, a default resolved at start */
        KF_NEG1 = 32,  /* U64: "-1" is UINT64_MAX, Kafka's spelling of "unlimited" */
};

/* STR_WORDS: blank-separated words of printable characters (argument and
 * device lists); inih would take a ';' or '#' after a blank for a comment,
 * so those are refused rather than silently cut. */
enum str_kind { STR_PATH, STR_NAME, STR_SECRET, STR_WORDS };

struct key_desc {
        const char *section;
        const char *name;
        enum key_type type;
        unsigned flags;
        size_t off;  /* offset of the field in struct ctl_config */
        size_t size; /* KT_STR: size of the buffer */
        uint64_t min, max;
        const char *const *names; /* KT_ENUM: spellings, indexed by value */
        int aux;                  /* KT_STR: str_kind; listeners: protocol */
};

static const char *const mode_names[] = {"kernel", "dpdk", NULL};
static const char *const idle_names[] = {"poll", "adaptive", "sleep", NULL};
static const char *const backend_names[] = {"auto", "uring", "epoll", "chaos", NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const proto_names[] = {"nats", "kafka", "amqp", "test"};
static const char *const section_names[] = {"server", "cores", "net",   "listeners", "admin",
                                            "limits", "nats",  "kafka", "dpdk"};
static const char *const bool_names[] = {"false", "true", NULL};

#define OFF(field) offsetof(struct ctl_config, field)
#define U32(sec, key, field, lo, hi, fl)                                                           \
        {                                                                                          \
                .section = sec, .name = key, .type = KT_U32, .flags = fl, .off = OFF(field),       \
                .min = lo, .max = hi                                                               \
        }
#define U64(sec, key, field, lo, hi, fl)                                                           \
        {                                                                                          \
                .section = sec, .name = key, .type = KT_U64, .flags = fl, .off = OFF(field),       \
                .min = lo, .max = hi                                                               \
        }
#define ENUM(sec, key, field, tbl, fl)                                                             \
        {                                                                                          \
                .section = sec, .name = key, .type = KT_ENUM, .flags = fl, .off = OFF(field),      \
                .names = tbl                                                                       \
        }
#define STR(sec, key, field, kind, fl)                                                             \
        {                                                                                          \
                .section = sec, .name = key, .type = KT_STR, .flags = fl, .off = OFF(field),       \
                .size = sizeof(((struct ctl_config *)0)->field), .aux = kind                       \
        }
#define LISTEN(key, proto)                                                                         \
        {                                                                                          \
                .section = "listeners", .name = key, .type = KT_LISTEN, .aux = proto               \
        }
#define ADVERTISED(key, proto)                                                                     \
        {                                                                                          \
                .section = "listeners", .name = key, .type = KT_ADVERTISED, .aux = proto           \
        }

/* Every key, in the order ctl_config_print writes them. Ranges are the
 * limits the rest of the code may rely on. */
static const struct key_desc keys[] = {
    ENUM("server", "mode", mode, mode_names, 0),
    STR("server", "data_dir", data_dir, STR_PATH, 0),
    STR("server", "name", name, STR_NAME, 0),
    ENUM("server", "log_level", log_level, level_names, KF_RELOAD),
    U32("server", "recycle_segments", recycle_segments, 0, 4, 0),

    {.section = "cores", .name = "workers", .type = KT_WORKERS},
    {.section = "cores",
     .name = "worker_count",
     .type = KT_WORKER_COUNT,
     .min = 1,
     .max = CTL_WORKERS_MAX},
    {.section = "cores", .name = "control", .type = KT_CORE, .off = OFF(control_core)},
    ENUM("cores", "idle", idle, idle_names, 0),
    U32("cores", "idle_spin_us", idle_spin_us, 0, 1000000, 0),

    /* The transport is chosen in [net]; [server] mode stays for old files. */
    ENUM("net", "mode", mode, mode_names, KF_ALIAS),
    ENUM("net", "backend", net_backend, backend_names, 0),
    U32("net", "chaos_seed", chaos_seed, 0, UINT32_MAX, 0),
    /* io_uring provided-buffer rings hold a power of two, at most 32768 */
    U32("net", "recv_buffers", recv_buffers, 16, 32768, KF_POW2),
    U32("net", "recv_buffer_bytes", recv_buffer_bytes, 4 * KIB, MIB, KF_POW2 | KF_BYTES),
    U32("net", "ring_slots", ring_slots, 16, MIB, KF_POW2),

    LISTEN("nats", CTL_PROTO_NATS),
    ADVERTISED("nats_advertised", CTL_PROTO_NATS),
    LISTEN("kafka", CTL_PROTO_KAFKA),
    ADVERTISED("kafka_advertised", CTL_PROTO_KAFKA),
    LISTEN("amqp", CTL_PROTO_AMQP),
    ADVERTISED("amqp_advertised", CTL_PROTO_AMQP),
    LISTEN("test", CTL_PROTO_TEST),
    ADVERTISED("test_advertised", CTL_PROTO_TEST),

    {.section = "admin", .name = "listen", .type = KT_ADMIN},

    U32("limits", "connections_max", limits.connections_max, 1, 1000000, KF_RELOAD),
    U32("limits", "connections_per_ip_max", limits.connections_per_ip_max, 0, 1000000, KF_RELOAD),
    U32("limits", "frame_bytes_max", limits.frame_bytes_max, KIB, GIB, KF_RELOAD | KF_BYTES),
    U32("limits", "control_line_bytes_max", limits.control_line_bytes_max, 256, MIB,
        KF_RELOAD | KF_BYTES),
    U32("limits", "inflight_requests_max", limits.inflight_requests_max, 1, 65536, KF_RELOAD),
    U64("limits", "pending_response_bytes_max", limits.pending_response_bytes_max, 64 * KIB,
        64 * GIB, KF_RELOAD | KF_BYTES),
    U64("limits", "pinned_bytes_per_conn_max", limits.pinned_bytes_per_conn_max, 4 * KIB, 64 * GIB,
        KF_RELOAD | KF_BYTES),
    U64("limits", "pinned_bytes_per_worker_max", limits.pinned_bytes_per_worker_max, 4 * KIB,
        1024 * GIB, KF_RELOAD | KF_BYTES),
    U32("limits", "partial_frame_timeout_ms", limits.partial_frame_timeout_ms, 1, CTL_MS_MAX,
        KF_RELOAD),
    U32("limits", "idle_timeout_ms", limits.idle_timeout_ms, 0, CTL_MS_MAX, KF_RELOAD),
    U32("limits", "write_deadline_ms", limits.write_deadline_ms, 1, CTL_MS_MAX, KF_RELOAD),
    U32("limits", "subscriptions_max", limits.subscriptions_max, 0, 10000000, KF_RELOAD),
    U64("limits", "amqp_memory_high_watermark_bytes", limits.amqp_memory_high_watermark_bytes, 0,
        1024 * GIB, KF_RELOAD | KF_BYTES),
    U64("limits", "amqp_disk_free_limit_bytes", limits.amqp_disk_free_limit_bytes, 0, 1024 * GIB,
        KF_RELOAD | KF_BYTES),
    U64("limits", "amqp_message_bytes_max", limits.amqp_message_bytes_max, 4 * KIB, 512 * MIB,
        KF_RELOAD | KF_BYTES),

    STR("dpdk", "eal_args", dpdk_eal_args, STR_WORDS, 0),
    STR("dpdk", "file_prefix", dpdk_file_prefix, STR_NAME, 0),
    ENUM("dpdk", "hugepages", dpdk_hugepages, bool_names, 0),
    U32("dpdk", "memory_mb", dpdk_memory_mb, 64, 1024 * 1024, 0),
    STR("dpdk", "ports", dpdk_ports, STR_WORDS, 0),
    STR("dpdk", "addresses", dpdk_addresses, STR_WORDS, 0),
    STR("dpdk", "gateway", dpdk_gateway, STR_WORDS, 0),
    U32("dpdk", "rx_descriptors", dpdk_rx_descriptors, 64, 32768, KF_POW2),
    U32("dpdk", "tx_descriptors", dpdk_tx_descriptors, 64, 32768, KF_POW2),
    U32("dpdk", "mbufs", dpdk_mbufs, 1024, 16 * 1024 * 1024, 0),
    U32("dpdk", "syn_backlog", dpdk_syn_backlog, 1, 1000000, 0),
    U32("dpdk", "tcp_buffer_bytes", dpdk_tcp_buffer_bytes, 4 * KIB, 16 * MIB, KF_POW2 | KF_BYTES),
    U32("dpdk", "mtu", dpdk_mtu, 0, 9000, 0),
    U32("dpdk", "tcp_keepalive_idle_ms", dpdk_keepalive_idle_ms, 0, CTL_MS_MAX, 0),
    U32("dpdk", "tcp_keepalive_interval_ms", dpdk_keepalive_interval_ms, 10, CTL_MS_MAX, 0),
    U32("dpdk", "tcp_keepalive_probes", dpdk_keepalive_probes, 1, 1000, 0),
    U32("dpdk", "test_loss_per_mille", dpdk_loss_per_mille, 0, 500, 0),
    U32("dpdk", "test_reorder_per_mille", dpdk_reorder_per_mille, 0, 500, 0),
    U32("dpdk", "test_delay_us", dpdk_delay_us, 0, 1000000, 0),
    U32("dpdk", "test_jitter_us", dpdk_jitter_us, 0, 1000000, 0),

    /* [kafka] before [nats]: the printer writes nats user.* keys last */
    ENUM("kafka", "auto_create_topics", kafka_auto_create, bool_names, 0),
    U32("kafka", "default_partitions", kafka_default_partitions, 1, 1024, 0),
    U32("kafka", "connections_max_idle_ms", kafka_idle_ms, 0, CTL_MS_MAX, KF_RELOAD),
    U32("kafka", "producer_id_expiration_ms", kafka_producer_id_expiration_ms, 0, CTL_MS_MAX, 0),
    U64("kafka", "cache_bytes", kafka_cache_bytes, 0, 64 * GIB, KF_BYTES | KF_AUTO),
    /* Topic defaults (Kafka's log.retention.ms, log.retention.bytes,
     * log.segment.bytes): a topic created without its own value follows
     * these. segment_bytes: Kafka 4.0's minimum (KIP-1030) up to what
     * storage allows. */
    U64("kafka", "retention_ms", kafka_retention_ms, 0, INT64_MAX, KF_NEG1),
    U64("kafka", "retention_bytes", kafka_retention_bytes, 0, 1024 * 1024 * GIB,
        KF_BYTES | KF_NEG1),
    U64("kafka", "segment_bytes", kafka_segment_bytes, MIB, 2 * GIB, KF_BYTES),
    U64("kafka", "segment_ms", kafka_segment_ms, 1, INT64_MAX, 0),
    U32("kafka", "retention_check_interval_ms", kafka_retention_check_interval_ms, 10, CTL_MS_MAX,
        0),

    U32("nats", "ping_interval_ms", nats_ping_interval_ms, 10, CTL_MS_MAX, KF_RELOAD),
    U32("nats", "ping_max_outstanding", nats_ping_max_outstanding, 1, 1000, KF_RELOAD),
    U32("nats", "auth_timeout_ms", nats_auth_timeout_ms, 10, 600000, KF_RELOAD),
    STR("nats", "token", nats_token, STR_SECRET, KF_RELOAD),

    /* user.NAME = PASSWORD keys are handled apart: their names vary */
};

#define USER_PREFIX "user."

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

const char *ctl_proto_name(enum ctl_proto p)
{
        if ((unsigned)p >= CTL_PROTO_COUNT)
                return "?";
        return proto_names[p];
}

const char *ctl_log_level_name(enum ctl_log_level level)
{
        if ((unsigned)level > CTL_LOG_DEBUG)
                return "?";
        return level_names[level];
}

/* Copies src and zero-fills the rest, so that two configs holding the same
 * strings compare equal byte for byte. Returns -ENAMETOOLONG if it does
 * not fit. */
static int str_set(char *dst, size_t size, const char *src)
{
        size_t n = strlen(src);
        if (n >= size)
                return -ENAMETOOLONG;
        memset(dst, 0, size);
        memcpy(dst, src, n);
        return 0;
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
               c == '_' || c == '-';
}

/* Decimal digits only: strtoull would also take signs, blanks and hex.
 * *end is set past the digits even when the value overflows (-ERANGE). */
static int u64_parse(const char *s, const char **end, uint64_t *out)
{
        uint64_t v = 0;
        bool overflow = false;
        *end = s;
        if (!is_digit(*s))
                return -EINVAL;
        for (; is_digit(*s); s++) {
                uint64_t d = (uint64_t)(*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                v = v * 10 + d;
        }
        *end = s;
        *out = v;
        return overflow ? -ERANGE : 0;
}

int ctl_bytes_parse(const char *text, uint64_t max, uint64_t *out)
{
        const char *end;
        uint64_t v, unit = 1;
        int rc = u64_parse(text, &end, &v);
        if (rc == -EINVAL)
                return rc;
        switch (*end) {
        case '\0':
                break;
        case 'k':
        case 'K':
                unit = KIB;
                break;
        case 'm':
        case 'M':
                unit = MIB;
                break;
        case 'g':
        case 'G':
                unit = GIB;
                break;
        default:
                return -EINVAL;
        }
        if (*end != '\0' && end[1] != '\0')
                return -EINVAL;
        if (rc == -ERANGE || v > UINT64_MAX / unit || v * unit > max)
                return -ERANGE;
        *out = v * unit;
        return 0;
}

/* Writes a byte count with the largest suffix that divides it exactly, the
 * way a person would write it in the file. */
static void bytes_format(uint64_t v, char *buf, size_t len)
{
        if (v != 0 && v % GIB == 0)
                snprintf(buf, len, "%" PRIu64 "G", v / GIB);
        else if (v != 0 && v % MIB == 0)
                snprintf(buf, len, "%" PRIu64 "M", v / MIB);
        else if (v != 0 && v % KIB == 0)
                snprintf(buf, len, "%" PRIu64 "K", v / KIB);
        else
                snprintf(buf, len, "%" PRIu64, v);
}

/* ------------------------------------------------------------------ */
/* CPU lists: "0-1", "2,3,5-7"                                         */

/* Parses a CPU list in the order written. Every id goes into set (may be
 * NULL); with ids, at most ids_max are stored. Returns the count, -EINVAL
 * (syntax or a range written backwards), -ERANGE (id above
 * CTL_CPU_ID_MAX), -E2BIG (more than ids_max) or -EEXIST (an id twice). */
static int cpu_list_parse(const char *s, int *ids, int ids_max, cpu_set_t *set)
{
        cpu_set_t seen;
        int count = 0;
        CPU_ZERO(&seen);
        for (;;) {
                uint64_t lo, hi;
                const char *end;
                while (*s == ' ' || *s == '\t')
                        s++;
                int rc = u64_parse(s, &end, &lo);
                if (rc < 0)
                        return rc;
                hi = lo;
                s = end;
                if (*s == '-') {
                        rc = u64_parse(s + 1, &end, &hi);
                        if (rc < 0)
                                return rc;
                        s = end;
                }
                if (hi < lo)
                        return -EINVAL;
                if (hi > CTL_CPU_ID_MAX)
                        return -ERANGE;
                for (uint64_t cpu = lo; cpu <= hi; cpu++) {
                        if (CPU_ISSET(cpu, &seen))
                                return -EEXIST;
                        CPU_SET(cpu, &seen);
                        if (ids) {
                                if (count == ids_max)
                                        return -E2BIG;
                                ids[count] = (int)cpu;
                        }
                        count++;
                }
                while (*s == ' ' || *s == '\t' || *s == '\n')
                        s++;
                if (*s == '\0')
                        break;
                if (*s != ',')
                        return -EINVAL;
                s++;
        }
        if (set)
                *set = seen;
        return count;
}

/* Writes ids in order, folding ascending runs into ranges: "2-3,5-7". */
static void cpu_list_format(const int *ids, int n, char *buf, size_t len)
{
        size_t pos = 0;
        buf[0] = '\0';
        for (int i = 0; i < n && pos < len;) {
                int j = i;
                while (j + 1 < n && ids[j + 1] == ids[j] + 1)
                        j++;
                int w;
                if (j > i)
                        w = snprintf(buf + pos, len - pos, "%s%d-%d", i ? "," : "", ids[i], ids[j]);
                else
                        w = snprintf(buf + pos, len - pos, "%s%d", i ? "," : "", ids[i]);
                pos += (size_t)w;
                i = j + 1;
        }
}

static void cpu_set_format(const cpu_set_t *set, char *buf, size_t len)
{
        int ids[CPU_SETSIZE];
        int n = 0;
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
                if (CPU_ISSET(cpu, set))
                        ids[n++] = cpu;
        if (n == 0)
                snprintf(buf, len, "none");
        else
                cpu_list_format(ids, n, buf, len);
}

static cpu_set_t cpus_usable_at_start;
static pthread_once_t cpus_usable_once = PTHREAD_ONCE_INIT;

static void cpus_usable_probe(void)
{
        cpu_set_t online, allowed;
        char text[4096];
        bool have_online = false;

        CPU_ZERO(&online);
        FILE *f = fopen("/sys/devices/system/cpu/online", "re");
        if (f) {
                size_t n = fread(text, 1, sizeof(text) - 1, f);
                fclose(f);
                text[n] = '\0';
                have_online = cpu_list_parse(text, NULL, 0, &online) > 0;
        }
        if (!have_online) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                for (long cpu = 0; cpu < n && cpu < CPU_SETSIZE; cpu++)
                        CPU_SET(cpu, &online);
        }
        if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
                CPU_AND(&cpus_usable_at_start, &online, &allowed);
        else
                cpus_usable_at_start = online;
}

/* The CPUs threads of this process can be pinned to: online, and in the
 * affinity mask sluiced was started with (a container's cpuset narrows it).
 * Probed once, at the first call: later the calling thread may have pinned
 * itself to one core, and a SIGHUP reload would then see default workers
 * change. */
static void cpus_usable(cpu_set_t *usable)
{
        pthread_once(&cpus_usable_once, cpus_usable_probe);
        *usable = cpus_usable_at_start;
}

/* ------------------------------------------------------------------ */
/* HOST:PORT                                                           */

static bool host_is_ipv6(const char *host)
{
        return strchr(host, ':') != NULL;
}

static void hostport_format(const char *host, uint16_t port, char *buf, size_t len)
{
        if (host_is_ipv6(host))
                snprintf(buf, len, "[%s]:%u", host, port);
        else
                snprintf(buf, len, "%s:%u", host, port);
}

/* 0.0.0.0 and :: in every spelling. */
static bool host_is_unspecified(const char *host)
{
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return a4.s_addr == htonl(INADDR_ANY);
        if (inet_pton(AF_INET6, host, &a6) == 1)
                return IN6_IS_ADDR_UNSPECIFIED(&a6);
        return false;
}

static bool hostname_valid(const char *host)
{
        if (host[0] == '\0' || host[0] == '-' || host[0] == '.' || strlen(host) > 253)
                return false;
        for (const char *c = host; *c; c++)
                if (!is_name_char(*c) || *c == '_')
                        return false;
        return true;
}

/* Parses HOST:PORT, IPv6 as [ADDR]:PORT. With numeric, HOST must be an IP
 * address (listeners bind it); otherwise a DNS name is accepted too
 * (advertised hosts). Numeric hosts are stored in inet_ntop's canonical
 * form so that equal addresses compare equal. Returns NULL or the reason
 * the text is wrong. */
static const char *hostport_parse(const char *s, bool numeric, char *host, size_t host_len,
                                  uint16_t *port)
{
        char h[512];
        const char *port_text;
        bool bracketed = s[0] == '[';

        if (bracketed) {
                const char *close = strchr(s, ']');
                if (!close || close[1] != ':')
                        return "expected [IPV6]:PORT";
                if ((size_t)(close - s - 1) >= sizeof(h))
                        return "host too long";
                memcpy(h, s + 1, (size_t)(close - s - 1));
                h[close - s - 1] = '\0';
                port_text = close + 2;
        } else {
                const char *colon = strrchr(s, ':');
                if (!colon)
                        return "expected HOST:PORT";
                if (memchr(s, ':', (size_t)(colon - s)))
                        return "an IPv6 address goes in brackets, e.g. [::1]:4222";
                if ((size_t)(colon - s) >= sizeof(h))
                        return "host too long";
                memcpy(h, s, (size_t)(colon - s));
                h[colon - s] = '\0';
                port_text = colon + 1;
        }
        if (h[0] == '\0')
                return "expected HOST:PORT, the host is empty";

        const char *end;
        uint64_t p;
        if (u64_parse(port_text, &end, &p) < 0 || *end != '\0' || p > 65535)
                return "the port must be an integer in 0..65535";

        char canon[INET6_ADDRSTRLEN];
        struct in_addr a4;
        struct in6_addr a6;
        if (bracketed) {
                if (inet_pton(AF_INET6, h, &a6) != 1)
                        return "expected an IPv6 address in the brackets";
                inet_ntop(AF_INET6, &a6, canon, sizeof(canon));
        } else if (inet_pton(AF_INET, h, &a4) == 1) {
                inet_ntop(AF_INET, &a4, canon, sizeof(canon));
        } else if (numeric) {
                return "expected a numeric IPv4 address or [IPv6] (host names are not resolved)";
        } else if (!hostname_valid(h)) {
                return "expected an IP address or a DNS host name";
        } else {
                if (str_set(host, host_len, h) < 0)
                        return "host too long";
                *port = (uint16_t)p;
                return NULL;
        }
        if (str_set(host, host_len, canon) < 0)
                return "host too long";
        *port = (uint16_t)p;
        return NULL;
}

struct listener_default {
        const char *host;
        uint16_t port;
        bool enabled;
};

static const struct listener_default listener_defaults[CTL_PROTO_COUNT] = {
    [CTL_PROTO_NATS] = {"127.0.0.1", 4222, true},
    [CTL_PROTO_KAFKA] = {"127.0.0.1", 9092, CTL_KAFKA_DEFAULT_ENABLED},
    [CTL_PROTO_AMQP] = {"127.0.0.1", 5672, CTL_AMQP_DEFAULT_ENABLED},
    /* the runtime's own test protocol: only integration tests turn it on */
    [CTL_PROTO_TEST] = {"127.0.0.1", 0, false},
};

/* Resets where a listener binds; its advertised address is a key of its own
 * and stays. */
static void listener_bind_default(struct ctl_listener *l, enum ctl_proto p)
{
        const struct listener_default *d = &listener_defaults[p];
        l->enabled = d->enabled;
        str_set(l->host, sizeof(l->host), d->host);
        l->port = d->port;
}

/* ------------------------------------------------------------------ */
/* Defaults                                                            */

void ctl_config_defaults(struct ctl_config *cfg)
{
        cpu_set_t usable;

        memset(cfg, 0, sizeof(*cfg));

        cfg->mode = CTL_MODE_KERNEL;
        str_set(cfg->data_dir, sizeof(cfg->data_dir), "/var/lib/sluice");
        str_set(cfg->name, sizeof(cfg->name), "sluice");
        cfg->log_level = CTL_LOG_INFO;

        /* One worker per usable CPU, pinned to it. */
        cpus_usable(&usable);
        for (int i = 0; i < CTL_WORKERS_MAX; i++)
                cfg->worker_cores[i] = -1;
        for (int cpu = 0; cpu < CPU_SETSIZE && cfg->worker_count < CTL_WORKERS_MAX; cpu++)
                if (CPU_ISSET(cpu, &usable))
                        cfg->worker_cores[cfg->worker_count++] = cpu;
        if (cfg->worker_count == 0)
                cfg->worker_count = 1; /* no CPU information at all: one unpinned */
        cfg->control_core = -1;
        cfg->idle = CTL_IDLE_ADAPTIVE;
        cfg->idle_spin_us = 50;

        cfg->net_backend = CTL_NET_AUTO;
        cfg->chaos_seed = 1;
        cfg->recv_buffers = 512;
        cfg->recv_buffer_bytes = 64 * KIB; /* a 16 KiB PUB in one buffer: no reassembly copy */
        cfg->ring_slots = 4096;

        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                listener_bind_default(&cfg->listeners[p], (enum ctl_proto)p);

        cfg->admin_enabled = true;
        str_set(cfg->admin_host, sizeof(cfg->admin_host), "127.0.0.1");
        cfg->admin_port = 8080;

        struct ctl_limits *l = &cfg->limits;
        l->connections_max = 65536;
        l->connections_per_ip_max = 0; /* unlimited */
        l->frame_bytes_max = MIB;
        l->control_line_bytes_max = 4 * KIB;
        l->inflight_requests_max = 64;
        l->pending_response_bytes_max = 64 * MIB;
        l->pinned_bytes_per_conn_max = 8 * MIB;
        l->pinned_bytes_per_worker_max = 512 * MIB;
        l->partial_frame_timeout_ms = 10000;
        l->idle_timeout_ms = 0; /* never: protocol heartbeats find dead peers */
        l->write_deadline_ms = 10000;
        l->subscriptions_max = 0;                 /* unlimited */
        l->amqp_memory_high_watermark_bytes = 0;  /* 40% of RAM, as RabbitMQ's 0.4 */
        l->amqp_disk_free_limit_bytes = 50 * MIB; /* RabbitMQ's default */
        l->amqp_message_bytes_max = 128 * MIB;    /* RabbitMQ's max_message_size */

        cfg->recycle_segments = 2; /* storage's default */
        cfg->nats_ping_interval_ms = 120000;
        cfg->nats_ping_max_outstanding = 2;
        cfg->nats_auth_timeout_ms = 2000;
        cfg->kafka_auto_create = 1;
        cfg->kafka_default_partitions = 1;
        cfg->kafka_idle_ms = 600000;                     /* Kafka's connections.max.idle.ms */
        cfg->kafka_producer_id_expiration_ms = 86400000; /* Kafka's default: one day */
        cfg->kafka_cache_bytes = CTL_KAFKA_CACHE_AUTO;
        cfg->kafka_retention_ms = CTL_KAFKA_RETENTION_MS_DEFAULT;
        cfg->kafka_retention_bytes = CTL_KAFKA_UNLIMITED;
        cfg->kafka_segment_bytes = CTL_KAFKA_SEGMENT_BYTES_DEFAULT;
        cfg->kafka_segment_ms = CTL_KAFKA_SEGMENT_MS_DEFAULT;
        cfg->kafka_retention_check_interval_ms = 10000;

        str_set(cfg->dpdk_file_prefix, sizeof(cfg->dpdk_file_prefix), "sluice");
        cfg->dpdk_hugepages = 1;
        cfg->dpdk_memory_mb = 512;
        cfg->dpdk_rx_descriptors = 1024;
        cfg->dpdk_tx_descriptors = 1024;
        cfg->dpdk_mbufs = 16383; /* a power of two minus one suits the mempool's ring */
        cfg->dpdk_syn_backlog = 1024;
        cfg->dpdk_tcp_buffer_bytes = 64 * KIB;
        /* Linux's tcp_keepalive_time / _intvl / _probes */
        cfg->dpdk_keepalive_idle_ms = 7200000;
        cfg->dpdk_keepalive_interval_ms = 75000;
        cfg->dpdk_keepalive_probes = 9;
}

/* ------------------------------------------------------------------ */
/* Formatting one key (printer and reload diff share it)               */

static const void *key_cptr(const struct key_desc *k, const struct ctl_config *cfg)
{
        return (const char *)cfg + k->off;
}

static void *key_ptr(const struct key_desc *k, struct ctl_config *cfg)
{
        return (char *)cfg + k->off;
}

static bool workers_pinned(const struct ctl_config *cfg)
{
        for (uint32_t i = 0; i < cfg->worker_count && i < CTL_WORKERS_MAX; i++)
                if (cfg->worker_cores[i] >= 0)
                        return true;
        return false;
}

static void key_format(const struct key_desc *k, const struct ctl_config *cfg, char *buf,
                       size_t len)
{
        uint64_t v;
        buf[0] = '\0';
        switch (k->type) {
        case KT_U32:
        case KT_U64:
                if (k->type == KT_U32)
                        v = *(const uint32_t *)key_cptr(k, cfg);
                else
                        v = *(const uint64_t *)key_cptr(k, cfg);
                if ((k->flags & KF_AUTO) && v == UINT64_MAX)
                        snprintf(buf, len, "auto");
                else if ((k->flags & KF_NEG1) && v == UINT64_MAX)
                        snprintf(buf, len, "-1");
                else if (k->flags & KF_BYTES)
                        bytes_format(v, buf, len);
                else
                        snprintf(buf, len, "%" PRIu64, v);
                break;
        case KT_ENUM: {
                unsigned e = *(const unsigned *)key_cptr(k, cfg);
                unsigned n = 0;
                while (k->names[n])
                        n++;
                snprintf(buf, len, "%s", e < n ? k->names[e] : "?");
                break;
        }
        case KT_STR:
                snprintf(buf, len, "%s", (const char *)key_cptr(k, cfg));
                break;
        case KT_WORKERS: {
                /* Only pinned workers can be written as a list; unpinned ones are
                 * worker_count's business. */
                int ids[CTL_WORKERS_MAX];
                int n = 0;
                for (uint32_t i = 0; i < cfg->worker_count && i < CTL_WORKERS_MAX; i++)
                        if (cfg->worker_cores[i] >= 0)
                                ids[n++] = cfg->worker_cores[i];
                cpu_list_format(ids, n, buf, len);
                break;
        }
        case KT_WORKER_COUNT:
                snprintf(buf, len, "%" PRIu32, cfg->worker_count);
                break;
        case KT_CORE: {
                int core = *(const int *)key_cptr(k, cfg);
                if (core < 0)
                        snprintf(buf, len, "none");
                else
                        snprintf(buf, len, "%d", core);
                break;
        }
        case KT_LISTEN: {
                const struct ctl_listener *l = &cfg->listeners[k->aux];
                if (!l->enabled)
                        snprintf(buf, len, "off");
                else
                        hostport_format(l->host, l->port, buf, len);
                break;
        }
        case KT_ADVERTISED: {
                const struct ctl_listener *l = &cfg->listeners[k->aux];
                if (l->advertised_host[0])
                        hostport_format(l->advertised_host, l->advertised_port, buf, len);
                break;
        }
        case KT_ADMIN:
                if (!cfg->admin_enabled)
                        snprintf(buf, len, "off");
                else
                        hostport_format(cfg->admin_host, cfg->admin_port, buf, len);
                break;
        }
}

/* ------------------------------------------------------------------ */
/* Parsing                                                             */

struct parse_ctx {
        struct ctl_config *cfg;
        const char *name; /* file name for messages */
        const char *text;
        size_t len, pos;
        int lineno; /* of the line inih is working on */
        bool failed;
        char *err;
        size_t err_len;
};

static void __attribute__((format(printf, 2, 3)))
ctx_fail(struct parse_ctx *ctx, const char *fmt, ...)
{
        if (ctx->failed)
                return; /* the first error is the one worth reading */
        ctx->failed = true;
        if (!ctx->err || ctx->err_len == 0)
                return;
        int n = snprintf(ctx->err, ctx->err_len, "%s:%d: ", ctx->name, ctx->lineno);
        if (n < 0 || (size_t)n >= ctx->err_len)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err + n, ctx->err_len - (size_t)n, fmt, ap);
        va_end(ap);
}

static bool section_known(const char *name, size_t len)
{
        for (size_t i = 0; i < SL_ARRAY_LEN(section_names); i++)
                if (strlen(section_names[i]) == len && memcmp(section_names[i], name, len) == 0)
                        return true;
        return false;
}

/* inih's fgets-style reader over the text in memory. Counting lines here
 * gives messages a line number even though Debian's libinih is built
 * without INI_HANDLER_LINENO: inih calls the handler for a line before it
 * asks for the next one. */
static char *ctx_line_read(char *buf, int num, void *stream)
{
        struct parse_ctx *ctx = stream;
        if (ctx->failed || ctx->pos >= ctx->len)
                return NULL;

        const char *line = ctx->text + ctx->pos;
        const char *nl = memchr(line, '\n', ctx->len - ctx->pos);
        size_t n = nl ? (size_t)(nl - line) + 1 : ctx->len - ctx->pos;
        ctx->pos += n;
        ctx->lineno++;

        /* Leading blanks go, so inih never sees a continuation line: an
         * indented key would otherwise be appended to the previous value. */
        while (n > 0 && (*line == ' ' || *line == '\t')) {
                line++;
                n--;
        }
        /* inih's line buffer is fixed (200 bytes in Debian's build) and must
         * hold "\r\n\0" too; a longer line would be cut and its tail read
         * as a line of its own. */
        size_t content = n;
        while (content > 0 && (line[content - 1] == '\n' || line[content - 1] == '\r'))
                content--;
        if (content + 3 > (size_t)num) {
                ctx_fail(ctx, "line longer than %d characters", num - 3);
                return NULL;
        }
        /* inih does not tell the handler about empty sections, so an unknown
         * section is caught here, where its line is at hand. */
        if (n > 0 && line[0] == '[') {
                const char *close = memchr(line, ']', n);
                if (close && !section_known(line + 1, (size_t)(close - line - 1))) {
                        ctx_fail(ctx,
                                 "[%.*s]: unknown section (expected one of server, cores, net, "
                                 "listeners, admin, limits, nats, kafka, dpdk)",
                                 (int)(close - line - 1), line + 1);
                        return NULL;
                }
        }
        memcpy(buf, line, n);
        buf[n] = '\0';
        return buf;
}

static void range_format(const struct key_desc *k, char *buf, size_t len)
{
        char lo[32], hi[32];
        if (k->flags & KF_BYTES) {
                bytes_format(k->min, lo, sizeof(lo));
                bytes_format(k->max, hi, sizeof(hi));
        } else {
                snprintf(lo, sizeof(lo), "%" PRIu64, k->min);
                snprintf(hi, sizeof(hi), "%" PRIu64, k->max);
        }
        snprintf(buf, len, "%s..%s", lo, hi);
}

static int key_int_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        uint64_t v;
        int rc;
        char range[80];
        range_format(k, range, sizeof(range));

        if (((k->flags & KF_AUTO) && strcmp(value, "auto") == 0) ||
            ((k->flags & KF_NEG1) && strcmp(value, "-1") == 0)) {
                *(uint64_t *)key_ptr(k, ctx->cfg) = UINT64_MAX;
                return 0;
        }
        if (k->flags & KF_BYTES) {
                rc = ctl_bytes_parse(value, k->max, &v);
        } else {
                const char *end;
                rc = u64_parse(value, &end, &v);
                if (rc == 0 && *end != '\0')
                        rc = -EINVAL;
                if (rc == 0 && v > k->max)
                        rc = -ERANGE;
        }
        if (rc == 0 && v < k->min)
                rc = -ERANGE;
        if (rc == 0 && (k->flags & KF_POW2) && (v & (v - 1)) != 0)
                rc = -EINVAL;
        if (rc < 0) {
                const char *what = (k->flags & KF_POW2)    ? "a power of two"
                                   : (k->flags & KF_BYTES) ? "a size"
                                                           : "an integer";
                const char *hint = (k->flags & KF_BYTES) && (k->flags & KF_NEG1)
                                       ? " (suffix k, m or g: powers of 1024) or -1 (unlimited)"
                                   : (k->flags & KF_BYTES) ? " (suffix k, m or g: powers of 1024)"
                                   : (k->flags & KF_NEG1)  ? " or -1 (unlimited)"
                                                           : "";
                ctx_fail(ctx, "[%s] %s: expected %s in %s%s, got \"%s\"", k->section, k->name, what,
                         range, hint, value);
                return -EINVAL;
        }
        if (k->type == KT_U32)
                *(uint32_t *)key_ptr(k, ctx->cfg) = (uint32_t)v;
        else
                *(uint64_t *)key_ptr(k, ctx->cfg) = v;
        return 0;
}

static int key_enum_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        char expected[128] = "";
        size_t pos = 0;
        for (unsigned i = 0; k->names[i]; i++) {
                if (strcmp(k->names[i], value) == 0) {
                        *(unsigned *)key_ptr(k, ctx->cfg) = i;
                        return 0;
                }
                pos += (size_t)snprintf(expected + pos, sizeof(expected) - pos, "%s%s",
                                        i ? "|" : "", k->names[i]);
        }
        ctx_fail(ctx, "[%s] %s: expected %s, got \"%s\"", k->section, k->name, expected, value);
        return -EINVAL;
}

static int key_str_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        size_t n = strlen(value);
        bool ok = n < k->size;
        const char *what = "";
        switch ((enum str_kind)k->aux) {
        case STR_PATH:
                what = "an absolute path";
                ok = ok && value[0] == '/';
                for (const char *c = value; ok && *c; c++)
                        ok = (unsigned char)*c >= 0x20 && *c != 0x7f;
                break;
        case STR_NAME:
                what = "a name of letters, digits, '.', '_' or '-'";
                ok = ok && n > 0;
                for (const char *c = value; ok && *c; c++)
                        ok = is_name_char(*c);
                break;
        case STR_WORDS:
                what = "blank-separated words without ';', '#' or control characters";
                for (const char *c = value; ok && *c; c++)
                        ok = (unsigned char)*c >= 0x20 && *c != 0x7f && *c != ';' && *c != '#';
                break;
        case STR_SECRET:
                /* No blanks: inih would take " ;" inside a secret for a
                 * comment, and a printed config must read back the same. */
                what = "a secret without blanks or control characters";
                for (const char *c = value; ok && *c; c++)
                        ok = (unsigned char)*c > 0x20 && *c != 0x7f;
                break;
        }
        if (!ok) {
                ctx_fail(ctx, "[%s] %s: expected %s of at most %zu bytes, got \"%s\"", k->section,
                         k->name, what, k->size - 1, k->aux == STR_SECRET ? "<redacted>" : value);
                return -EINVAL;
        }
        str_set(key_ptr(k, ctx->cfg), k->size, value);
        return 0;
}

static int key_workers_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        struct ctl_config *cfg = ctx->cfg;
        int ids[CTL_WORKERS_MAX];
        int n = cpu_list_parse(value, ids, CTL_WORKERS_MAX, NULL);
        char why[96] = "";
        switch (n) {
        case -EINVAL:
                snprintf(why, sizeof(why), "expected a CPU list such as 0-1 or 2,3,5-7");
                break;
        case -ERANGE:
                snprintf(why, sizeof(why), "CPU ids go from 0 to %d", CTL_CPU_ID_MAX);
                break;
        case -E2BIG:
                snprintf(why, sizeof(why), "more than %d workers", CTL_WORKERS_MAX);
                break;
        case -EEXIST:
                snprintf(why, sizeof(why), "a CPU is listed twice: each worker needs its own core");
                break;
        }
        if (why[0]) {
                ctx_fail(ctx, "[%s] %s: %s, got \"%s\"", k->section, k->name, why, value);
                return -EINVAL;
        }
        cfg->worker_count = (uint32_t)n;
        for (int i = 0; i < CTL_WORKERS_MAX; i++)
                cfg->worker_cores[i] = i < n ? ids[i] : -1;
        return 0;
}

static int key_worker_count_parse(struct parse_ctx *ctx, const struct key_desc *k,
                                  const char *value)
{
        const char *end;
        uint64_t v;
        if (u64_parse(value, &end, &v) < 0 || *end != '\0' || v < k->min || v > k->max) {
                ctx_fail(ctx,
                         "[%s] %s: expected an integer in %" PRIu64 "..%" PRIu64 ", got \"%s\"",
                         k->section, k->name, k->min, k->max, value);
                return -EINVAL;
        }
        ctx->cfg->worker_count = (uint32_t)v;
        for (int i = 0; i < CTL_WORKERS_MAX; i++)
                ctx->cfg->worker_cores[i] = -1;
        return 0;
}

static int key_core_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        const char *end;
        uint64_t v;
        int *core = key_ptr(k, ctx->cfg);
        if (strcmp(value, "none") == 0) {
                *core = -1;
                return 0;
        }
        if (u64_parse(value, &end, &v) < 0 || *end != '\0' || v > CTL_CPU_ID_MAX) {
                ctx_fail(ctx, "[%s] %s: expected a CPU id in 0..%d or none, got \"%s\"", k->section,
                         k->name, CTL_CPU_ID_MAX, value);
                return -EINVAL;
        }
        *core = (int)v;
        return 0;
}

static int key_listen_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        struct ctl_config *cfg = ctx->cfg;
        bool admin = k->type == KT_ADMIN;
        struct ctl_listener *l = admin ? NULL : &cfg->listeners[k->aux];
        char host[64];
        uint16_t port;

        if (strcmp(value, "off") == 0) {
                if (admin) {
                        cfg->admin_enabled = false;
                        str_set(cfg->admin_host, sizeof(cfg->admin_host), "127.0.0.1");
                        cfg->admin_port = 8080;
                } else {
                        listener_bind_default(l, (enum ctl_proto)k->aux);
                        l->enabled = false;
                }
                return 0;
        }
        const char *why = hostport_parse(value, true, host, sizeof(host), &port);
        if (why) {
                ctx_fail(ctx, "[%s] %s: %s, got \"%s\"", k->section, k->name, why, value);
                return -EINVAL;
        }
        if (admin) {
                cfg->admin_enabled = true;
                str_set(cfg->admin_host, sizeof(cfg->admin_host), host);
                cfg->admin_port = port;
        } else {
                l->enabled = true;
                str_set(l->host, sizeof(l->host), host);
                l->port = port;
        }
        return 0;
}

static int key_advertised_parse(struct parse_ctx *ctx, const struct key_desc *k, const char *value)
{
        struct ctl_listener *l = &ctx->cfg->listeners[k->aux];
        char host[sizeof(l->advertised_host)];
        uint16_t port;

        if (value[0] == '\0') {
                memset(l->advertised_host, 0, sizeof(l->advertised_host));
                l->advertised_port = 0;
                return 0;
        }
        const char *why = hostport_parse(value, false, host, sizeof(host), &port);
        if (!why && host_is_unspecified(host))
                why = "clients cannot connect to an unspecified address; advertise a host they "
                      "can reach";
        if (why) {
                ctx_fail(ctx, "[%s] %s: %s, got \"%s\"", k->section, k->name, why, value);
                return -EINVAL;
        }
        str_set(l->advertised_host, sizeof(l->advertised_host), host);
        l->advertised_port = port;
        return 0;
}

/* [nats] user.NAME = PASSWORD; a name given twice keeps the last password. */
static int key_user_parse(struct parse_ctx *ctx, const char *key, const char *value)
{
        struct ctl_config *cfg = ctx->cfg;
        const char *name = key + strlen(USER_PREFIX);
        size_t n = strlen(name);
        bool ok = n > 0 && n < sizeof(cfg->nats_users[0].name);
        for (const char *c = name; ok && *c; c++)
                ok = is_name_char(*c) || *c == '@';
        if (!ok) {
                ctx_fail(ctx,
                         "[nats] %s: a user name is 1..%zu letters, digits, '.', '_', '-' or '@'",
                         key, sizeof(cfg->nats_users[0].name) - 1);
                return -EINVAL;
        }
        size_t pn = strlen(value);
        ok = pn > 0 && pn < sizeof(cfg->nats_users[0].password);
        for (const char *c = value; ok && *c; c++)
                ok = (unsigned char)*c > 0x20 && *c != 0x7f;
        if (!ok) {
                ctx_fail(ctx,
                         "[nats] %s: expected a password of 1..%zu bytes without blanks or control "
                         "characters",
                         key, sizeof(cfg->nats_users[0].password) - 1);
                return -EINVAL;
        }
        uint32_t i = 0;
        while (i < cfg->nats_user_count && strcmp(cfg->nats_users[i].name, name) != 0)
                i++;
        if (i == CTL_USERS_MAX) {
                ctx_fail(ctx, "[nats] %s: more than %d users", key, CTL_USERS_MAX);
                return -EINVAL;
        }
        str_set(cfg->nats_users[i].name, sizeof(cfg->nats_users[i].name), name);
        str_set(cfg->nats_users[i].password, sizeof(cfg->nats_users[i].password), value);
        if (i == cfg->nats_user_count)
                cfg->nats_user_count++;
        return 0;
}

static const struct key_desc *key_find(const char *section, const char *name)
{
        for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++)
                if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
                        return &keys[i];
        return NULL;
}

/* inih handler: one call per key; nonzero means success. A key given twice
 * is parsed twice, so the last one wins (also across workers and
 * worker_count). */
static int ctx_key_set(void *user, const char *section, const char *name, const char *value)
{
        struct parse_ctx *ctx = user;
        if (ctx->failed)
                return 0;
        if (!value)
                value = "";
        if (section[0] == '\0') {
                ctx_fail(ctx, "%s: key outside any section", name);
                return 0;
        }
        if (strcmp(section, "nats") == 0 && strncmp(name, USER_PREFIX, strlen(USER_PREFIX)) == 0)
                return key_user_parse(ctx, name, value) == 0;

        const struct key_desc *k = key_find(section, name);
        if (!k) {
                /* reached only for known sections: the reader stops at others */
                ctx_fail(ctx, "[%s] %s: unknown key", section, name);
                return 0;
        }
        int rc = 0;
        switch (k->type) {
        case KT_U32:
        case KT_U64:
                rc = key_int_parse(ctx, k, value);
                break;
        case KT_ENUM:
                rc = key_enum_parse(ctx, k, value);
                break;
        case KT_STR:
                rc = key_str_parse(ctx, k, value);
                break;
        case KT_WORKERS:
                rc = key_workers_parse(ctx, k, value);
                break;
        case KT_WORKER_COUNT:
                rc = key_worker_count_parse(ctx, k, value);
                break;
        case KT_CORE:
                rc = key_core_parse(ctx, k, value);
                break;
        case KT_LISTEN:
        case KT_ADMIN:
                rc = key_listen_parse(ctx, k, value);
                break;
        case KT_ADVERTISED:
                rc = key_advertised_parse(ctx, k, value);
                break;
        }
        return rc == 0;
}

static void __attribute__((format(printf, 3, 4)))
err_set(char *err, size_t err_len, const char *fmt, ...)
{
        if (!err || err_len == 0)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
}

/* Parses into a copy and commits only on success: a bad file leaves cfg as
 * it was. */
static int config_parse(struct ctl_config *cfg, const char *text, size_t len, const char *name,
                        char *err, size_t err_len)
{
        struct ctl_config next = *cfg;
        struct parse_ctx ctx = {
            .cfg = &next,
            .name = name,
            .text = text,
            .len = len,
            .err = err,
            .err_len = err_len,
        };
        if (memchr(text, '\0', len)) {
                err_set(err, err_len, "%s: contains a NUL byte: not a text file", name);
                return -EINVAL;
        }
        int rc = ini_parse_stream(ctx_line_read, &ctx, ctx_key_set, &ctx);
        if (rc == -2) {
                err_set(err, err_len, "%s: out of memory", name);
                return -ENOMEM;
        }
        if (rc > 0 && !ctx.failed) {
                /* inih found a line that is neither a section, a key nor a
                 * comment; it stops calling the reader only at the end. */
                err_set(err, err_len,
                        "%s:%d: syntax error: expected [section], key = value or a comment", name,
                        rc);
                return -EINVAL;
        }
        if (ctx.failed)
                return -EINVAL;
        str_set(next.path, sizeof(next.path), name);
        *cfg = next;
        return 0;
}

int ctl_config_load_string(struct ctl_config *cfg, const char *text, const char *name, char *err,
                           size_t err_len)
{
        SL_ASSERT(cfg && text && name);
        return config_parse(cfg, text, strlen(text), name, err, err_len);
}

int ctl_config_load(struct ctl_config *cfg, const char *path, char *err, size_t err_len)
{
        SL_ASSERT(cfg && path);
        if (strlen(path) >= CTL_PATH_MAX) {
                err_set(err, err_len, "%s: path longer than %d bytes", path, CTL_PATH_MAX - 1);
                return -ENAMETOOLONG;
        }
        FILE *f = fopen(path, "re");
        if (!f) {
                int e = errno;
                err_set(err, err_len, "%s: cannot open: %s", path, strerror(e));
                return -e;
        }
        char *text = malloc(CTL_FILE_BYTES_MAX + 1);
        if (!text) {
                fclose(f);
                err_set(err, err_len, "%s: out of memory", path);
                return -ENOMEM;
        }
        size_t len = fread(text, 1, CTL_FILE_BYTES_MAX + 1, f);
        int rc = 0;
        if (ferror(f)) {
                rc = -EIO;
                err_set(err, err_len, "%s: read error", path);
        } else if (len > CTL_FILE_BYTES_MAX) {
                rc = -EFBIG;
                err_set(err, err_len, "%s: larger than %u bytes: not a config file", path,
                        CTL_FILE_BYTES_MAX);
        }
        fclose(f);
        if (rc == 0)
                rc = config_parse(cfg, text, len, path, err, err_len);
        free(text);
        return rc;
}

/* ------------------------------------------------------------------ */
/* Validation                                                          */

/* Same port on the same address, or on a wildcard address of either: with
 * SO_REUSEPORT on every listener the second bind would succeed and the
 * kernel would spread one port's connections over two protocols. */
static bool binds_clash(const char *host_a, uint16_t port_a, const char *host_b, uint16_t port_b)
{
        if (port_a == 0 || port_a != port_b)
                return false;
        return strcmp(host_a, host_b) == 0 || host_is_unspecified(host_a) ||
               host_is_unspecified(host_b);
}

struct bind_desc {
        const char *what;
        const char *host;
        uint16_t port;
};

static int binds_check(const struct ctl_config *cfg, char *err, size_t err_len, const char *pfx)
{
        struct bind_desc b[CTL_PROTO_COUNT + 1];
        int n = 0;
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                const struct ctl_listener *l = &cfg->listeners[p];
                if (l->enabled)
                        b[n++] = (struct bind_desc){proto_names[p], l->host, l->port};
        }
        if (cfg->admin_enabled)
                b[n++] = (struct bind_desc){"admin listen", cfg->admin_host, cfg->admin_port};
        for (int i = 0; i < n; i++) {
                struct in6_addr a6;
                struct in_addr a4;
                if (inet_pton(AF_INET, b[i].host, &a4) != 1 &&
                    inet_pton(AF_INET6, b[i].host, &a6) != 1) {
                        err_set(err, err_len, "%s[listeners] %s: \"%s\" is not a numeric address",
                                pfx, b[i].what, b[i].host);
                        return -EINVAL;
                }
                for (int j = 0; j < i; j++) {
                        if (binds_clash(b[i].host, b[i].port, b[j].host, b[j].port)) {
                                err_set(err, err_len,
                                        "%s[listeners] %s and %s both bind port %u (%s, %s); use "
                                        "distinct ports or port 0",
                                        pfx, b[j].what, b[i].what, b[i].port, b[j].host, b[i].host);
                                return -EINVAL;
                        }
                }
        }
        for (int p = 0; p < CTL_PROTO_COUNT; p++) {
                const struct ctl_listener *l = &cfg->listeners[p];
                if (host_is_unspecified(l->advertised_host)) {
                        err_set(err, err_len,
                                "%s[listeners] %s_advertised: %s is not an address clients can "
                                "connect to",
                                pfx, proto_names[p], l->advertised_host);
                        return -EINVAL;
                }
                if (!l->advertised_host[0] && l->advertised_port) {
                        err_set(err, err_len,
                                "%s[listeners] %s_advertised: a port without a host (%u)", pfx,
                                proto_names[p], l->advertised_port);
                        return -EINVAL;
                }
        }
        return 0;
}

static int cores_check(const struct ctl_config *cfg, const cpu_set_t *usable, char *err,
                       size_t err_len, const char *pfx)
{
        char usable_text[256];
        cpu_set_format(usable, usable_text, sizeof(usable_text));

        if (cfg->worker_count < 1 || cfg->worker_count > CTL_WORKERS_MAX) {
                err_set(err, err_len, "%s[cores] workers: %" PRIu32 " workers, expected 1..%d", pfx,
                        cfg->worker_count, CTL_WORKERS_MAX);
                return -EINVAL;
        }
        bool pinned = workers_pinned(cfg);
        for (uint32_t i = 0; i < cfg->worker_count; i++) {
                int core = cfg->worker_cores[i];
                if (pinned != (core >= 0)) {
                        err_set(err, err_len,
                                "%s[cores] workers: worker %" PRIu32 " is %s but others are not; "
                                "pin all workers or none",
                                pfx, i, pinned ? "unpinned" : "pinned");
                        return -EINVAL;
                }
                if (core < 0)
                        continue;
                if (core >= CPU_SETSIZE || !CPU_ISSET(core, usable)) {
                        err_set(err, err_len,
                                "%s[cores] workers: core %d (worker %" PRIu32 ") is not online or "
                                "not in this process's CPU affinity (usable: %s)",
                                pfx, core, i, usable_text);
                        return -EINVAL;
                }
                for (uint32_t j = 0; j < i; j++) {
                        if (cfg->worker_cores[j] == core) {
                                err_set(err, err_len,
                                        "%s[cores] workers: core %d is given to worker %" PRIu32
                                        " and worker %" PRIu32 "; each worker needs its own core",
                                        pfx, core, j, i);
                                return -EINVAL;
                        }
                }
        }
        int cc = cfg->control_core;
        if (cc >= 0 && (cc >= CPU_SETSIZE || !CPU_ISSET(cc, usable))) {
                err_set(err, err_len,
                        "%s[cores] control: core %d is not online or not in this process's CPU "
                        "affinity (usable: %s)",
                        pfx, cc, usable_text);
                return -EINVAL;
        }
        return 0;
}

/* Writes one line per way the threads will share cores: legal (CI has two
 * vCPUs) but worth knowing, since a spinning thread then steals from its
 * neighbour. Returns the number of warnings. */
static int config_warnings_write(const struct ctl_config *cfg, const cpu_set_t *usable, FILE *out,
                                 const char *prefix)
{
        int n = 0;
        int usable_count = CPU_COUNT(usable);
        bool shared = false;

        for (uint32_t i = 0; i < cfg->worker_count && i < CTL_WORKERS_MAX; i++) {
                if (cfg->control_core >= 0 && cfg->worker_cores[i] == cfg->control_core) {
                        if (out)
                                fprintf(out,
                                        "%swarning: the control thread shares core %d with worker "
                                        "%" PRIu32 "\n",
                                        prefix, cfg->control_core, i);
                        n++;
                        shared = true;
                }
        }
        if (cfg->worker_count > (uint32_t)usable_count) {
                if (out)
                        fprintf(out,
                                "%swarning: %" PRIu32 " workers on %d usable CPUs: workers share "
                                "cores\n",
                                prefix, cfg->worker_count, usable_count);
                n++;
                shared = true;
        }
        if (shared && cfg->idle == CTL_IDLE_POLL) {
                if (out)
                        fprintf(out,
                                "%swarning: idle = poll on shared cores: a spinning worker starves "
                                "the thread beside it; use adaptive\n",
                                prefix);
                n++;
        }
        return n;
}

int ctl_config_validate(const struct ctl_config *cfg, char *err, size_t err_len, FILE *warn)
{
        SL_ASSERT(cfg);
        cpu_set_t usable;
        char pfx[CTL_PATH_MAX + 2] = "";
        if (cfg->path[0])
                snprintf(pfx, sizeof(pfx), "%s: ", cfg->path);

        if (cfg->mode == CTL_MODE_DPDK && !SL_HAVE_DPDK) {
                err_set(err, err_len,
                        "%smode = dpdk, but this build has no DPDK support (rebuild with "
                        "libdpdk-dev installed, or use mode = kernel)",
                        pfx);
                return -EINVAL;
        }
        struct ctl_dpdk_port ports[CTL_DPDK_PORTS_MAX];
        char why[256];
        int nports = ctl_dpdk_ports_parse(cfg, ports, why, sizeof(why));
        if (nports < 0) {
                err_set(err, err_len, "%s%s", pfx, why);
                return -EINVAL;
        }
        for (int p = 0; cfg->mode == CTL_MODE_DPDK && p < CTL_PROTO_COUNT; p++) {
                if (cfg->listeners[p].enabled && cfg->listeners[p].port == 0) {
                        err_set(err, err_len,
                                "%s[listeners] %s: mode = dpdk needs a fixed port (the DPDK "
                                "ports' TCP stack listens, no kernel picks one)",
                                pfx, ctl_proto_name((enum ctl_proto)p));
                        return -EINVAL;
                }
        }
        if (cfg->mode == CTL_MODE_DPDK && nports == 0) {
                err_set(err, err_len,
                        "%smode = dpdk needs [dpdk] ports (PCI addresses or vdev strings) and "
                        "their addresses",
                        pfx);
                return -EINVAL;
        }
        if (cfg->data_dir[0] != '/') {
                err_set(err, err_len, "%s[server] data_dir: expected an absolute path", pfx);
                return -EINVAL;
        }
        cpus_usable(&usable);
        int rc = cores_check(cfg, &usable, err, err_len, pfx);
        if (rc < 0)
                return rc;
        rc = binds_check(cfg, err, err_len, pfx);
        if (rc < 0)
                return rc;

        const struct ctl_limits *l = &cfg->limits;
        if (l->pinned_bytes_per_conn_max > l->pinned_bytes_per_worker_max) {
                err_set(err, err_len,
                        "%s[limits] pinned_bytes_per_conn_max (%" PRIu64
                        ") is above pinned_bytes_per_worker_max (%" PRIu64 ")",
                        pfx, l->pinned_bytes_per_conn_max, l->pinned_bytes_per_worker_max);
                return -EINVAL;
        }
        if (l->pinned_bytes_per_conn_max < cfg->recv_buffer_bytes) {
                err_set(err, err_len,
                        "%s[limits] pinned_bytes_per_conn_max (%" PRIu64
                        ") is below [net] recv_buffer_bytes (%" PRIu32
                        "): a connection could not hold one receive buffer",
                        pfx, l->pinned_bytes_per_conn_max, cfg->recv_buffer_bytes);
                return -EINVAL;
        }
        if (cfg->nats_token[0] && cfg->nats_user_count > 0) {
                err_set(err, err_len,
                        "%s[nats] token and user.* keys exclude each other: pick one way to "
                        "authenticate",
                        pfx);
                return -EINVAL;
        }
        config_warnings_write(cfg, &usable, warn, "");
        return 0;
}

/* ------------------------------------------------------------------ */
/* Printing                                                            */

static void core_plan_print(const struct ctl_config *cfg, FILE *out)
{
        cpu_set_t usable;
        char text[256];
        cpus_usable(&usable);
        cpu_set_format(&usable, text, sizeof(text));

        fprintf(out, "\n# core plan (%d usable CPUs: %s)\n", CPU_COUNT(&usable), text);
        if (cfg->control_core >= 0)
                fprintf(out, "#   control thread: core %d\n", cfg->control_core);
        else
                fprintf(out, "#   control thread: unpinned (the scheduler places it)\n");
        for (uint32_t i = 0; i < cfg->worker_count && i < CTL_WORKERS_MAX; i++) {
                if (cfg->worker_cores[i] >= 0)
                        fprintf(out, "#   worker %" PRIu32 ": core %d\n", i, cfg->worker_cores[i]);
                else
                        fprintf(out, "#   worker %" PRIu32 ": unpinned\n", i);
        }
        if (cfg->control_core < 0 && workers_pinned(cfg) &&
            cfg->worker_count >= (uint32_t)CPU_COUNT(&usable))
                fprintf(out, "#   note: every usable CPU has a worker; the control thread "
                             "shares theirs\n");
        if (config_warnings_write(cfg, &usable, out, "# ") == 0)
                fprintf(out, "#   no warnings\n");
}

void ctl_config_print(const struct ctl_config *cfg, FILE *out)
{
        SL_ASSERT(cfg && out);
        char value[CTL_VALUE_TEXT_MAX];
        const char *section = "";
        bool pinned = workers_pinned(cfg);

        fprintf(out, "# sluice effective configuration, from %s\n",
                cfg->path[0] ? cfg->path : "built-in defaults");
        for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++) {
                const struct key_desc *k = &keys[i];
                if (strcmp(section, k->section) != 0) {
                        section = k->section;
                        fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
                }
                /* workers and worker_count are two spellings of one setting */
                if (k->flags & KF_ALIAS)
                        continue;
                if ((k->type == KT_WORKERS && !pinned) || (k->type == KT_WORKER_COUNT && pinned))
                        continue;
                key_format(k, cfg, value, sizeof(value));
                fprintf(out, "%s =%s%s\n", k->name, value[0] ? " " : "", value);
        }
        for (uint32_t i = 0; i < cfg->nats_user_count && i < CTL_USERS_MAX; i++)
                fprintf(out, "%s%s = %s\n", USER_PREFIX, cfg->nats_users[i].name,
                        cfg->nats_users[i].password);
        core_plan_print(cfg, out);
        if (cfg->mode == CTL_MODE_DPDK || cfg->dpdk_ports[0])
                ctl_dpdk_plan_print(cfg, out);
}

/* ------------------------------------------------------------------ */
/* Reload                                                              */

static bool workers_differ(const struct ctl_config *a, const struct ctl_config *b)
{
        if (a->worker_count != b->worker_count)
                return true;
        for (uint32_t i = 0; i < a->worker_count && i < CTL_WORKERS_MAX; i++)
                if (a->worker_cores[i] != b->worker_cores[i])
                        return true;
        return false;
}

int ctl_config_reload(struct ctl_config *cur, const struct ctl_config *next, char *err,
                      size_t err_len)
{
        SL_ASSERT(cur && next);
        char a[CTL_VALUE_TEXT_MAX], b[CTL_VALUE_TEXT_MAX];
        char list[1024] = "";
        size_t pos = 0;
        int refused = 0;

        for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++) {
                const struct key_desc *k = &keys[i];
                bool differ;
                const char *name = k->name;
                if (k->flags & (KF_RELOAD | KF_ALIAS) || k->type == KT_WORKER_COUNT)
                        continue;
                if (k->type == KT_WORKERS) {
                        /* one entry for the worker set, named as the file spells it */
                        differ = workers_differ(cur, next);
                        if (!workers_pinned(cur) && !workers_pinned(next))
                                name = "worker_count";
                } else {
                        key_format(k, cur, a, sizeof(a));
                        key_format(k, next, b, sizeof(b));
                        differ = strcmp(a, b) != 0;
                }
                if (!differ)
                        continue;
                if (pos < sizeof(list))
                        pos += (size_t)snprintf(list + pos, sizeof(list) - pos, "%s[%s] %s",
                                                refused ? ", " : "", k->section, name);
                refused++;
        }
        if (refused) {
                err_set(err, err_len, "cannot change at run time: %s", list);
                return -EPERM;
        }

        cur->log_level = next->log_level;
        cur->limits = next->limits;
        cur->nats_ping_interval_ms = next->nats_ping_interval_ms;
        cur->nats_ping_max_outstanding = next->nats_ping_max_outstanding;
        cur->nats_auth_timeout_ms = next->nats_auth_timeout_ms;
        cur->kafka_idle_ms = next->kafka_idle_ms;
        memcpy(cur->nats_token, next->nats_token, sizeof(cur->nats_token));
        cur->nats_user_count = next->nats_user_count;
        memcpy(cur->nats_users, next->nats_users, sizeof(cur->nats_users));
        return 0;
}
