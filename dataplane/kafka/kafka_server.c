/* The Kafka front-end's connection side: frames cut from the size prefix into
 * a request slot (refused above frame_bytes_max before anything is buffered),
 * a per-connection ring of requests whose responses leave strictly in order,
 * and the handlers of the advertised APIs (kafka_apis.h). Partition work runs
 * on the owning worker through kafka_part.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "kafka_apis.h"
#include "kafka_internal.h"
#include "kafka_part.h"
#include "sl_log.h"

struct kafka_starved {
        struct sl_conn *c;
        uint32_t gen;
};

struct kafka_conn {
        struct kafka_req *ring[KAFKA_CONN_INFLIGHT];
        uint32_t head, count;
        struct kafka_req *asm_req; /* frame being assembled */
        uint8_t szb[4];
        uint8_t szn;
        bool paused;
        bool starved;
        /* receiving in place: frames land here; [rxb_start, rxb->len) is
         * not dispatched yet (NULL: frames come through receive buffers) */
        struct sl_buf *rxb;
        uint32_t rxb_start;
        bool rxb_cancel;           /* kafka_tick gave up the receive into it */
        struct kafka_fsession *fs; /* KIP-227 fetch session, NULL = none */
};

/* ---- advertised versions ------------------------------------------------ */

struct kafka_api_range {
        int16_t key, min, max;
};

#define KAFKA_API_ROW(k, lo, hi, fn) {k, lo, hi},
static const struct kafka_api_range kafka_api_table[] = {KAFKA_ADVERTISED(KAFKA_API_ROW)};
#define KAFKA_API_COUNT (sizeof(kafka_api_table) / sizeof(kafka_api_table[0]))

static const struct kafka_api_range *api_find(int16_t key)
{
        for (size_t i = 0; i < KAFKA_API_COUNT; i++)
                if (kafka_api_table[i].key == key)
                        return &kafka_api_table[i];
        return NULL;
}

/* ---- request slots -------------------------------------------------------- */

static _Thread_local struct kafka_starved starved_ring[256];
static _Thread_local uint32_t starved_head, starved_n;

static struct kafka_req *req_alloc(struct kafka_worker *kw, struct sl_conn *c)
{
        struct kafka_req *r = kw->free_reqs;
        if (!r)
                return NULL;
        kw->free_reqs = r->next_free;
        uint8_t *mem = r->arena.base;
        memset(r, 0, sizeof(*r));
        kafka_arena_init(&r->arena, mem, KAFKA_ARENA_BYTES);
        r->c = c;
        r->kw = kw;
        r->cgen = c->gen;
        r->state = KAFKA_REQ_QUEUED;
        return r;
}

static void starved_wake(struct kafka_worker *kw);

static void req_free(struct kafka_worker *kw, struct kafka_req *r)
{
        SL_ASSERT(r->pending == 0);
        if (r->frame)
                sl_worker_buf_put(kw->w, r->frame);
        if (r->fbuf)
                sl_worker_buf_put(kw->w, r->fbuf);
        r->frame = r->fbuf = NULL;
        r->state = KAFKA_REQ_FREE;
        r->wait_token = 0;
        r->next_free = kw->free_reqs;
        kw->free_reqs = r;
        starved_wake(kw);
}

static void conn_starve(struct sl_conn *c)
{
        struct kafka_conn *kc = c->proto_state;
        if (kc->starved)
                return;
        if (starved_n == SL_ARRAY_LEN(starved_ring)) {
                sl_conn_close(c, SL_CLOSE_LIMIT);
                return;
        }
        starved_ring[(starved_head + starved_n++) % SL_ARRAY_LEN(starved_ring)] =
            (struct kafka_starved){c, c->gen};
        kc->starved = true;
        sl_conn_rx_pause(c);
}

static void conn_rx_continue(struct kafka_worker *kw, struct sl_conn *c);

static void starved_wake(struct kafka_worker *kw)
{
        while (starved_n) {
                struct kafka_starved s = starved_ring[starved_head];
                starved_head = (starved_head + 1) % SL_ARRAY_LEN(starved_ring);
                starved_n--;
                if (s.c->gen != s.gen || s.c->state != SL_CONN_OPEN)
                        continue;
                struct kafka_conn *kc = s.c->proto_state;
                kc->starved = false;
                if (!kc->paused)
                        conn_rx_continue(kw, s.c);
                return;
        }
}

/* ---- responses, in request order ------------------------------------------ */

static void req_run(struct kafka_worker *kw, struct kafka_req *r);

/* Record batches (Fetch) are not encoded into kw->enc: the response goes
 * out as the encoded pieces with the batches between them, and the batches
 * are not copied at all: the connection holds a reference on the fetch
 * buffer until they are sent. */
#define KAFKA_RESP_SEGS 15

static int resp_send(struct kafka_worker *kw, struct kafka_req *r)
{
        struct kafka_seg seg[KAFKA_RESP_SEGS];
        int nseg = 0;
        ssize_t n = kafka_response_encode_segs(&r->resp, r->h.correlation_id, kw->enc, kw->enc_cap,
                                               seg, KAFKA_RESP_SEGS, &nseg);
        if (n < 0) {
                SL_WARN("kafka: cannot encode response to api %d v%d: %s", r->h.api_key,
                        r->h.api_version, strerror((int)-n));
                sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
                return -EPIPE;
        }
        struct iovec iov[2 * KAFKA_RESP_SEGS + 1];
        struct sl_buf *refs[2 * KAFKA_RESP_SEGS + 1];
        const struct sl_buf *fb = r->fbuf;
        int k = 0;
        size_t at = 0;
        for (int i = 0; i < nseg; i++) {
                if (seg[i].at > at) {
                        refs[k] = NULL;
                        iov[k++] = (struct iovec){kw->enc + at, seg[i].at - at};
                }
                bool in_fbuf =
                    fb && seg[i].ptr >= fb->data && seg[i].ptr + seg[i].len <= fb->data + fb->cap;
                refs[k] = in_fbuf ? r->fbuf : NULL;
                iov[k++] = (struct iovec){(void *)(uintptr_t)seg[i].ptr, seg[i].len};
                at = seg[i].at;
        }
        if ((size_t)n > at) {
                refs[k] = NULL;
                iov[k++] = (struct iovec){kw->enc + at, (size_t)n - at};
        }
        int rc = sl_conn_sendv_ref(r->c, iov, refs, k);
        if (rc == -ENOBUFS)
                sl_conn_want_writable(r->c);
        return rc;
}

void kafka_conn_flush(struct kafka_worker *kw, struct sl_conn *c)
{
        struct kafka_conn *kc = c->proto_state;
        while (kc->count && c->state == SL_CONN_OPEN) {
                struct kafka_req *r = kc->ring[kc->head];
                if (r->state == KAFKA_REQ_QUEUED) {
                        /* Fetch starts only at the head: its long poll then
                         * holds no later response hostage. */
                        r->state = KAFKA_REQ_RUNNING;
                        req_run(kw, r);
                        continue;
                }
                if (r->state != KAFKA_REQ_DONE)
                        break;
                if (!r->no_response && resp_send(kw, r) != 0)
                        break;
                kc->ring[kc->head] = NULL;
                kc->head = (kc->head + 1) % KAFKA_CONN_INFLIGHT;
                kc->count--;
                req_free(kw, r);
        }
        uint32_t cap = SL_MIN(kw->w->limits.inflight_requests_max, KAFKA_CONN_INFLIGHT);
        if (kc->paused && kc->count < cap && c->state == SL_CONN_OPEN) {
                kc->paused = false;
                if (!kc->starved)
                        conn_rx_continue(kw, c);
        }
}

void kafka_req_done(struct kafka_worker *kw, struct kafka_req *r)
{
        r->state = KAFKA_REQ_DONE;
        if (r->c)
                kafka_conn_flush(kw, r->c);
}

/* ---- handlers --------------------------------------------------------------- */

static int resp_init(struct kafka_req *r, int16_t version)
{
        return kafka_msg_init(&r->resp, &r->arena, r->h.api_key, version, KAFKA_RESPONSE);
}

static bool software_token_valid(struct kafka_str s)
{
        if (s.len <= 0)
                return false;
        for (int32_t i = 0; i < s.len; i++) {
                char ch = (char)s.ptr[i];
                bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                             (ch >= '0' && ch <= '9');
                bool edge = i == 0 || i == s.len - 1;
                if (!alnum && (edge || (ch != '-' && ch != '.')))
                        return false;
        }
        return true;
}

static void handle_api_versions(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_api_range *self = api_find(KAFKA_API_API_VERSIONS);
        if (r->h.api_version > self->max) {
                /* KIP-511: answer in v0, naming only ApiVersions, so the client
                 * retries with a version both sides know. */
                resp_init(r, 0);
                kafka_val_set_int16(r->resp.root, KAFKA_API_VERSIONS_RESP_ERROR_CODE,
                                    KERR_UNSUPPORTED_VERSION);
                struct kafka_val *k = kafka_val_array_init(&r->arena, r->resp.root,
                                                           KAFKA_API_VERSIONS_RESP_API_KEYS, 1);
                kafka_val_set_int16(k, KAFKA_API_VERSIONS_RESP_API_KEYS_API_KEY, self->key);
                kafka_val_set_int16(k, KAFKA_API_VERSIONS_RESP_API_KEYS_MIN_VERSION, self->min);
                kafka_val_set_int16(k, KAFKA_API_VERSIONS_RESP_API_KEYS_MAX_VERSION, self->max);
                kafka_req_done(kw, r);
                return;
        }
        resp_init(r, r->h.api_version);
        if (r->h.api_version >= 3 &&
            (!software_token_valid(
                 kafka_val_get_str(r->msg.root, KAFKA_API_VERSIONS_REQ_CLIENT_SOFTWARE_NAME)) ||
             !software_token_valid(
                 kafka_val_get_str(r->msg.root, KAFKA_API_VERSIONS_REQ_CLIENT_SOFTWARE_VERSION)))) {
                kafka_val_set_int16(r->resp.root, KAFKA_API_VERSIONS_RESP_ERROR_CODE,
                                    KERR_INVALID_REQUEST);
                kafka_req_done(kw, r);
                return;
        }
        struct kafka_val *k = kafka_val_array_init(
            &r->arena, r->resp.root, KAFKA_API_VERSIONS_RESP_API_KEYS, (int32_t)KAFKA_API_COUNT);
        for (size_t i = 0; k && i < KAFKA_API_COUNT; i++) {
                struct kafka_val *e = kafka_val_array_elem(
                    kafka_val_array(r->resp.root, KAFKA_API_VERSIONS_RESP_API_KEYS), (int32_t)i);
                kafka_val_set_int16(e, KAFKA_API_VERSIONS_RESP_API_KEYS_API_KEY,
                                    kafka_api_table[i].key);
                kafka_val_set_int16(e, KAFKA_API_VERSIONS_RESP_API_KEYS_MIN_VERSION,
                                    kafka_api_table[i].min);
                kafka_val_set_int16(e, KAFKA_API_VERSIONS_RESP_API_KEYS_MAX_VERSION,
                                    kafka_api_table[i].max);
        }
        kafka_req_done(kw, r);
}

/* The address clients should use: the advertised one, else the listener's,
 * else (a wildcard listener) the address this connection came in on. */
static void advertised(struct sl_conn *c, char *host, size_t n, int32_t *port)
{
        const struct ctl_listener *l = &c->w->cfg->listeners[CTL_PROTO_KAFKA];
        *port = l->advertised_port ? l->advertised_port : sl_conn_local_port(c);
        const char *h = l->advertised_host[0] ? l->advertised_host : l->host;
        if (strcmp(h, "0.0.0.0") != 0 && strcmp(h, "::") != 0 && h[0]) {
                snprintf(host, n, "%s", h);
                return;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        snprintf(host, n, "127.0.0.1");
        if (c->fd >= 0 && getsockname(c->fd, (struct sockaddr *)&ss, &sl) == 0) {
                if (ss.ss_family == AF_INET)
                        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host,
                                  (socklen_t)n);
                else if (ss.ss_family == AF_INET6)
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host,
                                  (socklen_t)n);
        }
}

static struct kafka_pop *pops_alloc(struct kafka_req *r, uint32_t n)
{
        r->pops = kafka_arena_alloc(&r->arena, sizeof(struct kafka_pop) * (n ? n : 1));
        if (r->pops)
                memset(r->pops, 0, sizeof(struct kafka_pop) * (n ? n : 1));
        r->npops = n;
        return r->pops;
}

/* One partition operation per (topic, partition) of a request's topic array:
 * counts them and allocates the pops. On failure the connection closes and
 * the request is finished; the caller returns. */
static bool pops_alloc_partitions(struct kafka_worker *kw, struct kafka_req *r,
                                  const struct kafka_val *topics, int32_t nt, uint32_t partitions)
{
        uint32_t n = 0;
        for (int32_t i = 0; i < nt; i++)
                n += (uint32_t)SL_MAX(
                    0, kafka_val_array_len(kafka_val_array_elem(topics, i), partitions));
        if (pops_alloc(r, n))
                return true;
        sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
        kafka_req_done(kw, r);
        return false;
}

/* Asks the registry for each topic named in names[] that this worker's
 * snapshot lacks. Returns the number of creations started. */
static uint32_t create_missing(struct kafka_worker *kw, struct kafka_req *r,
                               const struct kafka_str *names, uint32_t n, int32_t nparts)
{
        uint32_t k = 0;
        for (uint32_t i = 0; i < n; i++)
                if (names[i].len > 0 &&
                    !ctl_kafka_snap_find(kw->snap, (const char *)names[i].ptr,
                                         (uint32_t)names[i].len) &&
                    ctl_kafka_topic_name_valid((const char *)names[i].ptr, (uint32_t)names[i].len))
                        k++;
        if (!k || !pops_alloc(r, k))
                return 0;
        uint32_t j = 0;
        for (uint32_t i = 0; i < n && j < k; i++) {
                if (names[i].len <= 0 ||
                    ctl_kafka_snap_find(kw->snap, (const char *)names[i].ptr,
                                        (uint32_t)names[i].len) ||
                    !ctl_kafka_topic_name_valid((const char *)names[i].ptr, (uint32_t)names[i].len))
                        continue;
                struct kafka_pop *p = &r->pops[j++];
                p->op = KAFKA_POP_CREATE;
                p->req = r;
                p->batch = names[i].ptr;
                p->len = (uint32_t)names[i].len;
                p->offset = nparts;
                r->pending++;
                kafka_pop_submit(kw, p, kw->w->rt->control_ep);
        }
        return k;
}

static bool kafka_auto_create(const struct kafka_worker *kw)
{
        return kw->w->cfg->kafka_auto_create != 0;
}

static void handle_metadata(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *root = r->msg.root;
        const struct kafka_val *topics = kafka_val_array(root, KAFKA_METADATA_REQ_TOPICS);
        int16_t v = r->h.api_version;
        bool all = topics->len < 0 || (v == 0 && topics->len == 0);
        int32_t nreq = all ? 0 : topics->len;
        if (!r->creating) {
                r->creating = true;
                bool allow =
                    v < 4 || kafka_val_get_bool(root, KAFKA_METADATA_REQ_ALLOW_AUTO_TOPIC_CREATION);
                if (nreq && allow && kafka_auto_create(kw)) {
                        struct kafka_str *names =
                            kafka_arena_alloc(&r->arena, sizeof(*names) * (size_t)nreq);
                        for (int32_t i = 0; names && i < nreq; i++)
                                names[i] = kafka_val_get_str(kafka_val_array_elem(topics, i),
                                                             KAFKA_METADATA_REQ_TOPICS_NAME);
                        if (names && create_missing(kw, r, names, (uint32_t)nreq, -1))
                                return; /* re-run once the topics exist */
                }
        }
        if (r->pending)
                return;
        const struct ctl_kafka_snap *s = kw->snap;
        resp_init(r, v);
        struct kafka_val *rt = r->resp.root;
        char host[256];
        int32_t port;
        advertised(r->c, host, sizeof(host), &port);
        struct kafka_val *b = kafka_val_array_init(&r->arena, rt, KAFKA_METADATA_RESP_BROKERS, 1);
        kafka_val_set_int32(b, KAFKA_METADATA_RESP_BROKERS_NODE_ID, 0);
        char *h = kafka_arena_alloc(&r->arena, strlen(host) + 1);
        if (!b || !h)
                goto nomem;
        strcpy(h, host);
        kafka_val_set_cstr(b, KAFKA_METADATA_RESP_BROKERS_HOST, h);
        kafka_val_set_int32(b, KAFKA_METADATA_RESP_BROKERS_PORT, port);
        if (v >= 2)
                kafka_val_set_cstr(rt, KAFKA_METADATA_RESP_CLUSTER_ID, "sluice");
        if (v >= 1)
                kafka_val_set_int32(rt, KAFKA_METADATA_RESP_CONTROLLER_ID, 0);
        int32_t nt = all ? (int32_t)(s ? s->ntopics : 0) : nreq;
        struct kafka_val *ta = kafka_val_array_init(&r->arena, rt, KAFKA_METADATA_RESP_TOPICS, nt);
        if (nt && !ta)
                goto nomem;
        for (int32_t i = 0; i < nt; i++) {
                struct kafka_val *te =
                    kafka_val_array_elem(kafka_val_array(rt, KAFKA_METADATA_RESP_TOPICS), i);
                const struct ctl_kafka_topic *t;
                struct kafka_str name;
                if (all) {
                        t = &s->topics[i];
                        name = (struct kafka_str){(const uint8_t *)t->name, t->name_len};
                } else {
                        const struct kafka_val *rq = kafka_val_array_elem(topics, i);
                        name = kafka_val_get_str(rq, KAFKA_METADATA_REQ_TOPICS_NAME);
                        t = name.len > 0
                                ? ctl_kafka_snap_find(s, (const char *)name.ptr, (uint32_t)name.len)
                                : NULL;
                        if (name.len < 0 && v >= 10) {
                                /* By topic id (KIP-516): answered with its name. */
                                const uint8_t *id =
                                    kafka_val_get_uuid(rq, KAFKA_METADATA_REQ_TOPICS_TOPIC_ID);
                                t = id ? ctl_kafka_snap_find_id(s, id) : NULL;
                                if (t) {
                                        name = (struct kafka_str){(const uint8_t *)t->name,
                                                                  t->name_len};
                                } else {
                                        if (id)
                                                kafka_val_set_uuid(
                                                    te, KAFKA_METADATA_RESP_TOPICS_TOPIC_ID, id);
                                        kafka_val_set_str(te, KAFKA_METADATA_RESP_TOPICS_NAME,
                                                          v >= 12 ? NULL : (const uint8_t *)"", 0);
                                        kafka_val_set_int16(te,
                                                            KAFKA_METADATA_RESP_TOPICS_ERROR_CODE,
                                                            KERR_UNKNOWN_TOPIC_ID);
                                        kafka_val_array_init(&r->arena, te,
                                                             KAFKA_METADATA_RESP_TOPICS_PARTITIONS,
                                                             0);
                                        continue;
                                }
                        }
                }
                kafka_val_set_str(te, KAFKA_METADATA_RESP_TOPICS_NAME, name.ptr,
                                  name.len < 0 ? 0 : name.len);
                if (!t) {
                        bool valid =
                            name.len > 0 &&
                            ctl_kafka_topic_name_valid((const char *)name.ptr, (uint32_t)name.len);
                        kafka_val_set_int16(te, KAFKA_METADATA_RESP_TOPICS_ERROR_CODE,
                                            valid ? KERR_UNKNOWN_TOPIC_OR_PARTITION
                                                  : KERR_INVALID_TOPIC);
                        kafka_val_array_init(&r->arena, te, KAFKA_METADATA_RESP_TOPICS_PARTITIONS,
                                             0);
                        continue;
                }
                if (v >= 10)
                        kafka_val_set_uuid(te, KAFKA_METADATA_RESP_TOPICS_TOPIC_ID, t->uuid);
                struct kafka_val *pa = kafka_val_array_init(
                    &r->arena, te, KAFKA_METADATA_RESP_TOPICS_PARTITIONS, (int32_t)t->nparts);
                if (t->nparts && !pa)
                        goto nomem;
                for (uint32_t p = 0; p < t->nparts; p++) {
                        struct kafka_val *pe = kafka_val_array_elem(
                            kafka_val_array(te, KAFKA_METADATA_RESP_TOPICS_PARTITIONS), (int32_t)p);
                        kafka_val_set_int32(
                            pe, KAFKA_METADATA_RESP_TOPICS_PARTITIONS_PARTITION_INDEX, (int32_t)p);
                        kafka_val_set_int32(pe, KAFKA_METADATA_RESP_TOPICS_PARTITIONS_LEADER_ID, 0);
                        if (v >= 7)
                                kafka_val_set_int32(
                                    pe, KAFKA_METADATA_RESP_TOPICS_PARTITIONS_LEADER_EPOCH, 0);
                        struct kafka_val *rn = kafka_val_array_init(
                            &r->arena, pe, KAFKA_METADATA_RESP_TOPICS_PARTITIONS_REPLICA_NODES, 1);
                        struct kafka_val *isr = kafka_val_array_init(
                            &r->arena, pe, KAFKA_METADATA_RESP_TOPICS_PARTITIONS_ISR_NODES, 1);
                        if (!rn || !isr)
                                goto nomem;
                        rn[0].u.i64 = 0;
                        rn[0].flags |= KAFKA_VAL_SET;
                        isr[0].u.i64 = 0;
                        isr[0].flags |= KAFKA_VAL_SET;
                        if (v >= 5)
                                kafka_val_array_init(
                                    &r->arena, pe,
                                    KAFKA_METADATA_RESP_TOPICS_PARTITIONS_OFFLINE_REPLICAS, 0);
                }
        }
        kafka_req_done(kw, r);
        return;
nomem:
        SL_WARN("kafka: metadata response does not fit the request arena");
        sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
        kafka_req_done(kw, r);
}

static bool str_is(struct kafka_str s, const char *lit)
{
        return s.len >= 0 && (size_t)s.len == strlen(lit) && !memcmp(s.ptr, lit, (size_t)s.len);
}

static char *arena_strdup(struct kafka_arena *a, const char *s)
{
        size_t n = strlen(s) + 1;
        char *p = kafka_arena_alloc(a, n);
        if (p)
                memcpy(p, s, n);
        return p;
}

/* DescribeConfigs resource types */
#define KAFKA_RESOURCE_TOPIC  2
#define KAFKA_RESOURCE_BROKER 4

/* A config as DescribeConfigs (and CreateTopics v5+) report it. */
struct described_cfg {
        const char *key;
        char val[32];
        uint8_t src; /* ctl_kafka_cfg_source */
};
#define DESCRIBED_MAX 16

static int32_t described_str(struct described_cfg *out, int32_t n, const char *key, uint8_t src,
                             const char *val)
{
        out[n].key = key;
        out[n].src = src;
        snprintf(out[n].val, sizeof(out[n].val), "%s", val);
        return n + 1;
}

static int32_t described_num(struct described_cfg *out, int32_t n, const char *key, uint8_t src,
                             long long val)
{
        out[n].key = key;
        out[n].src = src;
        snprintf(out[n].val, sizeof(out[n].val), "%lld", val);
        return n + 1;
}

/* A topic's configs, its own values over the broker's defaults, each with
 * where it comes from. Returns the count. */
static int32_t topic_configs(const struct ctl_kafka_topic *t, struct described_cfg *out)
{
        int32_t n = 0;
        n = described_str(out, n, "cleanup.policy", CTL_KAFKA_SRC_DEFAULT, "delete");
        n = described_num(out, n, "retention.ms", t->src_retention_ms,
                          (long long)t->cfg.retention_ms);
        n = described_num(out, n, "retention.bytes", t->src_retention_bytes,
                          (long long)t->cfg.retention_bytes);
        n = described_num(out, n, "segment.bytes", t->src_segment_bytes,
                          (long long)t->cfg.segment_bytes);
        n = described_num(out, n, "max.message.bytes", CTL_KAFKA_SRC_DEFAULT,
                          (long long)t->cfg.max_batch_bytes);
        n = described_str(out, n, "message.timestamp.type",
                          t->log_append_time || (t->set & CTL_KAFKA_SET_TIMESTAMP_TYPE)
                              ? CTL_KAFKA_SRC_TOPIC
                              : CTL_KAFKA_SRC_DEFAULT,
                          t->log_append_time ? "LogAppendTime" : "CreateTime");
        n = described_num(out, n, "segment.ms", t->src_segment_ms, (long long)t->cfg.segment_ms);
        return n;
}

static long long broker_limit(uint64_t v)
{
        return v == CTL_KAFKA_UNLIMITED ? -1 : (long long)v;
}

/* This broker's (node 0) configs behind the topic defaults, by Kafka's
 * names: static (4) when the config file moved them off the built-in
 * default, else default (5). */
static int32_t broker_configs(const struct ctl_config *c, struct described_cfg *out)
{
        struct ctl_config d; /* 10 KiB on the stack, on an admin request only */
        ctl_config_defaults(&d);
#define SRC(field) (c->field != d.field ? CTL_KAFKA_SRC_STATIC : CTL_KAFKA_SRC_DEFAULT)
        int32_t n = 0;
        n = described_str(out, n, "log.cleanup.policy", CTL_KAFKA_SRC_DEFAULT, "delete");
        n = described_num(out, n, "log.retention.ms", SRC(kafka_retention_ms),
                          broker_limit(c->kafka_retention_ms));
        n = described_num(out, n, "log.retention.bytes", SRC(kafka_retention_bytes),
                          broker_limit(c->kafka_retention_bytes));
        n = described_num(out, n, "log.segment.bytes", SRC(kafka_segment_bytes),
                          (long long)c->kafka_segment_bytes);
        n = described_num(out, n, "log.roll.ms", SRC(kafka_segment_ms),
                          (long long)c->kafka_segment_ms);
        n = described_num(out, n, "log.retention.check.interval.ms",
                          SRC(kafka_retention_check_interval_ms),
                          (long long)c->kafka_retention_check_interval_ms);
        n = described_num(out, n, "num.partitions", SRC(kafka_default_partitions),
                          (long long)c->kafka_default_partitions);
        n = described_str(out, n, "auto.create.topics.enable", SRC(kafka_auto_create),
                          c->kafka_auto_create ? "true" : "false");
        n = described_num(out, n, "connections.max.idle.ms", SRC(kafka_idle_ms),
                          (long long)c->kafka_idle_ms);
        n = described_num(out, n, "producer.id.expiration.ms", SRC(kafka_producer_id_expiration_ms),
                          (long long)c->kafka_producer_id_expiration_ms);
        n = described_str(out, n, "log.message.timestamp.type", CTL_KAFKA_SRC_DEFAULT,
                          "CreateTime");
        struct log_config lc;
        ctl_kafka_log_config(c, &lc);
        n = described_num(out, n, "message.max.bytes", CTL_KAFKA_SRC_DEFAULT,
                          (long long)lc.max_batch_bytes);
#undef SRC
        SL_ASSERT(n <= DESCRIBED_MAX);
        return n;
}

/* The topic configs CreateTopics acts on (ctl_kafka_topic_config_parse):
 * retention.ms, retention.bytes, segment.bytes, segment.ms into a config the
 * control thread stores with the topic, message.timestamp.type as
 * META_TOPIC_* flags, cleanup.policy checked; a bad value is INVALID_CONFIG
 * for the topic, with a message. */
static int16_t create_topic_configs(struct kafka_req *r, const struct kafka_val *t,
                                    struct kafka_pop *p, const char **msg)
{
        const struct kafka_val *ca = kafka_val_array(t, KAFKA_CREATE_TOPICS_REQ_TOPICS_CONFIGS);
        struct ctl_kafka_topic_cfg *own = kafka_arena_alloc(&r->arena, sizeof(*own));
        if (!own)
                return KERR_INVALID_REQUEST;
        memset(own, 0, sizeof(*own));
        uint32_t flags = 0;
        for (int32_t i = 0; i < ca->len; i++) {
                const struct kafka_val *c = kafka_val_array_elem(ca, i);
                struct kafka_str k =
                    kafka_val_get_str(c, KAFKA_CREATE_TOPICS_REQ_TOPICS_CONFIGS_NAME);
                struct kafka_str v =
                    kafka_val_get_str(c, KAFKA_CREATE_TOPICS_REQ_TOPICS_CONFIGS_VALUE);
                int16_t err = ctl_kafka_topic_config_parse(
                    (const char *)k.ptr, k.len, (const char *)v.ptr, v.len, own, &flags, msg);
                if (err)
                        return err;
        }
        p->timestamp = flags;
        p->topic_cfg = own;
        return 0;
}

/* CreateTopics v5+ (KIP-525): a created topic's configs, as DescribeConfigs
 * reports them; null for a topic not created. */
static bool create_topic_resp_configs(struct kafka_req *r, struct kafka_val *te,
                                      const struct ctl_kafka_topic *t)
{
        if (!t) {
                kafka_val_array_set_null(te, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS);
                return true;
        }
        struct described_cfg cf[DESCRIBED_MAX];
        int32_t nk = topic_configs(t, cf);
        struct kafka_val *ca =
            kafka_val_array_init(&r->arena, te, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS, nk);
        if (!ca)
                return false;
        for (int32_t k = 0; k < nk; k++) {
                struct kafka_val *ce = kafka_val_array_elem(
                    kafka_val_array(te, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS), k);
                char *vp = arena_strdup(&r->arena, cf[k].val);
                if (!vp)
                        return false;
                kafka_val_set_cstr(ce, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS_NAME, cf[k].key);
                kafka_val_set_cstr(ce, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS_VALUE, vp);
                kafka_val_set_bool(ce, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS_READ_ONLY, true);
                kafka_val_set_int8(ce, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS_CONFIG_SOURCE,
                                   (int8_t)cf[k].src);
                kafka_val_set_bool(ce, KAFKA_CREATE_TOPICS_RESP_TOPICS_CONFIGS_IS_SENSITIVE, false);
        }
        return true;
}

static void handle_create_topics(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *root = r->msg.root;
        const struct kafka_val *topics = kafka_val_array(root, KAFKA_CREATE_TOPICS_REQ_TOPICS);
        int32_t n = topics->len < 0 ? 0 : topics->len;
        bool validate = kafka_val_get_bool(root, KAFKA_CREATE_TOPICS_REQ_VALIDATE_ONLY);
        if (!r->creating) {
                r->creating = true;
                r->err = 0;
                int16_t *errs = kafka_arena_alloc(&r->arena, sizeof(int16_t) * (size_t)(n + 1));
                if (!pops_alloc(r, (uint32_t)n) || !errs)
                        goto nomem;
                for (int32_t i = 0; i < n; i++) {
                        const struct kafka_val *t = kafka_val_array_elem(topics, i);
                        struct kafka_str name =
                            kafka_val_get_str(t, KAFKA_CREATE_TOPICS_REQ_TOPICS_NAME);
                        int32_t np =
                            kafka_val_get_int32(t, KAFKA_CREATE_TOPICS_REQ_TOPICS_NUM_PARTITIONS);
                        struct kafka_pop *p = &r->pops[i];
                        p->req = r;
                        p->op = KAFKA_POP_CREATE;
                        p->batch = name.ptr;
                        p->len = (uint32_t)(name.len < 0 ? 0 : name.len);
                        p->offset = np;
                        int16_t cerr = create_topic_configs(r, t, p, &p->err_msg);
                        if (!ctl_kafka_topic_name_valid((const char *)name.ptr, p->len))
                                p->err = KERR_INVALID_TOPIC;
                        else if (cerr)
                                p->err = cerr;
                        else if (ctl_kafka_snap_find(kw->snap, (const char *)name.ptr, p->len))
                                p->err = KERR_TOPIC_ALREADY_EXISTS;
                        else if (np == 0 || np < -1 || np > CTL_KAFKA_TOPIC_PARTS_MAX)
                                p->err = KERR_INVALID_PARTITIONS;
                        else if (!validate) {
                                r->pending++;
                                kafka_pop_submit(kw, p, kw->w->rt->control_ep);
                        }
                }
        }
        if (r->pending)
                return;
        resp_init(r, r->h.api_version);
        struct kafka_val *ta =
            kafka_val_array_init(&r->arena, r->resp.root, KAFKA_CREATE_TOPICS_RESP_TOPICS, n);
        if (n && !ta)
                goto nomem;
        for (int32_t i = 0; i < n; i++) {
                struct kafka_pop *p = &r->pops[i];
                struct kafka_val *te = kafka_val_array_elem(
                    kafka_val_array(r->resp.root, KAFKA_CREATE_TOPICS_RESP_TOPICS), i);
                kafka_val_set_str(te, KAFKA_CREATE_TOPICS_RESP_TOPICS_NAME, p->batch,
                                  (int32_t)p->len);
                kafka_val_set_int16(te, KAFKA_CREATE_TOPICS_RESP_TOPICS_ERROR_CODE, p->err);
                /* null unless there is something to say, as Kafka */
                if (r->h.api_version >= 1)
                        kafka_val_set_cstr(te, KAFKA_CREATE_TOPICS_RESP_TOPICS_ERROR_MESSAGE,
                                           p->err ? p->err_msg : NULL);
                const struct ctl_kafka_topic *t =
                    ctl_kafka_snap_find(kw->snap, (const char *)p->batch, p->len);
                if (r->h.api_version >= 5) {
                        if (t && !p->err) {
                                kafka_val_set_int32(te,
                                                    KAFKA_CREATE_TOPICS_RESP_TOPICS_NUM_PARTITIONS,
                                                    (int32_t)t->nparts);
                                kafka_val_set_int16(
                                    te, KAFKA_CREATE_TOPICS_RESP_TOPICS_REPLICATION_FACTOR, 1);
                        } else {
                                kafka_val_set_int32(
                                    te, KAFKA_CREATE_TOPICS_RESP_TOPICS_NUM_PARTITIONS, -1);
                                kafka_val_set_int16(
                                    te, KAFKA_CREATE_TOPICS_RESP_TOPICS_REPLICATION_FACTOR, -1);
                        }
                        if (!create_topic_resp_configs(r, te, p->err ? NULL : t))
                                goto nomem;
                }
                if (r->h.api_version >= 7 && t)
                        kafka_val_set_uuid(te, KAFKA_CREATE_TOPICS_RESP_TOPICS_TOPIC_ID, t->uuid);
        }
        kafka_req_done(kw, r);
        return;
nomem:
        sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
        kafka_req_done(kw, r);
}

/* DeleteTopics: each topic through the registry; v6 may name topics by id. */
static void handle_delete_topics(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *root = r->msg.root;
        int16_t v = r->h.api_version;
        const struct kafka_val *ta = kafka_val_array(
            root, v >= 6 ? KAFKA_DELETE_TOPICS_REQ_TOPICS : KAFKA_DELETE_TOPICS_REQ_TOPIC_NAMES);
        int32_t n = ta->len < 0 ? 0 : ta->len;
        if (!r->creating) {
                r->creating = true;
                if (!pops_alloc(r, (uint32_t)n))
                        goto nomem;
                for (int32_t i = 0; i < n; i++) {
                        const struct kafka_val *e = kafka_val_array_elem(ta, i);
                        struct kafka_pop *p = &r->pops[i];
                        p->req = r;
                        p->op = KAFKA_POP_DELETE;
                        const struct ctl_kafka_topic *t = NULL;
                        if (v >= 6) {
                                struct kafka_str name =
                                    kafka_val_get_str(e, KAFKA_DELETE_TOPICS_REQ_TOPICS_NAME);
                                t = name.len > 0
                                        ? ctl_kafka_snap_find(kw->snap, (const char *)name.ptr,
                                                              (uint32_t)name.len)
                                        : ctl_kafka_snap_find_id(
                                              kw->snap,
                                              kafka_val_get_uuid(
                                                  e, KAFKA_DELETE_TOPICS_REQ_TOPICS_TOPIC_ID));
                                if (!t)
                                        p->err = name.len > 0 ? KERR_UNKNOWN_TOPIC_OR_PARTITION
                                                              : KERR_UNKNOWN_TOPIC_ID;
                        } else {
                                t = ctl_kafka_snap_find(kw->snap, (const char *)e->u.ptr,
                                                        (uint32_t)SL_MAX(e->len, 0));
                                if (!t) {
                                        p->batch = e->u.ptr;
                                        p->len = (uint32_t)SL_MAX(e->len, 0);
                                        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                                }
                        }
                        if (!t)
                                continue;
                        /* The name and id are copied: the snapshot may be
                         * replaced before the answer is built. */
                        char *nm = kafka_arena_alloc(&r->arena, t->name_len + 16u);
                        if (!nm)
                                goto nomem;
                        memcpy(nm, t->name, t->name_len);
                        memcpy(nm + t->name_len, t->uuid, 16);
                        p->batch = (const uint8_t *)nm;
                        p->len = t->name_len;
                        r->pending++;
                        kafka_pop_submit(kw, p, kw->w->rt->control_ep);
                }
        }
        if (r->pending)
                return;
        resp_init(r, v);
        struct kafka_val *ra =
            kafka_val_array_init(&r->arena, r->resp.root, KAFKA_DELETE_TOPICS_RESP_RESPONSES, n);
        if (n && !ra)
                goto nomem;
        static const uint8_t zero_uuid[16];
        for (int32_t i = 0; i < n; i++) {
                struct kafka_pop *p = &r->pops[i];
                struct kafka_val *e = kafka_val_array_elem(
                    kafka_val_array(r->resp.root, KAFKA_DELETE_TOPICS_RESP_RESPONSES), i);
                kafka_val_set_str(e, KAFKA_DELETE_TOPICS_RESP_RESPONSES_NAME,
                                  p->batch ? p->batch : (const uint8_t *)"", (int32_t)p->len);
                kafka_val_set_int16(e, KAFKA_DELETE_TOPICS_RESP_RESPONSES_ERROR_CODE, p->err);
                if (v >= 6)
                        kafka_val_set_uuid(e, KAFKA_DELETE_TOPICS_RESP_RESPONSES_TOPIC_ID,
                                           p->batch && p->len ? p->batch + p->len : zero_uuid);
        }
        kafka_req_done(kw, r);
        return;
nomem:
        sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
        kafka_req_done(kw, r);
}

/* Looks up (topic, partition) in the snapshot: NULL when unknown. */
static const struct ctl_kafka_part *part_find(const struct kafka_worker *kw, struct kafka_str name,
                                              int32_t partition)
{
        if (name.len <= 0)
                return NULL;
        const struct ctl_kafka_topic *t =
            ctl_kafka_snap_find(kw->snap, (const char *)name.ptr, (uint32_t)name.len);
        if (!t || partition < 0 || (uint32_t)partition >= t->nparts)
                return NULL;
        return &t->parts[partition];
}

/* Where a request's topic/partition arrays and their response mirror live:
 * Produce, ListOffsets and Fetch answer one response topic per request
 * topic and one partition per request partition, in request order. */
struct topic_mirror {
        unsigned req_topics, req_name, req_id, req_parts, req_index;
        unsigned resp_topics, resp_name, resp_id, resp_parts, resp_index;
};

typedef void (*mirror_fill_fn)(struct kafka_req *r, struct kafka_val *pe,
                               const struct kafka_pop *p);

/* Builds the response's topic array from the request's, copying each
 * topic's name (or its id when by_id: Fetch v13+) and each partition's
 * index, then lets fill set the rest from the partition's pop (pops are in
 * request order). Returns false when the arena is full. */
static bool resp_mirror(struct kafka_req *r, const struct topic_mirror *m, bool by_id,
                        mirror_fill_fn fill)
{
        const struct kafka_val *ta = kafka_val_array(r->msg.root, m->req_topics);
        int32_t nt = ta->len < 0 ? 0 : ta->len;
        if (!kafka_val_array_init(&r->arena, r->resp.root, m->resp_topics, nt) && nt)
                return false;
        uint32_t k = 0;
        for (int32_t i = 0; i < nt; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                struct kafka_val *te =
                    kafka_val_array_elem(kafka_val_array(r->resp.root, m->resp_topics), i);
                if (by_id) {
                        kafka_val_set_uuid(te, m->resp_id, kafka_val_get_uuid(t, m->req_id));
                } else {
                        struct kafka_str name = kafka_val_get_str(t, m->req_name);
                        kafka_val_set_str(te, m->resp_name, name.ptr, name.len);
                }
                const struct kafka_val *pa = kafka_val_array(t, m->req_parts);
                int32_t np = pa->len < 0 ? 0 : pa->len;
                if (!kafka_val_array_init(&r->arena, te, m->resp_parts, np) && np)
                        return false;
                for (int32_t j = 0; j < np; j++) {
                        struct kafka_val *pe =
                            kafka_val_array_elem(kafka_val_array(te, m->resp_parts), j);
                        kafka_val_set_int32(
                            pe, m->resp_index,
                            kafka_val_get_int32(kafka_val_array_elem(pa, j), m->req_index));
                        fill(r, pe, &r->pops[k++]);
                }
        }
        return true;
}

static const struct topic_mirror produce_mirror = {
    KAFKA_PRODUCE_REQ_TOPIC_DATA,
    KAFKA_PRODUCE_REQ_TOPIC_DATA_NAME,
    0,
    KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA,
    KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA_INDEX,
    KAFKA_PRODUCE_RESP_RESPONSES,
    KAFKA_PRODUCE_RESP_RESPONSES_NAME,
    0,
    KAFKA_PRODUCE_RESP_RESPONSES_PARTITION_RESPONSES,
    KAFKA_PRODUCE_RESP_RESPONSES_PARTITION_RESPONSES_INDEX,
};

static void produce_fill(struct kafka_req *r, struct kafka_val *pe, const struct kafka_pop *p)
{
        kafka_val_set_int16(pe, KAFKA_PRODUCE_RESP_RESPONSES_PARTITION_RESPONSES_ERROR_CODE,
                            p->err);
        kafka_val_set_int64(pe, KAFKA_PRODUCE_RESP_RESPONSES_PARTITION_RESPONSES_BASE_OFFSET,
                            p->err ? -1 : p->base);
        kafka_val_set_int64(pe, KAFKA_PRODUCE_RESP_RESPONSES_PARTITION_RESPONSES_LOG_APPEND_TIME_MS,
                            p->err ? -1 : p->timestamp);
        if (r->h.api_version >= 5)
                kafka_val_set_int64(
                    pe, KAFKA_PRODUCE_RESP_RESPONSES_PARTITION_RESPONSES_LOG_START_OFFSET, p->lso);
}

static void handle_produce(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *root = r->msg.root;
        const struct kafka_val *td = kafka_val_array(root, KAFKA_PRODUCE_REQ_TOPIC_DATA);
        int32_t nt = td->len < 0 ? 0 : td->len;
        int16_t acks = kafka_val_get_int16(root, KAFKA_PRODUCE_REQ_ACKS);
        if (!r->creating) {
                r->creating = true;
                r->no_response = acks == 0;
                struct kafka_str *names =
                    kafka_arena_alloc(&r->arena, sizeof(*names) * (size_t)(nt + 1));
                for (int32_t i = 0; names && i < nt; i++)
                        names[i] = kafka_val_get_str(kafka_val_array_elem(td, i),
                                                     KAFKA_PRODUCE_REQ_TOPIC_DATA_NAME);
                if (names && kafka_auto_create(kw) &&
                    create_missing(kw, r, names, (uint32_t)nt, -1)) {
                        r->awaiting_topics = true;
                        return;
                }
        }
        if (r->pending)
                return;
        r->awaiting_topics = false;
        if (r->next_pop == 0) {
                /* Appends: one pop per partition, to its owner. */
                r->next_pop = 1;
                if (!pops_alloc_partitions(kw, r, td, nt,
                                           KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA))
                        return;
                uint32_t k = 0;
                for (int32_t i = 0; i < nt; i++) {
                        const struct kafka_val *t = kafka_val_array_elem(td, i);
                        struct kafka_str name =
                            kafka_val_get_str(t, KAFKA_PRODUCE_REQ_TOPIC_DATA_NAME);
                        const struct kafka_val *pd =
                            kafka_val_array(t, KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA);
                        for (int32_t j = 0; j < pd->len; j++) {
                                const struct kafka_val *pe = kafka_val_array_elem(pd, j);
                                struct kafka_pop *p = &r->pops[k++];
                                p->req = r;
                                p->op = KAFKA_POP_APPEND;
                                p->acks = (uint8_t)(acks != 0);
                                p->tidx = i;
                                p->pidx = j;
                                p->base = -1;
                                p->lso = -1;
                                p->timestamp = -1; /* LogAppendTime: set by the owner */
                                int32_t idx = kafka_val_get_int32(
                                    pe, KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA_INDEX);
                                struct kafka_str rec = kafka_val_get_str(
                                    pe, KAFKA_PRODUCE_REQ_TOPIC_DATA_PARTITION_DATA_RECORDS);
                                const struct ctl_kafka_part *cp = part_find(kw, name, idx);
                                if (!cp) {
                                        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                                        continue;
                                }
                                if (rec.len <= 0) {
                                        p->err = KERR_CORRUPT_MESSAGE;
                                        continue;
                                }
                                p->pid = cp->pid;
                                p->batch = rec.ptr;
                                p->len = (uint32_t)rec.len;
                                r->pending++;
                                kafka_pop_submit(kw, p, cp->worker);
                        }
                }
                if (r->pending)
                        return;
        }
        if (r->no_response) {
                kafka_req_done(kw, r);
                return;
        }
        bool test_drop = kw->test_drop_every && ++kw->test_drop_count % kw->test_drop_every == 0;
        resp_init(r, r->h.api_version);
        /* The test hook drops a response whose batches are appended and
         * durable: the producer must retry what the log already holds. */
        if (test_drop || !resp_mirror(r, &produce_mirror, false, produce_fill)) {
                sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
                kafka_req_done(kw, r);
                return;
        }
        kafka_req_done(kw, r);
}

static const struct topic_mirror list_offsets_mirror = {
    KAFKA_LIST_OFFSETS_REQ_TOPICS,
    KAFKA_LIST_OFFSETS_REQ_TOPICS_NAME,
    0,
    KAFKA_LIST_OFFSETS_REQ_TOPICS_PARTITIONS,
    KAFKA_LIST_OFFSETS_REQ_TOPICS_PARTITIONS_PARTITION_INDEX,
    KAFKA_LIST_OFFSETS_RESP_TOPICS,
    KAFKA_LIST_OFFSETS_RESP_TOPICS_NAME,
    0,
    KAFKA_LIST_OFFSETS_RESP_TOPICS_PARTITIONS,
    KAFKA_LIST_OFFSETS_RESP_TOPICS_PARTITIONS_PARTITION_INDEX,
};

static void list_offsets_fill(struct kafka_req *r, struct kafka_val *pe, const struct kafka_pop *p)
{
        kafka_val_set_int16(pe, KAFKA_LIST_OFFSETS_RESP_TOPICS_PARTITIONS_ERROR_CODE, p->err);
        kafka_val_set_int64(pe, KAFKA_LIST_OFFSETS_RESP_TOPICS_PARTITIONS_TIMESTAMP,
                            p->err ? -1 : p->hw);
        kafka_val_set_int64(pe, KAFKA_LIST_OFFSETS_RESP_TOPICS_PARTITIONS_OFFSET,
                            p->err ? -1 : p->base);
        if (r->h.api_version >= 4)
                kafka_val_set_int32(pe, KAFKA_LIST_OFFSETS_RESP_TOPICS_PARTITIONS_LEADER_EPOCH, 0);
}

static void handle_list_offsets(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *root = r->msg.root;
        const struct kafka_val *ta = kafka_val_array(root, KAFKA_LIST_OFFSETS_REQ_TOPICS);
        int32_t nt = ta->len < 0 ? 0 : ta->len;
        if (!r->creating) {
                r->creating = true;
                if (!pops_alloc_partitions(kw, r, ta, nt, KAFKA_LIST_OFFSETS_REQ_TOPICS_PARTITIONS))
                        return;
                uint32_t k = 0;
                for (int32_t i = 0; i < nt; i++) {
                        const struct kafka_val *t = kafka_val_array_elem(ta, i);
                        struct kafka_str name =
                            kafka_val_get_str(t, KAFKA_LIST_OFFSETS_REQ_TOPICS_NAME);
                        const struct kafka_val *pa =
                            kafka_val_array(t, KAFKA_LIST_OFFSETS_REQ_TOPICS_PARTITIONS);
                        for (int32_t j = 0; j < pa->len; j++) {
                                const struct kafka_val *pe = kafka_val_array_elem(pa, j);
                                struct kafka_pop *p = &r->pops[k++];
                                p->req = r;
                                p->op = KAFKA_POP_OFFSET;
                                p->timestamp = kafka_val_get_int64(
                                    pe, KAFKA_LIST_OFFSETS_REQ_TOPICS_PARTITIONS_TIMESTAMP);
                                const struct ctl_kafka_part *cp = part_find(
                                    kw, name,
                                    kafka_val_get_int32(
                                        pe,
                                        KAFKA_LIST_OFFSETS_REQ_TOPICS_PARTITIONS_PARTITION_INDEX));
                                if (!cp) {
                                        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                                        continue;
                                }
                                p->pid = cp->pid;
                                r->pending++;
                                kafka_pop_submit(kw, p, cp->worker);
                        }
                }
        }
        if (r->pending)
                return;
        resp_init(r, r->h.api_version);
        if (!resp_mirror(r, &list_offsets_mirror, false, list_offsets_fill)) {
                sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
                kafka_req_done(kw, r);
                return;
        }
        kafka_req_done(kw, r);
}

/* ---- fetch ------------------------------------------------------------------ */

static void timer_remove(struct kafka_worker *kw, struct kafka_req *r)
{
        if (!r->on_timer)
                return;
        for (struct kafka_req **pp = &kw->timers; *pp; pp = &(*pp)->next_timer)
                if (*pp == r) {
                        *pp = r->next_timer;
                        break;
                }
        r->on_timer = false;
}

/* Ends a long poll: local waits cancelled; stale remote wake-ups are
 * recognised by their token and dropped. */
static void fetch_unwait(struct kafka_worker *kw, struct kafka_req *r)
{
        if (!r->waiting)
                return;
        r->waiting = false;
        r->wait_token = 0;
        timer_remove(kw, r);
        for (uint32_t i = 0; i < r->npops; i++) {
                struct kafka_pop *p = &r->pops[i];
                if (p->lw_on) {
                        struct kafka_part *kp = kw->parts[p->pid];
                        if (kp)
                                log_wait_cancel(kp->log, &p->lw);
                        p->lw_on = false;
                }
        }
}

void kafka_fetch_wake(struct kafka_worker *kw, struct kafka_req *r)
{
        if (!r->waiting)
                return;
        fetch_unwait(kw, r);
        req_run(kw, r);
}

static void local_wait_cb(struct log_wait *lw, int64_t hw)
{
        (void)hw;
        struct kafka_pop *p = lw->ctx;
        p->lw_on = false;
        kafka_fetch_wake(p->req->kw, p->req);
}

static void fetch_wait(struct kafka_worker *kw, struct kafka_req *r, int32_t max_wait_ms)
{
        r->waiting = true;
        r->waited = true;
        r->wait_token = ++kw->next_token;
        r->deadline_ms = kw->w->now_ms + (uint64_t)max_wait_ms;
        r->next_timer = kw->timers;
        kw->timers = r;
        r->on_timer = true;
        for (uint32_t i = 0; i < r->npops && r->waiting; i++) {
                struct kafka_pop *p = &r->pops[i];
                if (p->err || p->op != KAFKA_POP_READ)
                        continue;
                uint16_t owner = p->acks; /* READ pops keep their owner here */
                if (owner == kw->w->id) {
                        struct kafka_part *kp = kw->parts[p->pid];
                        if (!kp)
                                continue;
                        p->lw =
                            (struct log_wait){.offset = p->offset, .cb = local_wait_cb, .ctx = p};
                        p->lw_on = true;
                        if (log_wait_add(kp->log, &p->lw) == 1) {
                                p->lw_on = false;
                                fetch_unwait(kw, r); /* the caller reads again */
                                return;
                        }
                } else {
                        struct sl_msg m = {.type = CTL_KAFKA_MSG_WAIT,
                                           .cookie = (uint64_t)(uintptr_t)r};
                        m.a.u64[0] = p->pid;
                        m.a.i64[1] = p->offset;
                        m.a.u64[2] = r->deadline_ms;
                        m.a.u64[3] = r->wait_token;
                        /* Without a credit this partition just cannot wake us
                         * early; the deadline still ends the poll. */
                        (void)sl_mbox_request(&kw->w->mb, owner, &m);
                }
        }
}

static const struct topic_mirror fetch_mirror = {
    KAFKA_FETCH_REQ_TOPICS,
    KAFKA_FETCH_REQ_TOPICS_TOPIC,
    KAFKA_FETCH_REQ_TOPICS_TOPIC_ID,
    KAFKA_FETCH_REQ_TOPICS_PARTITIONS,
    KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION,
    KAFKA_FETCH_RESP_RESPONSES,
    KAFKA_FETCH_RESP_RESPONSES_TOPIC,
    KAFKA_FETCH_RESP_RESPONSES_TOPIC_ID,
    KAFKA_FETCH_RESP_RESPONSES_PARTITIONS,
    KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_PARTITION_INDEX,
};

static void fetch_fill(struct kafka_req *r, struct kafka_val *pe, const struct kafka_pop *p)
{
        kafka_val_set_int16(pe, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_ERROR_CODE, p->err);
        kafka_val_set_int64(pe, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_HIGH_WATERMARK, p->hw);
        kafka_val_set_int64(pe, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_LAST_STABLE_OFFSET, p->hw);
        if (r->h.api_version >= 5)
                kafka_val_set_int64(pe, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_LOG_START_OFFSET,
                                    p->lso);
        kafka_val_array_init(&r->arena, pe,
                             KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_ABORTED_TRANSACTIONS, 0);
        kafka_val_set_str(pe, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_RECORDS,
                          p->got ? p->dest : (const uint8_t *)"", (int32_t)p->got);
        atomic_fetch_add_explicit(&r->kw->fetch_bytes, p->got, memory_order_relaxed);
}

/* ---- KIP-227 fetch sessions (one per connection) --------------------------- */

/* The topic a request's topic element names: by id from v13, else by name. */
static const struct ctl_kafka_topic *fetch_topic(const struct kafka_worker *kw,
                                                 const struct kafka_val *t, bool by_id,
                                                 unsigned name_id, unsigned id_id)
{
        if (by_id) {
                const uint8_t *id = kafka_val_get_uuid(t, id_id);
                return id ? ctl_kafka_snap_find_id(kw->snap, id) : NULL;
        }
        struct kafka_str name = kafka_val_get_str(t, name_id);
        return name.len > 0
                   ? ctl_kafka_snap_find(kw->snap, (const char *)name.ptr, (uint32_t)name.len)
                   : NULL;
}

/* A request partition into the session: 0.. its slot, or -ENOSPC. */
static int fsession_upsert_req(struct kafka_fsession *fs, const struct ctl_kafka_topic *tp,
                               const struct kafka_val *pe)
{
        return kafka_fsession_upsert(
            fs, tp->uuid, tp->name, tp->name_len,
            kafka_val_get_int32(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION),
            kafka_val_get_int64(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_FETCH_OFFSET),
            kafka_val_get_int32(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION_MAX_BYTES));
}

/* An incremental request: its partitions update the session (added, or
 * new offset / max bytes), its forgotten topics leave it. Topics this
 * broker does not know cannot be kept (no id to key them by) and are left
 * out. Returns 0 or a Kafka error for the whole request. */
static int16_t fsession_apply(struct kafka_worker *kw, struct kafka_fsession *fs,
                              const struct kafka_val *root, bool by_id)
{
        const struct kafka_val *ta = kafka_val_array(root, KAFKA_FETCH_REQ_TOPICS);
        for (int32_t i = 0; i < ta->len; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                const struct ctl_kafka_topic *tp = fetch_topic(
                    kw, t, by_id, KAFKA_FETCH_REQ_TOPICS_TOPIC, KAFKA_FETCH_REQ_TOPICS_TOPIC_ID);
                const struct kafka_val *pa = kafka_val_array(t, KAFKA_FETCH_REQ_TOPICS_PARTITIONS);
                for (int32_t j = 0; tp && j < pa->len; j++) {
                        const struct kafka_val *pe = kafka_val_array_elem(pa, j);
                        int rc = fsession_upsert_req(fs, tp, pe);
                        if (rc < 0)
                                return KERR_INVALID_REQUEST; /* past the session's bounds */
                }
        }
        const struct kafka_val *fa = kafka_val_array(root, KAFKA_FETCH_REQ_FORGOTTEN_TOPICS_DATA);
        for (int32_t i = 0; i < fa->len; i++) {
                const struct kafka_val *t = kafka_val_array_elem(fa, i);
                const struct ctl_kafka_topic *tp =
                    fetch_topic(kw, t, by_id, KAFKA_FETCH_REQ_FORGOTTEN_TOPICS_DATA_TOPIC,
                                KAFKA_FETCH_REQ_FORGOTTEN_TOPICS_DATA_TOPIC_ID);
                const struct kafka_val *pa =
                    kafka_val_array(t, KAFKA_FETCH_REQ_FORGOTTEN_TOPICS_DATA_PARTITIONS);
                for (int32_t j = 0; tp && j < pa->len; j++)
                        kafka_fsession_forget(fs, tp->uuid,
                                              (int32_t)kafka_val_array_elem(pa, j)->u.i64);
        }
        return 0;
}

/* The session's partitions as a request topic array in the arena, so the
 * reads run exactly as for a full request; r->fmap maps each to its
 * session entry. Names are copied: the snapshot may go before encoding.
 * Runs for every incremental fetch: partitions are grouped by topic with
 * one counting pass (O(topics + partitions), not topics x partitions). */
static bool fsession_topics(struct kafka_req *r, const struct kafka_fsession *fs)
{
        struct kafka_msg tmp;
        if (kafka_msg_init(&tmp, &r->arena, KAFKA_API_FETCH, r->h.api_version, KAFKA_REQUEST))
                return false;
        r->fmap = kafka_arena_alloc(&r->arena, sizeof(uint32_t) * (fs->nparts + 1));
        if (!r->fmap)
                return false;
        /* first[ti]: where topic ti's partitions start in fmap (session
         * order within a topic, topics in session order) */
        uint32_t first[KAFKA_FSESSION_TOPICS_MAX + 1] = {0};
        for (uint32_t k = 0; k < fs->nparts; k++)
                first[fs->parts[k].topic + 1]++;
        uint32_t nt = 0;
        for (uint32_t ti = 0; ti < fs->ntopics; ti++) {
                nt += first[ti + 1] != 0;
                first[ti + 1] += first[ti];
        }
        uint32_t fill[KAFKA_FSESSION_TOPICS_MAX];
        memcpy(fill, first, sizeof(fill[0]) * fs->ntopics);
        for (uint32_t k = 0; k < fs->nparts; k++)
                r->fmap[fill[fs->parts[k].topic]++] = k;
        if (!kafka_val_array_init(&r->arena, tmp.root, KAFKA_FETCH_REQ_TOPICS, (int32_t)nt) && nt)
                return false;
        uint32_t i = 0;
        for (uint32_t ti = 0; ti < fs->ntopics; ti++) {
                int32_t np = (int32_t)(first[ti + 1] - first[ti]);
                if (!np)
                        continue;
                const struct kafka_fsess_topic *st = &fs->topics[ti];
                struct kafka_val *te = kafka_val_array_elem(
                    kafka_val_array(tmp.root, KAFKA_FETCH_REQ_TOPICS), (int32_t)i++);
                uint8_t *uuid = kafka_arena_alloc(&r->arena, 16 + st->name_len + 1u);
                if (!uuid)
                        return false;
                memcpy(uuid, st->uuid, 16);
                memcpy(uuid + 16, st->name, st->name_len);
                kafka_val_set_uuid(te, KAFKA_FETCH_REQ_TOPICS_TOPIC_ID, uuid);
                kafka_val_set_str(te, KAFKA_FETCH_REQ_TOPICS_TOPIC, uuid + 16, st->name_len);
                if (!kafka_val_array_init(&r->arena, te, KAFKA_FETCH_REQ_TOPICS_PARTITIONS, np))
                        return false;
                for (int32_t j = 0; j < np; j++) {
                        const struct kafka_fsess_part *sp =
                            &fs->parts[r->fmap[first[ti] + (uint32_t)j]];
                        struct kafka_val *pe = kafka_val_array_elem(
                            kafka_val_array(te, KAFKA_FETCH_REQ_TOPICS_PARTITIONS), j);
                        kafka_val_set_int32(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION,
                                            sp->partition);
                        kafka_val_set_int64(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_FETCH_OFFSET,
                                            sp->offset);
                        kafka_val_set_int32(pe,
                                            KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION_MAX_BYTES,
                                            sp->max_bytes);
                }
        }
        r->ftopics = kafka_val_array(tmp.root, KAFKA_FETCH_REQ_TOPICS);
        return true;
}

/* Decides what the request does with the connection's session, before any
 * read. Epoch -1 (final) closes the named session and fetches sessionless;
 * epoch 0 closes it and opens a new one with the request's partitions
 * (full answer); another epoch is an incremental fetch in the open session:
 * FETCH_SESSION_ID_NOT_FOUND for another id, INVALID_FETCH_SESSION_EPOCH
 * for an epoch out of step, as Kafka answers. Returns 0 or that error. */
static int16_t fetch_session_begin(struct kafka_worker *kw, struct kafka_req *r, bool by_id)
{
        struct kafka_conn *kc = r->c->proto_state;
        const struct kafka_val *root = r->msg.root;
        int32_t sid = kafka_val_get_int32(root, KAFKA_FETCH_REQ_SESSION_ID);
        int32_t epoch = kafka_val_get_int32(root, KAFKA_FETCH_REQ_SESSION_EPOCH);
        if (epoch == -1 || epoch == 0) {
                if (kc->fs && (sid == kc->fs->id || epoch == 0)) {
                        kafka_fsession_free(kc->fs);
                        kc->fs = NULL;
                }
                r->fmode = epoch == 0 ? KAFKA_FETCH_FULL_NEW : KAFKA_FETCH_SESSIONLESS;
                return 0;
        }
        if (!kc->fs || kc->fs->id != sid)
                return KERR_FETCH_SESSION_ID_NOT_FOUND;
        if (epoch != kc->fs->epoch)
                return KERR_INVALID_FETCH_SESSION_EPOCH;
        int16_t err = fsession_apply(kw, kc->fs, root, by_id);
        if (err)
                return err;
        if (!fsession_topics(r, kc->fs))
                return KERR_UNKNOWN_SERVER_ERROR;
        r->fmode = KAFKA_FETCH_INCREMENTAL;
        return 0;
}

/* A full fetch that asked for a session gets one holding the partitions it
 * named that exist, with what this response told it. Without memory or
 * past the bounds it gets none (session id 0): the client stays
 * sessionless, which Kafka also answers when its cache is full. */
static int32_t fetch_session_open(struct kafka_worker *kw, struct kafka_req *r, bool by_id)
{
        struct kafka_conn *kc = r->c->proto_state;
        int32_t id;
        do {
                id = (int32_t)((++kw->next_session * 2654435761u) ^ ((uint32_t)kw->w->id << 24)) &
                     INT32_MAX;
        } while (id == 0);
        struct kafka_fsession *fs = kafka_fsession_new(id);
        const struct kafka_val *ta = kafka_val_array(r->msg.root, KAFKA_FETCH_REQ_TOPICS);
        uint32_t k = 0;
        for (int32_t i = 0; fs && i < ta->len; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                const struct ctl_kafka_topic *tp = fetch_topic(
                    kw, t, by_id, KAFKA_FETCH_REQ_TOPICS_TOPIC, KAFKA_FETCH_REQ_TOPICS_TOPIC_ID);
                const struct kafka_val *pa = kafka_val_array(t, KAFKA_FETCH_REQ_TOPICS_PARTITIONS);
                for (int32_t j = 0; j < pa->len; j++, k++) {
                        const struct kafka_val *pe = kafka_val_array_elem(pa, j);
                        if (!tp)
                                continue;
                        int rc = fsession_upsert_req(fs, tp, pe);
                        if (rc < 0) {
                                kafka_fsession_free(fs);
                                fs = NULL;
                                break;
                        }
                        fs->parts[rc].hw_sent = r->pops[k].hw;
                        fs->parts[rc].lso_sent = r->pops[k].lso;
                }
        }
        if (!fs)
                return 0;
        kc->fs = fs;
        return id;
}

/* An incremental answer: only partitions with news, grouped by topic in
 * session order; the session remembers what each was told. */
static bool fetch_resp_incremental(struct kafka_req *r, struct kafka_fsession *fs, bool by_id)
{
        const struct kafka_val *ta = r->ftopics;
        int32_t nt = 0;
        uint32_t k = 0;
        for (int32_t i = 0; i < ta->len; i++) {
                const struct kafka_val *pa =
                    kafka_val_array(kafka_val_array_elem(ta, i), KAFKA_FETCH_REQ_TOPICS_PARTITIONS);
                bool any = false;
                for (int32_t j = 0; j < pa->len; j++, k++) {
                        const struct kafka_pop *p = &r->pops[k];
                        any |= kafka_fsession_news(&fs->parts[r->fmap[k]], p->err, p->got, p->hw,
                                                   p->lso);
                }
                nt += any;
        }
        if (!kafka_val_array_init(&r->arena, r->resp.root, KAFKA_FETCH_RESP_RESPONSES, nt) && nt)
                return false;
        int32_t oi = 0;
        k = 0;
        for (int32_t i = 0; i < ta->len; i++) {
                const struct kafka_val *t = kafka_val_array_elem(ta, i);
                const struct kafka_val *pa = kafka_val_array(t, KAFKA_FETCH_REQ_TOPICS_PARTITIONS);
                int32_t np = 0;
                for (int32_t j = 0; j < pa->len; j++) {
                        const struct kafka_pop *p = &r->pops[k + (uint32_t)j];
                        np += kafka_fsession_news(&fs->parts[r->fmap[k + (uint32_t)j]], p->err,
                                                  p->got, p->hw, p->lso);
                }
                if (!np) {
                        k += (uint32_t)pa->len;
                        continue;
                }
                struct kafka_val *te = kafka_val_array_elem(
                    kafka_val_array(r->resp.root, KAFKA_FETCH_RESP_RESPONSES), oi++);
                if (by_id) {
                        kafka_val_set_uuid(te, KAFKA_FETCH_RESP_RESPONSES_TOPIC_ID,
                                           kafka_val_get_uuid(t, KAFKA_FETCH_REQ_TOPICS_TOPIC_ID));
                } else {
                        struct kafka_str name = kafka_val_get_str(t, KAFKA_FETCH_REQ_TOPICS_TOPIC);
                        kafka_val_set_str(te, KAFKA_FETCH_RESP_RESPONSES_TOPIC, name.ptr, name.len);
                }
                if (!kafka_val_array_init(&r->arena, te, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS, np))
                        return false;
                int32_t oj = 0;
                for (int32_t j = 0; j < pa->len; j++, k++) {
                        const struct kafka_pop *p = &r->pops[k];
                        struct kafka_fsess_part *sp = &fs->parts[r->fmap[k]];
                        if (!kafka_fsession_news(sp, p->err, p->got, p->hw, p->lso))
                                continue;
                        struct kafka_val *pe = kafka_val_array_elem(
                            kafka_val_array(te, KAFKA_FETCH_RESP_RESPONSES_PARTITIONS), oj++);
                        kafka_val_set_int32(pe,
                                            KAFKA_FETCH_RESP_RESPONSES_PARTITIONS_PARTITION_INDEX,
                                            sp->partition);
                        fetch_fill(r, pe, p);
                        sp->hw_sent = p->hw;
                        sp->lso_sent = p->lso;
                }
        }
        return true;
}

static void handle_fetch(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *root = r->msg.root;
        bool by_id = r->h.api_version >= 13;
        if (!r->pops && r->h.api_version >= 7) {
                int16_t serr = fetch_session_begin(kw, r, by_id);
                if (serr) {
                        resp_init(r, r->h.api_version);
                        kafka_val_set_int16(r->resp.root, KAFKA_FETCH_RESP_ERROR_CODE, serr);
                        kafka_val_array_init(&r->arena, r->resp.root, KAFKA_FETCH_RESP_RESPONSES,
                                             0);
                        kafka_req_done(kw, r);
                        return;
                }
        }
        /* An incremental fetch reads the session's partitions. */
        const struct kafka_val *ta =
            r->ftopics ? r->ftopics : kafka_val_array(root, KAFKA_FETCH_REQ_TOPICS);
        int32_t nt = ta->len < 0 ? 0 : ta->len;
        if (!r->pops) {
                if (!pops_alloc_partitions(kw, r, ta, nt, KAFKA_FETCH_REQ_TOPICS_PARTITIONS))
                        return;
                r->fbuf = sl_buf_alloc(&kw->w->pool, SL_BUF_LARGE);
        }
        if (r->pending)
                return;
        int32_t max_bytes = kafka_val_get_int32(root, KAFKA_FETCH_REQ_MAX_BYTES);
        if (max_bytes <= 0)
                max_bytes = INT32_MAX;
        uint32_t cap = r->fbuf ? r->fbuf->cap : 0;
        /* One partition at a time, in request order: each read knows how much
         * room the response has left (KIP-74: the first batch goes even when
         * it is larger than the limits). */
        for (;;) {
                r->fused = 0;
                for (uint32_t i = 0; i < r->next_pop; i++)
                        r->fused += r->pops[i].got;
                if (r->next_pop >= r->npops)
                        break;
                uint32_t k = 0, i = r->next_pop;
                int32_t ti = 0, pj = 0;
                for (ti = 0; ti < nt; ti++) {
                        int32_t np = kafka_val_array_len(kafka_val_array_elem(ta, ti),
                                                         KAFKA_FETCH_REQ_TOPICS_PARTITIONS);
                        if (i < k + (uint32_t)np) {
                                pj = (int32_t)(i - k);
                                break;
                        }
                        k += (uint32_t)np;
                }
                const struct kafka_val *t = kafka_val_array_elem(ta, ti);
                const struct kafka_val *pe =
                    kafka_val_array_elem(kafka_val_array(t, KAFKA_FETCH_REQ_TOPICS_PARTITIONS), pj);
                struct kafka_pop *p = &r->pops[i];
                r->next_pop++;
                memset(p, 0, sizeof(*p));
                p->req = r;
                p->op = KAFKA_POP_READ;
                p->tidx = ti;
                p->pidx = pj;
                p->hw = -1;
                p->lso = -1;
                p->offset = kafka_val_get_int64(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_FETCH_OFFSET);
                int32_t pmax =
                    kafka_val_get_int32(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION_MAX_BYTES);
                int32_t idx = kafka_val_get_int32(pe, KAFKA_FETCH_REQ_TOPICS_PARTITIONS_PARTITION);
                /* v13+: topics by id (KIP-516); an id we do not know is
                 * UNKNOWN_TOPIC_ID, a known topic without that partition
                 * UNKNOWN_TOPIC_OR_PARTITION. */
                const struct ctl_kafka_topic *tp = fetch_topic(
                    kw, t, by_id, KAFKA_FETCH_REQ_TOPICS_TOPIC, KAFKA_FETCH_REQ_TOPICS_TOPIC_ID);
                if (!tp && by_id) {
                        p->err = KERR_UNKNOWN_TOPIC_ID;
                        continue;
                }
                const struct ctl_kafka_part *cp =
                    tp && idx >= 0 && (uint32_t)idx < tp->nparts ? &tp->parts[idx] : NULL;
                if (!cp) {
                        p->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                        continue;
                }
                p->pid = cp->pid;
                p->acks = (uint8_t)cp->worker; /* remembered for the long poll */
                p->dest = r->fbuf ? r->fbuf->data + r->fused : NULL;
                p->cap = cap - r->fused;
                uint32_t room =
                    (uint32_t)SL_MIN((int64_t)max_bytes - (int64_t)r->fused, (int64_t)p->cap);
                if ((int64_t)max_bytes <= (int64_t)r->fused)
                        room = 0;
                p->max = (uint32_t)SL_MAX(0, SL_MIN((int64_t)pmax, (int64_t)room));
                if (r->fused == 0 && p->max == 0 && pmax > 0)
                        p->max = SL_MIN(p->cap, 1u); /* KIP-74: still one batch */
                r->pending++;
                kafka_pop_submit(kw, p, cp->worker);
                if (r->pending)
                        return; /* resumed when it completes */
        }
        if (r->pending)
                return;
        /* All read. Long poll if there is too little and we have not yet. */
        int32_t min_bytes = kafka_val_get_int32(root, KAFKA_FETCH_REQ_MIN_BYTES);
        int32_t max_wait = kafka_val_get_int32(root, KAFKA_FETCH_REQ_MAX_WAIT_MS);
        bool any_err = false;
        for (uint32_t i = 0; i < r->npops; i++)
                any_err |= r->pops[i].err != 0;
        if (!r->waited && !any_err && max_wait > 0 &&
            (int64_t)r->fused < (int64_t)SL_MAX(min_bytes, 1) && r->npops) {
                /* A long poll holds no large buffer: there may be many more
                 * idle consumers than buffers. */
                if (r->fused == 0 && r->fbuf) {
                        sl_worker_buf_put(kw->w, r->fbuf);
                        r->fbuf = NULL;
                }
                fetch_wait(kw, r, max_wait);
                if (r->waiting)
                        return;
        }
        if (r->waited && r->next_pop == r->npops && r->fused == 0 && !r->creating) {
                /* Woken: read everything again, once. */
                r->creating = true;
                r->next_pop = 0;
                if (!r->fbuf)
                        r->fbuf = sl_buf_alloc(&kw->w->pool, SL_BUF_LARGE);
                handle_fetch(kw, r);
                return;
        }
        resp_init(r, r->h.api_version);
        struct kafka_conn *kc = r->c->proto_state;
        bool ok;
        int32_t sid = 0;
        if (r->fmode == KAFKA_FETCH_INCREMENTAL) {
                ok = kc->fs && fetch_resp_incremental(r, kc->fs, by_id);
                if (ok) {
                        sid = kc->fs->id;
                        kc->fs->epoch = kc->fs->epoch == INT32_MAX ? 1 : kc->fs->epoch + 1;
                }
        } else {
                ok = resp_mirror(r, &fetch_mirror, by_id, fetch_fill);
                if (ok && r->fmode == KAFKA_FETCH_FULL_NEW)
                        sid = fetch_session_open(kw, r, by_id);
        }
        if (!ok) {
                sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
                kafka_req_done(kw, r);
                return;
        }
        if (r->h.api_version >= 7)
                kafka_val_set_int32(r->resp.root, KAFKA_FETCH_RESP_SESSION_ID, sid);
        kafka_req_done(kw, r);
}

/* The broker config a topic config falls back to, by Kafka's names. */
static const char *broker_synonym(const char *topic_key)
{
        static const char *const map[][2] = {
            {"cleanup.policy", "log.cleanup.policy"},
            {"retention.ms", "log.retention.ms"},
            {"retention.bytes", "log.retention.bytes"},
            {"segment.bytes", "log.segment.bytes"},
            {"segment.ms", "log.roll.ms"},
            {"message.timestamp.type", "log.message.timestamp.type"},
            {"max.message.bytes", "message.max.bytes"},
        };
        for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
                if (!strcmp(map[i][0], topic_key))
                        return map[i][1];
        return NULL;
}

/* DescribeConfigs v1+ with include_synonyms: where a value could come from,
 * most specific first, as Kafka lists them: the topic's own value, then the
 * broker's (from the file or built in). A broker config is its own only
 * synonym. */
static bool describe_synonyms(struct kafka_req *r, struct kafka_val *ce, bool topic,
                              const struct described_cfg *c, const struct described_cfg *broker,
                              int32_t nbroker)
{
        const struct described_cfg *syn[2];
        int32_t ns = 0;
        if (!topic || c->src == CTL_KAFKA_SRC_TOPIC)
                syn[ns++] = c;
        const char *bk = topic ? broker_synonym(c->key) : NULL;
        for (int32_t i = 0; bk && i < nbroker; i++)
                if (!strcmp(broker[i].key, bk))
                        syn[ns++] = &broker[i];
        if (!kafka_val_array_init(&r->arena, ce,
                                  KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_SYNONYMS, ns) &&
            ns)
                return false;
        for (int32_t i = 0; i < ns; i++) {
                struct kafka_val *se = kafka_val_array_elem(
                    kafka_val_array(ce, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_SYNONYMS), i);
                char *vp = arena_strdup(&r->arena, syn[i]->val);
                if (!vp)
                        return false;
                kafka_val_set_cstr(se, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_SYNONYMS_NAME,
                                   syn[i]->key);
                kafka_val_set_cstr(se, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_SYNONYMS_VALUE,
                                   vp);
                kafka_val_set_int8(se, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_SYNONYMS_SOURCE,
                                   (int8_t)syn[i]->src);
        }
        return true;
}

/* DescribeConfigs: the topic configs clients read, the topic's effective
 * values (its own over the broker's [kafka] defaults) with their sources;
 * broker 0: the [kafka] keys behind them by Kafka's names. */
static void handle_describe_configs(struct kafka_worker *kw, struct kafka_req *r)
{
        const struct kafka_val *ra =
            kafka_val_array(r->msg.root, KAFKA_DESCRIBE_CONFIGS_REQ_RESOURCES);
        int32_t n = ra->len < 0 ? 0 : ra->len;
        int16_t v = r->h.api_version;
        resp_init(r, v);
        struct kafka_val *rt = r->resp.root;
        if (!kafka_val_array_init(&r->arena, rt, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS, n) && n)
                goto nomem;
        bool synonyms =
            v >= 1 && kafka_val_get_bool(r->msg.root, KAFKA_DESCRIBE_CONFIGS_REQ_INCLUDE_SYNONYMS);
        struct described_cfg broker[DESCRIBED_MAX];
        int32_t nbroker = synonyms ? broker_configs(kw->w->cfg, broker) : 0;
        for (int32_t i = 0; i < n; i++) {
                const struct kafka_val *q = kafka_val_array_elem(ra, i);
                struct kafka_val *e = kafka_val_array_elem(
                    kafka_val_array(rt, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS), i);
                int8_t type =
                    kafka_val_get_int8(q, KAFKA_DESCRIBE_CONFIGS_REQ_RESOURCES_RESOURCE_TYPE);
                struct kafka_str name =
                    kafka_val_get_str(q, KAFKA_DESCRIBE_CONFIGS_REQ_RESOURCES_RESOURCE_NAME);
                kafka_val_set_int8(e, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_RESOURCE_TYPE, type);
                kafka_val_set_str(e, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_RESOURCE_NAME, name.ptr,
                                  name.len < 0 ? 0 : name.len);
                struct described_cfg cf[DESCRIBED_MAX];
                int32_t nk = 0;
                int16_t err = 0;
                if (type == KAFKA_RESOURCE_TOPIC) {
                        const struct ctl_kafka_topic *t =
                            name.len > 0 ? ctl_kafka_snap_find(kw->snap, (const char *)name.ptr,
                                                               (uint32_t)name.len)
                                         : NULL;
                        if (t)
                                nk = topic_configs(t, cf);
                        else
                                err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                } else if (type == KAFKA_RESOURCE_BROKER) {
                        /* This broker is node 0; "" names the cluster-wide
                         * dynamic defaults, of which there are none. */
                        if (str_is(name, "0"))
                                nk = broker_configs(kw->w->cfg, cf);
                        else if (name.len > 0)
                                err = KERR_INVALID_REQUEST;
                }
                if (err) {
                        kafka_val_set_int16(e, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_ERROR_CODE, err);
                        kafka_val_array_init(&r->arena, e,
                                             KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS, 0);
                        continue;
                }
                /* only the keys asked for (null = all) */
                const struct kafka_val *want =
                    kafka_val_array(q, KAFKA_DESCRIBE_CONFIGS_REQ_RESOURCES_CONFIGURATION_KEYS);
                bool pick[DESCRIBED_MAX];
                int32_t npick = 0;
                for (int32_t k = 0; k < nk; k++) {
                        pick[k] = !want || want->len < 0;
                        for (int32_t j = 0; !pick[k] && j < want->len; j++) {
                                const struct kafka_val *w = kafka_val_array_elem(want, j);
                                pick[k] = str_is((struct kafka_str){w->u.ptr, w->len}, cf[k].key);
                        }
                        npick += pick[k];
                }
                if (!kafka_val_array_init(&r->arena, e, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS,
                                          npick) &&
                    npick)
                        goto nomem;
                for (int32_t k = 0, out = 0; k < nk; k++) {
                        if (!pick[k])
                                continue;
                        struct kafka_val *ce = kafka_val_array_elem(
                            kafka_val_array(e, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS), out++);
                        char *vp = arena_strdup(&r->arena, cf[k].val);
                        if (!vp)
                                goto nomem;
                        kafka_val_set_cstr(ce, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_NAME,
                                           cf[k].key);
                        kafka_val_set_cstr(ce, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_VALUE,
                                           vp);
                        /* No AlterConfigs: configs are fixed at creation
                         * (topics) or start (the broker). */
                        kafka_val_set_bool(
                            ce, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_READ_ONLY, true);
                        /* v0 has only is_default: true unless the topic
                         * (or the broker's file) set the value. */
                        if (v == 0)
                                kafka_val_set_bool(
                                    ce, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_IS_DEFAULT,
                                    type == KAFKA_RESOURCE_TOPIC
                                        ? cf[k].src != CTL_KAFKA_SRC_TOPIC
                                        : cf[k].src == CTL_KAFKA_SRC_DEFAULT);
                        else
                                kafka_val_set_int8(
                                    ce, KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_CONFIG_SOURCE,
                                    (int8_t)cf[k].src);
                        if (v >= 1 && !synonyms)
                                kafka_val_array_init(
                                    &r->arena, ce,
                                    KAFKA_DESCRIBE_CONFIGS_RESP_RESULTS_CONFIGS_SYNONYMS, 0);
                        else if (v >= 1 && !describe_synonyms(r, ce, type == KAFKA_RESOURCE_TOPIC,
                                                              &cf[k], broker, nbroker))
                                goto nomem;
                }
        }
        kafka_req_done(kw, r);
        return;
nomem:
        sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
        kafka_req_done(kw, r);
}

/* FindCoordinator: this broker coordinates every group. */
static void handle_find_coordinator(struct kafka_worker *kw, struct kafka_req *r)
{
        char host[256];
        int32_t port;
        advertised(r->c, host, sizeof(host), &port);
        char *h = kafka_arena_alloc(&r->arena, strlen(host) + 1);
        resp_init(r, r->h.api_version);
        struct kafka_val *rt = r->resp.root;
        if (!h) {
                sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
                kafka_req_done(kw, r);
                return;
        }
        strcpy(h, host);
        if (r->h.api_version < 4) {
                kafka_val_set_int32(rt, KAFKA_FIND_COORDINATOR_RESP_NODE_ID, 0);
                kafka_val_set_cstr(rt, KAFKA_FIND_COORDINATOR_RESP_HOST, h);
                kafka_val_set_int32(rt, KAFKA_FIND_COORDINATOR_RESP_PORT, port);
                kafka_req_done(kw, r);
                return;
        }
        const struct kafka_val *ka =
            kafka_val_array(r->msg.root, KAFKA_FIND_COORDINATOR_REQ_COORDINATOR_KEYS);
        int32_t n = ka->len < 0 ? 0 : ka->len;
        kafka_val_array_init(&r->arena, rt, KAFKA_FIND_COORDINATOR_RESP_COORDINATORS, n);
        for (int32_t i = 0; i < n; i++) {
                struct kafka_val *e = kafka_val_array_elem(
                    kafka_val_array(rt, KAFKA_FIND_COORDINATOR_RESP_COORDINATORS), i);
                const struct kafka_val *kv = kafka_val_array_elem(ka, i);
                struct kafka_str key = {kv->u.ptr, kv->len};
                kafka_val_set_str(e, KAFKA_FIND_COORDINATOR_RESP_COORDINATORS_KEY, key.ptr,
                                  key.len < 0 ? 0 : key.len);
                kafka_val_set_int32(e, KAFKA_FIND_COORDINATOR_RESP_COORDINATORS_NODE_ID, 0);
                kafka_val_set_cstr(e, KAFKA_FIND_COORDINATOR_RESP_COORDINATORS_HOST, h);
                kafka_val_set_int32(e, KAFKA_FIND_COORDINATOR_RESP_COORDINATORS_PORT, port);
        }
        kafka_req_done(kw, r);
}

/* Group APIs run on the control thread, which builds the response in this
 * request's arena (lent until the reply). */
static void handle_group(struct kafka_worker *kw, struct kafka_req *r)
{
        if (!r->creating) {
                r->creating = true;
                r->gcall = (struct ctl_kafka_gcall){.api_key = r->h.api_key,
                                                    .api_version = r->h.api_version,
                                                    .req = &r->msg,
                                                    .resp = &r->resp,
                                                    .arena = &r->arena,
                                                    .client_id = r->h.client_id.ptr,
                                                    .client_id_len = r->h.client_id.len};
                memset(&r->resp, 0, sizeof(r->resp));
                if (!pops_alloc(r, 1))
                        goto fail;
                r->pops[0].op = KAFKA_POP_GROUP;
                r->pops[0].req = r;
                r->pending++;
                kafka_pop_submit(kw, &r->pops[0], kw->w->rt->control_ep);
                if (r->pending)
                        return;
        }
        if (r->pending)
                return;
        if (!r->resp.desc)
                goto fail;
        kafka_req_done(kw, r);
        return;
fail:
        sl_conn_close(r->c, SL_CLOSE_PROTOCOL);
        kafka_req_done(kw, r);
}

/* One handler per advertised API, from the same table (kafka_apis.h). */
typedef void (*kafka_handler_fn)(struct kafka_worker *kw, struct kafka_req *r);
#define KAFKA_API_HANDLER(k, lo, hi, fn) [k] = fn,
static const kafka_handler_fn kafka_handlers[] = {KAFKA_ADVERTISED(KAFKA_API_HANDLER)};

/* Runs a request's handler; it is re-entered each time its last pending
 * partition operation completes. */
static void req_run(struct kafka_worker *kw, struct kafka_req *r)
{
        if (r->in_step || r->state != KAFKA_REQ_RUNNING)
                return;
        if (!r->c) {
                if (!r->pending)
                        req_free(kw, r);
                return;
        }
        r->in_step = true;
        SL_ASSERT(r->h.api_key >= 0 && (size_t)r->h.api_key < SL_ARRAY_LEN(kafka_handlers) &&
                  kafka_handlers[r->h.api_key]); /* only advertised APIs get here */
        kafka_handlers[r->h.api_key](kw, r);
        r->in_step = false;
}

void kafka_pop_complete(struct kafka_worker *kw, struct kafka_pop *p)
{
        struct kafka_req *r = p->req;
        SL_ASSERT(r->pending > 0);
        r->pending--;
        if (r->pending)
                return;
        if (!r->c) {
                req_free(kw, r);
                return;
        }
        if (!r->in_step) /* else the running handler sees pending == 0 */
                req_run(kw, r);
}

/* ---- frames ---------------------------------------------------------------- */

/* Is an earlier produce on this connection not yet appending (waiting for
 * its topics, or queued behind one that is)? */
static bool produce_held_back(const struct kafka_conn *kc)
{
        for (uint32_t i = 0; i + 1 < kc->count; i++) {
                const struct kafka_req *e = kc->ring[(kc->head + i) % KAFKA_CONN_INFLIGHT];
                if (e->h.api_key == KAFKA_API_PRODUCE &&
                    (e->awaiting_topics || e->state == KAFKA_REQ_QUEUED))
                        return true;
        }
        return false;
}

static int frame_dispatch(struct kafka_worker *kw, struct sl_conn *c, struct kafka_req *r)
{
        struct kafka_conn *kc = c->proto_state;
        const uint8_t *f = r->frame->data + r->frame_off;
        ssize_t hn = kafka_req_header_decode(&r->h, f, r->frame_len);
        atomic_fetch_add_explicit(&kw->requests, 1, memory_order_relaxed);
        const struct kafka_api_range *api = hn >= 0 ? api_find(r->h.api_key) : NULL;
        bool fallback =
            api && r->h.api_key == KAFKA_API_API_VERSIONS && r->h.api_version > api->max;
        if (!api || (!fallback && (r->h.api_version < api->min || r->h.api_version > api->max))) {
                /* Kafka closes the connection on a request it cannot parse or an
                 * unsupported version of anything but ApiVersions. */
                SL_DEBUG("kafka: closing %s: api %d v%d not supported", c->peer_str, r->h.api_key,
                         r->h.api_version);
                atomic_fetch_add_explicit(&kw->errors_closed, 1, memory_order_relaxed);
                req_free(kw, r);
                return -1;
        }
        if (!fallback) {
                ssize_t bn = kafka_msg_decode(&r->msg, &r->arena, r->h.api_key, r->h.api_version,
                                              KAFKA_REQUEST, f + hn, r->frame_len - (size_t)hn);
                if (bn < 0) {
                        SL_DEBUG("kafka: closing %s: malformed api %d v%d (%zd)", c->peer_str,
                                 r->h.api_key, r->h.api_version, bn);
                        atomic_fetch_add_explicit(&kw->errors_closed, 1, memory_order_relaxed);
                        req_free(kw, r);
                        return -1;
                }
        }
        uint32_t slot = (kc->head + kc->count) % KAFKA_CONN_INFLIGHT;
        kc->ring[slot] = r;
        kc->count++;
        /* Fetch waits for the head; so does a produce behind one that waits
         * for topics to be created (or itself waits): appends go in request
         * order, as Kafka's one request at a time per connection gives.
         * Everything else starts now. */
        bool wait_head = r->h.api_key == KAFKA_API_FETCH ||
                         (r->h.api_key == KAFKA_API_PRODUCE && produce_held_back(kc));
        if (!wait_head || kc->count == 1) {
                r->state = KAFKA_REQ_RUNNING;
                req_run(kw, r);
        }
        return 0;
}

/* ---- frames received in place -----------------------------------------------
 * A frame larger than a receive buffer (the backend's are 64 KiB; produce
 * requests carry batches of up to frame_bytes_max) used to be copied piece
 * by piece into a frame buffer. Once a connection sends one of at least
 * KAFKA_IN_PLACE_MIN bytes, it receives in place (sl_conn_rx_direct): into
 * a LARGE pool buffer of its own, kc->rxb, as much as the socket has, up to
 * the buffer's end. Whole frames are dispatched where they lie, each request
 * holding a reference on the buffer; a frame cut by the buffer's end moves to
 * a fresh buffer (the only copy, a fraction of a frame per buffer). When a
 * receive brings only small frames and ends on a frame boundary, the
 * connection goes back to the backend's buffers. A connection that goes
 * quiet keeps its buffer armed for the next frame for a second at most
 * (kafka_tick cancels that receive), and in-place receiving starts only
 * while at most half of the worker's LARGE buffers are in use: quiet
 * producers cannot take the pool. */
#define KAFKA_IN_PLACE_MIN (32u << 10)
/* A connection receiving in place that sent nothing for this long gives its
 * buffer back (kafka_tick cancels the receive armed into it). */
#define KAFKA_IN_PLACE_IDLE_MS 1000u

static bool rxb_affordable(struct kafka_worker *kw)
{
        const struct sl_buf_pool *pool = &kw->w->pool;
        uint64_t used =
            atomic_load_explicit(&pool->stats.in_use[SL_BUF_LARGE], memory_order_relaxed);
        return used < pool->count[SL_BUF_LARGE] / 2;
}

static void rxb_drop(struct kafka_worker *kw, struct kafka_conn *kc)
{
        if (kc->rxb) {
                sl_worker_buf_put(kw->w, kc->rxb);
                kc->rxb = NULL;
        }
}

/* From kafka_recv, everything offered consumed, r's frame incomplete: the
 * rest of it, and what follows, is received into its buffer. */
static void rxb_begin(struct kafka_worker *kw, struct sl_conn *c, struct kafka_req *r)
{
        struct kafka_conn *kc = c->proto_state;
        struct sl_buf *b = r->frame;
        if (!rxb_affordable(kw) || b->cap <= b->len)
                return;
        sl_buf_ref(b);
        kc->rxb = b;
        kc->rxb_start = 0; /* r's frame at 0 stays kc->asm_req until whole */
        kc->rxb_cancel = false;
        if (!sl_conn_rx_direct(c, b, b->len, b->cap - b->len))
                rxb_drop(kw, kc);
}

/* The frame size after a 4-byte prefix, or 0 for one Kafka refuses (below
 * 8 or above frame_bytes_max): like Kafka's InvalidReceiveException, no
 * answer, the connection goes, nothing is buffered. Counted here. */
static uint32_t frame_size_checked(struct kafka_worker *kw, struct sl_conn *c,
                                   const uint8_t *prefix)
{
        ssize_t fn = kafka_frame_size(prefix, KAFKA_FRAME_PREFIX, c->w->limits.frame_bytes_max);
        if (fn >= KAFKA_FRAME_PREFIX + 8)
                return (uint32_t)(fn - KAFKA_FRAME_PREFIX);
        SL_DEBUG("kafka: closing %s: frame size refused (%zd)", c->peer_str, fn);
        atomic_fetch_add_explicit(&kw->errors_closed, 1, memory_order_relaxed);
        return 0;
}

/* Dispatches the whole frames in kc->rxb, in order, until the in-flight cap
 * or the request pool stops it. *large: one was KAFKA_IN_PLACE_MIN or more.
 * -1: close (a bad frame size, as kafka_recv). */
static int rxb_parse(struct kafka_worker *kw, struct sl_conn *c, bool *large)
{
        struct kafka_conn *kc = c->proto_state;
        uint32_t cap = SL_MIN(c->w->limits.inflight_requests_max, KAFKA_CONN_INFLIGHT);
        struct kafka_req *r = kc->asm_req;
        if (r) {
                /* the frame in assembly when receiving in place began: at
                 * offset 0, without its size */
                if (kc->rxb->len < r->frame_len)
                        return 0;
                kc->asm_req = NULL;
                kc->rxb_start = r->frame_len;
                *large = true;
                sl_counter_add(&kw->frames_in_place, 1);
                if (frame_dispatch(kw, c, r) != 0)
                        return -1;
        }
        /* A request may close the connection (and drop kc->rxb): check the
         * state before touching the buffer again. */
        while (c->state == SL_CONN_OPEN && kc->rxb->len - kc->rxb_start >= KAFKA_FRAME_PREFIX) {
                struct sl_buf *b = kc->rxb;
                uint32_t size = frame_size_checked(kw, c, b->data + kc->rxb_start);
                if (!size)
                        return -1;
                if (b->len - kc->rxb_start - KAFKA_FRAME_PREFIX < size)
                        break;
                if (kc->count >= cap) {
                        kc->paused = true;
                        sl_conn_rx_pause(c);
                        break;
                }
                r = req_alloc(kw, c);
                if (!r) {
                        conn_starve(c);
                        break;
                }
                sl_buf_ref(b);
                r->frame = b;
                r->frame_off = kc->rxb_start + KAFKA_FRAME_PREFIX;
                r->frame_len = size;
                kc->rxb_start += KAFKA_FRAME_PREFIX + size;
                if (size >= KAFKA_IN_PLACE_MIN)
                        *large = true;
                sl_counter_add(&kw->frames_in_place, 1);
                if (frame_dispatch(kw, c, r) != 0)
                        return -1;
        }
        return 0;
}

/* Dispatches what kc->rxb holds, then says where the next bytes go: on in
 * place (moving a frame the buffer cannot finish to a fresh one), or back
 * to receive buffers. Nothing while paused or starved: conn_rx_continue
 * brings the connection back here. -1: close. */
static int rxb_step(struct kafka_worker *kw, struct sl_conn *c)
{
        struct kafka_conn *kc = c->proto_state;
        bool large = false;
        if (rxb_parse(kw, c, &large) != 0)
                return -1;
        if (c->state != SL_CONN_OPEN || kc->paused || kc->starved)
                return 0;
        struct sl_buf *b = kc->rxb;
        uint32_t pending = b->len - kc->rxb_start;
        sl_conn_set_partial(c, pending > 0 || kc->asm_req);
        if (kc->asm_req)
                return sl_conn_rx_direct(c, b, b->len, b->cap - b->len) ? 0 : -1;
        if (pending == 0 && (!large || !rxb_affordable(kw))) {
                rxb_drop(kw, kc); /* small frames again: receive buffers */
                return 0;
        }
        /* a whole size prefix was checked by rxb_parse */
        ssize_t fn = kafka_frame_size(b->data + kc->rxb_start, pending, UINT32_MAX);
        uint64_t need = fn > 0 ? (uint64_t)fn : KAFKA_FRAME_PREFIX;
        if (kc->rxb_start + need > b->cap || b->cap - b->len < (4u << 10)) {
                struct sl_buf *nb = sl_buf_alloc(&kw->w->pool, SL_BUF_LARGE);
                if (!nb) {
                        conn_starve(c); /* a freed buffer or request wakes it */
                        return 0;
                }
                memcpy(nb->data, b->data + kc->rxb_start, pending);
                nb->len = pending;
                sl_counter_add(&kw->in_place_moved_bytes, pending);
                rxb_drop(kw, kc);
                kc->rxb = b = nb;
                kc->rxb_start = 0;
        }
        return sl_conn_rx_direct(c, b, b->len, b->cap - b->len) ? 0 : -1;
}

static long kafka_recv_direct(struct sl_conn *c, struct sl_buf *b, uint32_t off, uint32_t n)
{
        struct kafka_conn *kc = c->proto_state;
        struct kafka_worker *kw = kafka_kw(c->w);
        SL_ASSERT(b == kc->rxb && off == b->len && n <= b->cap - b->len);
        (void)off;
        kc->rxb_cancel = false;
        if (n == 0) {
                /* cancelled by kafka_tick: quiet, nothing pending, so back
                 * to receive buffers (else, a race: on in place) */
                if (b->len == kc->rxb_start && !kc->asm_req) {
                        rxb_drop(kw, kc);
                        return 0;
                }
                return sl_conn_rx_direct(c, b, b->len, b->cap - b->len) ? 0 : -1;
        }
        b->len += n;
        return rxb_step(kw, c);
}

/* A paused or starved connection may read again. Receiving in place, the
 * frames already in its buffer go first, at the next poll (not from inside
 * the response or free path that called this). */
static void conn_rx_continue(struct kafka_worker *kw, struct sl_conn *c)
{
        struct kafka_conn *kc = c->proto_state;
        if (!kc->rxb) {
                sl_conn_rx_resume(c);
                return;
        }
        if (!kw->rxb_due_flag[c->slot]) {
                kw->rxb_due_flag[c->slot] = 1;
                kw->rxb_due[kw->rxb_due_n++] = c->slot;
        }
}

static uint32_t rxb_due_run(struct kafka_worker *kw)
{
        uint32_t work = 0;
        while (kw->rxb_due_n) {
                uint32_t slot = kw->rxb_due[--kw->rxb_due_n];
                kw->rxb_due_flag[slot] = 0;
                struct sl_conn *c = &kw->w->conns[slot];
                if (c->state != SL_CONN_OPEN || c->proto != CTL_PROTO_KAFKA)
                        continue; /* closed meanwhile; the slot may be another's */
                struct kafka_conn *kc = c->proto_state;
                if (!kc->rxb || kc->paused || kc->starved)
                        continue;
                work++;
                if (rxb_step(kw, c) != 0)
                        sl_conn_close(c, SL_CLOSE_PROTOCOL);
                else if (c->state == SL_CONN_OPEN && !kc->paused && !kc->starved)
                        sl_conn_rx_resume(c);
        }
        return work;
}

static long kafka_recv(struct sl_conn *c, const uint8_t *p, size_t n)
{
        struct kafka_conn *kc = c->proto_state;
        struct kafka_worker *kw = kafka_kw(c->w);
        size_t used = 0;
        uint32_t cap = SL_MIN(c->w->limits.inflight_requests_max, KAFKA_CONN_INFLIGHT);
        /* Until the control thread's first topic snapshot arrives, this worker
         * knows no topic: answering now would call existing topics unknown,
         * and librdkafka then stops fetching them. The bytes are held; held
         * connections are offered again on every loop iteration. */
        if (!kw->snap)
                return 0;
        while (used < n && c->state == SL_CONN_OPEN) {
                struct kafka_req *r = kc->asm_req;
                if (!r) {
                        while (kc->szn < 4 && used < n)
                                kc->szb[kc->szn++] = p[used++];
                        if (kc->szn < 4) {
                                sl_conn_set_partial(c, true);
                                break;
                        }
                        uint32_t size = frame_size_checked(kw, c, kc->szb);
                        if (!size)
                                return -1;
                        if (kc->count >= cap) {
                                kc->paused = true;
                                sl_conn_rx_pause(c);
                                break;
                        }
                        r = req_alloc(kw, c);
                        enum sl_buf_class cls =
                            size <= c->w->pool.bytes[SL_BUF_CHUNK] ? SL_BUF_CHUNK : SL_BUF_LARGE;
                        struct sl_buf *b = r ? sl_buf_alloc(&c->w->pool, cls) : NULL;
                        if (!b) {
                                if (r) {
                                        r->state = KAFKA_REQ_FREE;
                                        r->next_free = kw->free_reqs;
                                        kw->free_reqs = r;
                                }
                                conn_starve(c);
                                break;
                        }
                        r->frame = b;
                        r->frame_len = (uint32_t)size;
                        kc->asm_req = r;
                        kc->szn = 0;
                }
                size_t take = SL_MIN(n - used, (size_t)(r->frame_len - r->frame->len));
                memcpy(r->frame->data + r->frame->len, p + used, take);
                r->frame->len += (uint32_t)take;
                used += take;
                if (r->frame->len < r->frame_len) {
                        sl_conn_set_partial(c, true);
                        if (r->frame_len >= KAFKA_IN_PLACE_MIN)
                                rxb_begin(kw, c, r); /* used == n: nothing left here */
                        break;
                }
                kc->asm_req = NULL;
                sl_conn_set_partial(c, false);
                if (frame_dispatch(kw, c, r) != 0)
                        return -1;
        }
        return (long)used;
}

/* ---- connection callbacks ------------------------------------------------ */

static int kafka_open(struct sl_conn *c)
{
        memset(c->proto_state, 0, sizeof(struct kafka_conn));
        return kafka_kw(c->w) ? 0 : -1;
}

static void kafka_writable(struct sl_conn *c)
{
        kafka_conn_flush(kafka_kw(c->w), c);
}

static void req_detach(struct kafka_worker *kw, struct kafka_req *r)
{
        fetch_unwait(kw, r);
        r->c = NULL;
        if (!r->pending)
                req_free(kw, r);
}

static void kafka_closed(struct sl_conn *c, enum sl_close_reason why)
{
        (void)why;
        struct kafka_conn *kc = c->proto_state;
        struct kafka_worker *kw = kafka_kw(c->w);
        if (!kw)
                return;
        if (kc->asm_req) {
                struct kafka_req *r = kc->asm_req;
                kc->asm_req = NULL;
                req_free(kw, r);
        }
        rxb_drop(kw, kc);
        while (kc->count) {
                struct kafka_req *r = kc->ring[kc->head];
                kc->ring[kc->head] = NULL;
                kc->head = (kc->head + 1) % KAFKA_CONN_INFLIGHT;
                kc->count--;
                req_detach(kw, r);
        }
        kafka_fsession_free(kc->fs);
        kc->fs = NULL;
}

/* connections.max.idle.ms: a connection with nothing in flight and nothing
 * received for that long goes, as Kafka closes it. */
static void kafka_tick(struct sl_conn *c, uint64_t now_ms)
{
        struct kafka_conn *kc = c->proto_state;
        uint32_t idle = c->w->cfg->kafka_idle_ms;
        bool partial = kc->asm_req || (kc->rxb && kc->rxb->len > kc->rxb_start);
        if (idle && !kc->count && !partial && now_ms - c->last_rx_ms >= idle) {
                sl_conn_close(c, SL_CLOSE_IDLE);
                return;
        }
        /* last: the cancel may report back (recv_direct) before it returns */
        if (kc->rxb && !partial && !kc->rxb_cancel &&
            now_ms - c->last_rx_ms >= KAFKA_IN_PLACE_IDLE_MS) {
                kc->rxb_cancel = true; /* recv_direct clears it, maybe at once */
                if (!sl_conn_rx_direct_cancel(c))
                        kc->rxb_cancel = false;
        }
}

static void kafka_refused(struct sl_conn *c, enum sl_close_reason why)
{
        (void)c;
        (void)why; /* Kafka has no greeting to refuse with: the close says it */
}

static void kafka_metrics(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx)
{
        struct kafka_worker *kw = kafka_kw(w);
        if (!kw)
                return;
        emit(ctx, "sluice_kafka_requests_total", "counter", "Kafka requests received",
             (double)atomic_load_explicit(&kw->requests, memory_order_relaxed));
        emit(ctx, "sluice_kafka_frames_in_place_total", "counter",
             "Requests received in place: no copy out of a receive buffer",
             (double)atomic_load_explicit(&kw->frames_in_place, memory_order_relaxed));
        emit(ctx, "sluice_kafka_in_place_moved_bytes_total", "counter",
             "Bytes of frames cut by a buffer's end, moved to the next buffer",
             (double)atomic_load_explicit(&kw->in_place_moved_bytes, memory_order_relaxed));
        emit(ctx, "sluice_kafka_fetch_bytes_total", "counter", "Record bytes returned by Fetch",
             (double)atomic_load_explicit(&kw->fetch_bytes, memory_order_relaxed));
        emit(ctx, "sluice_kafka_fetch_reads_mem_total", "counter",
             "Partition reads answered from the log's in-memory window",
             (double)atomic_load_explicit(&kw->fetch_reads_mem, memory_order_relaxed));
        emit(ctx, "sluice_kafka_fetch_reads_cache_total", "counter",
             "Partition reads answered from a read-ahead cache",
             (double)atomic_load_explicit(&kw->fetch_reads_cache, memory_order_relaxed));
        emit(ctx, "sluice_kafka_fetch_reads_disk_total", "counter",
             "Partition reads that went to disk",
             (double)atomic_load_explicit(&kw->fetch_reads_disk, memory_order_relaxed));
        emit(ctx, "sluice_kafka_fetch_reads_ahead_total", "counter",
             "Disk reads started ahead of a sequential consumer",
             (double)atomic_load_explicit(&kw->fetch_reads_ahead, memory_order_relaxed));
        emit(ctx, "sluice_kafka_cache_bytes", "gauge",
             "Recent-data cache memory held (blocks of [kafka] cache_bytes)",
             (double)atomic_load_explicit(&kw->cache.bytes, memory_order_relaxed));
        emit(ctx, "sluice_kafka_cache_hits_total", "counter",
             "Fetches answered (in part) from written-through recent data",
             (double)atomic_load_explicit(&kw->cache.hits, memory_order_relaxed));
        emit(ctx, "sluice_kafka_cache_evictions_total", "counter",
             "Recent-data blocks reused for newer data while still holding live data",
             (double)atomic_load_explicit(&kw->cache.evictions, memory_order_relaxed));
        emit(ctx, "sluice_kafka_protocol_closes_total", "counter",
             "Connections closed for a bad frame, version or request",
             (double)atomic_load_explicit(&kw->errors_closed, memory_order_relaxed));
        /* Group commit as it happened: tests/bench/kafka.sh compares the
         * produce rate with raw write(S)+fdatasync, S = synced bytes per fsync. */
        struct log_metrics *lm = kw->owner ? log_owner_metrics(kw->owner) : NULL;
        if (lm) {
                emit(ctx, "sluice_kafka_log_fsyncs_total", "counter",
                     "fdatasyncs of this worker's partitions",
                     (double)atomic_load_explicit(&lm->fsyncs, memory_order_relaxed));
                emit(ctx, "sluice_kafka_log_synced_bytes_total", "counter",
                     "Bytes made durable by those fdatasyncs",
                     (double)atomic_load_explicit(&lm->synced_bytes, memory_order_relaxed));
                emit(ctx, "sluice_kafka_log_segments_deleted_total", "counter",
                     "Segments of this worker's partitions deleted by retention",
                     (double)atomic_load_explicit(&lm->segments_deleted, memory_order_relaxed));
                emit(ctx, "sluice_kafka_log_segments_reused_total", "counter",
                     "New segments written over a deleted segment's file ([server] "
                     "recycle_segments)",
                     (double)atomic_load_explicit(&lm->segments_reused, memory_order_relaxed));
                emit(ctx, "sluice_kafka_log_segments_adopted_total", "counter",
                     "Spares found at open holding a segment whose rename a crash took back, "
                     "kept as that segment",
                     (double)atomic_load_explicit(&lm->segments_adopted, memory_order_relaxed));
                emit(ctx, "sluice_kafka_log_zero_fill_bytes_total", "counter",
                     "Zeros written ahead of fsync partitions' tails (appends then overwrite "
                     "written blocks)",
                     (double)atomic_load_explicit(&lm->zero_bytes, memory_order_relaxed));
        }
}

/* Poller: storage, retries and long-poll deadlines. */
static uint32_t kafka_poll(struct sl_worker *w, void *arg)
{
        struct kafka_worker *kw = arg;
        uint32_t work = rxb_due_run(kw) + kafka_part_poll(kw);
        while (kw->timers) {
                struct kafka_req *due = NULL;
                for (struct kafka_req *r = kw->timers; r; r = r->next_timer)
                        if (r->deadline_ms <= w->now_ms) {
                                due = r;
                                break;
                        }
                if (!due)
                        break;
                SL_DASSERT(due->waiting);
                if (!due->waiting) { /* heal: never spin on a stale timer */
                        timer_remove(kw, due);
                        continue;
                }
                kafka_fetch_wake(kw, due);
                work++;
        }
        return work;
}

static int kafka_worker_init(struct sl_worker *w)
{
        /* No listener, no Kafka state: no storage ring, no request pool. */
        if (!w->cfg->listeners[CTL_PROTO_KAFKA].enabled)
                return 0;
        struct kafka_worker *kw = calloc(1, sizeof(*kw));
        if (!kw)
                return -ENOMEM;
        kw->w = w;
        int rc = 0;
        kw->arena_mem = malloc((size_t)KAFKA_REQS_PER_WORKER * KAFKA_ARENA_BYTES);
        kw->enc_cap = (size_t)w->pool.bytes[SL_BUF_LARGE] + KAFKA_ARENA_BYTES;
        kw->enc = malloc(kw->enc_cap);
        kw->rxb_due = calloc(w->conns_max, sizeof(*kw->rxb_due));
        kw->rxb_due_flag = calloc(w->conns_max, 1);
        if (!kw->arena_mem || !kw->enc || !kw->rxb_due || !kw->rxb_due_flag)
                goto fail;
        for (uint32_t i = KAFKA_REQS_PER_WORKER; i-- > 0;) {
                struct kafka_req *r = &kw->reqs[i];
                kafka_arena_init(&r->arena, kw->arena_mem + (size_t)i * KAFKA_ARENA_BYTES,
                                 KAFKA_ARENA_BYTES);
                r->next_free = kw->free_reqs;
                kw->free_reqs = r;
        }
        snprintf(kw->data_dir, sizeof(kw->data_dir), "%s", w->cfg->data_dir);
        kw->producer_expiry_ms = w->cfg->kafka_producer_id_expiration_ms;
        kw->retention_interval_ms = w->cfg->kafka_retention_check_interval_ms;
        /* Read once here, so a test can make a producer retry a request the
         * log already holds (idempotence across a lost response). */
        const char *drop = getenv("SLUICE_TEST_KAFKA_DROP_PRODUCE");
        kw->test_drop_every = drop ? (uint32_t)strtoul(drop, NULL, 10) : 0;
        rc = kafka_part_init(kw);
        if (rc)
                goto fail;
        w->proto_ctx[CTL_PROTO_KAFKA] = kw;
        return sl_worker_add_poller(w, kafka_poll, kw);
fail:
        free(kw->rxb_due);
        free(kw->rxb_due_flag);
        free(kw->arena_mem);
        free(kw->enc);
        free(kw);
        return rc ? rc : -ENOMEM;
}

static void kafka_worker_fini(struct sl_worker *w)
{
        struct kafka_worker *kw = kafka_kw(w);
        if (!kw)
                return;
        kafka_part_fini(kw);
        free(kw->rxb_due);
        free(kw->rxb_due_flag);
        free(kw->arena_mem);
        free(kw->enc);
        free(kw);
        w->proto_ctx[CTL_PROTO_KAFKA] = NULL;
}

_Static_assert(sizeof(struct kafka_conn) <= 512, "per-connection state stays small");

const struct sl_proto_ops kafka_proto_ops = {
    .name = "kafka",
    .conn_state_bytes = sizeof(struct kafka_conn),
    .worker_init = kafka_worker_init,
    .worker_fini = kafka_worker_fini,
    .open = kafka_open,
    .recv = kafka_recv,
    .recv_direct = kafka_recv_direct,
    .writable = kafka_writable,
    .tick = kafka_tick,
    .closed = kafka_closed,
    .refused = kafka_refused,
    .msg = kafka_part_msg,
    .metrics = kafka_metrics,
};
