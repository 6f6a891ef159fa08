/* A userspace TCP/IP stack for one worker: Ethernet frames in, Ethernet
 * frames out, a server's TCP in between. One instance per worker core and
 * no global state, so workers never share it (DESIGN.md: the per-core stack
 * of the DPDK mode). It knows nothing of DPDK: a driver hands it received
 * frames (tcp_stack_input) and takes the frames it emits (xmit), which is
 * also how the unit tests and the fuzzer drive it.
 *
 * Time is the caller's: every entry point takes now_ms from a monotonic
 * clock. Nothing allocates after tcp_stack_create. */
#ifndef TCP_STACK_H
#define TCP_STACK_H

#include <stdbool.h>
#include <stdint.h>

struct tcp_stack;
struct tcp_conn;

#define TCP_LISTEN_PORTS_MAX 8

/* A connection's state (RFC 9293 names; a server never is in SYN_SENT or
 * LISTEN per connection). TCPS_FREE: a slot holding none. */
enum tcp_state {
        TCPS_FREE,
        TCPS_SYN_RECEIVED,
        TCPS_ESTABLISHED,
        TCPS_CLOSE_WAIT,
        TCPS_LAST_ACK,
        TCPS_FIN_WAIT_1,
        TCPS_FIN_WAIT_2,
        TCPS_CLOSING,
        TCPS_TIME_WAIT,
        TCPS_COUNT,
};

struct tcp_stack_config {
        uint8_t mac[6];
        uint32_t ip; /* host byte order */
        uint8_t prefix_len;
        /* Next hop for peers outside ip/prefix_len (host order, inside the
         * prefix; 0: none, and off-link peers are dropped, ip_no_route). */
        uint32_t gateway;
        /* Another stack of the port owns ARP (worker 0): this one sends no
         * gateway requests and is told the MAC with tcp_stack_neighbour_set. */
        bool arp_passive;
        uint16_t mtu; /* IP MTU of the port, 576..9000 */

        uint32_t conns_max;       /* every state counts, TIME_WAIT included */
        uint32_t syn_backlog_max; /* SYN_RECEIVED at once; beyond it, SYN cookies */
        uint32_t buf_bytes;       /* receive and send ring per connection, power of two */

        uint32_t rto_min_ms, rto_max_ms, rto_initial_ms;
        uint32_t retries_max; /* RTO expiries in a row before the connection is dropped */
        uint32_t delack_ms;
        uint32_t time_wait_ms;
        uint32_t keepalive_idle_ms; /* 0: no keepalive */
        uint32_t keepalive_interval_ms;
        uint32_t keepalive_probes;
        uint64_t isn_secret; /* RFC 6528: initial sequence numbers are not guessable */

        /* The driver fills IPv4 and TCP checksums (the stack leaves the
         * pseudo-header sum in the TCP field, as DPDK's offload expects). */
        bool tx_csum_offload;

        /* Emits one frame; the stack keeps ownership of frame (the driver
         * copies it). <0 counts as a drop: retransmission recovers. */
        int (*xmit)(void *drv, const uint8_t *frame, uint32_t len, bool csum_offload);
        void *drv;
        /* Optional: a buffer of at least 14 + mtu bytes to build the next
         * frame in (the driver's own transmit buffer, so that xmit of it
         * needs no copy); the same one until it is passed to xmit. NULL
         * (or returning NULL): the stack's own buffer. */
        uint8_t *(*tx_frame)(void *drv);

        /* Upcalls to the connection's user; all run inside stack calls. */
        void *user;
        /* A handshake completed on a listening port. Non-zero refuses: the
         * peer gets a RST. */
        int (*accepted)(void *user, struct tcp_conn *c);
        /* In-order bytes (or the peer's FIN) are ready: tcp_conn_rx_peek. */
        void (*readable)(void *user, struct tcp_conn *c);
        /* The peer acknowledged bytes: send room grew. */
        void (*writable)(void *user, struct tcp_conn *c);
        /* The connection died while attached (reset, retransmissions or
         * keepalive exhausted): err is -ECONNRESET or -ETIMEDOUT. c is
         * invalid afterwards. */
        void (*closed)(void *user, struct tcp_conn *c, int err);
};

/* The timers a server stack runs with unless told otherwise: Linux's
 * (RFC 6298 minimum and initial RTO, tcp_retries2, 40 ms delayed ACK,
 * 2 MSL of 30 s, tcp_keepalive_*), so sluiced behaves as the kernel
 * stack its clients already know. */
static inline void tcp_stack_config_linux_timers(struct tcp_stack_config *c)
{
        c->rto_min_ms = 200;
        c->rto_max_ms = 60000;
        c->rto_initial_ms = 1000;
        c->retries_max = 15;
        c->delack_ms = 40;
        c->time_wait_ms = 60000;
        c->keepalive_idle_ms = 7200000;
        c->keepalive_interval_ms = 75000;
        c->keepalive_probes = 9;
}

/* Counters, written by the owning worker only. */
struct tcp_stack_stats {
        uint64_t rx_frames, tx_frames, tx_dropped;
        uint64_t eth_dropped; /* not for us, unknown ethertype, runt */
        uint64_t arp_replies, arp_learned;
        uint64_t arp_requests;  /* for the gateway: at start, then each second until it answers */
        uint64_t ip_no_route;   /* an off-link peer and no gateway: never sent to a guessed MAC */
        uint64_t gw_unresolved; /* an off-link frame dropped while the gateway's MAC is unknown */
        uint64_t ip_bad;        /* header or checksum */
        uint64_t ip_fragments_dropped;
        uint64_t ip_not_ours; /* another destination or an unknown protocol */
        uint64_t icmp_echo_replies;
        uint64_t tcp_bad;                                /* header or checksum */
        uint64_t syn_cookies_sent, syn_cookies_accepted; /* SYN queue full: stateless */
        uint64_t conn_pool_dropped;
        uint64_t conns_accepted, conns_refused;
        uint64_t rst_sent, rst_received;
        uint64_t retransmits, fast_retransmits, rto_expiries;
        uint64_t ooo_segments, out_of_window;
        uint64_t keepalive_probes, timeouts;
        uint64_t timer_visits; /* connections the timers looked at: their cost */
};

/* Carves every pool from cfg; NULL on a bad config or no memory. */
struct tcp_stack *tcp_stack_create(const struct tcp_stack_config *cfg);
void tcp_stack_destroy(struct tcp_stack *s);

/* Accept connections to port. 0, -EEXIST, -ENOSPC. */
int tcp_stack_listen(struct tcp_stack *s, uint16_t port);

/* Sends one gratuitous ARP so neighbours learn (or update) our MAC, and
 * an ARP request for the gateway if there is one. */
void tcp_stack_announce(struct tcp_stack *s, uint64_t now_ms);

/* One received frame, borrowed for the call. csum_ok: the NIC verified the
 * IPv4 and TCP checksums. */
void tcp_stack_input(struct tcp_stack *s, const uint8_t *frame, uint32_t len, bool csum_ok,
                     uint64_t now_ms);

/* Retransmission, delayed-ACK, keepalive and TIME_WAIT timers. Cheap when
 * nothing is due; call every loop iteration. */
void tcp_stack_timers(struct tcp_stack *s, uint64_t now_ms);

const struct tcp_stack_stats *tcp_stack_stats(const struct tcp_stack *s);
uint32_t tcp_stack_conns_in_use(const struct tcp_stack *s);
/* Connections in state st now (TCPS_FREE: free slots), kept as states
 * change, so reading them costs nothing. */
uint32_t tcp_stack_conns_in_state(const struct tcp_stack *s, enum tcp_state st);
/* "established", "time_wait", ...: the metric label of a state. */
const char *tcp_state_name(enum tcp_state st);

/* Teaches the table a neighbour another stack of the port resolved (the
 * ARP owner publishes the gateway's MAC to the other workers). */
void tcp_stack_neighbour_set(struct tcp_stack *s, uint32_t ip, const uint8_t mac[6]);

/* The MAC the neighbour table holds for ip (host order); false if none. */
bool tcp_stack_neighbour(const struct tcp_stack *s, uint32_t ip, uint8_t mac[6]);

/* ---- RSS ---- */

#define TCP_RSS_KEY_LEN 40
/* The RSS key the DPDK backend programs into RSS-capable ports. */
extern const uint8_t tcp_rss_key[TCP_RSS_KEY_LEN];
/* The Toeplitz hash of input under key. */
uint32_t tcp_toeplitz(const uint8_t key[TCP_RSS_KEY_LEN], const uint8_t *input, uint32_t len);
/* The RSS hash a NIC computes for an IPv4 TCP segment (addresses and ports
 * in host order, as the segment's sender and receiver) with tcp_rss_key. */
uint32_t tcp_rss_hash_ipv4_tcp(uint32_t src_ip, uint32_t dst_ip, uint16_t src_port,
                               uint16_t dst_port);

/* The queue (= worker) RSS picks for a segment from the peer, on a port
 * with tcp_rss_key and a redirection table of reta_size entries (a power
 * of two, entry i -> queue i % owners); reta_size 0: no table. */
uint16_t tcp_rss_owner(uint32_t peer_ip, uint32_t local_ip, uint16_t peer_port, uint16_t local_port,
                       uint16_t reta_size, uint16_t owners);

/* ---- one connection ---- */

/* Connections are numbered 0..conns_max-1 for the life of the stack: a
 * small handle a user can keep instead of the pointer. NULL when that slot
 * holds no connection. */
struct tcp_conn *tcp_stack_conn(struct tcp_stack *s, uint32_t index);
uint32_t tcp_conn_index(const struct tcp_conn *c);

void tcp_conn_user_set(struct tcp_conn *c, void *user);
void *tcp_conn_user(const struct tcp_conn *c);
uint32_t tcp_conn_peer_ip(const struct tcp_conn *c); /* host order */
uint16_t tcp_conn_peer_port(const struct tcp_conn *c);
uint16_t tcp_conn_local_port(const struct tcp_conn *c);

/* Contiguous received bytes at the read position (lent until the next
 * consume); 0 when none. */
uint32_t tcp_conn_rx_peek(const struct tcp_conn *c, const uint8_t **p);
/* Frees n read bytes; may send a window update. */
void tcp_conn_rx_consume(struct tcp_stack *s, struct tcp_conn *c, uint32_t n, uint64_t now_ms);
/* The peer sent FIN and every byte before it was read. */
bool tcp_conn_rx_eof(const struct tcp_conn *c);

/* Bytes tcp_conn_send would take now. */
uint32_t tcp_conn_tx_room(const struct tcp_conn *c);
/* Copies up to n bytes into the send ring and transmits what the windows
 * allow. Returns bytes taken (0 when the ring is full or the connection no
 * longer sends). */
uint32_t tcp_conn_send(struct tcp_stack *s, struct tcp_conn *c, const void *p, uint32_t n,
                       uint64_t now_ms);
/* tcp_conn_send of several pieces at once: all are queued before anything
 * is transmitted, so small pieces share MSS-sized segments instead of
 * leaving one segment each. Returns bytes taken (a prefix of the pieces). */
struct tcp_piece {
        const void *p;
        uint32_t n;
};
uint32_t tcp_conn_sendv(struct tcp_stack *s, struct tcp_conn *c, const struct tcp_piece *pieces,
                        uint32_t count, uint64_t now_ms);
/* Bytes sent and not yet acknowledged, plus bytes not yet sent. */
uint32_t tcp_conn_tx_queued(const struct tcp_conn *c);

/* Detaches the user (no upcall after this) and closes gracefully: queued
 * bytes are still delivered, then FIN; the stack frees the connection
 * itself after TIME_WAIT or LAST_ACK. */
void tcp_conn_close(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms);
/* Detaches the user, sends RST, frees at once. */
void tcp_conn_abort(struct tcp_stack *s, struct tcp_conn *c);

#endif
