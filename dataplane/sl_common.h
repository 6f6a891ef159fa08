/* Common macros every subsystem uses: assertions, branch hints, cache-line
 * alignment, time. Kept tiny on purpose: anything with state lives in the
 * subsystem that owns it. */
#ifndef SL_COMMON_H
#define SL_COMMON_H

#include <stdint.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdbool.h>
#include <time.h>

#define SL_CACHELINE                       64
#define sl_cacheline_aligned               __attribute__((aligned(SL_CACHELINE)))
#define sl_likely(x)                       __builtin_expect(!!(x), 1)
#define sl_unlikely(x)                     __builtin_expect(!!(x), 0)
#define SL_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define SL_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define SL_MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define SL_ALIGN_UP(x, a)                  (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define SL_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define SL_UNUSED                          __attribute__((unused))

void sl_assert_fail(const char *expr, const char *file, int line, const char *func)
    __attribute__((noreturn, cold));

/* SL_ASSERT stays on in every build: it guards invariants whose violation
 * would corrupt data or acknowledge something that is not there. */
#define SL_ASSERT(e)                                                                               \
        do {                                                                                       \
                if (sl_unlikely(!(e)))                                                             \
                        sl_assert_fail(#e, __FILE__, __LINE__, __func__);                          \
        } while (0)

/* SL_DASSERT is for hot-path checks; it compiles out when NDEBUG is set
 * (release builds). */
#ifdef NDEBUG
#define SL_DASSERT(e) ((void)0)
#else
#define SL_DASSERT(e) SL_ASSERT(e)
#endif

/* Adds to a counter that only its owner thread writes and others read:
 * a plain load and store (no locked read-modify-write on the hot path),
 * still atomic so readers never see a torn value. */
#define sl_counter_add(ptr, delta)                                                                 \
        atomic_store_explicit(                                                                     \
            (ptr), atomic_load_explicit((ptr), memory_order_relaxed) + (uint64_t)(delta),          \
            memory_order_relaxed)

/* memcpy for views that may be empty with a NULL pointer (memcpy's
 * arguments must be valid even for zero bytes). */
static inline void sl_copy(void *dst, const void *src, size_t n)
{
        if (n)
                __builtin_memcpy(dst, src, n);
}

/* Memory that O_DIRECT writes and reads are issued from: 2 MiB-aligned and
 * advised (MADV_HUGEPAGE) to be backed by transparent huge pages. A write
 * from 4 KiB pages is one DMA segment per page: a 1 MiB write is 256 of
 * them, more than a virtio disk takes in one request (max_segments 254),
 * so it is split, and each page is pinned on its own. From a huge page it
 * is one segment. Measured on these machines (O_DIRECT, fresh file, QD 4-8,
 * 1-2 MiB writes): 1500-1780 MB/s from 4 KiB pages, 2090-2430 MB/s from huge
 * pages. Pages are faulted in on first touch, not here, so an idle
 * partition's ring costs no memory. Without THP it is plain 4 KiB pages.
 * NULL on failure; free with sl_dio_free(p, the same len). */
void *sl_dio_alloc(size_t len);
void sl_dio_free(void *p, size_t len);

/* memcpy into memory nobody reads soon (a cache far bigger than the CPU's):
 * non-temporal stores, which skip reading each destination line before
 * writing it, so a copy into cold memory costs one pass, not two. Ends with
 * a store fence: the bytes are visible before whatever publishes them. */
void sl_copy_stream(void *dst, const void *src, size_t n);

static inline uint64_t sl_time_ns(void)

{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t sl_time_ms(void)
{
        return sl_time_ns() / 1000000ull;
}

static inline uint64_t sl_realtime_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

#endif
