/* libFuzzer target for the DPDK mode's packet input path: Ethernet frames
 * into a fresh per-worker TCP/IP stack. The input is a list of records
 *   [u16 length][u8 control][frame]
 * control bit 0: the NIC vouches for checksums (so mutations reach TCP
 * instead of dying at the checksum), bit 1: write our MAC as destination,
 * bit 2: patch the TCP ACK field with what our last segment asks for (so
 * handshakes complete and data states are reached), bits 3-7: advance the
 * clock by that many x 37 ms and run the timers. The application echoes
 * what it reads, and closes or aborts on some inputs. Checked: no crash,
 * no leak, frames within bounds, the pool never overcommitted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcp_internal.h"
#include "tcp_stack.h"

static const uint8_t our_mac[6] = {0x02, 0, 0, 0, 0, 2};
static uint32_t next_ack;
static uint64_t now;
static struct tcp_stack *st;
static unsigned conns_max = 16;

static int xmit(void *drv, const uint8_t *frame, uint32_t len, bool offload)
{
        (void)drv;
        (void)offload;
        if (len < ETH_HDR_LEN || len > FRAME_BYTES_MAX)
                abort();
        if (rd16(frame + 12) == ETH_TYPE_IPV4 && frame[ETH_HDR_LEN + 9] == IP_PROTO_TCP) {
                const uint8_t *t = frame + ETH_HDR_LEN + IP_HDR_LEN;
                uint32_t tl = rd16(frame + ETH_HDR_LEN + 2) - IP_HDR_LEN;
                uint32_t hl = (uint32_t)(t[12] >> 4) * 4;
                if (hl > tl)
                        abort();
                next_ack = rd32(t + 4) + (tl - hl) + ((t[13] & 2) ? 1 : 0) + ((t[13] & 1) ? 1 : 0);
        }
        return 0;
}

static int on_accepted(void *user, struct tcp_conn *c)
{
        (void)user;
        return tcp_conn_peer_port(c) % 7 == 0 ? -1 : 0;
}

static void on_readable(void *user, struct tcp_conn *c)
{
        (void)user;
        const uint8_t *p;
        uint32_t n = tcp_conn_rx_peek(c, &p);
        if (n) {
                uint8_t copy[512];
                uint32_t k = n < sizeof(copy) ? n : sizeof(copy);
                memcpy(copy, p, k);
                tcp_conn_rx_consume(st, c, k, now);
                if (k && copy[0] == 'A') {
                        tcp_conn_abort(st, c);
                        return;
                }
                if (k && copy[0] == 'C') {
                        tcp_conn_close(st, c, now);
                        return;
                }
                tcp_conn_send(st, c, copy, k, now);
        }
        if (tcp_conn_rx_eof(c))
                tcp_conn_close(st, c, now);
}

static void on_writable(void *user, struct tcp_conn *c)
{
        (void)user;
        (void)c;
}

static void on_closed(void *user, struct tcp_conn *c, int err)
{
        (void)user;
        (void)c;
        (void)err;
}

/* The books the stack keeps must agree with its connections: the
 * per-state counts add up (free = the free list), and a connection with a
 * timer running is filed in the wheel no later than that timer, so no
 * timer can be missed. */
static void invariants(void)
{
        uint32_t counted[TCPS_COUNT] = {0};
        for (uint32_t i = 0; i < conns_max; i++) {
                const struct tcp_conn *c = &st->conns[i];
                counted[c->state]++;
                if (c->state == TCPS_FREE)
                        continue;
                const uint64_t t[4] = {c->tw_at, c->delack_at, c->rto_at, c->keepalive_at};
                for (int k = 0; k < 4; k++)
                        if (t[k] && (!c->wheel_slot || c->wheel_at > t[k]))
                                abort();
        }
        for (int k = 0; k < TCPS_COUNT; k++)
                if (counted[k] != tcp_stack_conns_in_state(st, (enum tcp_state)k))
                        abort();
        if (counted[TCPS_FREE] != st->free_count)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct tcp_stack_config cfg = {
            .ip = 0x0a000002u,
            .prefix_len = 24,
            .gateway = 0x0a0000feu, /* off-link sources take the next-hop path too */
            .mtu = 1500,
            .conns_max = conns_max,
            .syn_backlog_max = 4,
            .buf_bytes = 4096,
            .rto_min_ms = 200,
            .rto_max_ms = 5000,
            .rto_initial_ms = 1000,
            .retries_max = 4,
            .delack_ms = 40,
            .time_wait_ms = 1000,
            .keepalive_idle_ms = 3000,
            .keepalive_interval_ms = 500,
            .keepalive_probes = 2,
            .isn_secret = 7,
            .xmit = xmit,
            .accepted = on_accepted,
            .readable = on_readable,
            .writable = on_writable,
            .closed = on_closed,
        };
        memcpy(cfg.mac, our_mac, 6);
        st = tcp_stack_create(&cfg);
        if (!st)
                abort();
        tcp_stack_listen(st, 4222);
        next_ack = 0;
        now = 1000;
        static uint8_t frame[FRAME_BYTES_MAX];
        size_t pos = 0;
        while (pos + 3 <= size) {
                uint32_t len = rd16(data + pos);
                uint8_t ctl = data[pos + 2];
                pos += 3;
                if (len > size - pos)
                        len = (uint32_t)(size - pos);
                if (len > sizeof(frame))
                        len = sizeof(frame);
                memcpy(frame, data + pos, len);
                pos += len;
                if ((ctl & 2) && len >= 6)
                        memcpy(frame, our_mac, 6);
                if ((ctl & 4) && len >= ETH_HDR_LEN + IP_HDR_LEN + 12)
                        wr32(frame + ETH_HDR_LEN + IP_HDR_LEN + 8, next_ack);
                tcp_stack_input(st, frame, len, ctl & 1, now);
                if (ctl >> 3) {
                        now += (uint64_t)(ctl >> 3) * 37;
                        tcp_stack_timers(st, now);
                }
                if (tcp_stack_conns_in_use(st) > conns_max)
                        abort();
                invariants();
        }
        /* run every timer out: TIME_WAIT, retransmissions, keepalive */
        for (int i = 0; i < 200; i++) {
                now += 100;
                tcp_stack_timers(st, now);
        }
        tcp_stack_destroy(st);
        st = NULL;
        return 0;
}
