/* Shared between the Kafka front-end's files: per-worker state, requests in
 * flight and partition operations ("pops") that run on the partition's
 * owning worker, locally or through the rings. */
#ifndef KAFKA_INTERNAL_H
#define KAFKA_INTERNAL_H

#include "ctl_kafka.h"
#include "kafka_cache.h"
#include "kafka_codec.h"
#include "kafka_fsession.h"
#include "kafka_producer.h"
#include "log.h"
#include "sl_worker.h"

#define KAFKA_REQS_PER_WORKER 128
#define KAFKA_ARENA_BYTES     (256u << 10)
#define KAFKA_CONN_INFLIGHT   32 /* ring size; limits.inflight_requests_max caps below it */
#define KAFKA_READERS         4  /* concurrent partition reads per owner */
/* Bytes one disk read asks for (more than any fetch takes): the rest serves
 * the partition's next fetches from the reader's cache. */
#define KAFKA_READ_AHEAD_BYTES (4u << 20)
#define KAFKA_READ_AHEAD_DEPTH 2 /* caches read ahead of a sequential consumer */
#define KAFKA_WAITERS          1024
/* The epoch storage stamps into every batch (log_partition_open): the cache
 * stamps the same, so cached bytes are the log's bytes. */
#define KAFKA_LEADER_EPOCH 0

/* Kafka error codes used here. */
enum {
        KERR_OFFSET_OUT_OF_RANGE = 1,
        KERR_CORRUPT_MESSAGE = 2,
        KERR_UNKNOWN_TOPIC_OR_PARTITION = 3,
        KERR_NOT_LEADER = 6,
        KERR_MESSAGE_TOO_LARGE = 10,
        KERR_INVALID_TOPIC = 17,
        KERR_UNSUPPORTED_VERSION = 35,
        KERR_TOPIC_ALREADY_EXISTS = 36,
        KERR_INVALID_PARTITIONS = 37,
        KERR_INVALID_CONFIG = 40,
        KERR_OUT_OF_ORDER_SEQUENCE = 45,
        KERR_INVALID_PRODUCER_EPOCH = 47,
        KERR_INVALID_REQUEST = 42,
        KERR_KAFKA_STORAGE_ERROR = 56,
        KERR_FETCH_SESSION_ID_NOT_FOUND = 70,
        KERR_INVALID_FETCH_SESSION_EPOCH = 71,
        KERR_INVALID_RECORD = 87,
        KERR_UNKNOWN_TOPIC_ID = 100,
        KERR_UNKNOWN_SERVER_ERROR = -1,
};

enum kafka_pop_op {
        KAFKA_POP_APPEND = 1,
        KAFKA_POP_READ,
        KAFKA_POP_OFFSET,
        KAFKA_POP_CREATE, /* to the control thread */
        KAFKA_POP_GROUP,  /* to the control thread */
        KAFKA_POP_DELETE, /* to the control thread */
};

struct kafka_req;

/* How a Fetch relates to the connection's KIP-227 session. */
enum kafka_fetch_mode {
        KAFKA_FETCH_SESSIONLESS = 0, /* epoch -1, or before v7 */
        KAFKA_FETCH_FULL_NEW,        /* epoch 0: full answer, opens a session */
        KAFKA_FETCH_INCREMENTAL,     /* epoch > 0 in the open session */
};

/* One operation on one partition, kept in the requesting request's arena
 * (stable until the request is freed, which waits for every pop). The
 * owner reads the inputs and writes the outputs between receiving it and
 * replying; the requester touches it only before sending and after the
 * reply. */
struct kafka_pop {
        uint8_t op;
        uint8_t acks;
        uint16_t req_ep; /* requesting worker */
        uint32_t pid;
        uint64_t snap_gen; /* the requester's topic snapshot when it routed */
        struct kafka_req *req;
        int32_t tidx, pidx; /* where its answer goes in the response */
        /* in */
        const uint8_t *batch;
        uint32_t len;
        int64_t offset, timestamp;
        uint8_t *dest;
        uint32_t cap, max;
        /* create: the topic's own configs (in the request's arena), NULL
         * for an auto-create */
        const struct ctl_kafka_topic_cfg *topic_cfg;
        const char *err_msg; /* static; a topic's error_message (CreateTopics) */
        /* owner's progress */
        uint32_t done_bytes;
        uint32_t appends_pending;
        bool started;
        /* out */
        int16_t err;
        int64_t base, hw, lso;
        uint32_t got;
        /* requester: waiting for data (local partitions) */
        struct log_wait lw;
        bool lw_on;
        struct kafka_pop *next; /* owner's retry queue / requester's send queue */
};

enum kafka_req_state { KAFKA_REQ_FREE, KAFKA_REQ_QUEUED, KAFKA_REQ_RUNNING, KAFKA_REQ_DONE };

struct kafka_req {
        struct kafka_req *next_free;
        struct sl_conn *c; /* NULL once the connection went away */
        uint32_t cgen;
        uint8_t state;
        bool no_response;
        bool in_step;
        bool waited;
        bool waiting;
        struct sl_buf *frame; /* holds header + body (no size prefix) ... */
        uint32_t frame_off;   /* ... from data + frame_off (received in place: */
        uint32_t frame_len;   /* one buffer holds several frames) */
        struct kafka_req_header h;
        struct kafka_msg msg;  /* decoded request: views into frame */
        struct kafka_msg resp; /* built when done, encoded when at the head */
        struct kafka_arena arena;
        struct kafka_worker *kw;
        uint32_t pending; /* pops in flight */
        struct kafka_pop *pops;
        uint32_t npops;
        uint32_t next_pop;
        int16_t err; /* request-wide error */
        /* fetch */
        uint8_t fmode;                   /* KAFKA_FETCH_* */
        const struct kafka_val *ftopics; /* incremental: the session's partitions */
        uint32_t *fmap;                  /* incremental: pop index -> session part */
        struct sl_buf *fbuf;
        uint32_t fused;
        uint64_t deadline_ms;
        uint64_t wait_token;
        struct kafka_req *next_timer;
        bool on_timer;
        /* produce/metadata: topics being created first */
        bool creating;
        bool awaiting_topics;         /* a produce waiting for auto-created topics */
        struct ctl_kafka_gcall gcall; /* group APIs: lent to the control thread */
};

/* How much of a partition's log tail is scanned at open to rebuild the
 * idempotent producer state: the last batches of every recent producer. */
#define KAFKA_PRODUCER_SCAN_BYTES (2u << 20)

struct kafka_part {
        struct log_partition *log;
        uint32_t pid;
        bool log_append_time; /* message.timestamp.type=LogAppendTime */
        struct kafka_producers producers;
        struct kafka_cache_part cache; /* its blocks in kafka_worker.cache */
};

/* A disk read reads ahead (KAFKA_READ_AHEAD_BYTES) and its buffer stays a
 * read cache of that partition once the read is answered: a consumer's next
 * fetches are copied from it instead of reading the same blocks again. */
struct kafka_reader {
        struct log_read lr;
        uint8_t *buf;
        uint32_t cap;
        struct kafka_pop *pop;
        struct kafka_worker *kw;
        bool busy;
        /* cache: whole batches of partition cache_pid (UINT32_MAX: none),
         * all below the high watermark when read; cv.used is kw->read_clock
         * at the last hit (least recent is reused) */
        uint32_t cache_pid;
        struct kafka_cview cv;
        /* a read ahead with no fetch waiting for it yet (pop NULL while busy):
         * partition and first offset it reads */
        uint32_t ahead_pid;
        int64_t ahead_offset;
};

struct kafka_waiter {
        struct log_wait lw;
        struct kafka_worker *kw;
        uint32_t pid;
        uint16_t req_ep;
        bool active;
        uint64_t cookie, token, deadline_ms;
        struct kafka_waiter *next_free;
};

struct kafka_worker {
        struct sl_worker *w;
        const struct ctl_kafka_snap *snap;
        struct log_io *io;
        struct log_owner *owner;
        struct kafka_part *parts[CTL_KAFKA_PIDS_MAX];
        struct kafka_req reqs[KAFKA_REQS_PER_WORKER];
        uint8_t *arena_mem;
        struct kafka_req *free_reqs;
        uint8_t *enc;
        size_t enc_cap;
        struct kafka_pop *retry_head, *retry_tail; /* owner: pops to retry */
        struct kafka_pop *send_head, *send_tail;   /* requester: pops to send */
        struct kafka_req *timers;
        struct kafka_reader readers[KAFKA_READERS];
        uint64_t read_clock;
        struct kafka_cache cache; /* recent data, written through by appends */
        struct kafka_waiter waiters[KAFKA_WAITERS];
        struct kafka_waiter *free_waiters;
        uint64_t next_token;
        uint32_t next_session;  /* fetch session ids */
        uint32_t starved_conns; /* connections paused for want of a request slot */
        /* connections receiving in place (kafka_server.c, "frames received
         * in place") whose waiting frames run at the next poll: slots,
         * each listed once (rxb_due_flag) */
        uint32_t *rxb_due;
        uint8_t *rxb_due_flag;
        uint32_t rxb_due_n;
        char data_dir[CTL_PATH_MAX];
        uint64_t producer_expiry_ms;
        /* [kafka] retention_check_interval_ms, and when the next check is
         * due (kafka_part.c) */
        uint64_t retention_interval_ms, retention_next_ms;
        /* Test hook, off (0) unless SLUICE_TEST_KAFKA_DROP_PRODUCE=N is set
         * at start: every Nth answered produce is appended, then its
         * connection is dropped instead of answered (kafka_server.c). */
        uint32_t test_drop_every, test_drop_count;
        /* counters for /metrics */
        _Atomic uint64_t requests, produce_batches, fetch_bytes, errors_closed;
        _Atomic uint64_t frames_in_place, in_place_moved_bytes; /* sl_counter_add: owner only */
        /* where fetched partitions were answered from (owner side) */
        _Atomic uint64_t fetch_reads_mem, fetch_reads_cache, fetch_reads_disk, fetch_reads_ahead;
};

static inline struct kafka_worker *kafka_kw(struct sl_worker *w)
{
        return w->proto_ctx[CTL_PROTO_KAFKA];
}

extern const struct sl_proto_ops kafka_proto_ops;

#endif
