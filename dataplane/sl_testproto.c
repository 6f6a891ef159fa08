/* Implementation of the line test protocol (see sl_testproto.h). A line
 * split across receives is copied into a fixed scratch buffer; a line in
 * one receive is handled in place. */
#include "sl_testproto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl_worker.h"

#define TP_LINE_MAX 4096

struct tp_conn {
        uint32_t scratch_len;
        uint64_t big_left; /* BIG output still to generate */
        char scratch[TP_LINE_MAX];
};

/* Generates BIG output while there is room; pauses reading otherwise. */
static void tp_big_pump(struct sl_conn *c, struct tp_conn *t)
{
        while (t->big_left) {
                size_t room = (size_t)SL_MIN(sl_conn_tx_room(c), (uint64_t)8192);
                size_t n = (size_t)SL_MIN((uint64_t)room, t->big_left);
                if (n == 0)
                        break;
                uint8_t *p = sl_conn_tx_reserve(c, n);
                if (!p)
                        break;
                memset(p, 'x', n);
                sl_conn_tx_commit(c, n);
                t->big_left -= n;
                if (t->big_left == 0 && sl_conn_send(c, "\n", 1) != 0)
                        t->big_left = 0; /* newline lost only if the pool is gone */
        }
        if (t->big_left) {
                sl_conn_want_writable(c);
                sl_conn_rx_pause(c);
        } else
                sl_conn_rx_resume(c);
}

/* Returns 1 handled, 0 no room to answer (retry later), -1 close. */
static int tp_line(struct sl_conn *c, struct tp_conn *t, const char *line, size_t n)
{
        if (n && line[n - 1] == '\r')
                n--;
        if (n == 6 && memcmp(line, "WORKER", 6) == 0) {
                char out[16];
                int k = snprintf(out, sizeof(out), "%u\n", c->w->id);
                return sl_conn_send(c, out, (size_t)k) == 0 ? 1 : 0;
        }
        if (n > 4 && memcmp(line, "BIG ", 4) == 0) {
                t->big_left = strtoull(line + 4, NULL, 10);
                tp_big_pump(c, t);
                return 1;
        }
        if (n == 4 && memcmp(line, "QUIT", 4) == 0) {
                sl_conn_send(c, "BYE\n", 4);
                return -1;
        }
        struct iovec iov[2] = {{(void *)line, n}, {"\n", 1}};
        return sl_conn_sendv(c, iov, 2) == 0 ? 1 : 0;
}

static long tp_recv(struct sl_conn *c, const uint8_t *p, size_t n)
{
        struct tp_conn *t = c->proto_state;
        size_t used = 0;
        while (used < n) {
                if (t->big_left)
                        break; /* paused by tp_big_pump; resumed when it is done */
                const uint8_t *nl = memchr(p + used, '\n', n - used);
                if (!nl) {
                        size_t rest = n - used;
                        if (t->scratch_len + rest > TP_LINE_MAX ||
                            t->scratch_len + rest > c->w->limits.frame_bytes_max)
                                goto too_long;
                        memcpy(t->scratch + t->scratch_len, p + used, rest);
                        t->scratch_len += (uint32_t)rest;
                        used = n;
                        break;
                }
                size_t len = (size_t)(nl - (p + used));
                int rc;
                if (t->scratch_len) {
                        if (t->scratch_len + len > TP_LINE_MAX ||
                            t->scratch_len + len > c->w->limits.frame_bytes_max)
                                goto too_long;

                        /* Complete the split line in scratch; keep the bytes
                         * until the answer fits. */
                        char line[TP_LINE_MAX];
                        memcpy(line, t->scratch, t->scratch_len);
                        memcpy(line + t->scratch_len, p + used, len);
                        rc = tp_line(c, t, line, t->scratch_len + len);
                        if (rc > 0)
                                t->scratch_len = 0;
                } else {
                        if (len > c->w->limits.frame_bytes_max)
                                goto too_long;
                        rc = tp_line(c, t, (const char *)(p + used), len);
                }
                if (rc < 0)
                        return -1;
                if (rc == 0) {
                        /* No room for the answer: stop here, the rest stays held
                         * until output drains. */
                        sl_conn_rx_pause(c);
                        break;
                }
                used += len + 1;
        }
        sl_conn_set_partial(c, t->scratch_len > 0);
        return (long)used;
too_long:
        sl_conn_send(c, "ERR line too long\n", 18);
        return -1;
}

static void tp_writable(struct sl_conn *c)
{
        struct tp_conn *t = c->proto_state;
        if (t->big_left)
                tp_big_pump(c, t);
        else
                sl_conn_rx_resume(c);
}

static void tp_refused(struct sl_conn *c, enum sl_close_reason why)
{
        (void)why;
        sl_conn_send(c, "ERR too many connections\n", 25);
}

const struct sl_proto_ops sl_testproto_ops = {
    .name = "test",
    .conn_state_bytes = sizeof(struct tp_conn),
    .recv = tp_recv,
    .writable = tp_writable,
    .refused = tp_refused,
};
