/* The effective configuration of one sluiced process: parsed from one INI
 * file (libinih), every key with a default. Read by the control thread and,
 * read-only after start, by workers. Reloadable keys are copied into workers
 * through their control ring on SIGHUP. */
#ifndef CTL_CONFIG_H
#define CTL_CONFIG_H

#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

#define CTL_WORKERS_MAX    64
#define CTL_LISTENERS_MAX  8
#define CTL_USERS_MAX      32
#define CTL_PATH_MAX       512
#define CTL_DPDK_PORTS_MAX 4

enum ctl_mode { CTL_MODE_KERNEL, CTL_MODE_DPDK };
enum ctl_idle { CTL_IDLE_POLL, CTL_IDLE_ADAPTIVE, CTL_IDLE_SLEEP };
enum ctl_net_backend { CTL_NET_AUTO, CTL_NET_URING, CTL_NET_EPOLL, CTL_NET_CHAOS };
enum ctl_log_level { CTL_LOG_ERROR, CTL_LOG_WARN, CTL_LOG_INFO, CTL_LOG_DEBUG };

/* Protocols a listener can serve. TEST is the foundation's line-echo
 * protocol used by integration tests of the runtime itself. */
enum ctl_proto { CTL_PROTO_NATS, CTL_PROTO_KAFKA, CTL_PROTO_AMQP, CTL_PROTO_TEST, CTL_PROTO_COUNT };

struct ctl_listener {
        bool enabled;
        char host[64];             /* numeric IPv4/IPv6 address, e.g. 127.0.0.1 or :: */
        uint16_t port;             /* 0 = let the kernel choose; the bound port is published */
        char advertised_host[256]; /* empty = derive from host (never 0.0.0.0) */
        uint16_t advertised_port;  /* 0 = the bound port */
};

struct ctl_limits {
        uint32_t connections_max;            /* total, all protocols */
        uint32_t connections_per_ip_max;     /* 0 = unlimited */
        uint32_t frame_bytes_max;            /* largest frame/payload a client may send */
        uint32_t control_line_bytes_max;     /* NATS control line */
        uint32_t inflight_requests_max;      /* per connection */
        uint64_t pending_response_bytes_max; /* outbound bytes queued per connection */
        uint64_t pinned_bytes_per_conn_max;  /* receive buffers held by one connection */
        uint64_t pinned_bytes_per_worker_max;
        uint32_t partial_frame_timeout_ms; /* a frame must complete within this */
        uint32_t idle_timeout_ms;          /* 0 = never */
        uint32_t write_deadline_ms;        /* slow consumer: pending output older than this */
        uint32_t subscriptions_max;        /* per connection (NATS), 0 = unlimited */
        /* AMQP resource alarms: publishers are blocked while the messages
         * held in queues exceed this (0: 40% of physical memory) ... */
        uint64_t amqp_memory_high_watermark_bytes;
        /* ... or the data directory's free space is below this (0: off) */
        uint64_t amqp_disk_free_limit_bytes;
        /* largest AMQP message body accepted (406 above); a delivery must
         * also fit pending_response_bytes_max / 2 */
        uint64_t amqp_message_bytes_max;
};

/* One DPDK port as [dpdk] ports and addresses describe it. */
struct ctl_dpdk_port {
        char dev[128];      /* PCI address (0000:03:00.0) or vdev string (net_tap0,iface=x) */
        bool is_vdev;       /* a vdev: passed to the EAL as --vdev */
        uint32_t ip;        /* host byte order */
        uint8_t prefix_len; /* netmask length */
        uint32_t gateway;   /* host byte order, inside the prefix; 0 = on-link peers only */
};

struct ctl_user {
        char name[64];
        char password[128];
};

struct ctl_config {
        char path[CTL_PATH_MAX]; /* file it was read from, "" for defaults */

        /* [server] */
        enum ctl_mode mode;
        char data_dir[CTL_PATH_MAX];
        char name[64];
        enum ctl_log_level log_level;
        /* deleted log segments kept per partition/queue for reuse
         * (storage's log_config.recycle_segments, 0..LOG_RECYCLE_MAX) */
        uint32_t recycle_segments;

        /* [cores] */
        uint32_t worker_count;
        int worker_cores[CTL_WORKERS_MAX]; /* -1 = not pinned */
        int control_core;                  /* -1 = not pinned */
        enum ctl_idle idle;
        uint32_t idle_spin_us; /* adaptive: spin this long before sleeping */

        /* [net] */
        enum ctl_net_backend net_backend;
        uint32_t chaos_seed;   /* chaos backend only */
        uint32_t recv_buffers; /* per worker, provided-buffer ring entries */
        uint32_t recv_buffer_bytes;
        uint32_t ring_slots; /* per ordered worker pair */

        /* [dpdk]: read only in mode = dpdk (and by --check) */
        char dpdk_eal_args[256];      /* extra EAL arguments, blank-separated */
        char dpdk_file_prefix[64];    /* --file-prefix: lets several DPDK processes coexist */
        unsigned dpdk_hugepages;      /* 0: --no-huge with dpdk_memory_mb of ordinary memory */
        uint32_t dpdk_memory_mb;      /* -m */
        char dpdk_ports[512];         /* blank-separated PCI addresses or vdev strings */
        char dpdk_addresses[256];     /* blank-separated IPv4/prefix, one per port */
        char dpdk_gateway[64];        /* IPv4 next hop for off-link peers, "" = none */
        uint32_t dpdk_rx_descriptors; /* per queue */
        uint32_t dpdk_tx_descriptors;
        uint32_t dpdk_mbufs;            /* per port pool */
        uint32_t dpdk_syn_backlog;      /* half-open connections per worker */
        uint32_t dpdk_tcp_buffer_bytes; /* receive and send buffer per connection */
        uint32_t dpdk_mtu;              /* IP MTU set on every port; 0 = the port's own */
        /* TCP keepalive of every connection: idle time before the first
         * probe (0 = none), then probes this far apart, this many
         * unanswered before the connection is dropped. */
        uint32_t dpdk_keepalive_idle_ms;
        uint32_t dpdk_keepalive_interval_ms;
        uint32_t dpdk_keepalive_probes;
        /* Tests only (there is no netem here): frames dropped in both
         * directions and received frames swapped with the next, per mille. */
        uint32_t dpdk_loss_per_mille;
        uint32_t dpdk_reorder_per_mille;
        /* Tests only: received frames held this long (plus up to jitter)
         * before the stack sees them, netem's delay. */
        uint32_t dpdk_delay_us;
        uint32_t dpdk_jitter_us;

        /* [listeners] */
        struct ctl_listener listeners[CTL_PROTO_COUNT];

        /* [admin] */
        bool admin_enabled;
        char admin_host[64];
        uint16_t admin_port;

        /* [limits] */
        struct ctl_limits limits;

        /* [nats] */
        uint32_t nats_ping_interval_ms;
        uint32_t nats_ping_max_outstanding;
        uint32_t nats_auth_timeout_ms;
        char nats_token[128];
        uint32_t nats_user_count;
        struct ctl_user nats_users[CTL_USERS_MAX];

        /* [kafka] */
        unsigned kafka_auto_create;        /* 1: Metadata and Produce create unknown topics */
        uint32_t kafka_default_partitions; /* auto-created topics, CreateTopics with -1 */
        uint32_t kafka_idle_ms;            /* connections.max.idle.ms; 0 = never */
        /* producer.id.expiration.ms: idempotence state of a producer idle this
         * long is forgotten (0 = only evicted by the per-partition cap) */
        uint32_t kafka_producer_id_expiration_ms;
        /* Recent-data cache per worker (dataplane/kafka/README.md): produced
         * batches are kept in memory up to this many bytes; 0 = off,
         * CTL_KAFKA_CACHE_AUTO ("auto", the default) = min(RAM / 8 /
         * worker_count, 1 GiB), resolved by the workers at start. */
        uint64_t kafka_cache_bytes;
        /* Topic defaults for topics created without their own
         * retention.ms / retention.bytes / segment.bytes (Kafka's
         * log.retention.ms, log.retention.bytes, log.segment.bytes);
         * CTL_KAFKA_UNLIMITED (-1 in the file) = no limit. Read at start. */
        uint64_t kafka_retention_ms;
        uint64_t kafka_retention_bytes;
        uint64_t kafka_segment_bytes;
        /* log.roll.ms: a segment this old is closed at the next append, so
         * time retention can remove a slow topic's data too. */
        uint64_t kafka_segment_ms;
        /* How often a worker applies retention to its partitions (Kafka's
         * log.retention.check.interval.ms). */
        uint32_t kafka_retention_check_interval_ms;
};

#define CTL_KAFKA_CACHE_AUTO UINT64_MAX
#define CTL_KAFKA_UNLIMITED  UINT64_MAX
/* Kafka's log.retention.hours=168; segments smaller than Kafka's 1 GiB
 * suit a broker with many small topics. */
#define CTL_KAFKA_RETENTION_MS_DEFAULT  (7ull * 24 * 3600 * 1000)
#define CTL_KAFKA_SEGMENT_BYTES_DEFAULT (256ull << 20)
#define CTL_KAFKA_SEGMENT_MS_DEFAULT    (7ull * 24 * 3600 * 1000) /* log.roll.hours=168 */

/* Fills cfg with every default. */
void ctl_config_defaults(struct ctl_config *cfg);

/* Parses path over the defaults already in cfg. On error returns -EINVAL
 * and writes one line naming file, line and key into err; -errno when the
 * file cannot be read. cfg is left unchanged on any error. A key given
 * twice: the last one wins. */
int ctl_config_load(struct ctl_config *cfg, const char *path, char *err, size_t err_len);

/* Parses an INI text held in memory (tests). name is used in messages. */
int ctl_config_load_string(struct ctl_config *cfg, const char *text, const char *name, char *err,
                           size_t err_len);

/* Cross-key checks after loading: cores online (and in the CPU affinity
 * sluiced was started with; call before pinning threads), distinct ports,
 * ... Returns -EINVAL with a message, 0 otherwise. Warnings (threads
 * sharing cores) go to warn (may be NULL). */
int ctl_config_validate(const struct ctl_config *cfg, char *err, size_t err_len, FILE *warn);

/* Prints the effective configuration as INI and the core plan. The INI
 * part re-parses to the same config, so secrets (token, passwords) are
 * printed as they are: never serve this output over HTTP. */
void ctl_config_print(const struct ctl_config *cfg, FILE *out);

/* SIGHUP: applies the reloadable keys (log level, limits, nats ping/auth
 * settings, token and users) of next to cur. Keys that differ but cannot
 * change at run time make it fail with -EPERM and their names listed in
 * err; nothing is applied then. */
int ctl_config_reload(struct ctl_config *cur, const struct ctl_config *next, char *err,
                      size_t err_len);

/* Splits [dpdk] ports and addresses into ports[] (at most
 * CTL_DPDK_PORTS_MAX). Returns the count (0 when none is configured) or
 * -EINVAL with a message naming the bad entry. */
int ctl_dpdk_ports_parse(const struct ctl_config *cfg, struct ctl_dpdk_port *ports, char *err,
                         size_t err_len);

/* The EAL argument vector [dpdk] describes (argv[0] included), for the
 * given worker cores: one lcore per worker. Strings live in buf. Returns
 * argc or -E2BIG. */
int ctl_dpdk_eal_argv(const struct ctl_config *cfg, const struct ctl_dpdk_port *ports, int nports,
                      char *buf, size_t buf_len, char **argv, int argv_max);

/* `--check`'s DPDK part: hugepages free, each port and its state (PCI
 * device bound to vfio-pci?), the lcore of each worker, the EAL line. */
void ctl_dpdk_plan_print(const struct ctl_config *cfg, FILE *out);

const char *ctl_proto_name(enum ctl_proto p);

/* "error", "warn", "info", "debug": the spelling the config file uses. */
const char *ctl_log_level_name(enum ctl_log_level level);

/* Parses a byte count as the config file writes it: decimal digits with an
 * optional suffix k/K, m/M or g/G (powers of 1024). Returns 0, -EINVAL when
 * text is not such a number, -ERANGE when it exceeds max. */
int ctl_bytes_parse(const char *text, uint64_t max, uint64_t *out);

#endif
