/* Helpers shared by the storage unit tests: building valid v2 record
 * batches, temp directories on a disk that supports O_DIRECT, and running
 * an owner until its I/O settles. */
#ifndef ST_UTIL_H
#define ST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "log_crc32c.h"
#include "sl_common.h"

static inline size_t st_varint(uint8_t *p, int64_t v)
{
        uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        size_t n = 0;
        while (z >= 0x80) {
                p[n++] = (uint8_t)(z | 0x80);
                z >>= 7;
        }
        p[n++] = (uint8_t)z;
        return n;
}

static inline void st_be32(uint8_t *b, uint32_t v)
{
        b[0] = v >> 24, b[1] = v >> 16, b[2] = v >> 8, b[3] = (uint8_t)v;
}

static inline void st_be64(uint8_t *b, uint64_t v)
{
        st_be32(b, v >> 32);
        st_be32(b + 4, (uint32_t)v);
}

/* A valid batch of `records` records with `value_len`-byte values filled
 * from `seed`, timestamps ts. Returns its length (buf must be big enough). */
static inline uint32_t st_batch(uint8_t *buf, int records, uint32_t value_len, int64_t ts,
                                uint32_t seed)
{
        memset(buf, 0, 61);
        st_be64(buf, 0);
        st_be32(buf + 12, 0xffffffffu);
        buf[16] = 2;
        st_be32(buf + 23, (uint32_t)(records - 1));
        st_be64(buf + 27, (uint64_t)ts);
        st_be64(buf + 35, (uint64_t)ts);
        st_be64(buf + 43, UINT64_MAX);
        buf[51] = buf[52] = 0xff;
        st_be32(buf + 53, 0xffffffffu);
        st_be32(buf + 57, (uint32_t)records);
        size_t pos = 61;
        for (int i = 0; i < records; i++) {
                uint8_t body[32];
                size_t bn = 0;
                body[bn++] = 0;                 /* attributes */
                bn += st_varint(body + bn, 0);  /* timestampDelta */
                bn += st_varint(body + bn, i);  /* offsetDelta */
                bn += st_varint(body + bn, -1); /* null key */
                bn += st_varint(body + bn, value_len);
                size_t total = bn + value_len + 1; /* + headersCount */
                pos += st_varint(buf + pos, (int64_t)total);
                memcpy(buf + pos, body, bn);
                pos += bn;
                for (uint32_t k = 0; k < value_len; k++)
                        buf[pos + k] = (uint8_t)(seed * 2654435761u + k * 31 + (uint32_t)i);
                pos += value_len;
                buf[pos++] = 0; /* headersCount */
        }
        st_be32(buf + 8, (uint32_t)(pos - 12));
        st_be32(buf + 17, log_crc32c(0, buf + 21, pos - 21));
        return (uint32_t)pos;
}

static int st_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb, (void)flag, (void)ftw;
        return remove(p);
}

static inline void st_rmrf(const char *path)
{
        nftw(path, st_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* /var/tmp and /tmp are on the ext4 root disk here (O_DIRECT works); a
 * tmpfs /tmp would not do. */
static inline char *st_tmpdir(char *buf, size_t n)
{
        snprintf(buf, n, "/var/tmp/sluice-st-XXXXXX");
        return mkdtemp(buf);
}

static inline void st_drain(struct log_owner *o)
{
        assert_int_equal(log_owner_drain(o), 0);
}

/* Small segments, small ring: roll and window paths get exercised. */
static inline void st_cfg(struct log_config *c)
{
        log_config_default(c);
        c->segment_bytes = 64 * 1024;
        c->ring_bytes = 64 * 1024;
        c->max_batch_bytes = 16 * 1024;
        c->max_write_bytes = 16 * 1024;
        c->index_interval_bytes = 1024;
        c->retention_ms = -1;
        c->max_pending = 256;
        c->recovery_point_bytes = 8 * 1024; /* recovery points in every test */
}

struct st_ack {
        int n, errs;
        int64_t last_base;
        int last_res;
};

static inline void st_ack_cb(void *ctx, int64_t base, int res)
{
        struct st_ack *a = ctx;
        if (res)
                a->errs++;
        else
                a->n++;
        a->last_base = base;
        a->last_res = res;
}

#endif
