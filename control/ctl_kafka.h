/* The Kafka topic registry on the control thread and what it shares with the
 * workers: an immutable snapshot of topics and partition placement, published
 * through the rings and freed once every worker has moved past it, and the
 * ring messages between the Kafka front-end and the registry. */
#ifndef CTL_KAFKA_H
#define CTL_KAFKA_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "meta.h"
#include "sl_mbox.h"

struct ctl_plane;

/* Partition ids ("pid") are process-wide and stable for the process's life:
 * a worker keeps its open logs in an array indexed by them. */
#define CTL_KAFKA_PIDS_MAX        4096
#define CTL_KAFKA_TOPIC_PARTS_MAX 1024

/* Ring messages of the Kafka range (SL_MSG_KAFKA .. +31). */
enum ctl_kafka_msg {
        /* control -> worker request: a.ptr[0] = const struct ctl_kafka_snap *.
         * The worker switches to it (opening the partitions placed on it)
         * and replies; the control thread frees a snapshot once every
         * worker has acknowledged a newer one. */
        CTL_KAFKA_MSG_SNAP = SL_MSG_KAFKA,
        /* worker -> control request: create a topic. a.ptr[0] = name (not
         * NUL-terminated, borrowed until the reply), u32 = name length,
         * i64[1] = partitions (<= 0: the default), u64[2] = META_TOPIC_*
         * flags (topic configs), ptr[3] = const struct ctl_kafka_topic_cfg *
         * (the topic's own retention and segment values, borrowed until the
         * reply; NULL = broker defaults). Reply: u32 = Kafka error
         * code; sent once every worker has the snapshot with the topic. */
        CTL_KAFKA_MSG_CREATE,
        /* worker -> worker (owner) request, see kafka_internal.h */
        CTL_KAFKA_MSG_POP,
        CTL_KAFKA_MSG_WAIT,
        /* worker -> control request: a consumer-group API. a.ptr[0] =
         * struct ctl_kafka_gcall *, lent with its arena until the reply;
         * the control thread builds the response in it (ctl_kafka_group.c). */
        CTL_KAFKA_MSG_GROUP,
        /* worker -> control request: delete a topic; like CREATE (a.ptr[0]
         * = name, u32 = length). Answered once every worker has dropped its
         * partitions and the directories are gone. */
        CTL_KAFKA_MSG_DELETE,
};

struct kafka_msg;
struct kafka_arena;

struct ctl_kafka_gcall {
        int16_t api_key, api_version;
        const struct kafka_msg *req; /* decoded request, read only */
        struct kafka_msg *resp;      /* built by the control thread; desc NULL = close */
        struct kafka_arena *arena;
        const uint8_t *client_id;
        int32_t client_id_len;
};

struct ctl_kafka_part {
        uint16_t worker;
        uint32_t pid;
};

/* The configs a topic may set for itself at CreateTopics; the ones it
 * does not set follow the broker's [kafka] defaults, also when those
 * change later (as in Kafka, where only overrides are stored). Which ones
 * it set is kept in the topic record's flags (META_TOPIC_* is bit 0 of
 * that word; the bits below are Kafka's own). */
#define CTL_KAFKA_SET_RETENTION_MS    (1u << 8)
#define CTL_KAFKA_SET_RETENTION_BYTES (1u << 9)
#define CTL_KAFKA_SET_SEGMENT_BYTES   (1u << 10)
#define CTL_KAFKA_SET_TIMESTAMP_TYPE  (1u << 11)
#define CTL_KAFKA_SET_SEGMENT_MS      (1u << 12)
#define CTL_KAFKA_SET_MASK            (0x1fu << 8)
struct ctl_kafka_topic_cfg {
        uint32_t set; /* CTL_KAFKA_SET_* */
        int64_t retention_ms, retention_bytes, segment_bytes, segment_ms;
};

/* Where a topic config's value comes from (DescribeConfigs config_source). */
enum ctl_kafka_cfg_source {
        CTL_KAFKA_SRC_TOPIC = 1,   /* DYNAMIC_TOPIC_CONFIG: set at CreateTopics */
        CTL_KAFKA_SRC_STATIC = 4,  /* STATIC_BROKER_CONFIG: [kafka] in the config file */
        CTL_KAFKA_SRC_DEFAULT = 5, /* DEFAULT_CONFIG */
};

struct ctl_kafka_topic {
        char name[META_NAME_MAX + 1];
        uint16_t name_len;
        uint8_t uuid[16];
        uint32_t nparts;
        struct ctl_kafka_part *parts;
        struct log_config cfg; /* the topic's own values over the broker's defaults */
        uint32_t set;          /* CTL_KAFKA_SET_*: which values are the topic's own */
        bool log_append_time;  /* message.timestamp.type=LogAppendTime */
        /* ctl_kafka_cfg_source of each */
        uint8_t src_retention_ms, src_retention_bytes, src_segment_bytes, src_segment_ms;
};

/* Immutable once published. */
struct ctl_kafka_snap {
        uint64_t gen;
        uint32_t ntopics;
        struct ctl_kafka_topic *topics;
        uint32_t hash_mask; /* open addressing over topic names: index + 1, 0 = empty */
        uint32_t *hash;
        uint32_t *id_hash;               /* the same over topic ids (Fetch v13+, DeleteTopics v6) */
        struct ctl_kafka_snap *next_old; /* control thread: list of published snapshots */
};

/* Topic by name, or NULL (any thread holding the snapshot). */
const struct ctl_kafka_topic *ctl_kafka_snap_find(const struct ctl_kafka_snap *s, const char *name,
                                                  uint32_t len);
const struct ctl_kafka_topic *ctl_kafka_snap_find_id(const struct ctl_kafka_snap *s,
                                                     const uint8_t uuid[16]);

/* Control thread hooks (ctl_plane.c). init opens the metadata log under the
 * data directory; poll runs every loop iteration and returns true while it
 * has work in flight (the loop then does not sleep); on_msg returns true
 * when it handled a message of the Kafka range. */
int ctl_kafka_init(struct ctl_plane *cp, char *err, size_t err_len);
bool ctl_kafka_poll(struct ctl_plane *cp);
bool ctl_kafka_on_msg(struct ctl_plane *cp, const struct sl_msg *m);
void ctl_kafka_fini(struct ctl_plane *cp);

/* For ctl_kafka_group.c (control thread only). */
struct ctl_plane *ctl_kafka_plane(void);
struct meta_log *ctl_kafka_meta(void);
const struct ctl_kafka_snap *ctl_kafka_snap_current(void);
/* CreatePartitions: answered (CTL_KAFKA_MSG_GROUP reply to ep/cookie) once
 * the grown topics are durable and every worker serves them. */
void ctl_kafka_create_partitions(struct ctl_plane *cp, struct ctl_kafka_gcall *c, uint16_t ep,
                                 uint64_t cookie);
void ctl_kafka_group_call(struct ctl_plane *cp, const struct sl_msg *m, uint64_t now_ms);
void ctl_kafka_group_poll(struct ctl_plane *cp, uint64_t now_ms);
/* True while OffsetCommits wait for the metadata log (the loop then spins). */
bool ctl_kafka_group_busy(void);
void ctl_kafka_group_fini(void);

/* Published by the owning worker of each partition (relaxed stores, one
 * writer per partition id), read by the control thread for /metrics: the
 * high watermark after each acknowledged append, the log end offset
 * after each append and the log start offset at open and after each
 * retention check. No lock or ring on the produce path. One cache line
 * per partition: neighbouring ids are placed on different workers, which
 * would otherwise bounce a shared line between cores on every append
 * (256 KiB for CTL_KAFKA_PIDS_MAX instead of 64 KiB). */
struct ctl_kafka_offsets {
        _Atomic int64_t hw, end, start;
} sl_cacheline_aligned;
extern struct ctl_kafka_offsets ctl_kafka_published[CTL_KAFKA_PIDS_MAX];

struct ctl_text;
/* Control thread: consumer lag per group and partition (high watermark -
 * committed offset), committed offsets, and each partition's high
 * watermark and log end, as Prometheus text. */
void ctl_kafka_metrics(struct ctl_text *t);

/* Topic configs from CreateTopics (name, value as Kafka strings; value
 * NULL = a null value): 0 when applied to *cfg (retention.ms,
 * retention.bytes, segment.bytes, segment.ms, message.timestamp.type into *flags,
 * cleanup.policy=delete) or ignored (a key this broker does not act on),
 * else Kafka's INVALID_CONFIG (40) and a static message. */
int16_t ctl_kafka_topic_config_parse(const char *name, int32_t name_len, const char *value,
                                     int32_t value_len, struct ctl_kafka_topic_cfg *cfg,
                                     uint32_t *flags, const char **msg);

struct ctl_config;
/* The broker's topic defaults ([kafka] retention_ms, retention_bytes,
 * segment_bytes, segment_ms) as a log config. */
void ctl_kafka_log_config(const struct ctl_config *c, struct log_config *out);
/* A topic's effective config: its own values (`stored`, those `flags`
 * marks CTL_KAFKA_SET_*) over the broker's defaults, and each value's
 * source, into t->cfg, t->set, t->log_append_time and t->src_*. */
void ctl_kafka_topic_resolve(const struct ctl_config *c, const struct log_config *stored,
                             uint32_t flags, struct ctl_kafka_topic *t);

/* Kafka's topic name rule: 1..249 of [a-zA-Z0-9._-], not "." or "..". */
bool ctl_kafka_topic_name_valid(const char *name, uint32_t len);

#endif
