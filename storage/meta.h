/* The metadata log: the control thread's durable registry of topics (with
 * stable UUIDs and config), partition placement and committed consumer
 * offsets. Append-only CRC-checked records, group-committed through the
 * control thread's own io_uring, replayed at open, snapshotted by meta_poll
 * when large.
 * Record types for queues, exchanges, bindings and users come later: every
 * record carries a type and a version, and replay skips types it does not
 * know. */
#ifndef META_H
#define META_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#include "log.h"

enum meta_rec_type {
        META_REC_SNAP_BEGIN = 1, /* gen u64 */
        META_REC_SNAP_END = 2,   /* records u64 */
        META_REC_TOPIC = 3,
        META_REC_TOPIC_DELETE = 4,
        META_REC_PLACEMENT = 5,
        META_REC_OFFSET = 6,
        META_REC_PRODUCER_IDS = 7, /* i64: producer ids below it may have been issued */
        META_REC_GROUP_DELETE = 8, /* str: every committed offset of the group goes */
        /* 16..: front-ends' durable objects */
        META_REC_DEF = 16, /* key str, value len u32, value (len 0 deletes) */
};

#define META_NAME_MAX 249 /* Kafka's topic name limit */

struct meta_topic {
        uint8_t uuid[16];
        char name[META_NAME_MAX + 1];
        uint32_t partitions;
        struct log_config cfg; /* durability, flush, segment and retention keys */
        int32_t *worker;       /* placement per partition, -1 = not placed */
        bool deleted;
        uint32_t flags; /* META_TOPIC_* (protocol-level topic configs) */
};

/* Kafka message.timestamp.type=LogAppendTime: the broker stamps batches. */
#define META_TOPIC_LOG_APPEND_TIME 1u

struct meta_log;
/* res: 0 once the record is durable, else -errno. */
typedef void (*meta_cb)(void *ctx, int res);

/* Open (creating) the metadata directory and replay it. io == NULL: the
 * log creates its own io_uring. Returns NULL and *err on failure. */
struct meta_log *meta_open(const char *dir, struct log_io *io, int *err);
/* Close after meta_drain(). */
void meta_close(struct meta_log *m);
/* Drop without I/O (after a simulated power cut). */
void meta_abandon(struct meta_log *m);

/* Mutations apply to the in-memory state at once and call cb when the
 * record is durable; the caller acts on disk (e.g. creates partition
 * directories) only after that: record first, then directories. */
int meta_topic_create(struct meta_log *m, const char *name, uint32_t partitions,
                      const struct log_config *cfg, meta_cb cb, void *ctx,
                      const struct meta_topic **out);
/* The same with META_TOPIC_* flags. */
int meta_topic_create_flags(struct meta_log *m, const char *name, uint32_t partitions,
                            const struct log_config *cfg, uint32_t flags, meta_cb cb, void *ctx,
                            const struct meta_topic **out);
int meta_topic_delete(struct meta_log *m, const uint8_t uuid[16], meta_cb cb, void *ctx);
/* Grow a topic to `partitions` (more than it has; the new ones unplaced):
 * a TOPIC record with the new count. -EINVAL for no growth, -ENOENT. */
int meta_topic_grow(struct meta_log *m, const uint8_t uuid[16], uint32_t partitions, meta_cb cb,
                    void *ctx);
int meta_placement_set(struct meta_log *m, const uint8_t uuid[16], uint32_t partition,
                       int32_t worker, meta_cb cb, void *ctx);
int meta_offset_commit(struct meta_log *m, const char *group, const uint8_t uuid[16],
                       uint32_t partition, int64_t offset, meta_cb cb, void *ctx);
/* Kafka producer ids: everything below the high-water mark may have been
 * handed out, so after a crash ids start there. A caller reserves a block
 * (one record per block, not per id) and hands out an id only once the
 * record covering it is durable. */
int64_t meta_producer_id_hwm(const struct meta_log *m);
int meta_producer_id_reserve(struct meta_log *m, int64_t hwm, meta_cb cb, void *ctx);
/* Remove every committed offset of a group (Kafka DeleteGroups). */
int meta_group_delete(struct meta_log *m, const char *group, meta_cb cb, void *ctx);
bool meta_group_has_offsets(const struct meta_log *m, const char *group);
/* Walk committed offsets by slot (0 .. meta_offset_slots()): 0 and the
 * entry, or -ENOENT for an empty slot. Pointers valid until the next
 * mutation. */
uint32_t meta_offset_slots(const struct meta_log *m);
int meta_offset_at(const struct meta_log *m, uint32_t slot, const char **group,
                   const uint8_t **uuid, uint32_t *partition, int64_t *offset);
/* 0 and the offset, or -ENOENT. */
int meta_offset_get(const struct meta_log *m, const char *group, const uint8_t uuid[16],
                    uint32_t partition, int64_t *offset);

const struct meta_topic *meta_topic_find(const struct meta_log *m, const char *name);
const struct meta_topic *meta_topic_by_uuid(const struct meta_log *m, const uint8_t uuid[16]);
uint32_t meta_topic_count(const struct meta_log *m);
const struct meta_topic *meta_topic_at(const struct meta_log *m, uint32_t i);

/* Definitions: a key -> value store for the durable objects of a front-end
 * (AMQP exchanges, queues, bindings), which alone knows what the bytes mean.
 * Keys are C strings up to 4095 bytes; len 0 deletes the key. Applied at
 * once; cb when durable, as for the other mutations. */
int meta_def_put(struct meta_log *m, const char *key, const void *val, uint32_t len, meta_cb cb,
                 void *ctx);
uint32_t meta_def_count(const struct meta_log *m);
/* The i-th slot: its key (NULL for a deleted one) and value. */
const char *meta_def_at(const struct meta_log *m, uint32_t i, const uint8_t **val, uint32_t *len);

/* Group commit step, once per control-loop iteration; never blocks. */
int meta_poll(struct meta_log *m);
/* Poll until every appended record is durable (blocks in the io). */
int meta_drain(struct meta_log *m);
/* Bytes in the current log file (snapshot when this grows large). */
uint64_t meta_log_bytes(const struct meta_log *m);
/* Write the whole state to a new snapshot (temp file, fdatasync, rename,
 * directory fsync) and start an empty log. Synchronous; -EBUSY while a
 * round is being written or synced. Records appended but not yet written
 * are part of the snapshot: their callbacks run (with 0) once it is
 * durable. */
int meta_snapshot(struct meta_log *m);
/* meta_poll snapshots by itself once the log passes `bytes` (and 4x the
 * last snapshot's size); 0 turns it off. META_SNAPSHOT_BYTES by default. */
#define META_SNAPSHOT_BYTES (16u << 20)
void meta_set_snapshot_bytes(struct meta_log *m, uint64_t bytes);
uint64_t meta_snapshot_count(const struct meta_log *m);

/* "<uuid hex>-<partition>": partition directories are named by topic UUID,
 * so a deleted and re-created topic never meets old segments. */
void meta_partition_dirname(const struct meta_topic *t, uint32_t partition, char *buf, size_t n);
/* Create (idempotently) the directory of every live partition under
 * topics_dir and remove every directory no record names. Returns the number
 * removed, or -errno. */
int meta_dirs_sync(const struct meta_log *m, const char *topics_dir);

#endif
