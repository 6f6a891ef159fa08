/* Out-of-line pieces of sl_common.h. */
#include "sl_common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

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
