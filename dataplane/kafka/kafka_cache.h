/* The recent-data cache of a worker's Kafka partitions: the owner copies
 * every batch it appends into the partition's tail block, so a consumer that
 * falls behind storage's in-memory window still reads from memory instead of
 * O_DIRECT disk. Blocks come from a per-worker byte budget, allocated on
 * first use and reused least recently used first across all partitions.
 * Pure state (no storage, no I/O): unit-tested in tests/unit/kafka. */
#ifndef KAFKA_CACHE_H
#define KAFKA_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A block holds whole batches of one partition with continuous offsets; a
 * batch that does not fit starts the next block. 2 MiB: twice
 * the largest frame (limits.frame_bytes_max default 1 MiB), and fine enough
 * that eviction does not drop much more than it must. */
#define KAFKA_CACHE_BLOCK_BYTES (2u << 20)
#define KAFKA_CACHE_NONE        UINT32_MAX

/* A cached range of one partition: whole batches data[0 .. len), offsets
 * first .. last. Readers' caches (kafka_part.c) are views too, so the fetch
 * path has one lookup and one copy routine for both. */
struct kafka_cview {
        const uint8_t *data;
        uint32_t len;
        int64_t first, last;
        uint64_t used; /* clock of the last hit or write: least recent is reused */
};

struct kafka_cblock {
        struct kafka_cview cv;
        uint8_t *mem; /* NULL until first used */
        uint32_t pid; /* KAFKA_CACHE_NONE: holds nothing */
        uint32_t gen; /* bumped on every reuse: stale kafka_cache_part.fill */
        bool filling; /* a partition's tail block: its appends go on here */
};

/* Per partition (in struct kafka_part): the tail block appends go to, and
 * the block the last hit was in (a sequential consumer's next look-up). */
struct kafka_cache_part {
        uint32_t fill, fill_gen;
        uint32_t hint;
};

/* Is what a block holds of partition pid (up to offset `last`) gone from
 * the log (retention), or the partition gone? Such blocks are reused first. */
typedef bool (*kafka_cache_dead_fn)(void *ctx, uint32_t pid, int64_t last);

struct kafka_cache {
        struct kafka_cblock *blocks;
        uint32_t nblocks; /* the budget in blocks; 0 = write-through off */
        uint64_t clock;
        kafka_cache_dead_fn dead;
        void *dead_ctx;
        /* for /metrics (read by the control thread) */
        _Atomic uint64_t bytes; /* block memory allocated */
        _Atomic uint64_t hits, evictions;
};

/* budget_bytes is rounded down to whole blocks; no block memory yet. */
int kafka_cache_init(struct kafka_cache *c, uint64_t budget_bytes, kafka_cache_dead_fn dead,
                     void *dead_ctx);
void kafka_cache_fini(struct kafka_cache *c);
void kafka_cache_part_init(struct kafka_cache_part *cp);

/* After a successful append of `batch` (validated, len bytes) at `base`:
 * copies it into the partition's tail block with baseOffset and
 * partitionLeaderEpoch stamped as storage stamps them, so cached bytes are
 * the log's bytes. No allocation except a block's first use. */
void kafka_cache_append(struct kafka_cache *c, struct kafka_cache_part *cp, uint32_t pid,
                        const uint8_t *batch, uint32_t len, int64_t base, int32_t leader_epoch);

/* The block holding `offset` of partition pid, or NULL. hit: the caller
 * answers from it (counted, and the block becomes the most recently used);
 * else only a look (read-ahead planning). */
struct kafka_cblock *kafka_cache_find(struct kafka_cache *c, struct kafka_cache_part *cp,
                                      uint32_t pid, int64_t offset, bool hit);

/* Drops every block of pid (appends start a new block). release: give the
 * memory back (topic deleted), else keep it for reuse. */
void kafka_cache_forget(struct kafka_cache *c, struct kafka_cache_part *cp, uint32_t pid,
                        bool release);

#endif
