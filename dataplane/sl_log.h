/* Logging that never blocks a worker: a worker formats into its own SPSC
 * ring (rate-limited, drops counted) and the control thread writes the
 * lines out. Other threads write to stderr directly. */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdatomic.h>
#include <stdio.h>

#include "sl_common.h"
#include "sl_ring.h"

enum sl_log_level { SL_LOG_ERROR, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG };

#define SL_LOG_LINE_BYTES 256

struct sl_logq {
        struct sl_ring *ring;
        uint64_t window_start_ms;
        uint32_t window_lines;
        uint32_t lines_per_sec_max;
        _Atomic uint64_t dropped;
};

extern _Atomic int sl_log_level;

int sl_logq_init(struct sl_logq *q, uint32_t slots, uint32_t lines_per_sec_max);
void sl_logq_fini(struct sl_logq *q);

/* Routes this thread's log lines into q (NULL: straight to stderr). */
void sl_log_bind_thread(struct sl_logq *q, const char *thread_name);

void sl_log(enum sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Control thread: writes out what q holds. Returns lines written. */
uint32_t sl_logq_drain(struct sl_logq *q, FILE *out);

#define SL_ERR(...)  sl_log(SL_LOG_ERROR, __VA_ARGS__)
#define SL_WARN(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define SL_INFO(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define SL_DEBUG(...)                                                                              \
        do {                                                                                       \
                if (atomic_load_explicit(&sl_log_level, memory_order_relaxed) >= SL_LOG_DEBUG)     \
                        sl_log(SL_LOG_DEBUG, __VA_ARGS__);                                         \
        } while (0)

#endif
