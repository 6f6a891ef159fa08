/* CRC-32C (Castagnoli) as Kafka record batches use it: reflected polynomial
 * 0x82F63B78, init and final xor 0xFFFFFFFF. SSE4.2 when the CPU has it
 * (checked once at run time), a slicing-by-8 table otherwise. */
#ifndef LOG_CRC32C_H
#define LOG_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* crc of buf[0..len) continuing from a previous result (0 to start). */
uint32_t log_crc32c(uint32_t crc, const void *buf, size_t len);
/* Copy src to dst and return the CRC of the bytes, in one pass: appends
 * check a batch's CRC while copying it into the staging ring. */
uint32_t log_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t len);
/* Same as log_crc32c, forced onto the portable table path (tests compare both). */
uint32_t log_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* Whether log_crc32c uses the SSE4.2 instruction on this machine. */
bool log_crc32c_hw(void);

#endif
