/* The layers under TCP: Ethernet demultiplexing, ARP (replies, one
 * gratuitous announcement, a neighbour table), IPv4 (header checks,
 * fragments dropped and counted) and ICMP echo. Also the stack's
 * constructor, since the pools are carved here. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "tcp_internal.h"

static const uint8_t mac_broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Every received segment is summed when the port offers no receive
 * checksum offload (memif, af_packet): 18% of a worker under a memif
 * stream with the 16-bit big-endian loop. The one's complement sum does
 * not depend on byte order (RFC 1071), so native 32-bit words go into a
 * 64-bit accumulator and the folded result is swapped once. */
uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
        uint64_t acc = 0;
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
                uint32_t w[4];
                memcpy(w, p + i, 16);
                acc += (uint64_t)w[0] + w[1] + w[2] + w[3];
        }
        for (; i + 4 <= n; i += 4) {
                uint32_t w;
                memcpy(&w, p + i, 4);
                acc += w;
        }
        if (i + 2 <= n) {
                uint16_t h;
                memcpy(&h, p + i, 2);
                acc += h;
                i += 2;
        }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (i < n)
                acc += p[i]; /* the high byte of a big-endian pad word, once swapped */
        acc = (acc & 0xffffffffu) + (acc >> 32);
        acc = (acc & 0xffffffffu) + (acc >> 32);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        sum += (uint32_t)(((acc & 0xff) << 8) | (acc >> 8));
#else
        if (i < n)
                acc += (uint32_t)p[i] << 8;
        acc = (acc & 0xffffffffu) + (acc >> 32);
        acc = (acc & 0xffffffffu) + (acc >> 32);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        sum += (uint32_t)acc;
#endif
        /* fold early so long buffers cannot overflow 32 bits */
        return (sum & 0xffff) + (sum >> 16);
}

uint32_t csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
        uint32_t sum = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff);
        return sum + proto + len;
}

static uint32_t prefix_mask(uint8_t prefix_len)
{
        return prefix_len == 0 ? 0 : ~0u << (32 - prefix_len);
}

/* A gateway is a neighbour: inside our prefix and not ourselves. */
static bool gateway_valid(const struct tcp_stack_config *c)
{
        if (c->gateway == 0)
                return true;
        uint32_t m = prefix_mask(c->prefix_len);
        return c->gateway != c->ip && ((c->gateway ^ c->ip) & m) == 0;
}

static bool cfg_valid(const struct tcp_stack_config *c)
{
        return gateway_valid(c) && c->xmit && c->conns_max > 0 && c->conns_max <= (1u << 24) &&
               c->buf_bytes >= 4096 && (c->buf_bytes & (c->buf_bytes - 1)) == 0 &&
               c->buf_bytes <= (1u << 30) && c->mtu >= 576 && c->mtu <= 9000 &&
               c->prefix_len >= 1 && c->prefix_len <= 32 && c->rto_min_ms > 0 &&
               c->rto_max_ms >= c->rto_min_ms && c->rto_initial_ms > 0;
}

struct tcp_stack *tcp_stack_create(const struct tcp_stack_config *cfg)
{
        if (!cfg_valid(cfg))
                return NULL;
        struct tcp_stack *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->cfg = *cfg;
        s->frame = s->frame_own;
        s->netmask = prefix_mask(cfg->prefix_len);
        if (s->cfg.syn_backlog_max == 0)
                s->cfg.syn_backlog_max = 1;
        s->mss_local = (uint16_t)(cfg->mtu - IP_HDR_LEN - TCP_HDR_LEN);
        uint32_t n = cfg->conns_max;
        uint32_t buckets = 1;
        while (buckets < 2 * n)
                buckets <<= 1;
        s->hash_mask = buckets - 1;
        s->conns = calloc(n, sizeof(*s->conns));
        s->free_stack = calloc(n, sizeof(uint32_t));
        s->hash_heads = calloc(buckets, sizeof(uint32_t));
        /* Reserved, not committed: a page of a ring costs memory only once
         * a connection has used it, so conns_max can be sized for the peak. */
        s->bufs_bytes = (size_t)n * 2 * cfg->buf_bytes;
        s->bufs = mmap(NULL, s->bufs_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s->bufs == MAP_FAILED)
                s->bufs = NULL;
        if (!s->conns || !s->free_stack || !s->hash_heads || !s->bufs) {
                tcp_stack_destroy(s);
                return NULL;
        }
        for (uint32_t i = 0; i < n; i++) {
                struct tcp_conn *c = &s->conns[i];
                c->idx = i;
                c->rx_buf = s->bufs + (size_t)i * 2 * cfg->buf_bytes;
                c->tx_buf = c->rx_buf + cfg->buf_bytes;
                s->free_stack[s->free_count++] = n - 1 - i;
        }
        s->in_state[TCPS_FREE] = n;
        return s;
}

void tcp_stack_destroy(struct tcp_stack *s)
{
        if (!s)
                return;
        free(s->conns);
        free(s->free_stack);
        free(s->hash_heads);
        if (s->bufs)
                munmap(s->bufs, s->bufs_bytes);
        free(s);
}

int tcp_stack_listen(struct tcp_stack *s, uint16_t port)
{
        for (uint32_t i = 0; i < s->listen_count; i++)
                if (s->listen_ports[i] == port)
                        return -EEXIST;
        if (s->listen_count == TCP_LISTEN_PORTS_MAX)
                return -ENOSPC;
        s->listen_ports[s->listen_count++] = port;
        return 0;
}

const struct tcp_stack_stats *tcp_stack_stats(const struct tcp_stack *s)
{
        return &s->stats;
}

uint32_t tcp_stack_conns_in_use(const struct tcp_stack *s)
{
        return s->cfg.conns_max - s->free_count;
}

uint32_t tcp_stack_conns_in_state(const struct tcp_stack *s, enum tcp_state st)
{
        return (unsigned)st < TCPS_COUNT ? s->in_state[st] : 0;
}

const char *tcp_state_name(enum tcp_state st)
{
        static const char *const names[TCPS_COUNT] = {
            [TCPS_FREE] = "free",
            [TCPS_SYN_RECEIVED] = "syn_received",
            [TCPS_ESTABLISHED] = "established",
            [TCPS_CLOSE_WAIT] = "close_wait",
            [TCPS_LAST_ACK] = "last_ack",
            [TCPS_FIN_WAIT_1] = "fin_wait_1",
            [TCPS_FIN_WAIT_2] = "fin_wait_2",
            [TCPS_CLOSING] = "closing",
            [TCPS_TIME_WAIT] = "time_wait",
        };
        return (unsigned)st < TCPS_COUNT ? names[st] : "?";
}

/* ---- neighbours ---- */

static uint32_t neigh_slot(uint32_t ip)
{
        return (ip * 2654435761u) >> 24 & (NEIGH_SLOTS - 1);
}

/* A fixed table: a newer neighbour in the same slot replaces the older
 * (replies go to the MAC each connection recorded, so a lost entry only
 * costs a lookup miss, never a connection). */
void neigh_learn(struct tcp_stack *s, uint32_t ip, const uint8_t mac[6])
{
        if (ip == 0 || ip == s->cfg.ip || (mac[0] & 1))
                return;
        if (ip == s->cfg.gateway) {
                if (!s->gw_known || memcmp(s->gw_mac, mac, 6) != 0)
                        s->stats.arp_learned++;
                memcpy(s->gw_mac, mac, 6);
                s->gw_known = true;
                return;
        }
        struct neigh *n = &s->neigh[neigh_slot(ip)];
        if (n->ip == ip && memcmp(n->mac, mac, 6) == 0)
                return;
        n->ip = ip;
        memcpy(n->mac, mac, 6);
        s->stats.arp_learned++;
}

void tcp_stack_neighbour_set(struct tcp_stack *s, uint32_t ip, const uint8_t mac[6])
{
        neigh_learn(s, ip, mac);
}

bool tcp_stack_neighbour(const struct tcp_stack *s, uint32_t ip, uint8_t mac[6])
{
        if (ip != 0 && ip == s->cfg.gateway) {
                if (s->gw_known)
                        memcpy(mac, s->gw_mac, 6);
                return s->gw_known;
        }
        const struct neigh *n = &s->neigh[neigh_slot(ip)];
        if (n->ip != ip || ip == 0)
                return false;
        memcpy(mac, n->mac, 6);
        return true;
}

/* ---- output ---- */

static void frame_send(struct tcp_stack *s, uint32_t len, bool offload)
{
        if (s->cfg.xmit(s->cfg.drv, s->frame, len, offload) < 0)
                s->stats.tx_dropped++;
        else
                s->stats.tx_frames++;
}

/* Picks the buffer the next frame is built in: the driver's when it
 * offers one (no copy in xmit), else the stack's own. */
static void frame_begin(struct tcp_stack *s)
{
        uint8_t *f = s->cfg.tx_frame ? s->cfg.tx_frame(s->cfg.drv) : NULL;
        s->frame = f ? f : s->frame_own;
}

uint8_t *ip_l4_area(struct tcp_stack *s)
{
        frame_begin(s);
        return s->frame + ETH_HDR_LEN + IP_HDR_LEN;
}

/* l4 lies in s->frame at ip_l4_area (the caller built it there); its
 * checksum is already final, or the pseudo-header sum with offload. */
void ip_output(struct tcp_stack *s, const uint8_t dmac[6], uint32_t dst_ip, uint8_t proto,
               uint8_t *l4, uint32_t l4_len)
{
        (void)l4;
        /* Off-link: the frame goes to the gateway's MAC whatever the caller
         * recorded, and without a gateway (or before it answers ARP) it is
         * dropped, never sent to a guessed MAC; retransmission recovers. */
        if (((dst_ip ^ s->cfg.ip) & s->netmask) != 0) {
                if (s->cfg.gateway == 0) {
                        s->stats.ip_no_route++;
                        return;
                }
                if (!s->gw_known) {
                        s->stats.gw_unresolved++;
                        return;
                }
                dmac = s->gw_mac;
        }
        uint8_t *f = s->frame;
        memcpy(f, dmac, 6);
        memcpy(f + 6, s->cfg.mac, 6);
        wr16(f + 12, ETH_TYPE_IPV4);
        uint8_t *ip = f + ETH_HDR_LEN;
        ip[0] = 0x45;
        ip[1] = 0;
        wr16(ip + 2, (uint16_t)(IP_HDR_LEN + l4_len));
        wr16(ip + 4, s->ip_id++);
        wr16(ip + 6, 0x4000); /* DF: we size segments to the MTU */
        ip[8] = 64;
        ip[9] = proto;
        wr16(ip + 10, 0);
        wr32(ip + 12, s->cfg.ip);
        wr32(ip + 16, dst_ip);
        bool offload = s->cfg.tx_csum_offload && proto == IP_PROTO_TCP;
        if (!offload)
                wr16(ip + 10, csum_fold(csum_add(0, ip, IP_HDR_LEN)));
        frame_send(s, ETH_HDR_LEN + IP_HDR_LEN + l4_len, offload);
}

static void arp_send(struct tcp_stack *s, uint16_t op, const uint8_t tha[6], uint32_t tpa,
                     const uint8_t dmac[6])
{
        frame_begin(s);
        uint8_t *f = s->frame;
        memcpy(f, dmac, 6);
        memcpy(f + 6, s->cfg.mac, 6);
        wr16(f + 12, ETH_TYPE_ARP);
        uint8_t *a = f + ETH_HDR_LEN;
        wr16(a, 1);
        wr16(a + 2, ETH_TYPE_IPV4);
        a[4] = 6;
        a[5] = 4;
        wr16(a + 6, op);
        memcpy(a + 8, s->cfg.mac, 6);
        wr32(a + 14, s->cfg.ip);
        memcpy(a + 18, tha, 6);
        wr32(a + 24, tpa);
        memset(a + 28, 0, 60 - ETH_HDR_LEN - 28); /* pad to the Ethernet minimum */
        frame_send(s, 60, false);
}

/* A broadcast ARP request for the gateway, repeated each second until it
 * answers (it may come up after us); its reply lands in neigh_learn. */
static void gateway_request(struct tcp_stack *s, uint64_t now_ms)
{
        static const uint8_t zero[6] = {0};
        arp_send(s, 1, zero, s->cfg.gateway, mac_broadcast);
        s->stats.arp_requests++;
        s->gw_arp_next_ms = now_ms + 1000;
}

void tcp_stack_announce(struct tcp_stack *s, uint64_t now_ms)
{
        static const uint8_t zero[6] = {0};
        /* A gratuitous ARP request: sender and target are our own address. */
        arp_send(s, 1, zero, s->cfg.ip, mac_broadcast);
        if (s->cfg.gateway != 0 && !s->gw_known && !s->cfg.arp_passive)
                gateway_request(s, now_ms);
}

void neigh_timers(struct tcp_stack *s, uint64_t now_ms)
{
        if (s->cfg.gateway != 0 && !s->gw_known && !s->cfg.arp_passive &&
            now_ms >= s->gw_arp_next_ms)
                gateway_request(s, now_ms);
}

/* ---- input ---- */

static void arp_input(struct tcp_stack *s, const uint8_t *a, uint32_t len)
{
        if (len < 28 || rd16(a) != 1 || rd16(a + 2) != ETH_TYPE_IPV4 || a[4] != 6 || a[5] != 4) {
                s->stats.eth_dropped++;
                return;
        }
        uint16_t op = rd16(a + 6);
        const uint8_t *sha = a + 8;
        uint32_t spa = rd32(a + 14);
        uint32_t tpa = rd32(a + 24);
        if (tpa != s->cfg.ip) {
                /* gratuitous ARP from a neighbour we know: keep it current */
                uint8_t mac[6];
                if (spa == tpa && tcp_stack_neighbour(s, spa, mac))
                        neigh_learn(s, spa, sha);
                return;
        }
        neigh_learn(s, spa, sha);
        if (op == 1) {
                arp_send(s, 2, sha, spa, sha);
                s->stats.arp_replies++;
        }
}

static void icmp_input(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip,
                       const uint8_t *icmp, uint32_t len)
{
        if (len < 8 || icmp[0] != 8 || len > (uint32_t)s->cfg.mtu - IP_HDR_LEN)
                return; /* only echo requests that fit one reply frame */
        if (csum_fold(csum_add(0, icmp, len)) != 0) {
                s->stats.ip_bad++;
                return;
        }
        uint8_t *out = ip_l4_area(s);
        memcpy(out, icmp, len);
        out[0] = 0; /* echo reply */
        wr16(out + 2, 0);
        wr16(out + 2, csum_fold(csum_add(0, out, len)));
        ip_output(s, eth_src, src_ip, IP_PROTO_ICMP, out, len);
        s->stats.icmp_echo_replies++;
}

static void ipv4_input(struct tcp_stack *s, const uint8_t *eth_src, const uint8_t *ip, uint32_t len,
                       bool csum_ok, uint64_t now_ms)
{
        if (len < IP_HDR_LEN || (ip[0] >> 4) != 4) {
                s->stats.ip_bad++;
                return;
        }
        uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4;
        uint32_t total = rd16(ip + 2);
        /* frames may carry Ethernet padding after the datagram: trust total */
        if (ihl < IP_HDR_LEN || total < ihl || total > len) {
                s->stats.ip_bad++;
                return;
        }
        if (!csum_ok && csum_fold(csum_add(0, ip, ihl)) != 0) {
                s->stats.ip_bad++;
                return;
        }
        uint32_t dst = rd32(ip + 16), src = rd32(ip + 12);
        if (dst != s->cfg.ip) {
                s->stats.ip_not_ours++;
                return;
        }
        /* MF set or a fragment offset: a server's peers send full segments
         * sized to the MSS we announce, so fragments are noise or attack. */
        if (rd16(ip + 6) & 0x3fff) {
                s->stats.ip_fragments_dropped++;
                return;
        }
        /* An off-link peer is answered through the gateway (ip_output), so
         * without one nothing could answer it: drop before any state. */
        if (((src ^ s->cfg.ip) & s->netmask) != 0 && s->cfg.gateway == 0) {
                s->stats.ip_no_route++;
                return;
        }
        /* Neighbours are learnt from ARP only: on-link replies go to the MAC
         * a segment came from, so a table write per packet would buy nothing. */
        switch (ip[9]) {
        case IP_PROTO_ICMP:
                icmp_input(s, eth_src, src, ip + ihl, total - ihl);
                break;
        case IP_PROTO_TCP:
                tcp_input(s, eth_src, src, dst, ip + ihl, total - ihl, csum_ok, now_ms);
                break;
        default:
                s->stats.ip_not_ours++;
        }
}

void tcp_stack_input(struct tcp_stack *s, const uint8_t *frame, uint32_t len, bool csum_ok,
                     uint64_t now_ms)
{
        s->stats.rx_frames++;
        if (len < ETH_HDR_LEN) {
                s->stats.eth_dropped++;
                return;
        }
        const uint8_t *dst = frame;
        if (memcmp(dst, s->cfg.mac, 6) != 0 && memcmp(dst, mac_broadcast, 6) != 0) {
                s->stats.eth_dropped++;
                return;
        }
        const uint8_t *src = frame + 6;
        if (src[0] & 1) { /* a multicast source is never legitimate */
                s->stats.eth_dropped++;
                return;
        }
        switch (rd16(frame + 12)) {
        case ETH_TYPE_ARP:
                arp_input(s, frame + ETH_HDR_LEN, len - ETH_HDR_LEN);
                break;
        case ETH_TYPE_IPV4:
                ipv4_input(s, src, frame + ETH_HDR_LEN, len - ETH_HDR_LEN, csum_ok, now_ms);
                break;
        default:
                s->stats.eth_dropped++;
        }
}
