/* The DPDK backend of the connection interface: the worker polls its queue
 * of every port in bursts and runs its own instance of the userspace TCP/IP
 * stack per port (net/tcp/); connections of those stacks become ordinary
 * sl_conns, so the protocol front-ends run unchanged. Compiled only when
 * libdpdk is found.
 *
 * Process side (control thread, before workers start): net_dpdk_setup
 * initialises the EAL from [dpdk] and starts each port; a port that cannot
 * start is an error, never a fallback to kernel sockets.
 *
 * Worker side: each worker registers as a DPDK lcore and owns queue pair
 * <worker id> of every port, with one TCP/IP stack per port (struct
 * dpdk_if). A connection belongs to the worker that net_dpdk_flow_owner()
 * names for its 4-tuple; whatever queue a segment arrives on (RSS,
 * af_packet fanout and tap multiqueue all hash differently), a worker that
 * does not own it forwards the mbuf to the owner's stack of the same port
 * over the mailbox ring, never answers it. ARP belongs to worker 0 on every
 * port, which also sends each port's gratuitous ARP.
 *
 * Receive views point into the TCP receive ring; the token of a view is the
 * connection's handle (port and stack index, net_dpdk_handle) and a
 * generation, and releasing it frees those bytes (opens the window). A send
 * completes when its bytes are copied into the TCP send ring, whose size is
 * the connection's credit. */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_random.h>

#include "net.h"
#include "net_dpdk.h"
#include "tcp/tcp_stack.h"

#define DPDK_BURST 32
/* a received burst of data segments answers with ACKs and a reply burst:
 * one tx_burst per loop iteration for both */
#define DPDK_TX_BURST    128
#define DPDK_MBUF_CACHE  256
#define DPDK_SCRATCH_MAX 9216
#define DPDK_NAP_US      50

struct dpdk_port {
        uint16_t id;
        uint16_t queues; /* one pair per worker */
        struct rte_mempool *pool;
        struct rte_ether_addr mac;
        uint32_t ip;
        uint8_t prefix_len;
        uint32_t gateway; /* 0: none */
        /* The gateway's MAC as worker 0 (the ARP owner) learnt it, for the
         * other workers' stacks: the 6 bytes plus bit 48 set; 0 = unknown. */
        _Atomic uint64_t gw_mac_pub;
        bool tx_csum; /* IPv4 + TCP checksum offload */
        bool rx_csum;
        uint16_t mtu;
        /* RSS with tcp_rss_key and a redirection table of reta_size
         * entries, entry i -> queue i % queues: the NIC's queue for a flow
         * is then net_dpdk_flow_owner's worker. 0: no RSS here (or the key
         * or table could not be set): flows land anywhere, and are
         * forwarded. */
        uint16_t reta_size;
};

/* Counters of one worker published for /metrics: the owner copies them
 * (relaxed stores) about every 100 ms; the control thread reads them. */
enum dpdk_counter {
        DC_RX_FRAMES,
        DC_TX_FRAMES,
        DC_TX_DROPPED,
        DC_FORWARDED,
        DC_FORWARD_DROPPED,
        DC_IP_BAD,
        DC_IP_FRAGMENTS,
        DC_TCP_BAD,
        DC_CONNS_ACCEPTED,
        DC_SYN_COOKIES_SENT,
        DC_SYN_COOKIES_ACCEPTED,
        DC_POOL_DROPPED,
        DC_RETRANSMITS,
        DC_FAST_RETRANSMITS,
        DC_RTO_EXPIRIES,
        DC_OOO_SEGMENTS,
        DC_OUT_OF_WINDOW,
        DC_RST_SENT,
        DC_RST_RECEIVED,
        DC_TIMEOUTS,
        DC_KEEPALIVE_PROBES,
        DC_IP_NO_ROUTE,
        DC_GW_UNRESOLVED,
        DC_COUNT,
};

static const struct {
        const char *name, *type, *help;
} dpdk_counter_desc[DC_COUNT] = {
    [DC_RX_FRAMES] = {"sluice_dpdk_rx_frames_total", "counter", "Frames received by the stack."},
    [DC_TX_FRAMES] = {"sluice_dpdk_tx_frames_total", "counter", "Frames handed to the port."},
    [DC_TX_DROPPED] = {"sluice_dpdk_tx_dropped_total", "counter",
                       "Frames the port or the mbuf pool refused (TCP resends)."},
    [DC_FORWARDED] = {"sluice_dpdk_forwarded_frames_total", "counter",
                      "Frames received for a flow another worker owns, handed to it."},
    [DC_FORWARD_DROPPED] = {"sluice_dpdk_forward_dropped_total", "counter",
                            "Frames for another worker dropped on a full ring."},
    [DC_IP_BAD] = {"sluice_dpdk_ip_bad_total", "counter", "IPv4 headers or checksums refused."},
    [DC_IP_FRAGMENTS] = {"sluice_dpdk_ip_fragments_dropped_total", "counter",
                         "IPv4 fragments dropped."},
    [DC_TCP_BAD] = {"sluice_dpdk_tcp_bad_total", "counter", "TCP headers or checksums refused."},
    [DC_CONNS_ACCEPTED] = {"sluice_dpdk_tcp_accepted_total", "counter", "Handshakes completed."},
    [DC_SYN_COOKIES_SENT] = {"sluice_dpdk_tcp_syn_cookies_sent_total", "counter",
                             "SYNs answered with a cookie: the SYN queue was full (a flood)."},
    [DC_SYN_COOKIES_ACCEPTED] = {"sluice_dpdk_tcp_syn_cookies_accepted_total", "counter",
                                 "Connections established from a valid cookie."},
    [DC_POOL_DROPPED] = {"sluice_dpdk_tcp_pool_dropped_total", "counter",
                         "SYNs dropped with no connection slot left."},
    [DC_RETRANSMITS] = {"sluice_dpdk_tcp_retransmits_total", "counter", "Segments resent."},
    [DC_FAST_RETRANSMITS] = {"sluice_dpdk_tcp_fast_retransmits_total", "counter",
                             "Resent on three duplicate ACKs."},
    [DC_RTO_EXPIRIES] = {"sluice_dpdk_tcp_rto_expiries_total", "counter",
                         "Retransmission timeouts."},
    [DC_OOO_SEGMENTS] = {"sluice_dpdk_tcp_out_of_order_total", "counter",
                         "Segments held out of order for reassembly."},
    [DC_OUT_OF_WINDOW] = {"sluice_dpdk_tcp_out_of_window_total", "counter",
                          "Segments outside the receive window."},
    [DC_RST_SENT] = {"sluice_dpdk_tcp_rst_sent_total", "counter", "Resets sent."},
    [DC_RST_RECEIVED] = {"sluice_dpdk_tcp_rst_received_total", "counter", "Resets received."},
    [DC_TIMEOUTS] = {"sluice_dpdk_tcp_timeouts_total", "counter",
                     "Connections dropped after retransmissions or keepalives ran out."},
    [DC_KEEPALIVE_PROBES] = {"sluice_dpdk_tcp_keepalive_probes_total", "counter",
                             "Keepalive probes sent to idle peers ([dpdk] tcp_keepalive_*)."},
    [DC_IP_NO_ROUTE] = {"sluice_dpdk_ip_no_route_total", "counter",
                        "Frames from or to peers off the port's subnet with no [dpdk] gateway."},
    [DC_GW_UNRESOLVED] = {"sluice_dpdk_gateway_unresolved_total", "counter",
                          "Off-link frames dropped before the gateway answered ARP."},
};

/* Per worker and port: which port a worker's frames and connections came
 * through (the sums are the DC_ counters above). */
enum dpdk_port_counter {
        DP_RX_FRAMES,
        DP_TX_FRAMES,
        DP_ACCEPTED,
        DP_COUNT,
};

static const struct {
        const char *name, *help;
} dpdk_port_counter_desc[DP_COUNT] = {
    [DP_RX_FRAMES] = {"sluice_dpdk_rx_frames_by_port_total",
                      "Frames the worker's stack of this port received."},
    [DP_TX_FRAMES] = {"sluice_dpdk_tx_frames_by_port_total",
                      "Frames the worker's stack of this port sent."},
    [DP_ACCEPTED] = {"sluice_dpdk_tcp_accepted_by_port_total",
                     "Handshakes the worker's stack of this port completed."},
};

struct dpdk_worker_summary {
        bool valid;
        uint64_t rx_frames, tx_frames, forwarded, forward_dropped, conns, retransmits;
};

/* Written once by the control thread before any worker starts; summary[i]
 * by worker i as it stops, read after it was joined. */
static struct {
        bool ready;
        int nports;
        struct dpdk_port ports[CTL_DPDK_PORTS_MAX];
        struct dpdk_worker_summary summary[CTL_WORKERS_MAX];
        _Atomic uint64_t pub[CTL_WORKERS_MAX][DC_COUNT];
        _Atomic uint32_t pub_states[CTL_WORKERS_MAX][TCPS_COUNT];
        _Atomic uint64_t pub_port[CTL_WORKERS_MAX][CTL_DPDK_PORTS_MAX][DP_COUNT];
} dpdk;

struct delayed_frame {
        struct rte_mbuf *m;
        uint64_t due_tsc;
        struct dpdk_if *f; /* the port it arrived on */
};

/* One port as a worker serves it: its queue pair, its own TCP/IP stack
 * (the port's address, MAC, gateway, MTU; ARP is worker 0's on every
 * port) and the per-connection state of that stack's connections. A
 * connection's handle (sl_conn fd, view token) is
 * net_dpdk_handle(port index, stack index): unique per worker across
 * ports. */
struct dpdk_if {
        struct net_dpdk *d;
        struct dpdk_port *port;
        uint16_t index; /* in [dpdk] ports */
        struct tcp_stack *stack;
        uint64_t gw_seen;        /* the gw_mac_pub value this worker last published or took */
        struct sl_conn **by_tcp; /* [tcp index] the sl_conn riding on it */
        uint32_t *rx_lent;       /* [tcp index] bytes lent as the current view */
        uint8_t *gen;            /* [tcp index] bumped per connection: stale tokens */
        uint8_t *tx_blocked;     /* [tcp index] a send waits for room */
        uint8_t *in_readyq;      /* [tcp index] */
        struct rte_mbuf *tx[DPDK_TX_BURST];
        uint16_t tx_count;
        struct rte_mbuf *tx_next; /* the frame the stack is building (dpdk_tx_frame) */
        uint64_t tx_dropped;
        uint64_t frames_forwarded, forward_dropped;
};

struct net_dpdk {
        struct sl_worker *w;
        struct dpdk_if ifs[CTL_DPDK_PORTS_MAX];
        uint16_t nifs;
        uint16_t queue;      /* the queue pair this worker polls on every port */
        uint32_t conns_max;  /* TCP connections per port's stack */
        uint32_t *readyq;    /* handles with something to deliver, all ports */
        uint32_t readyq_cap; /* nifs * conns_max */
        uint32_t ready_head, ready_count;
        bool accepting;
        /* [dpdk] test_loss/test_reorder: a seeded PRNG and one held frame */
        uint32_t loss_per_mille, reorder_per_mille;
        uint64_t rng;
        struct rte_mbuf *held;
        struct dpdk_if *held_if;
        /* [dpdk] test_delay_us/test_jitter_us: received frames wait in a
         * FIFO until their due time (TSC); sized once, full = dropped */
        struct delayed_frame *delayq;
        uint32_t delay_cap, delay_head, delay_count;
        uint64_t delay_tsc, jitter_tsc, delay_last_due, delay_dropped;
        uint64_t pub_next_ms;
        uint8_t scratch[DPDK_SCRATCH_MAX];
};

/* ---- process setup ---- */

/* The value of key=... in a vdev's argument string, or "" (out is at most
 * out_len - 1 bytes). */
static void devarg(const char *dev, const char *key, char *out, size_t out_len)
{
        out[0] = '\0';
        size_t klen = strlen(key);
        for (const char *p = strchr(dev, ','); p; p = strchr(p + 1, ',')) {
                if (strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '=') {
                        const char *v = p + 2 + klen;
                        size_t n = strcspn(v, ",");
                        if (n >= out_len)
                                n = out_len - 1;
                        memcpy(out, v, n);
                        out[n] = '\0';
                        return;
                }
        }
}

/* net_af_packet in DPDK 22.11 reports a 1518-byte frame limit to ethdev,
 * which therefore refuses any larger MTU, while its PACKET_MMAP frames
 * carry whatever framesz= and the kernel interface's MTU allow. For it the
 * MTU is checked against those two (a frame larger than framesz is
 * truncated by the kernel, silently) and ethdev keeps its default. */
static int af_packet_mtu_check(const char *dev, uint16_t mtu, uint32_t *frame_room, char *err,
                               size_t err_len)
{
        char v[32];
        devarg(dev, "framesz", v, sizeof(v));
        unsigned long framesz = v[0] ? strtoul(v, NULL, 0) : 2048;
        /* the tpacket2 header and the sockaddr_ll PACKET_MMAP puts first */
        unsigned long room = framesz > 32 ? framesz - 32 : 0;
        if (room < (unsigned long)mtu + RTE_ETHER_HDR_LEN) {
                snprintf(err, err_len,
                         "[dpdk] port %s: mtu = %u needs framesz= of at least %u (with blocksz= "
                         "at least as large, e.g. framesz=16384,blocksz=16384), it is %lu",
                         dev, mtu, mtu + RTE_ETHER_HDR_LEN + 32, framesz);
                return -EINVAL;
        }
        if (room > 65535 - RTE_PKTMBUF_HEADROOM) {
                snprintf(err, err_len, "[dpdk] port %s: framesz=%lu is larger than an mbuf", dev,
                         framesz);
                return -EINVAL;
        }
        *frame_room = (uint32_t)room; /* the PMD copies whole frames into one mbuf */
        devarg(dev, "iface", v, sizeof(v));
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        memcpy(ifr.ifr_name, v, strnlen(v, sizeof(ifr.ifr_name) - 1));
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int rc = fd >= 0 ? ioctl(fd, SIOCGIFMTU, &ifr) : -1;
        if (fd >= 0)
                close(fd);
        if (rc != 0 || ifr.ifr_mtu < mtu) {
                snprintf(err, err_len,
                         "[dpdk] port %s: mtu = %u, but interface %s has MTU %d (ip link set %s "
                         "mtu %u)",
                         dev, mtu, v, rc == 0 ? ifr.ifr_mtu : -1, v, mtu);
                return -EINVAL;
        }
        return 0;
}

/* Whether the port can carry mtu, and the mbuf data room that holds one
 * whole frame of it: the stack builds and reads frames in one segment, so
 * a frame larger than an mbuf would be dropped on receive by the PMD or
 * refused on transmit. *via_ethdev: ethdev sets the MTU (false only for
 * af_packet, see above). */
static int port_mtu_check(const struct rte_eth_dev_info *info, const char *dev, uint16_t mtu,
                          bool configured, uint16_t *data_room, bool *via_ethdev, char *err,
                          size_t err_len)
{
        if (mtu < 576 || mtu > 9000) {
                snprintf(err, err_len, "[dpdk] mtu = %u: the stack supports 576..9000", mtu);
                return -EINVAL;
        }
        uint32_t frame = (uint32_t)mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN;
        uint32_t pmd_room = 0;
        /* the port's own MTU: nothing to set, nothing to check */
        *via_ethdev = configured;
        if (configured && strncmp(dev, "net_af_packet", 13) == 0 && frame > info->max_rx_pktlen) {
                int rc = af_packet_mtu_check(dev, mtu, &pmd_room, err, err_len);
                if (rc != 0)
                        return rc;
                *via_ethdev = false;
        } else if (configured && (mtu < info->min_mtu || mtu > info->max_mtu ||
                                  (info->max_rx_pktlen && frame > info->max_rx_pktlen))) {
                snprintf(err, err_len,
                         "[dpdk] port %s supports an MTU of %u..%u and frames of at most %u "
                         "bytes, mtu = %u",
                         dev, info->min_mtu, info->max_mtu, info->max_rx_pktlen, mtu);
                return -EINVAL;
        }
        /* room for a VLAN tag pair too; whole KiBs, and never less than
         * DPDK's default */
        uint32_t room = RTE_ALIGN_CEIL(frame + 2 * RTE_VLAN_HLEN, 1024);
        if (room < RTE_MBUF_DEFAULT_DATAROOM)
                room = RTE_MBUF_DEFAULT_DATAROOM;
        if (room < pmd_room)
                room = pmd_room;
        *data_room = (uint16_t)(room + RTE_PKTMBUF_HEADROOM);
        return 0;
}

/* Entry i of the port's redirection table -> queue i % queues, the
 * mapping net_dpdk_flow_owner assumes. Returns the table size, 0 when the
 * port has none we can set (then ownership and RSS disagree: forwarding). */
static uint16_t reta_program(uint16_t port, uint16_t reta_size, uint16_t queues)
{
        struct rte_eth_rss_reta_entry64 reta[RTE_ETH_RSS_RETA_SIZE_512 / RTE_ETH_RETA_GROUP_SIZE];
        if (reta_size == 0 || reta_size > RTE_ETH_RSS_RETA_SIZE_512 ||
            (reta_size & (reta_size - 1)) != 0)
                return 0;
        memset(reta, 0, sizeof(reta));
        for (uint16_t i = 0; i < reta_size; i++) {
                struct rte_eth_rss_reta_entry64 *g = &reta[i / RTE_ETH_RETA_GROUP_SIZE];
                g->mask |= 1ull << (i % RTE_ETH_RETA_GROUP_SIZE);
                g->reta[i % RTE_ETH_RETA_GROUP_SIZE] = (uint16_t)(i % queues);
        }
        return rte_eth_dev_rss_reta_update(port, reta, reta_size) == 0 ? reta_size : 0;
}

int net_dpdk_setup(const struct ctl_config *cfg, char *err, size_t err_len)
{
        struct ctl_dpdk_port ports[CTL_DPDK_PORTS_MAX];
        int n = ctl_dpdk_ports_parse(cfg, ports, err, err_len);
        if (n <= 0) {
                if (n == 0)
                        snprintf(err, err_len, "[dpdk] ports: none configured");
                return -EINVAL;
        }
        char buf[2048];
        char *argv[64];
        int argc = ctl_dpdk_eal_argv(cfg, ports, n, buf, sizeof(buf), argv, 64);
        if (argc < 0) {
                snprintf(err, err_len, "[dpdk] eal_args: too many arguments");
                return -EINVAL;
        }
        /* rte_eal_init pins the calling (control) thread to the main
         * lcore's core; the control thread keeps the placement it had. */
        cpu_set_t saved;
        bool have_saved = sched_getaffinity(0, sizeof(saved), &saved) == 0;
        if (rte_eal_init(argc, argv) < 0) {
                snprintf(err, err_len, "DPDK EAL init failed: %s (EAL arguments from [dpdk])",
                         rte_strerror(rte_errno));
                return -EINVAL;
        }
        if (have_saved)
                pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);

        for (int i = 0; i < n; i++) {
                struct dpdk_port *p = &dpdk.ports[i];
                /* A vdev is known by its name up to the first comma; a PCI
                 * device by its address. */
                char name[sizeof(ports[i].dev)];
                memcpy(name, ports[i].dev, sizeof(name));
                name[sizeof(name) - 1] = '\0';
                char *comma = strchr(name, ',');
                if (comma)
                        *comma = '\0';
                if (rte_eth_dev_get_port_by_name(name, &p->id) != 0) {
                        snprintf(err, err_len,
                                 "[dpdk] port %s: no such DPDK port (not bound to vfio-pci, "
                                 "or the vdev failed to probe)",
                                 ports[i].dev);
                        return -ENODEV;
                }
                struct rte_eth_dev_info info;
                int rc = rte_eth_dev_info_get(p->id, &info);
                if (rc != 0) {
                        snprintf(err, err_len, "[dpdk] port %s: %s", name, rte_strerror(-rc));
                        return rc;
                }
                struct rte_eth_conf conf;
                memset(&conf, 0, sizeof(conf));
                uint64_t want_tx = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
                uint64_t want_rx = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
                p->tx_csum = (info.tx_offload_capa & want_tx) == want_tx;
                p->rx_csum = (info.rx_offload_capa & want_rx) == want_rx;
                p->queues = (uint16_t)cfg->worker_count;
                if (info.max_rx_queues < p->queues || info.max_tx_queues < p->queues) {
                        snprintf(err, err_len,
                                 "[dpdk] port %s has %u rx / %u tx queues, %u workers need one "
                                 "pair each",
                                 ports[i].dev, info.max_rx_queues, info.max_tx_queues, p->queues);
                        return -EINVAL;
                }
                uint64_t rss = info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP;
                bool rss_keyed = false;
                if (p->queues > 1 && rss) {
                        /* with our key (and the table below) the NIC picks
                         * the owning worker's queue; forwarding fixes what
                         * it gets wrong */
                        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
                        conf.rx_adv_conf.rss_conf.rss_hf = rss;
                        if (info.hash_key_size == TCP_RSS_KEY_LEN) {
                                conf.rx_adv_conf.rss_conf.rss_key = (uint8_t *)tcp_rss_key;
                                conf.rx_adv_conf.rss_conf.rss_key_len = TCP_RSS_KEY_LEN;
                                rss_keyed = true;
                        }
                }
                if (p->tx_csum)
                        conf.txmode.offloads = want_tx;
                if (p->rx_csum)
                        conf.rxmode.offloads = want_rx;
                uint16_t mtu = 1500;
                if (rte_eth_dev_get_mtu(p->id, &mtu) != 0)
                        mtu = 1500;
                /* the stack's range; the peers follow the MSS it offers */
                mtu = mtu < 576 ? 576 : mtu > 9000 ? 9000 : mtu;
                if (cfg->dpdk_mtu)
                        mtu = (uint16_t)cfg->dpdk_mtu;
                uint16_t data_room;
                bool mtu_via_ethdev;
                rc = port_mtu_check(&info, ports[i].dev, mtu, cfg->dpdk_mtu != 0, &data_room,
                                    &mtu_via_ethdev, err, err_len);
                if (rc != 0)
                        return rc;
                if (mtu_via_ethdev)
                        conf.rxmode.mtu = mtu;
                char pool_name[RTE_MEMPOOL_NAMESIZE];
                snprintf(pool_name, sizeof(pool_name), "sl_mbufs_%d", i);
                p->pool = rte_pktmbuf_pool_create(pool_name, cfg->dpdk_mbufs, DPDK_MBUF_CACHE, 0,
                                                  data_room, rte_socket_id());
                if (!p->pool) {
                        snprintf(err, err_len,
                                 "[dpdk] mbufs: cannot allocate %u mbufs for %s: %s (memory_mb "
                                 "too small?)",
                                 cfg->dpdk_mbufs, name, rte_strerror(rte_errno));
                        return -ENOMEM;
                }
                uint16_t rxd = (uint16_t)cfg->dpdk_rx_descriptors;
                uint16_t txd = (uint16_t)cfg->dpdk_tx_descriptors;
                rc = rte_eth_dev_configure(p->id, p->queues, p->queues, &conf);
                if (rc == 0 && mtu_via_ethdev) {
                        /* configure records the MTU; set_mtu makes a vdev
                         * apply it to its kernel interface (tap, af_packet)
                         * and refuse what its own frame buffers cannot hold */
                        rc = rte_eth_dev_set_mtu(p->id, mtu);
                        uint16_t now = 0;
                        if (rc == -ENOTSUP && rte_eth_dev_get_mtu(p->id, &now) == 0 && now == mtu)
                                rc = 0;
                        if (rc != 0) {
                                snprintf(err, err_len, "[dpdk] port %s refuses mtu = %u: %s",
                                         ports[i].dev, mtu, rte_strerror(-rc));
                                return rc < 0 ? rc : -rc;
                        }
                }
                if (rc == 0)
                        rc = rte_eth_dev_adjust_nb_rx_tx_desc(p->id, &rxd, &txd);
                for (uint16_t q = 0; rc == 0 && q < p->queues; q++) {
                        rc = rte_eth_rx_queue_setup(p->id, q, rxd, rte_eth_dev_socket_id(p->id),
                                                    NULL, p->pool);
                        if (rc == 0)
                                rc = rte_eth_tx_queue_setup(p->id, q, txd,
                                                            rte_eth_dev_socket_id(p->id), NULL);
                }
                if (rc == 0)
                        rc = rte_eth_dev_start(p->id);
                if (rc != 0) {
                        snprintf(err, err_len, "[dpdk] port %s cannot start: %s", ports[i].dev,
                                 rte_strerror(rc < 0 ? -rc : rc));
                        return rc < 0 ? rc : -rc;
                }
                p->reta_size = rss_keyed ? reta_program(p->id, info.reta_size, p->queues) : 0;
                rte_eth_macaddr_get(p->id, &p->mac);
                p->ip = ports[i].ip;
                p->prefix_len = ports[i].prefix_len;
                p->gateway = ports[i].gateway;
                p->mtu = mtu;
        }
        dpdk.nports = n;
        dpdk.ready = true;
        return 0;
}

void net_dpdk_teardown(void)
{
        if (!dpdk.ready)
                return;
        for (int i = 0; i < CTL_WORKERS_MAX; i++) {
                const struct dpdk_worker_summary *sum = &dpdk.summary[i];
                if (!sum->valid)
                        continue;
                fprintf(stderr,
                        "sluiced: dpdk worker %d: %" PRIu64 " frames in, %" PRIu64 " out, %" PRIu64
                        " forwarded to their owner (%" PRIu64 " dropped), %" PRIu64
                        " connections, %" PRIu64 " retransmits\n",
                        i, sum->rx_frames, sum->tx_frames, sum->forwarded, sum->forward_dropped,
                        sum->conns, sum->retransmits);
        }
        for (int i = 0; i < dpdk.nports; i++) {
                rte_eth_dev_stop(dpdk.ports[i].id);
                rte_eth_dev_close(dpdk.ports[i].id);
        }
        rte_eal_cleanup();
        dpdk.ready = false;
}

/* ---- frames out ---- */

static void tx_flush(struct dpdk_if *f)
{
        if (!f->tx_count)
                return;
        uint16_t sent = rte_eth_tx_burst(f->port->id, f->d->queue, f->tx, f->tx_count);
        for (uint16_t i = sent; i < f->tx_count; i++) {
                rte_pktmbuf_free(f->tx[i]);
                f->tx_dropped++; /* TCP retransmits what the ring refused */
        }
        f->tx_count = 0;
}

static void tx_flush_all(struct net_dpdk *d)
{
        for (uint16_t i = 0; i < d->nifs; i++)
                tx_flush(&d->ifs[i]);
}

static uint32_t rng_per_mille(struct net_dpdk *d)
{
        d->rng ^= d->rng << 13;
        d->rng ^= d->rng >> 7;
        d->rng ^= d->rng << 17;
        return (uint32_t)(d->rng % 1000);
}

/* The stack builds its next frame straight in an mbuf of its port's pool
 * (its data room holds a whole frame of the port's MTU, see
 * port_mtu_check); the mbuf stays ours until xmit takes it. */
static uint8_t *dpdk_tx_frame(void *drv)
{
        struct dpdk_if *f = drv;
        if (!f->tx_next)
                f->tx_next = rte_pktmbuf_alloc(f->port->pool);
        return f->tx_next ? rte_pktmbuf_mtod(f->tx_next, uint8_t *) : NULL;
}

static int dpdk_xmit(void *drv, const uint8_t *frame, uint32_t len, bool offload)
{
        struct dpdk_if *f = drv;
        if (f->d->loss_per_mille && rng_per_mille(f->d) < f->d->loss_per_mille)
                return 0; /* test loss: "sent", never arrives (tx_next is reused) */
        struct rte_mbuf *m = f->tx_next;
        if (m && frame == rte_pktmbuf_mtod(m, const uint8_t *)) {
                f->tx_next = NULL; /* built in place: no copy */
                if (len > rte_pktmbuf_tailroom(m)) {
                        rte_pktmbuf_free(m);
                        return -EMSGSIZE;
                }
                m->data_len = (uint16_t)len;
                m->pkt_len = len;
        } else {
                m = rte_pktmbuf_alloc(f->port->pool);
                if (!m)
                        return -ENOBUFS;
                char *dst = rte_pktmbuf_append(m, (uint16_t)len);
                if (!dst) {
                        rte_pktmbuf_free(m);
                        return -EMSGSIZE;
                }
                memcpy(dst, frame, len);
        }
        if (offload) {
                m->l2_len = sizeof(struct rte_ether_hdr);
                m->l3_len = 20;
                m->ol_flags |=
                    RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_CKSUM;
        }
        f->tx[f->tx_count++] = m;
        if (f->tx_count == DPDK_TX_BURST)
                tx_flush(f);
        return 0;
}

/* ---- TCP upcalls ---- */

static void ready_push(struct dpdk_if *f, uint32_t idx)
{
        if (f->in_readyq[idx])
                return;
        f->in_readyq[idx] = 1;
        struct net_dpdk *d = f->d;
        d->readyq[(d->ready_head + d->ready_count++) % d->readyq_cap] =
            net_dpdk_handle(f->index, idx);
}

static uint8_t proto_of_port(const struct sl_worker *w, uint16_t port)
{
        const struct ctl_config *cfg = w->rt->cfg;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                if (cfg->listeners[p].enabled && w->rt->protos[p] && cfg->listeners[p].port == port)
                        return (uint8_t)p;
        return CTL_PROTO_COUNT;
}

static int on_accepted(void *user, struct tcp_conn *t)
{
        struct dpdk_if *f = user;
        struct net_dpdk *d = f->d;
        struct sl_worker *w = d->w;
        uint8_t proto = proto_of_port(w, tcp_conn_local_port(t));
        if (!d->accepting || proto == CTL_PROTO_COUNT)
                return -ECONNREFUSED;
        uint32_t idx = tcp_conn_index(t);
        int handle = (int)net_dpdk_handle(f->index, idx);
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(tcp_conn_peer_ip(t));
        sin->sin_port = htons(tcp_conn_peer_port(t));
        f->rx_lent[idx] = 0;
        f->gen[idx]++;
        f->tx_blocked[idx] = 0;
        f->by_tcp[idx] = NULL;
        /* The slot net_conn_accepted will take: its free list's head, or the
         * next never-used one. Found again below by its handle. */
        struct sl_conn *cand = w->free_conns;
        uint32_t high = w->conns_high;
        if (net_conn_accepted(w, handle, proto, &ss) != 0)
                return -ENOSPC;
        struct sl_conn *c = NULL;
        if (cand && cand->fd == handle && cand->state != SL_CONN_FREE)
                c = cand;
        else if (high < w->conns_max && w->conns[high].fd == handle &&
                 w->conns[high].state != SL_CONN_FREE)
                c = &w->conns[high];
        if (c && c->state != SL_CONN_DRAINING) {
                f->by_tcp[idx] = c;
                ready_push(f, idx); /* data may have come with the handshake's ACK */
        }
        /* Closed already inside net_conn_accepted (a limit): its shutdown
         * detached the TCP connection, which then finishes on its own. */
        return 0;
}

static void on_readable(void *user, struct tcp_conn *t)
{
        ready_push(user, tcp_conn_index(t));
}

static void on_writable(void *user, struct tcp_conn *t)
{
        struct dpdk_if *f = user;
        uint32_t idx = tcp_conn_index(t);
        struct sl_conn *c = f->by_tcp[idx];
        if (c && f->tx_blocked[idx]) {
                f->tx_blocked[idx] = 0;
                f->d->w->net->tx_submit(f->d->w, c, -1);
        }
}

static void on_closed(void *user, struct tcp_conn *t, int err)
{
        struct dpdk_if *f = user;
        uint32_t idx = tcp_conn_index(t);
        struct sl_conn *c = f->by_tcp[idx];
        f->by_tcp[idx] = NULL;
        if (!c)
                return;
        c->fd = -1; /* the TCP connection is gone: nothing to close later */
        if (f->tx_blocked[idx]) {
                f->tx_blocked[idx] = 0;
                net_conn_tx_done(f->d->w, c, err);
        }
        net_conn_rx_end(f->d->w, c, err);
}

/* ---- sl_net_ops ---- */

/* The port and stack index of a handle, or NULL for one that names no
 * port of this worker. */
static struct dpdk_if *handle_if(struct net_dpdk *d, uint32_t handle, uint32_t *idx)
{
        uint16_t port = net_dpdk_handle_port(handle);
        *idx = net_dpdk_handle_conn(handle);
        return port < d->nifs && *idx < d->conns_max ? &d->ifs[port] : NULL;
}

static struct tcp_conn *conn_tcp(struct net_dpdk *d, const struct sl_conn *c, struct dpdk_if **fp,
                                 uint32_t *idx)
{
        if (c->fd < 0)
                return NULL;
        struct dpdk_if *f = handle_if(d, (uint32_t)c->fd, idx);
        *fp = f;
        return f ? tcp_stack_conn(f->stack, *idx) : NULL;
}

static int if_init(struct net_dpdk *d, uint16_t index, const struct ctl_config *cfg)
{
        struct sl_worker *w = d->w;
        struct dpdk_if *f = &d->ifs[index];
        f->d = d;
        f->index = index;
        f->port = &dpdk.ports[index];
        struct tcp_stack_config tc = {
            .ip = f->port->ip,
            .prefix_len = f->port->prefix_len,
            .gateway = f->port->gateway,
            .arp_passive = w->id != 0, /* ARP frames reach worker 0 only */
            .mtu = f->port->mtu,
            .conns_max = d->conns_max,
            .syn_backlog_max = cfg->dpdk_syn_backlog,
            .buf_bytes = cfg->dpdk_tcp_buffer_bytes,
            .isn_secret = rte_rdtsc() ^ rte_rand(),
            .tx_csum_offload = f->port->tx_csum,
            .xmit = dpdk_xmit,
            .tx_frame = dpdk_tx_frame,
            .drv = f,
            .user = f,
            .accepted = on_accepted,
            .readable = on_readable,
            .writable = on_writable,
            .closed = on_closed,
        };
        tcp_stack_config_linux_timers(&tc);
        tc.keepalive_idle_ms = cfg->dpdk_keepalive_idle_ms;
        tc.keepalive_interval_ms = cfg->dpdk_keepalive_interval_ms;
        tc.keepalive_probes = cfg->dpdk_keepalive_probes;
        memcpy(tc.mac, f->port->mac.addr_bytes, 6);
        f->stack = tcp_stack_create(&tc);
        f->by_tcp = calloc(d->conns_max, sizeof(*f->by_tcp));
        f->rx_lent = calloc(d->conns_max, sizeof(*f->rx_lent));
        f->gen = calloc(d->conns_max, 1);
        f->tx_blocked = calloc(d->conns_max, 1);
        f->in_readyq = calloc(d->conns_max, 1);
        if (!f->stack || !f->by_tcp || !f->rx_lent || !f->gen || !f->tx_blocked || !f->in_readyq)
                return -ENOMEM;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                if (cfg->listeners[p].enabled && w->rt->protos[p])
                        tcp_stack_listen(f->stack, cfg->listeners[p].port);
        if (w->id == 0)
                tcp_stack_announce(f->stack, w->now_ms); /* one gratuitous ARP per port */
        tx_flush(f);
        return 0;
}

static int dpdk_init(struct sl_worker *w)
{
        const struct ctl_config *cfg = w->rt->cfg;
        if (!dpdk.ready)
                return -ENODEV;
        if (rte_thread_register() != 0)
                return -rte_errno;
        struct net_dpdk *d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        w->net_state = d;
        d->w = w;
        d->accepting = true;
        d->queue = w->id;
        d->loss_per_mille = cfg->dpdk_loss_per_mille;
        d->reorder_per_mille = cfg->dpdk_reorder_per_mille;
        d->rng = 0x9e3779b97f4a7c15ULL * (w->id + 1);
        if (cfg->dpdk_delay_us || cfg->dpdk_jitter_us) {
                /* netem's default limit is 1000 packets; half the pool at
                 * most, so the port's receive ring never starves */
                d->delay_cap = cfg->dpdk_mbufs / 2 < 4096 ? cfg->dpdk_mbufs / 2 : 4096;
                d->delayq = calloc(d->delay_cap, sizeof(*d->delayq));
                if (!d->delayq)
                        return -ENOMEM;
                d->delay_tsc = cfg->dpdk_delay_us * rte_get_tsc_hz() / 1000000;
                d->jitter_tsc = cfg->dpdk_jitter_us * rte_get_tsc_hz() / 1000000;
        }
        /* a handle keeps the stack index in NET_DPDK_HANDLE_CONN_BITS */
        d->conns_max = cfg->limits.connections_max < NET_DPDK_HANDLE_CONNS_MAX
                           ? cfg->limits.connections_max
                           : NET_DPDK_HANDLE_CONNS_MAX;
        d->nifs = (uint16_t)dpdk.nports;
        d->readyq_cap = d->nifs * d->conns_max;
        d->readyq = calloc(d->readyq_cap, sizeof(*d->readyq));
        if (!d->readyq)
                return -ENOMEM;
        for (uint16_t i = 0; i < d->nifs; i++) {
                int rc = if_init(d, i, cfg);
                if (rc != 0)
                        return rc;
        }
        return 0;
}

static void if_fini(struct dpdk_if *f)
{
        if (f->port)
                tx_flush(f);
        if (f->tx_next)
                rte_pktmbuf_free(f->tx_next);
        tcp_stack_destroy(f->stack);
        free(f->by_tcp);
        free(f->rx_lent);
        free(f->gen);
        free(f->tx_blocked);
        free(f->in_readyq);
}

static void dpdk_fini(struct sl_worker *w)
{
        struct net_dpdk *d = w->net_state;
        if (!d)
                return;
        tx_flush_all(d);
        if (d->held)
                rte_pktmbuf_free(d->held);
        for (; d->delay_count; d->delay_count--) {
                rte_pktmbuf_free(d->delayq[d->delay_head].m);
                d->delay_head = (d->delay_head + 1) % d->delay_cap;
        }
        free(d->delayq);
        if (w->id < CTL_WORKERS_MAX) {
                /* kept for net_dpdk_teardown's summary: the worker's log
                 * ring is no longer drained once workers stop */
                struct dpdk_worker_summary *sum = &dpdk.summary[w->id];
                memset(sum, 0, sizeof(*sum));
                for (uint16_t i = 0; i < d->nifs; i++) {
                        const struct dpdk_if *f = &d->ifs[i];
                        if (!f->stack)
                                continue;
                        const struct tcp_stack_stats *st = tcp_stack_stats(f->stack);
                        sum->valid = true;
                        sum->rx_frames += st->rx_frames;
                        sum->tx_frames += st->tx_frames;
                        sum->forwarded += f->frames_forwarded;
                        sum->forward_dropped += f->forward_dropped;
                        sum->conns += st->conns_accepted;
                        sum->retransmits += st->retransmits;
                }
        }
        for (uint16_t i = 0; i < d->nifs; i++)
                if_fini(&d->ifs[i]);
        free(d->readyq);
        free(d);
        w->net_state = NULL;
        rte_thread_unregister();
}

/* The worker owning a frame: TCP by its 4-tuple (the same function on
 * every worker, so all agree), ARP worker 0, anything else (ICMP, junk)
 * whoever received it. */
static uint16_t frame_owner(const struct rte_mbuf *m, const struct dpdk_port *port,
                            uint16_t nworkers)
{
        if (nworkers == 1 || m->data_len < 14)
                return UINT16_MAX;
        const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
        uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
        if (type == RTE_ETHER_TYPE_ARP)
                return 0;
        if (type != RTE_ETHER_TYPE_IPV4 || m->data_len < 14 + 20)
                return UINT16_MAX;
        const uint8_t *ip = f + 14;
        uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4;
        if (ip[9] != IPPROTO_TCP || ihl < 20 || m->data_len < 14 + ihl + 4)
                return UINT16_MAX;
        uint32_t src;
        memcpy(&src, ip + 12, 4);
        const uint8_t *t = ip + ihl;
        uint16_t sport = (uint16_t)(t[0] << 8 | t[1]), dport = (uint16_t)(t[2] << 8 | t[3]);
        return net_dpdk_flow_owner(ntohl(src), port->ip, sport, dport, port->reta_size, nworkers);
}

uint16_t net_dpdk_flow_owner(uint32_t peer_ip, uint32_t local_ip, uint16_t peer_port,
                             uint16_t local_port, uint16_t reta_size, uint16_t nworkers)
{
        return tcp_rss_owner(peer_ip, local_ip, peer_port, local_port, reta_size, nworkers);
}

/* A frame into the stack of the port it arrived on. */
static void frame_input(struct dpdk_if *f, struct rte_mbuf *m)
{
        uint64_t good = RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD;
        bool csum_ok = (m->ol_flags & good) == good;
        struct net_dpdk *d = f->d;
        if (m->nb_segs == 1) {
                tcp_stack_input(f->stack, rte_pktmbuf_mtod(m, const uint8_t *), m->data_len,
                                csum_ok, d->w->now_ms);
        } else if (m->pkt_len <= sizeof(d->scratch)) {
                const void *p = rte_pktmbuf_read(m, 0, m->pkt_len, d->scratch);
                tcp_stack_input(f->stack, p, m->pkt_len, csum_ok, d->w->now_ms);
        }
        rte_pktmbuf_free(m);
}

/* Processes a received frame here, or hands it to the worker owning its
 * flow, naming the port (the owner's stack of that port takes it): a RST
 * from a worker that does not own it would kill a healthy connection. */
static void frame_steer(struct dpdk_if *f, struct rte_mbuf *m)
{
        struct sl_worker *w = f->d->w;
        uint16_t owner = frame_owner(m, f->port, w->nworkers);
        if (owner == UINT16_MAX || owner == w->id) {
                frame_input(f, m);
                return;
        }
        struct sl_msg msg = {.type = SL_MSG_NET_FRAME, .u16 = f->index};
        msg.a.ptr[0] = m;
        if (sl_mbox_send(&w->mb, owner, &msg) == 0) {
                f->frames_forwarded++;
        } else {
                f->forward_dropped++; /* ring full: TCP resends it */
                rte_pktmbuf_free(m);
        }
}

/* The test-only reordering stage: holds a frame back until after the
 * next one (of any port). */
static void reorder_stage(struct dpdk_if *f, struct rte_mbuf *m)
{
        struct net_dpdk *d = f->d;
        if (!d->reorder_per_mille) {
                frame_steer(f, m);
                return;
        }
        struct rte_mbuf *prev = d->held;
        struct dpdk_if *prev_if = d->held_if;
        d->held = NULL;
        if (!prev && rng_per_mille(d) < d->reorder_per_mille) {
                d->held = m;
                d->held_if = f;
                return;
        }
        frame_steer(f, m);
        if (prev)
                frame_steer(prev_if, prev);
}

/* Received frames through the test impairments ([dpdk] test_*: no netem
 * on this kernel): loss, then delay (a FIFO of due times; jitter varies
 * the delay but keeps the order, reordering is its own knob, as netem's
 * delay is on the other side's egress), then reordering. This admits one
 * port's burst; impaired_release lets due frames through. */
static void impaired_admit(struct dpdk_if *f, struct rte_mbuf **rx, uint16_t n, uint64_t now)
{
        struct net_dpdk *d = f->d;
        for (uint16_t i = 0; i < n; i++) {
                struct rte_mbuf *m = rx[i];
                if (d->loss_per_mille && rng_per_mille(d) < d->loss_per_mille) {
                        rte_pktmbuf_free(m);
                        continue;
                }
                if (!d->delay_cap) {
                        reorder_stage(f, m);
                        continue;
                }
                if (d->delay_count == d->delay_cap) {
                        d->delay_dropped++; /* netem's limit: TCP resends it */
                        rte_pktmbuf_free(m);
                        continue;
                }
                uint64_t due = now + d->delay_tsc;
                if (d->jitter_tsc) {
                        d->rng ^= d->rng << 13;
                        d->rng ^= d->rng >> 7;
                        d->rng ^= d->rng << 17;
                        due += d->rng % (d->jitter_tsc + 1);
                }
                if (due < d->delay_last_due)
                        due = d->delay_last_due; /* FIFO: never overtakes */
                d->delay_last_due = due;
                struct delayed_frame *df =
                    &d->delayq[(d->delay_head + d->delay_count++) % d->delay_cap];
                df->m = m;
                df->due_tsc = due;
                df->f = f;
        }
}

/* Frames whose delay is over, then the held frame when nothing followed
 * it (received: the frames all ports delivered this iteration). Returns
 * the frames that left the delay queue. */
static uint32_t impaired_release(struct net_dpdk *d, uint32_t received, uint64_t now)
{
        uint32_t released = 0;
        while (d->delay_count && d->delayq[d->delay_head].due_tsc <= now) {
                struct delayed_frame *df = &d->delayq[d->delay_head];
                d->delay_head = (d->delay_head + 1) % d->delay_cap;
                d->delay_count--;
                released++;
                reorder_stage(df->f, df->m);
        }
        if (d->held && (d->delay_cap ? released == 0 : received == 0)) {
                frame_steer(d->held_if, d->held); /* nothing followed: no reason to wait */
                d->held = NULL;
        }
        return released;
}

void net_dpdk_frame_msg(struct sl_worker *w, const struct sl_msg *msg)
{
        struct net_dpdk *d = w->net_state;
        struct rte_mbuf *m = msg->a.ptr[0];
        if (msg->u16 >= d->nifs) {
                rte_pktmbuf_free(m); /* every worker serves every port: cannot happen */
                return;
        }
        frame_input(&d->ifs[msg->u16], m);
}

static void counters_publish(struct net_dpdk *d)
{
        uint64_t v[DC_COUNT] = {0};
        uint32_t states[TCPS_COUNT] = {0};
        uint16_t wid = d->w->id;
        for (uint16_t i = 0; i < d->nifs; i++) {
                const struct dpdk_if *f = &d->ifs[i];
                const struct tcp_stack_stats *st = tcp_stack_stats(f->stack);
                v[DC_RX_FRAMES] += st->rx_frames;
                v[DC_TX_FRAMES] += st->tx_frames;
                v[DC_TX_DROPPED] += st->tx_dropped + f->tx_dropped;
                v[DC_FORWARDED] += f->frames_forwarded;
                v[DC_FORWARD_DROPPED] += f->forward_dropped;
                v[DC_IP_BAD] += st->ip_bad;
                v[DC_IP_FRAGMENTS] += st->ip_fragments_dropped;
                v[DC_TCP_BAD] += st->tcp_bad;
                v[DC_CONNS_ACCEPTED] += st->conns_accepted;
                v[DC_SYN_COOKIES_SENT] += st->syn_cookies_sent;
                v[DC_SYN_COOKIES_ACCEPTED] += st->syn_cookies_accepted;
                v[DC_POOL_DROPPED] += st->conn_pool_dropped;
                v[DC_RETRANSMITS] += st->retransmits;
                v[DC_FAST_RETRANSMITS] += st->fast_retransmits;
                v[DC_RTO_EXPIRIES] += st->rto_expiries;
                v[DC_OOO_SEGMENTS] += st->ooo_segments;
                v[DC_OUT_OF_WINDOW] += st->out_of_window;
                v[DC_RST_SENT] += st->rst_sent;
                v[DC_RST_RECEIVED] += st->rst_received;
                v[DC_TIMEOUTS] += st->timeouts;
                v[DC_KEEPALIVE_PROBES] += st->keepalive_probes;
                v[DC_IP_NO_ROUTE] += st->ip_no_route;
                v[DC_GW_UNRESOLVED] += st->gw_unresolved;
                for (int k = 0; k < TCPS_COUNT; k++)
                        states[k] += tcp_stack_conns_in_state(f->stack, (enum tcp_state)k);
                uint64_t pv[DP_COUNT] = {
                    [DP_RX_FRAMES] = st->rx_frames,
                    [DP_TX_FRAMES] = st->tx_frames,
                    [DP_ACCEPTED] = st->conns_accepted,
                };
                for (int k = 0; k < DP_COUNT; k++)
                        atomic_store_explicit(&dpdk.pub_port[wid][i][k], pv[k],
                                              memory_order_relaxed);
        }
        for (int i = 0; i < DC_COUNT; i++)
                atomic_store_explicit(&dpdk.pub[wid][i], v[i], memory_order_relaxed);
        for (int k = 0; k < TCPS_COUNT; k++)
                atomic_store_explicit(&dpdk.pub_states[wid][k], states[k], memory_order_relaxed);
}
void net_dpdk_metrics(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx)
{
        if (w->id >= CTL_WORKERS_MAX)
                return;
        for (int i = 0; i < DC_COUNT; i++)
                emit(ctx, dpdk_counter_desc[i].name, dpdk_counter_desc[i].type,
                     dpdk_counter_desc[i].help,
                     (double)atomic_load_explicit(&dpdk.pub[w->id][i], memory_order_relaxed));
        /* One sample per state (the label rides on the name, see
         * sl_metric_emit_fn): which state connections pile up in is what an
         * operator (or a leak hunt) needs, their sum is the total. */
        for (int st = TCPS_FREE + 1; st < TCPS_COUNT; st++) {
                char name[80];
                snprintf(name, sizeof(name), "sluice_dpdk_tcp_connections{state=\"%s\"}",
                         tcp_state_name((enum tcp_state)st));
                emit(ctx, name, "gauge",
                     "TCP connections in the stack by state (TIME_WAIT included).",
                     (double)atomic_load_explicit(&dpdk.pub_states[w->id][st],
                                                  memory_order_relaxed));
        }
        /* per port, every worker alike (the same positions) */
        for (int k = 0; k < DP_COUNT; k++)
                for (int i = 0; i < dpdk.nports; i++) {
                        char name[96];
                        snprintf(name, sizeof(name), "%s{port=\"%d\"}",
                                 dpdk_port_counter_desc[k].name, i);
                        emit(ctx, name, "counter", dpdk_port_counter_desc[k].help,
                             (double)atomic_load_explicit(&dpdk.pub_port[w->id][i][k],
                                                          memory_order_relaxed));
                }
        /* The port's own counters, once (with worker 0's samples, last, so
         * the other workers' lines still match by position): frames the
         * NIC or vdev dropped before any worker saw them. Read here on the
         * control thread, as ethdev's statistics are meant to be. */
        if (w->id != 0 || !dpdk.ready)
                return;
        struct rte_eth_stats es[CTL_DPDK_PORTS_MAX];
        for (int i = 0; i < dpdk.nports; i++)
                if (rte_eth_stats_get(dpdk.ports[i].id, &es[i]) != 0)
                        memset(&es[i], 0, sizeof(es[i]));
        static const struct {
                const char *name, *help;
                size_t off;
        } port_counters[] = {
            {"sluice_dpdk_port_rx_frames_total", "Frames the port delivered.",
             offsetof(struct rte_eth_stats, ipackets)},
            {"sluice_dpdk_port_rx_missed_total",
             "Frames the port dropped for want of room in its receive queues.",
             offsetof(struct rte_eth_stats, imissed)},
            {"sluice_dpdk_port_rx_errors_total", "Erroneous frames the port received.",
             offsetof(struct rte_eth_stats, ierrors)},
            {"sluice_dpdk_port_rx_nombuf_total", "Receives that found the mbuf pool empty.",
             offsetof(struct rte_eth_stats, rx_nombuf)},
            {"sluice_dpdk_port_tx_errors_total", "Frames the port failed to send.",
             offsetof(struct rte_eth_stats, oerrors)},
        };
        /* metric by metric, so each name's samples come in a row */
        for (size_t k = 0; k < sizeof(port_counters) / sizeof(port_counters[0]); k++)
                for (int i = 0; i < dpdk.nports; i++) {
                        uint64_t v;
                        memcpy(&v, (const char *)&es[i] + port_counters[k].off, sizeof(v));
                        char name[96];
                        snprintf(name, sizeof(name), "%s{port=\"%d\"}", port_counters[k].name, i);
                        emit(ctx, name, "counter", port_counters[k].help, (double)v);
                }
}

/* A receive view's token: the handle plus the connection's generation,
 * so a view released after its connection died (the slot may serve a new
 * one by then) frees nothing of the new connection's. */
static uint32_t view_token(const struct dpdk_if *f, uint32_t idx)
{
        return net_dpdk_handle(f->index, idx) | ((uint32_t)f->gen[idx] << 24);
}

/* Hands c its next receive view, or its end of stream. */
static void deliver(struct dpdk_if *f, uint32_t idx)
{
        struct sl_conn *c = f->by_tcp[idx];
        if (!c || !(c->flags & SL_CONN_RX_ARMED) || f->rx_lent[idx])
                return;
        struct tcp_conn *t = tcp_stack_conn(f->stack, idx);
        const uint8_t *p;
        uint32_t n = tcp_conn_rx_peek(t, &p);
        if (n) {
                f->rx_lent[idx] = n;
                net_conn_rx(f->d->w, c, p, n, view_token(f, idx));
        } else if (tcp_conn_rx_eof(t)) {
                net_conn_rx_end(f->d->w, c, 0);
        }
}

/* Worker 0 resolves the port's gateway (ARP reaches it only) and
 * publishes its MAC; the others take it from there. One relaxed load per
 * iteration when a gateway is configured: the value is self-contained. */
static void gateway_sync(struct dpdk_if *f)
{
        uint8_t mac[6];
        if (f->d->w->id == 0) {
                if (!tcp_stack_neighbour(f->stack, f->port->gateway, mac))
                        return;
                uint64_t v = 1ull << 48;
                for (int i = 0; i < 6; i++)
                        v |= (uint64_t)mac[i] << (8 * i);
                if (v != f->gw_seen) {
                        f->gw_seen = v;
                        atomic_store_explicit(&f->port->gw_mac_pub, v, memory_order_relaxed);
                }
                return;
        }
        uint64_t v = atomic_load_explicit(&f->port->gw_mac_pub, memory_order_relaxed);
        if (v == f->gw_seen)
                return;
        f->gw_seen = v;
        for (int i = 0; i < 6; i++)
                mac[i] = (uint8_t)(v >> (8 * i));
        tcp_stack_neighbour_set(f->stack, f->port->gateway, mac);
}

/* One burst from this worker's queue pair of every port, each into that
 * port's stack (or to the flow's owner), then timers, then deliveries. */
static uint32_t dpdk_poll(struct sl_worker *w)
{
        struct net_dpdk *d = w->net_state;
        bool impaired = d->delay_cap || d->loss_per_mille || d->reorder_per_mille;
        uint64_t now_tsc = d->delay_cap ? rte_rdtsc() : 0;
        uint32_t work = 0;
        for (uint16_t i = 0; i < d->nifs; i++) {
                struct dpdk_if *f = &d->ifs[i];
                struct rte_mbuf *rx[DPDK_BURST];
                uint16_t n = rte_eth_rx_burst(f->port->id, d->queue, rx, DPDK_BURST);
                if (!impaired)
                        for (uint16_t k = 0; k < n; k++)
                                frame_steer(f, rx[k]);
                else
                        impaired_admit(f, rx, n, now_tsc);
                work += n;
        }
        if (impaired)
                work += impaired_release(d, work, now_tsc);
        for (uint16_t i = 0; i < d->nifs; i++) {
                struct dpdk_if *f = &d->ifs[i];
                if (f->port->gateway)
                        gateway_sync(f);
                tcp_stack_timers(f->stack, w->now_ms);
        }
        if (w->now_ms >= d->pub_next_ms) {
                d->pub_next_ms = w->now_ms + 100;
                counters_publish(d);
        }
        /* Deliver to connections that became readable or were re-armed;
         * bounded by what was queued on entry. */
        for (uint32_t k = d->ready_count; k > 0 && d->ready_count; k--) {
                uint32_t handle = d->readyq[d->ready_head];
                d->ready_head = (d->ready_head + 1) % d->readyq_cap;
                d->ready_count--;
                uint32_t idx;
                struct dpdk_if *f = handle_if(d, handle, &idx);
                f->in_readyq[idx] = 0;
                deliver(f, idx);
                work++;
        }
        return work;
}

static void dpdk_rx_arm(struct sl_worker *w, struct sl_conn *c)
{
        struct net_dpdk *d = w->net_state;
        uint32_t idx;
        struct dpdk_if *f = c->fd >= 0 ? handle_if(d, (uint32_t)c->fd, &idx) : NULL;
        if (f)
                ready_push(f, idx);
        else
                net_conn_rx_end(w, c, -ECONNRESET);
}

static void dpdk_rx_release(struct sl_worker *w, uint32_t token)
{
        struct net_dpdk *d = w->net_state;
        uint32_t idx;
        struct dpdk_if *f = handle_if(d, token & 0xffffff, &idx);
        if (!f || f->gen[idx] != token >> 24)
                return; /* the view of a connection that is gone */
        uint32_t n = f->rx_lent[idx];
        f->rx_lent[idx] = 0;
        struct tcp_conn *t = tcp_stack_conn(f->stack, idx);
        if (n && t)
                tcp_conn_rx_consume(f->stack, t, n, w->now_ms);
}

/* iovcnt < 0: the retry after the peer acknowledged bytes (c->iov and the
 * count stay as the generic layer built them). */
static void dpdk_tx_submit(struct sl_worker *w, struct sl_conn *c, int iovcnt)
{
        struct net_dpdk *d = w->net_state;
        struct dpdk_if *f;
        uint32_t idx;
        struct tcp_conn *t = conn_tcp(d, c, &f, &idx);
        if (!t) {
                net_conn_tx_done(w, c, -EPIPE);
                return;
        }
        if (iovcnt >= 0)
                c->msg.msg_iovlen = (size_t)iovcnt;
        /* all pieces at once: small ones share MSS-sized segments */
        struct tcp_piece pieces[SL_CONN_IOV_MAX];
        uint32_t count = 0;
        for (size_t i = 0; i < c->msg.msg_iovlen && count < SL_CONN_IOV_MAX; i++)
                pieces[count++] =
                    (struct tcp_piece){c->iov[i].iov_base, (uint32_t)c->iov[i].iov_len};
        uint64_t copied = tcp_conn_sendv(f->stack, t, pieces, count, w->now_ms);
        if (copied == 0) {
                if (tcp_conn_tx_room(t) == 0 && tcp_conn_tx_queued(t) == 0) {
                        net_conn_tx_done(w, c, -EPIPE); /* the stream no longer sends */
                        return;
                }
                f->tx_blocked[idx] = 1; /* on_writable resubmits */
                return;
        }
        net_conn_tx_done(w, c, (long)copied);
}

static void dpdk_shutdown(struct sl_worker *w, struct sl_conn *c)
{
        struct net_dpdk *d = w->net_state;
        struct dpdk_if *f;
        uint32_t idx;
        struct tcp_conn *t = conn_tcp(d, c, &f, &idx);
        if (t) {
                f->by_tcp[idx] = NULL;
                f->tx_blocked[idx] = 0;
                if (f->rx_lent[idx])
                        dpdk_rx_release(w, view_token(f, idx));
                /* graceful: what TCP holds is still delivered, then FIN */
                tcp_conn_close(f->stack, t, w->now_ms);
        }
        c->fd = -1;
        c->flags &= ~(SL_CONN_RX_ARMED | SL_CONN_TX_INFLIGHT);
        net_conn_released(w, c);
}

static void dpdk_flush(struct sl_worker *w)
{
        tx_flush_all(w->net_state);
}

/* A poll-mode port raises no event here (no rx interrupts on the vdevs we
 * run on): nap briefly on the wake-up fd so rings still wake us at once,
 * and a frame waits at most DPDK_NAP_US (DESIGN.md: pause, then short
 * sleeps). 1 ms naps cost a request/reply hop up to a millisecond. */
static void dpdk_wait(struct sl_worker *w, int timeout_ms)
{
        struct timespec nap = {.tv_sec = 0, .tv_nsec = DPDK_NAP_US * 1000L};
        if (timeout_ms == 0)
                nap.tv_nsec = 0;
        struct pollfd pfd = {.fd = w->mb.wake->eventfd, .events = POLLIN};
        ppoll(&pfd, 1, &nap, NULL);
}

static void dpdk_listeners_close(struct sl_worker *w)
{
        struct net_dpdk *d = w->net_state;
        d->accepting = false;
}

static void dpdk_release(struct sl_worker *w, struct sl_conn *c)
{
        (void)w;
        c->fd = -1;
}

const struct sl_net_ops net_dpdk_ops = {
    .name = "dpdk",
    .init = dpdk_init,
    .fini = dpdk_fini,
    .poll = dpdk_poll,
    .rx_arm = dpdk_rx_arm,
    .tx_submit = dpdk_tx_submit,
    .rx_release = dpdk_rx_release,
    .shutdown = dpdk_shutdown,
    .flush = dpdk_flush,
    .wait = dpdk_wait,
    .listeners_close = dpdk_listeners_close,
    .release = dpdk_release,
};
