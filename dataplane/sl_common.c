/* Out-of-line pieces of sl_common.h. */
#include "sl_common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#define SL_HUGE_PAGE (2u << 20)

void sl_assert_fail(const char *expr, const char *file, int line, const char *func)
{
        fprintf(stderr, "sluice: assertion failed: %s (%s:%d, %s)\n", expr, file, line, func);
        fflush(stderr);
        abort();
}

void *sl_dio_alloc(size_t len)
{
        size_t map = SL_ALIGN_UP(len, (size_t)SL_HUGE_PAGE);
        /* over-allocate by one huge page and trim, for the alignment */
        uint8_t *m = mmap(NULL, map + SL_HUGE_PAGE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
                return NULL;
        uint8_t *p = (uint8_t *)SL_ALIGN_UP((uintptr_t)m, (uintptr_t)SL_HUGE_PAGE);
        if (p > m)
                munmap(m, (size_t)(p - m));
        if (p + map < m + map + SL_HUGE_PAGE)
                munmap(p + map, (size_t)(m + map + SL_HUGE_PAGE - (p + map)));
        (void)madvise(p, map, MADV_HUGEPAGE);
        return p;
}

void sl_dio_free(void *p, size_t len)
{
        if (p)
                munmap(p, SL_ALIGN_UP(len, (size_t)SL_HUGE_PAGE));
}

void sl_copy_stream(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
        uint8_t *d = dst;
        const uint8_t *s = src;
        /* Below a few lines the fence costs more than the reads it saves. */
        if (n < 256) {
                sl_copy(d, s, n);
                return;
        }
        size_t head = (size_t)(-(uintptr_t)d & 15u);
        memcpy(d, s, head);
        d += head;
        s += head;
        n -= head;
        for (; n >= 64; n -= 64, d += 64, s += 64) {
                __m128i a = _mm_loadu_si128((const __m128i *)s);
                __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
                __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
                __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
                _mm_stream_si128((__m128i *)d, a);
                _mm_stream_si128((__m128i *)(d + 16), b);
                _mm_stream_si128((__m128i *)(d + 32), c);
                _mm_stream_si128((__m128i *)(d + 48), e);
        }
        sl_copy(d, s, n);
        _mm_sfence();
#else
        sl_copy(dst, src, n);
#endif
}
