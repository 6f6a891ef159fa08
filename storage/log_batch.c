/* Kafka v2 record batch header access and validation. The log never
 * decompresses: it checks the frame (length, magic, CRC-32C over the
 * attributes onward) and that lastOffsetDelta matches the record count. */
#include "log.h"
#include "log_crc32c.h"

#include <errno.h>
#include <string.h>

static inline uint32_t be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t be64(const uint8_t *p)
{
        return (uint64_t)be32(p) << 32 | be32(p + 4);
}

int64_t log_batch_base_offset(const void *batch)
{
        return (int64_t)be64(batch);
}

int32_t log_batch_last_delta(const void *batch)
{
        return (int32_t)be32((const uint8_t *)batch + 23);
}

int64_t log_batch_max_timestamp(const void *batch)
{
        return (int64_t)be64((const uint8_t *)batch + 35);
}

uint32_t log_batch_len(const void *batch)
{
        return be32((const uint8_t *)batch + 8) + 12;
}

int log_batch_check_header(const void *batch, uint32_t len, uint32_t max_bytes)
{
        const uint8_t *b = batch;
        if (len < LOG_BATCH_HEADER_BYTES)
                return -EBADMSG;
        if (len > max_bytes)
                return -EMSGSIZE;
        if (be32(b + 8) != len - 12 || b[16] != 2)
                return -EBADMSG;
        int32_t count = (int32_t)be32(b + 57);
        if (count < 1 || log_batch_last_delta(b) != count - 1)
                return -EBADMSG;
        return 0;
}

uint32_t log_batch_crc(const void *batch)
{
        return be32((const uint8_t *)batch + 17);
}

int log_batch_validate(const void *batch, uint32_t len, uint32_t max_bytes)
{
        int rc = log_batch_check_header(batch, len, max_bytes);
        if (rc < 0)
                return rc;
        const uint8_t *b = batch;
        if (log_crc32c(0, b + 21, len - 21) != be32(b + 17))
                return -EBADMSG;
        return 0;
}
