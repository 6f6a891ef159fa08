/* sluice-dpdkgen: a line-rate load generator that needs no NIC. It is its
 * own DPDK process (own --file-prefix) on a memif port whose other end is
 * sluiced's [dpdk] port, so both sides move frames through shared memory
 * and the only costs measured are the two processes' own.
 *
 *   nats mode: one TCP connection from a minimal client written here
 *     (handshake, window-limited sending, go-back-N on a stall) that
 *     streams NATS `PUB` messages of one size; reports what sluiced
 *     acknowledged: msgs/s, MB/s, frames/s each way.
 *   echo mode: the same frames of the same size sent blindly and counted
 *     when they come back from an io-forwarder on the other end: the
 *     ceiling of the PMD.
 *   fwd mode: that io-forwarder, what dpdk-testpmd --forward-mode=io
 *     --port-topology=loop does (rx burst, tx burst of the same mbufs on
 *     the same port, no header touched); Debian 12's dpdk package ships no
 *     testpmd, so it is here, on the core sluiced's worker uses.
 *
 *   sluice-dpdkgen EAL-ARGS -- --mode nats|echo|fwd [--seconds N] [--size B]
 *                  [--src IP] [--dst IP] [--port P] [--frame B]
 *
 * Never used by `meson test`: tests/bench/dpdk.sh runs it. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>

#define BURST   32
#define MSS     1460
#define HDR_LEN (14 + 20 + 20)

struct gen {
        uint16_t port;
        struct rte_mempool *pool;
        struct rte_ether_addr mac;
        uint32_t src_ip, dst_ip; /* host order */
        uint16_t src_port, dst_port;
        /* TCP client */
        uint32_t iss, snd_una, snd_nxt, rcv_nxt, peer_wnd;
        uint8_t peer_ws;
        bool established, reset;
        uint32_t stream_base; /* sequence number of stream byte 0 */
        /* the stream: CONNECT, then PUBs forever */
        char connect[128];
        uint32_t connect_len;
        uint8_t *pattern; /* enough whole messages to cover any MSS slice */
        uint32_t msg_len;
        /* counters */
        uint64_t tx_frames, rx_frames, acked_bytes;
};

/* Whole seconds and the remainder are scaled apart: cycles * 1e9 overflows
 * 64 bits once the TSC passes 1.8e10 (7 s after boot at 2.6 GHz), and the
 * wrapped clock never exceeded 7.1e9 ns, so a deadline beyond that was never
 * reached and the generator polled forever (the "hang in rx_burst" of about
 * one start in three). The remainder is below hz, so remainder * 1e9 fits. */
static uint64_t now_ns(void)
{
        uint64_t cycles = rte_get_tsc_cycles(), hz = rte_get_tsc_hz();
        return cycles / hz * 1000000000ull + cycles % hz * 1000000000ull / hz;
}

static void put_headers(struct gen *g, uint8_t *f, uint32_t payload, uint8_t flags, uint32_t seq,
                        uint8_t opt_len)
{
        static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        /* Broadcast destination: sluiced accepts it and answers to our
         * source MAC, so the generator needs no ARP. */
        memcpy(f, bcast, 6);
        memcpy(f + 6, g->mac.addr_bytes, 6);
        f[12] = 0x08;
        f[13] = 0x00;
        struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(f + 14);
        memset(ip, 0, sizeof(*ip));
        ip->version_ihl = 0x45;
        ip->total_length = htons((uint16_t)(20 + 20 + opt_len + payload));
        ip->time_to_live = 64;
        ip->next_proto_id = IPPROTO_TCP;
        ip->src_addr = htonl(g->src_ip);
        ip->dst_addr = htonl(g->dst_ip);
        ip->hdr_checksum = rte_ipv4_cksum(ip);
        struct rte_tcp_hdr *t = (struct rte_tcp_hdr *)(ip + 1);
        memset(t, 0, sizeof(*t));
        t->src_port = htons(g->src_port);
        t->dst_port = htons(g->dst_port);
        t->sent_seq = htonl(seq);
        t->recv_ack = htonl(g->rcv_nxt);
        t->data_off = (uint8_t)(((20 + opt_len) / 4) << 4);
        t->tcp_flags = flags;
        t->rx_win = htons(65535);
}

static void tcp_csum(uint8_t *f)
{
        struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(f + 14);
        struct rte_tcp_hdr *t = (struct rte_tcp_hdr *)(ip + 1);
        t->cksum = 0;
        t->cksum = rte_ipv4_udptcp_cksum(ip, t);
}

/* Stream byte at offset off (after CONNECT) into dst, len bytes. */
static void stream_copy(const struct gen *g, uint32_t off, uint8_t *dst, uint32_t len)
{
        while (len && off < g->connect_len) {
                *dst++ = (uint8_t)g->connect[off++];
                len--;
        }
        if (!len)
                return;
        uint32_t in = (off - g->connect_len) % g->msg_len;
        memcpy(dst, g->pattern + in, len); /* pattern covers in + MSS */
}

static int send_syn(struct gen *g)
{
        struct rte_mbuf *m = rte_pktmbuf_alloc(g->pool);
        if (!m)
                return -ENOMEM;
        uint8_t *f = (uint8_t *)rte_pktmbuf_append(m, HDR_LEN + 8);
        put_headers(g, f, 0, RTE_TCP_SYN_FLAG, g->iss, 8);
        uint8_t *o = f + HDR_LEN;
        /* MSS 1460, NOP, window scale 7 */
        o[0] = 2, o[1] = 4, o[2] = MSS >> 8, o[3] = MSS & 0xff;
        o[4] = 1, o[5] = 3, o[6] = 3, o[7] = 7;
        tcp_csum(f);
        if (rte_eth_tx_burst(g->port, 0, &m, 1) != 1) {
                rte_pktmbuf_free(m);
                return -EAGAIN;
        }
        g->tx_frames++;
        return 0;
}

static void on_segment(struct gen *g, const uint8_t *f, uint32_t len)
{
        if (len < HDR_LEN || f[12] != 0x08 || f[13] != 0x00)
                return;
        const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(f + 14);
        if (ip->next_proto_id != IPPROTO_TCP)
                return;
        uint32_t ihl = (ip->version_ihl & 0xf) * 4u;
        uint32_t total = ntohs(ip->total_length);
        const struct rte_tcp_hdr *t = (const struct rte_tcp_hdr *)((const uint8_t *)ip + ihl);
        uint32_t thl = (t->data_off >> 4) * 4u;
        if (ntohs(t->dst_port) != g->src_port || total < ihl + thl)
                return;
        uint32_t payload = total - ihl - thl;
        uint32_t seq = ntohl(t->sent_seq), ack = ntohl(t->recv_ack);
        if (t->tcp_flags & RTE_TCP_RST_FLAG) {
                g->reset = true;
                return;
        }
        if (!g->established) {
                if ((t->tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) !=
                        (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG) ||
                    ack != g->iss + 1)
                        return;
                const uint8_t *o = (const uint8_t *)t + 20, *end = (const uint8_t *)t + thl;
                while (o < end && *o != 0) {
                        if (*o == 1) {
                                o++;
                                continue;
                        }
                        if (o + 1 >= end || o[1] < 2)
                                break;
                        if (o[0] == 3 && o[1] == 3)
                                g->peer_ws = o[2] > 14 ? 14 : o[2];
                        o += o[1];
                }
                g->rcv_nxt = seq + 1;
                g->snd_una = g->snd_nxt = g->stream_base = g->iss + 1;
                g->peer_wnd = ntohs(t->rx_win); /* a SYN's window is never scaled */
                g->established = true;
                return;
        }
        if ((t->tcp_flags & RTE_TCP_ACK_FLAG) && (int32_t)(ack - g->snd_una) > 0 &&
            (int32_t)(ack - g->snd_nxt) <= 0) {
                g->acked_bytes += ack - g->snd_una;
                g->snd_una = ack;
        }
        if (t->tcp_flags & RTE_TCP_ACK_FLAG)
                g->peer_wnd = (uint32_t)ntohs(t->rx_win) << g->peer_ws;
        if (payload && seq == g->rcv_nxt)
                g->rcv_nxt += payload; /* INFO, PONG, -ERR: acknowledged on the next segment */
}

static void rx_poll(struct gen *g, bool echo)
{
        struct rte_mbuf *m[BURST];
        uint16_t n = rte_eth_rx_burst(g->port, 0, m, BURST);
        g->rx_frames += n;
        for (uint16_t i = 0; i < n; i++) {
                if (!echo)
                        on_segment(g, rte_pktmbuf_mtod(m[i], const uint8_t *),
                                   rte_pktmbuf_data_len(m[i]));
                rte_pktmbuf_free(m[i]);
        }
}

static void tx_data(struct gen *g)
{
        struct rte_mbuf *m[BURST];
        uint16_t n = 0;
        uint32_t nxt = g->snd_nxt;
        while (n < BURST) {
                uint32_t inflight = nxt - g->snd_una;
                if (inflight + MSS > g->peer_wnd)
                        break;
                struct rte_mbuf *b = rte_pktmbuf_alloc(g->pool);
                if (!b)
                        break;
                uint8_t *f = (uint8_t *)rte_pktmbuf_append(b, HDR_LEN + MSS);
                put_headers(g, f, MSS, RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, nxt, 0);
                stream_copy(g, nxt - g->stream_base, f + HDR_LEN, MSS);
                tcp_csum(f);
                m[n++] = b;
                nxt += MSS;
        }
        if (!n)
                return;
        uint16_t sent = rte_eth_tx_burst(g->port, 0, m, n);
        for (uint16_t i = sent; i < n; i++)
                rte_pktmbuf_free(m[i]);
        g->snd_nxt += (uint32_t)sent * MSS;
        g->tx_frames += sent;
}

static void tx_echo(struct gen *g, uint32_t frame)
{
        struct rte_mbuf *m[BURST];
        uint16_t n = 0;
        while (n < BURST) {
                struct rte_mbuf *b = rte_pktmbuf_alloc(g->pool);
                if (!b)
                        break;
                uint8_t *f = (uint8_t *)rte_pktmbuf_append(b, (uint16_t)frame);
                put_headers(g, f, frame - HDR_LEN, RTE_TCP_ACK_FLAG, 0, 0);
                m[n++] = b;
        }
        uint16_t sent = n ? rte_eth_tx_burst(g->port, 0, m, n) : 0;
        for (uint16_t i = sent; i < n; i++)
                rte_pktmbuf_free(m[i]);
        g->tx_frames += sent;
}

static int port_start(struct gen *g)
{
        if (rte_eth_dev_count_avail() < 1) {
                fprintf(stderr, "sluice-dpdkgen: no DPDK port (pass --vdev=net_memif0,...)\n");
                return -1;
        }
        g->port = 0;
        g->pool = rte_pktmbuf_pool_create("gen", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                          rte_socket_id());
        struct rte_eth_conf conf;
        memset(&conf, 0, sizeof(conf));
        if (!g->pool || rte_eth_dev_configure(g->port, 1, 1, &conf) != 0 ||
            rte_eth_rx_queue_setup(g->port, 0, 1024, rte_socket_id(), NULL, g->pool) != 0 ||
            rte_eth_tx_queue_setup(g->port, 0, 1024, rte_socket_id(), NULL) != 0 ||
            rte_eth_dev_start(g->port) != 0) {
                fprintf(stderr, "sluice-dpdkgen: port 0 does not start\n");
                return -1;
        }
        rte_eth_macaddr_get(g->port, &g->mac);
        return 0;
}

/* The memif peer connects some time after start: wait for link up. */
static bool link_wait(struct gen *g, uint64_t deadline)
{
        while (now_ns() < deadline) {
                struct rte_eth_link link;
                if (rte_eth_link_get_nowait(g->port, &link) == 0 && link.link_status)
                        return true;
                rte_delay_ms(10);
        }
        return false;
}

/* The echo generator's last frame: the forwarder stops polling when it
 * sees it. DPDK 22.11's memif tears a departed peer's rings down from its
 * interrupt thread while the lcore may still be in rx_burst (a crash seen
 * here), so each side stops polling before the other can leave. */
#define STOP_ETHERTYPE 0x88b5 /* IEEE local experimental */

static bool is_stop(const struct rte_mbuf *m)
{
        const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
        return rte_pktmbuf_data_len(m) >= 14 && f[12] == (STOP_ETHERTYPE >> 8) &&
               f[13] == (STOP_ETHERTYPE & 0xff);
}

static void send_stop(struct gen *g)
{
        struct rte_mbuf *m = rte_pktmbuf_alloc(g->pool);
        if (!m)
                return;
        uint8_t *f = (uint8_t *)rte_pktmbuf_append(m, 60);
        memset(f, 0xff, 6);
        memcpy(f + 6, g->mac.addr_bytes, 6);
        f[12] = STOP_ETHERTYPE >> 8;
        f[13] = STOP_ETHERTYPE & 0xff;
        memset(f + 14, 0, 46);
        uint64_t deadline = now_ns() + 1000000000ull;
        while (rte_eth_tx_burst(g->port, 0, &m, 1) != 1)
                if (now_ns() > deadline) {
                        rte_pktmbuf_free(m);
                        return;
                }
}

static bool link_up(struct gen *g)
{
        struct rte_eth_link link;
        return rte_eth_link_get_nowait(g->port, &link) == 0 && link.link_status;
}

/* testpmd's io engine: forward what arrives, back out of the same port,
 * until the generator's stop frame (forwarded back: the generator's
 * acknowledgement), its link going down, or `secs` without a frame. After
 * the stop frame it polls no ring again and waits for the generator to
 * leave first: memif's interrupt thread unmaps a departed peer's rings
 * while the lcore may be inside rx_burst (segfaults seen here, 2 starts in
 * 30 when the generator left right after its stop frame). */
static int io_forward(struct gen *g, double secs)
{
        struct rte_mbuf *m[BURST];
        uint64_t fwd = 0, dropped = 0, idle_limit = (uint64_t)(secs * 1e9);
        uint64_t last_frame = now_ns();
        bool stop = false;
        const char *why = "stop frame";
        while (!stop) {
                uint16_t n = rte_eth_rx_burst(g->port, 0, m, BURST);
                if (!n) {
                        uint64_t now = now_ns();
                        if (now - last_frame > idle_limit) {
                                why = "idle";
                                break;
                        }
                        if (now - last_frame > 1000000ull && !link_up(g)) {
                                why = "link down";
                                break;
                        }
                        continue;
                }
                last_frame = now_ns();
                for (uint16_t i = 0; i < n; i++)
                        stop |= is_stop(m[i]);
                uint16_t sent = rte_eth_tx_burst(g->port, 0, m, n);
                for (uint16_t i = sent; i < n; i++)
                        rte_pktmbuf_free(m[i]);
                fwd += sent;
                dropped += n - sent;
        }
        uint64_t deadline = now_ns() + 2000000000ull;
        while (stop && link_up(g) && now_ns() < deadline)
                rte_delay_us_sleep(1000);
        printf("mode=fwd forwarded=%" PRIu64 " dropped=%" PRIu64 " ended_by=%s\n", fwd, dropped,
               why);
        fflush(stdout);
        return 0; /* no port stop: the generator may still be attached */
}

/* The echo generator's goodbye: its stop frame, then frames drained until
 * the forwarder has sent it back (so it polls no more), then no ring is
 * touched again before exit. */
static void echo_goodbye(struct gen *g)
{
        send_stop(g);
        struct rte_mbuf *m[BURST];
        bool back = false;
        uint64_t deadline = now_ns() + 1000000000ull;
        while (!back && now_ns() < deadline) {
                uint16_t n = rte_eth_rx_burst(g->port, 0, m, BURST);
                for (uint16_t i = 0; i < n; i++) {
                        back |= is_stop(m[i]);
                        rte_pktmbuf_free(m[i]);
                }
        }
        if (!back)
                fprintf(stderr, "sluice-dpdkgen: the forwarder did not return the stop frame\n");
}

int main(int argc, char **argv)
{
        int used = rte_eal_init(argc, argv);
        if (used < 0) {
                fprintf(stderr, "sluice-dpdkgen: EAL init failed\n");
                return 2;
        }
        argc -= used;
        argv += used;
        static const struct option opts[] = {
            {"mode", required_argument, 0, 'm'},  {"seconds", required_argument, 0, 's'},
            {"size", required_argument, 0, 'z'},  {"src", required_argument, 0, 'a'},
            {"dst", required_argument, 0, 'b'},   {"port", required_argument, 0, 'p'},
            {"frame", required_argument, 0, 'f'}, {0, 0, 0, 0}};
        const char *mode = "nats", *src = "10.89.0.1", *dst = "10.89.0.2";
        double secs = 3;
        uint32_t size = 128, frame = HDR_LEN + MSS;
        struct gen g;
        memset(&g, 0, sizeof(g));
        g.dst_port = 4222;
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'm':
                        mode = optarg;
                        break;
                case 's':
                        secs = atof(optarg);
                        break;
                case 'z':
                        size = (uint32_t)atoi(optarg);
                        break;
                case 'a':
                        src = optarg;
                        break;
                case 'b':
                        dst = optarg;
                        break;
                case 'p':
                        g.dst_port = (uint16_t)atoi(optarg);
                        break;
                case 'f':
                        frame = (uint32_t)atoi(optarg);
                        break;
                default:
                        return 2;
                }
        }
        bool echo = strcmp(mode, "echo") == 0;
        bool fwd = strcmp(mode, "fwd") == 0;
        struct in_addr a;
        if (inet_pton(AF_INET, src, &a) != 1)
                return 2;
        g.src_ip = ntohl(a.s_addr);
        if (inet_pton(AF_INET, dst, &a) != 1)
                return 2;
        g.dst_ip = ntohl(a.s_addr);
        if (frame < HDR_LEN || frame > HDR_LEN + MSS)
                frame = HDR_LEN + MSS;
        g.src_port = 40000;
        g.iss = (uint32_t)rte_rdtsc();
        if (port_start(&g) != 0)
                return 1;
        if (!link_wait(&g, now_ns() + 10000000000ull)) {
                fprintf(stderr, "sluice-dpdkgen: memif link never came up\n");
                return 1;
        }

        if (fwd)
                return io_forward(&g, secs);
        if (!echo) {
                /* "PUB bench.s <size>\r\n<payload>\r\n" repeated: a slice of
                 * MSS bytes from any message offset stays inside it. */
                char head[64];
                int hl = snprintf(head, sizeof(head), "PUB bench.s %u\r\n", size);
                g.msg_len = (uint32_t)hl + size + 2;
                uint32_t copies = MSS / g.msg_len + 2;
                g.pattern = malloc((size_t)copies * g.msg_len);
                if (!g.pattern)
                        return 1;
                for (uint32_t i = 0; i < copies; i++) {
                        uint8_t *p = g.pattern + (size_t)i * g.msg_len;
                        memcpy(p, head, (size_t)hl);
                        memset(p + hl, 'x', size);
                        memcpy(p + hl + size, "\r\n", 2);
                }
                g.connect_len =
                    (uint32_t)snprintf(g.connect, sizeof(g.connect),
                                       "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
                uint64_t deadline = now_ns() + 5000000000ull, next_syn = 0;
                while (!g.established && !g.reset && now_ns() < deadline) {
                        if (now_ns() >= next_syn) {
                                send_syn(&g);
                                next_syn = now_ns() + 200000000ull;
                        }
                        rx_poll(&g, false);
                }
                if (!g.established) {
                        fprintf(stderr, "sluice-dpdkgen: no SYN-ACK from %s:%u\n", dst, g.dst_port);
                        return 1;
                }
        }

        /* Half a second of warm-up, then the measured interval. */
        uint64_t start = now_ns(), warm = start + 500000000ull;
        uint64_t end = warm + (uint64_t)(secs * 1e9);
        uint64_t base_tx = 0, base_rx = 0, base_acked = 0, last_progress = start;
        uint32_t last_una = g.snd_una;
        bool measuring = false;
        for (;;) {
                uint64_t now = now_ns();
                if (!measuring && now >= warm) {
                        measuring = true;
                        base_tx = g.tx_frames, base_rx = g.rx_frames, base_acked = g.acked_bytes;
                }
                if (now >= end || g.reset)
                        break;
                rx_poll(&g, echo);
                if (echo) {
                        tx_echo(&g, frame);
                        continue;
                }
                tx_data(&g);
                if (g.snd_una != last_una) {
                        last_una = g.snd_una;
                        last_progress = now;
                } else if (g.snd_nxt != g.snd_una && now - last_progress > 200000000ull) {
                        g.snd_nxt = g.snd_una; /* go back N: sluiced dropped something */
                        last_progress = now;
                }
        }
        if (g.reset) {
                fprintf(stderr, "sluice-dpdkgen: connection reset by sluiced\n");
                return 1;
        }
        double dt = (double)(now_ns() - warm) / 1e9;
        double tx = (double)(g.tx_frames - base_tx) / dt, rx = (double)(g.rx_frames - base_rx) / dt;
        if (echo) {
                echo_goodbye(&g);
                printf("mode=echo frame=%u tx_mpps=%.3f rx_mpps=%.3f rx_mbps=%.1f\n", frame,
                       tx / 1e6, rx / 1e6, rx * frame / 1e6);
                fflush(stdout);
                return 0; /* no port stop: the forwarder is still attached */
        } else {
                double bytes = (double)(g.acked_bytes - base_acked) / dt;
                printf("mode=nats size=%u frame=%u tx_mpps=%.3f rx_mpps=%.3f msgs_per_s=%.0f "
                       "mb_per_s=%.1f payload_mb_per_s=%.1f\n",
                       size, HDR_LEN + MSS, tx / 1e6, rx / 1e6, bytes / g.msg_len, bytes / 1e6,
                       bytes / g.msg_len * size / 1e6);
                /* a RST frees sluiced's connection at once */
                struct rte_mbuf *m = rte_pktmbuf_alloc(g.pool);
                if (m) {
                        uint8_t *f = (uint8_t *)rte_pktmbuf_append(m, HDR_LEN);
                        put_headers(&g, f, 0, RTE_TCP_RST_FLAG, g.snd_una, 0);
                        tcp_csum(f);
                        if (rte_eth_tx_burst(g.port, 0, &m, 1) != 1)
                                rte_pktmbuf_free(m);
                }
        }
        fflush(stdout);
        rte_eth_dev_stop(g.port);
        rte_eal_cleanup();
        return 0;
}
