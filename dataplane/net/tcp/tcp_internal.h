/* Private to the stack: wire layouts, sequence arithmetic, the stack and
 * connection structs shared by tcp_ip.c (Ethernet, ARP, IPv4, ICMP) and
 * tcp_tcp.c (TCP). */
#ifndef TCP_INTERNAL_H
#define TCP_INTERNAL_H

#include <stddef.h>
#include <string.h>

#include "tcp_stack.h"

#define ETH_HDR_LEN       14
#define ETH_TYPE_IPV4     0x0800
#define ETH_TYPE_ARP      0x0806
#define IP_HDR_LEN        20
#define IP_PROTO_ICMP     1
#define IP_PROTO_TCP      6
#define TCP_HDR_LEN       20
#define TCP_OPT_LEN_MAX   40
#define FRAME_BYTES_MAX   (ETH_HDR_LEN + 9000)
#define NEIGH_SLOTS       256 /* power of two */
#define OOO_RANGES_MAX    4   /* out-of-order holes kept; more are dropped */
#define TCP_SYNACK_TRIES  5
#define TCP_FIN_WAIT_2_MS 60000
#define TCP_TICK_MS       5   /* timer granularity: a timer fires up to this late */
#define WHEEL_SLOTS       512 /* power of two: one turn is 2.56 s of ticks */

enum tcp_flag { TH_FIN = 1, TH_SYN = 2, TH_RST = 4, TH_PSH = 8, TH_ACK = 16 };

/* Sequence numbers compare modulo 2^32 (RFC 793 section 3.3). */
static inline bool seq_lt(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) < 0;
}
static inline bool seq_leq(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) <= 0;
}
static inline bool seq_gt(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) > 0;
}
static inline bool seq_geq(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) >= 0;
}

/* Big-endian loads and stores byte by byte: frames are not aligned. */
static inline uint16_t rd16(const uint8_t *p)
{
        return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t rd32(const uint8_t *p)
{
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

/* Ones-complement sum (RFC 1071), folded at the end by csum_fold. */
uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n);
static inline uint16_t csum_fold(uint32_t sum)
{
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return (uint16_t)~sum;
}
uint32_t csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len);

struct tcp_ooo {
        uint32_t start, end; /* [start, end) held in the receive ring */
};

struct tcp_conn {
        enum tcp_state state;
        uint32_t idx;
        uint32_t hash_next; /* index + 1 in the 4-tuple chain, 0 = end */
        uint32_t hash;
        void *user;
        bool attached; /* the user holds it: upcalls allowed */

        uint32_t rip;
        uint16_t rport, lport;
        uint8_t rmac[6];

        /* options agreed in the handshake */
        uint16_t snd_mss;
        uint8_t snd_wscale, rcv_wscale;
        bool ts_ok, sack_ok;
        uint32_t ts_recent;

        /* send side; the ring holds [snd_una, snd_una + tx_len) */
        uint32_t iss, snd_una, snd_nxt, snd_max;
        uint32_t snd_wnd, snd_wl1, snd_wl2;
        uint32_t cwnd, ssthresh, recover;
        uint8_t dupacks;
        bool in_recovery;
        uint8_t *tx_buf;
        uint32_t tx_len;
        bool fin_queued, fin_sent;
        uint32_t fin_seqno; /* sequence number of our FIN once queued */

        /* receive side; the ring holds [rx_read, rcv_nxt) in order plus ooo */
        uint32_t irs, rcv_nxt, rcv_adv; /* rcv_adv: right edge last advertised */
        uint32_t rx_read;
        uint8_t *rx_buf;
        struct tcp_ooo ooo[OOO_RANGES_MAX];
        uint8_t ooo_count;
        bool fin_rcvd;
        uint8_t segs_unacked;

        /* timers: absolute ms, 0 = off */
        uint64_t rto_at, delack_at, keepalive_at, tw_at;
        uint32_t rto_ms, srtt_ms8, rttvar_ms4; /* scaled as in RFC 6298 code */
        uint8_t retries, probes;
        uint32_t rtt_seq;
        uint64_t rtt_start_ms;
        bool rtt_timing;

        /* The timer wheel: filed under wheel_at, the earliest of the timers
         * above when filed (a timer moved later leaves it there: it wakes
         * early, finds nothing due and is filed again). */
        uint64_t wheel_at;
        uint32_t wheel_slot;             /* slot + 1; 0 = not filed */
        uint32_t wheel_next, wheel_prev; /* index + 1 */
};

struct neigh {
        uint32_t ip; /* 0 = empty */
        uint8_t mac[6];
};

struct tcp_stack {
        struct tcp_stack_config cfg;
        struct tcp_stack_stats stats;
        uint16_t listen_ports[TCP_LISTEN_PORTS_MAX];
        uint32_t listen_count;
        uint16_t mss_local; /* what we accept: MTU - 40 */

        struct tcp_conn *conns;
        uint8_t *bufs;
        size_t bufs_bytes;
        uint32_t *free_stack;
        uint32_t free_count;
        uint32_t *hash_heads; /* index + 1 */
        uint32_t hash_mask;

        uint32_t syn_received;
        uint32_t in_state[TCPS_COUNT]; /* connections per state, for the gauges */
        /* Heads (index + 1) of the wheel's slots, one per TCP_TICK_MS tick
         * modulo WHEEL_SLOTS, and one more for the slot being expired. */
        uint32_t wheel[WHEEL_SLOTS + 1];
        uint64_t wheel_tick; /* the last tick expired */

        struct neigh neigh[NEIGH_SLOTS];
        /* The gateway's MAC is kept apart from the hashed table, which an
         * on-link neighbour in the same slot could overwrite: every off-link
         * peer depends on this one entry. */
        uint32_t netmask;
        bool gw_known;
        uint8_t gw_mac[6];
        uint64_t gw_arp_next_ms; /* next request while unresolved */
        uint16_t ip_id;
        uint8_t *frame; /* the frame being built: frame_own or the driver's (cfg.tx_frame) */
        uint8_t frame_own[FRAME_BYTES_MAX];
};

/* Every state change goes through here, so the per-state gauges are
 * counts kept as they change rather than a scan of the table. */
static inline void conn_state_set(struct tcp_stack *s, struct tcp_conn *c, enum tcp_state st)
{
        s->in_state[c->state]--;
        s->in_state[st]++;
        c->state = st;
}

/* tcp_ip.c */
void ip_output(struct tcp_stack *s, const uint8_t dmac[6], uint32_t dst_ip, uint8_t proto,
               uint8_t *l4, uint32_t l4_len);
uint8_t *ip_l4_area(struct tcp_stack *s); /* starts a frame: call before building one */
void neigh_learn(struct tcp_stack *s, uint32_t ip, const uint8_t mac[6]);
void neigh_timers(struct tcp_stack *s, uint64_t now_ms); /* gateway ARP retries */

/* tcp_tcp.c */
void tcp_input(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip, uint32_t dst_ip,
               const uint8_t *seg, uint32_t len, bool csum_ok, uint64_t now_ms);

#endif
