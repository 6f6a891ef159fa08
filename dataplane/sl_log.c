/* Implementation of sl_log.h. The per-thread binding makes sl_log() usable
 * from any code without passing a worker around. */
#include "sl_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

_Atomic int sl_log_level = SL_LOG_INFO;

static __thread struct sl_logq *tls_logq;
static __thread char tls_name[16] = "main";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int sl_logq_init(struct sl_logq *q, uint32_t slots, uint32_t lines_per_sec_max)
{
        memset(q, 0, sizeof(*q));
        q->ring = sl_ring_create(slots, SL_LOG_LINE_BYTES);
        q->lines_per_sec_max = lines_per_sec_max;
        return q->ring ? 0 : -12;
}

void sl_logq_fini(struct sl_logq *q)
{
        sl_ring_destroy(q->ring);
        q->ring = NULL;
}

void sl_log_bind_thread(struct sl_logq *q, const char *thread_name)
{
        tls_logq = q;
        snprintf(tls_name, sizeof(tls_name), "%s", thread_name);
}

void sl_log(enum sl_log_level level, const char *fmt, ...)
{
        if ((int)level > atomic_load_explicit(&sl_log_level, memory_order_relaxed))
                return;
        char line[SL_LOG_LINE_BYTES];
        int n = snprintf(line, sizeof(line), "sluiced[%s] %s: ", tls_name, level_names[level]);
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < sizeof(line))
                vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);

        struct sl_logq *q = tls_logq;
        if (!q) {
                fprintf(stderr, "%s\n", line);
                return;
        }
        uint64_t now = sl_time_ms();
        if (now - q->window_start_ms >= 1000) {
                q->window_start_ms = now;
                q->window_lines = 0;
        }
        if (q->window_lines >= q->lines_per_sec_max || sl_ring_free(q->ring, 1) < 1) {
                atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
                return;
        }
        q->window_lines++;
        memcpy(sl_ring_slot(q->ring), line, sizeof(line));
        sl_ring_publish(q->ring);
}

uint32_t sl_logq_drain(struct sl_logq *q, FILE *out)
{
        uint32_t n = sl_ring_count(q->ring);
        for (uint32_t i = 0; i < n; i++) {
                const char *line = sl_ring_peek(q->ring, i);
                fprintf(out, "%.*s\n", SL_LOG_LINE_BYTES, line);
        }
        if (n) {
                sl_ring_consume(q->ring, n);
                fflush(out);
        }
        return n;
}
