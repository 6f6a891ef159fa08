/* CRC-32C for batch validation and our own file formats. Every appended batch
 * is checked once, so this is on the hot path: the SSE4.2 crc32 instruction
 * on three interleaved streams; the slicing-by-8 table is the fallback. */
#include "log_crc32c.h"

#include <string.h>
#include <pthread.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_have_hw;

#define CRC_LONG  8192u
#define CRC_SHORT 256u
static uint32_t crc_shift_long[4][256], crc_shift_short[4][256];
static void crc_shift_table_init(uint32_t tab[4][256], size_t len);

static void crc_init(void)
{
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
                crc_table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
                for (int t = 1; t < 8; t++)
                        crc_table[t][i] =
                            (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
        crc_shift_table_init(crc_shift_long, CRC_LONG);
        crc_shift_table_init(crc_shift_short, CRC_SHORT);
#if defined(__x86_64__)
        __builtin_cpu_init();
        crc_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
        while (n && ((uintptr_t)p & 7)) {
                c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
                n--;
        }
        while (n >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                w ^= c;
                c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
                    crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
                    crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
                    crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
                p += 8;
                n -= 8;
        }
        while (n--)
                c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        return c;
}

/* The crc32 instruction has a latency of 3 cycles and a throughput of one
 * per cycle, so one dependent chain runs at a third of what the unit can
 * do. Three chains over three adjacent blocks keep it busy; their registers
 * are then joined with crc(A || B) = shift_|B|(crc(A)) ^ crc0(B), where
 * shift_n is the (linear) effect of n zero bytes, applied through a
 * 4 x 256 table per block length (Mark Adler's crc32c.c does the same). */
/* The register after feeding `len` zero bytes into register x. */
static uint32_t crc_zeros_sw(uint32_t x, size_t len)
{
        while (len--)
                x = crc_table[0][x & 0xff] ^ (x >> 8);
        return x;
}

/* shift_len is linear over GF(2): build it from the 32 single-bit inputs. */
static void crc_shift_table_init(uint32_t tab[4][256], size_t len)
{
        uint32_t bit[32];
        for (int i = 0; i < 32; i++)
                bit[i] = crc_zeros_sw(1u << i, len);
        for (int k = 0; k < 4; k++)
                for (uint32_t b = 0; b < 256; b++) {
                        uint32_t v = 0;
                        for (int i = 0; i < 8; i++)
                                if (b & (1u << i))
                                        v ^= bit[8 * k + i];
                        tab[k][b] = v;
                }
}

static inline uint32_t crc_shift(const uint32_t tab[4][256], uint32_t c)
{
        return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^ tab[2][(c >> 16) & 0xff] ^
               tab[3][c >> 24];
}

#if defined(__x86_64__)
/* Three interleaved chains over p[0..3*blk); with dst, each word is also
 * stored to dst (the check-while-copy of appends). */
__attribute__((target("sse4.2"))) static inline uint64_t
crc_hw_3way(uint64_t c0, uint8_t *d, const uint8_t *p, size_t blk, const uint32_t tab[4][256])
{
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + blk;
        if (d && blk == CRC_LONG) {
                /* Large batches land in a staging ring far bigger than the
                 * caches and are next read by the device: streaming stores
                 * skip reading each destination line first (about 2x). */
                while (p < end) {
                        uint64_t w0, w1, w2;
                        memcpy(&w0, p, 8);
                        memcpy(&w1, p + blk, 8);
                        memcpy(&w2, p + 2 * blk, 8);
                        _mm_stream_si64((long long *)d, (long long)w0);
                        _mm_stream_si64((long long *)(d + blk), (long long)w1);
                        _mm_stream_si64((long long *)(d + 2 * blk), (long long)w2);
                        c0 = _mm_crc32_u64(c0, w0);
                        c1 = _mm_crc32_u64(c1, w1);
                        c2 = _mm_crc32_u64(c2, w2);
                        p += 8;
                        d += 8;
                }
        } else if (d) {
                while (p < end) {
                        uint64_t w0, w1, w2;
                        memcpy(&w0, p, 8);
                        memcpy(&w1, p + blk, 8);
                        memcpy(&w2, p + 2 * blk, 8);
                        memcpy(d, &w0, 8);
                        memcpy(d + blk, &w1, 8);
                        memcpy(d + 2 * blk, &w2, 8);
                        c0 = _mm_crc32_u64(c0, w0);
                        c1 = _mm_crc32_u64(c1, w1);
                        c2 = _mm_crc32_u64(c2, w2);
                        p += 8;
                        d += 8;
                }
        } else {
                while (p < end) {
                        uint64_t w0, w1, w2;
                        memcpy(&w0, p, 8);
                        memcpy(&w1, p + blk, 8);
                        memcpy(&w2, p + 2 * blk, 8);
                        c0 = _mm_crc32_u64(c0, w0);
                        c1 = _mm_crc32_u64(c1, w1);
                        c2 = _mm_crc32_u64(c2, w2);
                        p += 8;
                }
        }
        c0 = crc_shift(tab, (uint32_t)c0) ^ c1;
        return crc_shift(tab, (uint32_t)c0) ^ c2;
}

/* crc of p[0..n) from register c; with d != NULL also copies to d. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw_any(uint32_t c, uint8_t *d,
                                                             const uint8_t *p, size_t n)
{
        uint64_t c64 = c;
        /* Align the source for the word loads (the copy's stores follow). */
        while (n && ((uintptr_t)p & 7)) {
                if (d)
                        *d++ = *p;
                c64 = _mm_crc32_u8((uint32_t)c64, *p++);
                n--;
        }
        if (n >= 3 * CRC_LONG) {
                do {
                        c64 = crc_hw_3way(c64, d, p, CRC_LONG, crc_shift_long);
                        p += 3 * CRC_LONG;
                        d = d ? d + 3 * CRC_LONG : NULL;
                        n -= 3 * CRC_LONG;
                } while (n >= 3 * CRC_LONG);
                /* Streaming stores are weakly ordered: fence them before
                 * the caller publishes the bytes (an SQE, another thread). */
                if (d)
                        _mm_sfence();
        }
        while (n >= 3 * CRC_SHORT) {
                c64 = crc_hw_3way(c64, d, p, CRC_SHORT, crc_shift_short);
                p += 3 * CRC_SHORT;
                d = d ? d + 3 * CRC_SHORT : NULL;
                n -= 3 * CRC_SHORT;
        }
        while (n >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                if (d) {
                        memcpy(d, &w, 8);
                        d += 8;
                }
                c64 = _mm_crc32_u64(c64, w);
                p += 8;
                n -= 8;
        }
        while (n--) {
                if (d)
                        *d++ = *p;
                c64 = _mm_crc32_u8((uint32_t)c64, *p++);
        }
        return (uint32_t)c64;
}
#endif

uint32_t log_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t len)
{
        pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
        if (crc_have_hw)
                return ~crc_hw_any(~crc, dst, src, len);
#endif
        memcpy(dst, src, len);
        return ~crc_sw(~crc, dst, len);
}

uint32_t log_crc32c(uint32_t crc, const void *buf, size_t len)
{
        pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
        if (crc_have_hw)
                return ~crc_hw_any(~crc, NULL, buf, len);
#endif
        return ~crc_sw(~crc, buf, len);
}

uint32_t log_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
        pthread_once(&crc_once, crc_init);
        return ~crc_sw(~crc, buf, len);
}

bool log_crc32c_hw(void)
{
        pthread_once(&crc_once, crc_init);
        return crc_have_hw;
}
