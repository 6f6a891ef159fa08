/* What the TCP timers cost a worker with many idle connections: N
 * connections are established through frames in memory, then the stack's
 * timers run as a polling worker calls them (every 50 us of simulated
 * time, 10 simulated seconds). Not a test: it prints the timers' wall time
 * per simulated second and how many connections they looked at. Run it
 * under callgrind for a count that does not depend on the machine's load:
 *   valgrind --tool=callgrind --toggle-collect=tcp_stack_timers \
 *       build/tests/unit/tcp/bench_tcp_timers 5000
 * (the total Ir is the timers' instructions over the 10 s). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tcp_internal.h"

#define SERVER_IP   0x0a4d0002u
#define PEER_IP     0x0a4d0001u
#define SERVER_PORT 4222

static const uint8_t server_mac[6] = {2, 0, 0, 0, 0, 2};
static const uint8_t peer_mac[6] = {2, 0, 0, 0, 0, 1};
static uint32_t last_seq; /* the sequence number of the last segment the stack sent */

static int xmit(void *drv, const uint8_t *f, uint32_t len, bool offload)
{
        (void)drv;
        (void)offload;
        if (len >= ETH_HDR_LEN + IP_HDR_LEN + TCP_HDR_LEN)
                last_seq = rd32(f + ETH_HDR_LEN + IP_HDR_LEN + 4);
        return 0;
}

static int accepted(void *user, struct tcp_conn *c)
{
        (void)user;
        (void)c;
        return 0;
}

static void segment(struct tcp_stack *s, uint16_t sport, uint32_t seq, uint32_t ack, uint8_t flags,
                    uint64_t now)
{
        uint8_t f[ETH_HDR_LEN + IP_HDR_LEN + TCP_HDR_LEN];
        memset(f, 0, sizeof(f));
        memcpy(f, server_mac, 6);
        memcpy(f + 6, peer_mac, 6);
        wr16(f + 12, ETH_TYPE_IPV4);
        uint8_t *ip = f + ETH_HDR_LEN;
        ip[0] = 0x45;
        wr16(ip + 2, IP_HDR_LEN + TCP_HDR_LEN);
        ip[8] = 64;
        ip[9] = IP_PROTO_TCP;
        wr32(ip + 12, PEER_IP);
        wr32(ip + 16, SERVER_IP);
        wr16(ip + 10, csum_fold(csum_add(0, ip, IP_HDR_LEN)));
        uint8_t *t = ip + IP_HDR_LEN;
        wr16(t, sport);
        wr16(t + 2, SERVER_PORT);
        wr32(t + 4, seq);
        wr32(t + 8, ack);
        t[12] = (TCP_HDR_LEN / 4) << 4;
        t[13] = flags;
        wr16(t + 14, 65535);
        /* checksums are the "NIC's" (csum_ok): this measures the timers */
        tcp_stack_input(s, f, sizeof(f), true, now);
}

int main(int argc, char **argv)
{
        uint32_t n = argc > 1 ? (uint32_t)atoi(argv[1]) : 5000;
        struct tcp_stack_config cfg = {
            .ip = SERVER_IP,
            .prefix_len = 24,
            .mtu = 1500,
            .conns_max = n + 16,
            .syn_backlog_max = n + 16,
            .buf_bytes = 4096,
            .isn_secret = 42,
            .xmit = xmit,
            .accepted = accepted,
        };
        tcp_stack_config_linux_timers(&cfg); /* sluiced's defaults */
        memcpy(cfg.mac, server_mac, 6);
        struct tcp_stack *s = tcp_stack_create(&cfg);
        if (!s || tcp_stack_listen(s, SERVER_PORT) != 0)
                return 1;
        uint64_t now = 1000;
        for (uint32_t i = 0; i < n; i++) {
                uint16_t port = (uint16_t)(10000 + i);
                segment(s, port, 1, 0, TH_SYN, now);
                segment(s, port, 2, last_seq + 1, TH_ACK, now);
        }
        if (tcp_stack_conns_in_state(s, TCPS_ESTABLISHED) != n) {
                fprintf(stderr, "only %u of %u connections established\n",
                        tcp_stack_conns_in_state(s, TCPS_ESTABLISHED), n);
                return 1;
        }
        tcp_stack_timers(s, now); /* settles whatever the handshakes left */
        uint64_t visits0 = tcp_stack_stats(s)->timer_visits;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        const uint32_t seconds = 10, steps_per_ms = 20; /* a call every 50 us */
        for (uint32_t step = 0; step < seconds * 1000 * steps_per_ms; step++)
                tcp_stack_timers(s, now + step / steps_per_ms);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
        printf("%u idle connections: timers %.0f us of CPU per simulated second, %.0f "
               "connection visits per second\n",
               n, ns / 1e3 / seconds,
               (double)(tcp_stack_stats(s)->timer_visits - visits0) / seconds);
        tcp_stack_destroy(s);
        return 0;
}
