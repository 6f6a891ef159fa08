/* The DPDK backend of the connection interface: the worker polls its port
 * queue in bursts and runs its own instance of the userspace TCP/IP stack
 * (net/tcp/); connections of that stack become ordinary sl_conns, so the
 * protocol front-ends run unchanged. Compiled only when libdpdk is found.
 *
 * Process side (control thread, before workers start): net_dpdk_setup
 * initialises the EAL from [dpdk] and starts each port; a port that cannot
 * start is an error, never a fallback to kernel sockets.
 *
 * Worker side: each worker registers as a DPDK lcore and owns queue pair
 * <worker id> of the port, with its own TCP/IP stack. A connection belongs
 * to the worker that net_dpdk_flow_owner() names for its 4-tuple; whatever
 * queue a segment arrives on (RSS, af_packet fanout and tap multiqueue all
 * hash differently), a worker that does not own it forwards the mbuf to
 * the owner over the mailbox ring, never answers it. ARP belongs to
 * worker 0, which also sends the gratuitous ARP.
 *
 * Receive views point into the TCP receive ring; the token of a view is the
 * TCP connection's index, and releasing it frees those bytes (opens the
 * window). A send completes when its bytes are copied into the TCP send
 * ring, whose size is the connection's credit. */
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
} dpdk;

struct delayed_frame {
        struct rte_mbuf *m;
        uint64_t due_tsc;
};

struct net_dpdk {
        struct sl_worker *w;
        struct dpdk_port *port;
        uint16_t queue;
        struct tcp_stack *stack;
        uint64_t gw_seen; /* the gw_mac_pub value this worker last published or took */
        uint32_t conns_max;
        struct sl_conn **by_tcp; /* [tcp index] the sl_conn riding on it */
        uint32_t *rx_lent;       /* [tcp index] bytes lent as the current view */
        uint8_t *gen;            /* [tcp index] bumped per connection: stale tokens */
        uint8_t *tx_blocked;     /* [tcp index] a send waits for room */
        uint32_t *readyq;        /* tcp indexes with something to deliver */
        uint8_t *in_readyq;
        uint32_t ready_head, ready_count;
        bool accepting;
        struct rte_mbuf *tx[DPDK_TX_BURST];
        uint16_t tx_count;
        struct rte_mbuf *tx_next; /* the frame the stack is building (dpdk_tx_frame) */
        uint64_t tx_dropped;
        uint64_t frames_forwarded, forward_dropped;
        /* [dpdk] test_loss/test_reorder: a seeded PRNG and one held frame */
        uint32_t loss_per_mille, reorder_per_mille;
        uint64_t rng;
        struct rte_mbuf *held;
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

static void tx_flush(struct net_dpdk *d)
{
        if (!d->tx_count)
                return;
        uint16_t sent = rte_eth_tx_burst(d->port->id, d->queue, d->tx, d->tx_count);
        for (uint16_t i = sent; i < d->tx_count; i++) {
                rte_pktmbuf_free(d->tx[i]);
                d->tx_dropped++; /* TCP retransmits what the ring refused */
        }
        d->tx_count = 0;
}

static uint32_t rng_per_mille(struct net_dpdk *d)
{
        d->rng ^= d->rng << 13;
        d->rng ^= d->rng >> 7;
        d->rng ^= d->rng << 17;
        return (uint32_t)(d->rng % 1000);
}

/* The stack builds its next frame straight in an mbuf (its data room holds
 * a whole frame of the port's MTU, see port_mtu_check); the mbuf stays
 * ours until xmit takes it. */
static uint8_t *dpdk_tx_frame(void *drv)
{
        struct net_dpdk *d = drv;
        if (!d->tx_next)
                d->tx_next = rte_pktmbuf_alloc(d->port->pool);
        return d->tx_next ? rte_pktmbuf_mtod(d->tx_next, uint8_t *) : NULL;
}

static int dpdk_xmit(void *drv, const uint8_t *frame, uint32_t len, bool offload)
{
        struct net_dpdk *d = drv;
        if (d->loss_per_mille && rng_per_mille(d) < d->loss_per_mille)
                return 0; /* test loss: "sent", never arrives (tx_next is reused) */
        struct rte_mbuf *m = d->tx_next;
        if (m && frame == rte_pktmbuf_mtod(m, const uint8_t *)) {
                d->tx_next = NULL; /* built in place: no copy */
                if (len > rte_pktmbuf_tailroom(m)) {
                        rte_pktmbuf_free(m);
                        return -EMSGSIZE;
                }
                m->data_len = (uint16_t)len;
                m->pkt_len = len;
        } else {
                m = rte_pktmbuf_alloc(d->port->pool);
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
        d->tx[d->tx_count++] = m;
        if (d->tx_count == DPDK_TX_BURST)
                tx_flush(d);
        return 0;
}

/* ---- TCP upcalls ---- */

static void ready_push(struct net_dpdk *d, uint32_t idx)
{
        if (d->in_readyq[idx])
                return;
        d->in_readyq[idx] = 1;
        d->readyq[(d->ready_head + d->ready_count++) % d->conns_max] = idx;
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
        struct net_dpdk *d = user;
        struct sl_worker *w = d->w;
        uint8_t proto = proto_of_port(w, tcp_conn_local_port(t));
        if (!d->accepting || proto == CTL_PROTO_COUNT)
                return -ECONNREFUSED;
        uint32_t idx = tcp_conn_index(t);
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(tcp_conn_peer_ip(t));
        sin->sin_port = htons(tcp_conn_peer_port(t));
        d->rx_lent[idx] = 0;
        d->gen[idx]++;
        d->tx_blocked[idx] = 0;
        d->by_tcp[idx] = NULL;
        /* The slot net_conn_accepted will take: its free list's head, or the
         * next never-used one. Found again below by its handle. */
        struct sl_conn *cand = w->free_conns;
        uint32_t high = w->conns_high;
        if (net_conn_accepted(w, (int)idx, proto, &ss) != 0)
                return -ENOSPC;
        struct sl_conn *c = NULL;
        if (cand && cand->fd == (int)idx && cand->state != SL_CONN_FREE)
                c = cand;
        else if (high < w->conns_max && w->conns[high].fd == (int)idx &&
                 w->conns[high].state != SL_CONN_FREE)
                c = &w->conns[high];
        if (c && c->state != SL_CONN_DRAINING) {
                d->by_tcp[idx] = c;
                ready_push(d, idx); /* data may have come with the handshake's ACK */
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
        struct net_dpdk *d = user;
        uint32_t idx = tcp_conn_index(t);
        struct sl_conn *c = d->by_tcp[idx];
        if (c && d->tx_blocked[idx]) {
                d->tx_blocked[idx] = 0;
                d->w->net->tx_submit(d->w, c, -1);
        }
}

static void on_closed(void *user, struct tcp_conn *t, int err)
{
        struct net_dpdk *d = user;
        uint32_t idx = tcp_conn_index(t);
        struct sl_conn *c = d->by_tcp[idx];
        d->by_tcp[idx] = NULL;
        if (!c)
                return;
        c->fd = -1; /* the TCP connection is gone: nothing to close later */
        if (d->tx_blocked[idx]) {
                d->tx_blocked[idx] = 0;
                net_conn_tx_done(d->w, c, err);
        }
        net_conn_rx_end(d->w, c, err);
}

/* ---- sl_net_ops ---- */

static struct tcp_conn *conn_tcp(struct net_dpdk *d, const struct sl_conn *c)
{
        return c->fd >= 0 ? tcp_stack_conn(d->stack, (uint32_t)c->fd) : NULL;
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
        d->port = &dpdk.ports[0];
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
        /* view tokens keep the index in 24 bits */
        d->conns_max = cfg->limits.connections_max < 65536 ? cfg->limits.connections_max : 65536;
        struct tcp_stack_config tc = {
            .ip = d->port->ip,
            .prefix_len = d->port->prefix_len,
            .gateway = d->port->gateway,
            .arp_passive = w->id != 0, /* ARP frames reach worker 0 only */
            .mtu = d->port->mtu,
            .conns_max = d->conns_max,
            .syn_backlog_max = cfg->dpdk_syn_backlog,
            .buf_bytes = cfg->dpdk_tcp_buffer_bytes,
            .isn_secret = rte_rdtsc() ^ rte_rand(),
            .tx_csum_offload = d->port->tx_csum,
            .xmit = dpdk_xmit,
            .tx_frame = dpdk_tx_frame,
            .drv = d,
            .user = d,
            .accepted = on_accepted,
            .readable = on_readable,
            .writable = on_writable,
            .closed = on_closed,
        };
        tcp_stack_config_linux_timers(&tc);
        tc.keepalive_idle_ms = cfg->dpdk_keepalive_idle_ms;
        tc.keepalive_interval_ms = cfg->dpdk_keepalive_interval_ms;
        tc.keepalive_probes = cfg->dpdk_keepalive_probes;
        memcpy(tc.mac, d->port->mac.addr_bytes, 6);
        d->stack = tcp_stack_create(&tc);
        d->by_tcp = calloc(d->conns_max, sizeof(*d->by_tcp));
        d->rx_lent = calloc(d->conns_max, sizeof(*d->rx_lent));
        d->gen = calloc(d->conns_max, 1);
        d->tx_blocked = calloc(d->conns_max, 1);
        d->readyq = calloc(d->conns_max, sizeof(*d->readyq));
        d->in_readyq = calloc(d->conns_max, 1);
        if (!d->stack || !d->by_tcp || !d->rx_lent || !d->gen || !d->tx_blocked || !d->readyq ||
            !d->in_readyq)
                return -ENOMEM;
        for (int p = 0; p < CTL_PROTO_COUNT; p++)
                if (cfg->listeners[p].enabled && w->rt->protos[p])
                        tcp_stack_listen(d->stack, cfg->listeners[p].port);
        if (w->id == 0)
                tcp_stack_announce(d->stack, w->now_ms); /* worker 0 owns ARP */
        tx_flush(d);
        return 0;
}

static void dpdk_fini(struct sl_worker *w)
{
        struct net_dpdk *d = w->net_state;
        if (!d)
                return;
        if (d->port)
                tx_flush(d);
        if (d->held)
                rte_pktmbuf_free(d->held);
        if (d->tx_next)
                rte_pktmbuf_free(d->tx_next);
        for (; d->delay_count; d->delay_count--) {
                rte_pktmbuf_free(d->delayq[d->delay_head].m);
                d->delay_head = (d->delay_head + 1) % d->delay_cap;
        }
        free(d->delayq);
        if (d->stack && w->id < CTL_WORKERS_MAX) {
                /* kept for net_dpdk_teardown's summary: the worker's log
                 * ring is no longer drained once workers stop */
                const struct tcp_stack_stats *st = tcp_stack_stats(d->stack);
                struct dpdk_worker_summary *sum = &dpdk.summary[w->id];
                sum->valid = true;
                sum->rx_frames = st->rx_frames;
                sum->tx_frames = st->tx_frames;
                sum->forwarded = d->frames_forwarded;
                sum->forward_dropped = d->forward_dropped;
                sum->conns = st->conns_accepted;
                sum->retransmits = st->retransmits;
        }
        tcp_stack_destroy(d->stack);
        free(d->by_tcp);
        free(d->rx_lent);
        free(d->gen);
        free(d->tx_blocked);
        free(d->readyq);
        free(d->in_readyq);
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

static void frame_input(struct net_dpdk *d, struct rte_mbuf *m)
{
        uint64_t good = RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD;
        bool csum_ok = (m->ol_flags & good) == good;
        if (m->nb_segs == 1) {
                tcp_stack_input(d->stack, rte_pktmbuf_mtod(m, const uint8_t *), m->data_len,
                                csum_ok, d->w->now_ms);
        } else if (m->pkt_len <= sizeof(d->scratch)) {
                const void *p = rte_pktmbuf_read(m, 0, m->pkt_len, d->scratch);
                tcp_stack_input(d->stack, p, m->pkt_len, csum_ok, d->w->now_ms);
        }
        rte_pktmbuf_free(m);
}

/* Processes a received frame here, or hands it to the worker owning its
 * flow: a RST from a worker that does not own it would kill a healthy
 * connection. */
static void frame_steer(struct net_dpdk *d, struct rte_mbuf *m)
{
        struct sl_worker *w = d->w;
        uint16_t owner = frame_owner(m, d->port, w->nworkers);
        if (owner == UINT16_MAX || owner == w->id) {
                frame_input(d, m);
                return;
        }
        struct sl_msg msg = {.type = SL_MSG_NET_FRAME};
        msg.a.ptr[0] = m;
        if (sl_mbox_send(&w->mb, owner, &msg) == 0) {
                d->frames_forwarded++;
        } else {
                d->forward_dropped++; /* ring full: TCP resends it */
                rte_pktmbuf_free(m);
        }
}

/* The test-only reordering stage: holds a frame back until after the
 * next one. */
static void reorder_stage(struct net_dpdk *d, struct rte_mbuf *m)
{
        if (!d->reorder_per_mille) {
                frame_steer(d, m);
                return;
        }
        struct rte_mbuf *prev = d->held;
        d->held = NULL;
        if (!prev && rng_per_mille(d) < d->reorder_per_mille) {
                d->held = m;
                return;
        }
        frame_steer(d, m);
        if (prev)
                frame_steer(d, prev);
}

/* Received frames through the test impairments ([dpdk] test_*: no netem
 * on this kernel): loss, then delay (a FIFO of due times; jitter varies
 * the delay but keeps the order, reordering is its own knob, as netem's
 * delay is on the other side's egress), then reordering. Returns frames
 * that left the delay queue. */
static uint32_t impaired_input(struct net_dpdk *d, struct rte_mbuf **rx, uint16_t n)
{
        uint64_t now = d->delay_cap ? rte_rdtsc() : 0;
        uint32_t released = 0;
        for (uint16_t i = 0; i < n; i++) {
                struct rte_mbuf *m = rx[i];
                if (d->loss_per_mille && rng_per_mille(d) < d->loss_per_mille) {
                        rte_pktmbuf_free(m);
                        continue;
                }
                if (!d->delay_cap) {
                        reorder_stage(d, m);
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
                struct delayed_frame *f =
                    &d->delayq[(d->delay_head + d->delay_count++) % d->delay_cap];
                f->m = m;
                f->due_tsc = due;
        }
        while (d->delay_count && d->delayq[d->delay_head].due_tsc <= now) {
                struct rte_mbuf *m = d->delayq[d->delay_head].m;
                d->delay_head = (d->delay_head + 1) % d->delay_cap;
                d->delay_count--;
                released++;
                reorder_stage(d, m);
        }
        if (d->held && (d->delay_cap ? released == 0 : n == 0)) {
                frame_steer(d, d->held); /* nothing followed: no reason to wait */
                d->held = NULL;
        }
        return released;
}

void net_dpdk_frame_msg(struct sl_worker *w, const struct sl_msg *msg)
{
        struct net_dpdk *d = w->net_state;
        frame_input(d, msg->a.ptr[0]);
}

static void counters_publish(struct net_dpdk *d)
{
        const struct tcp_stack_stats *st = tcp_stack_stats(d->stack);
        uint64_t v[DC_COUNT] = {
            [DC_RX_FRAMES] = st->rx_frames,
            [DC_TX_FRAMES] = st->tx_frames,
            [DC_TX_DROPPED] = st->tx_dropped + d->tx_dropped,
            [DC_FORWARDED] = d->frames_forwarded,
            [DC_FORWARD_DROPPED] = d->forward_dropped,
            [DC_IP_BAD] = st->ip_bad,
            [DC_IP_FRAGMENTS] = st->ip_fragments_dropped,
            [DC_TCP_BAD] = st->tcp_bad,
            [DC_CONNS_ACCEPTED] = st->conns_accepted,
            [DC_SYN_COOKIES_SENT] = st->syn_cookies_sent,
            [DC_SYN_COOKIES_ACCEPTED] = st->syn_cookies_accepted,
            [DC_POOL_DROPPED] = st->conn_pool_dropped,
            [DC_RETRANSMITS] = st->retransmits,
            [DC_FAST_RETRANSMITS] = st->fast_retransmits,
            [DC_RTO_EXPIRIES] = st->rto_expiries,
            [DC_OOO_SEGMENTS] = st->ooo_segments,
            [DC_OUT_OF_WINDOW] = st->out_of_window,
            [DC_RST_SENT] = st->rst_sent,
            [DC_RST_RECEIVED] = st->rst_received,
            [DC_TIMEOUTS] = st->timeouts,
            [DC_KEEPALIVE_PROBES] = st->keepalive_probes,
            [DC_IP_NO_ROUTE] = st->ip_no_route,
            [DC_GW_UNRESOLVED] = st->gw_unresolved,
        };
        for (int i = 0; i < DC_COUNT; i++)
                atomic_store_explicit(&dpdk.pub[d->w->id][i], v[i], memory_order_relaxed);
        for (int k = 0; k < TCPS_COUNT; k++)
                atomic_store_explicit(&dpdk.pub_states[d->w->id][k],
                                      tcp_stack_conns_in_state(d->stack, (enum tcp_state)k),
                                      memory_order_relaxed);
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

/* A receive view's token: the TCP index plus the connection's generation,
 * so a view released after its connection died (the slot may serve a new
 * one by then) frees nothing of the new connection's. */
static uint32_t view_token(const struct net_dpdk *d, uint32_t idx)
{
        return idx | ((uint32_t)d->gen[idx] << 24);
}

/* Hands c its next receive view, or its end of stream. */
static void deliver(struct net_dpdk *d, uint32_t idx)
{
        struct sl_conn *c = d->by_tcp[idx];
        if (!c || !(c->flags & SL_CONN_RX_ARMED) || d->rx_lent[idx])
                return;
        struct tcp_conn *t = tcp_stack_conn(d->stack, idx);
        const uint8_t *p;
        uint32_t n = tcp_conn_rx_peek(t, &p);
        if (n) {
                d->rx_lent[idx] = n;
                net_conn_rx(d->w, c, p, n, view_token(d, idx));
        } else if (tcp_conn_rx_eof(t)) {
                net_conn_rx_end(d->w, c, 0);
        }
}

/* Worker 0 resolves the gateway (ARP reaches it only) and publishes its
 * MAC; the others take it from there. One relaxed load per iteration when
 * a gateway is configured: the value is self-contained. */
static void gateway_sync(struct net_dpdk *d)
{
        uint8_t mac[6];
        if (d->w->id == 0) {
                if (!tcp_stack_neighbour(d->stack, d->port->gateway, mac))
                        return;
                uint64_t v = 1ull << 48;
                for (int i = 0; i < 6; i++)
                        v |= (uint64_t)mac[i] << (8 * i);
                if (v != d->gw_seen) {
                        d->gw_seen = v;
                        atomic_store_explicit(&d->port->gw_mac_pub, v, memory_order_relaxed);
                }
                return;
        }
        uint64_t v = atomic_load_explicit(&d->port->gw_mac_pub, memory_order_relaxed);
        if (v == d->gw_seen)
                return;
        d->gw_seen = v;
        for (int i = 0; i < 6; i++)
                mac[i] = (uint8_t)(v >> (8 * i));
        tcp_stack_neighbour_set(d->stack, d->port->gateway, mac);
}

static uint32_t dpdk_poll(struct sl_worker *w)
{
        struct net_dpdk *d = w->net_state;
        if (!d->port)
                return 0;
        struct rte_mbuf *rx[DPDK_BURST];
        uint16_t n = rte_eth_rx_burst(d->port->id, d->queue, rx, DPDK_BURST);
        uint32_t arrived = 0;
        if (!d->delay_cap && !d->loss_per_mille && !d->reorder_per_mille) {
                for (uint16_t i = 0; i < n; i++)
                        frame_steer(d, rx[i]);
        } else {
                arrived = impaired_input(d, rx, n);
        }
        if (d->port->gateway)
                gateway_sync(d);
        tcp_stack_timers(d->stack, w->now_ms);
        if (w->now_ms >= d->pub_next_ms) {
                d->pub_next_ms = w->now_ms + 100;
                counters_publish(d);
        }
        uint32_t work = n + arrived;
        /* Deliver to connections that became readable or were re-armed;
         * bounded by what was queued on entry. */
        for (uint32_t k = d->ready_count; k > 0 && d->ready_count; k--) {
                uint32_t idx = d->readyq[d->ready_head];
                d->ready_head = (d->ready_head + 1) % d->conns_max;
                d->ready_count--;
                d->in_readyq[idx] = 0;
                deliver(d, idx);
                work++;
        }
        return work;
}

static void dpdk_rx_arm(struct sl_worker *w, struct sl_conn *c)
{
        struct net_dpdk *d = w->net_state;
        if (c->fd >= 0)
                ready_push(d, (uint32_t)c->fd);
        else
                net_conn_rx_end(w, c, -ECONNRESET);
}

static void dpdk_rx_release(struct sl_worker *w, uint32_t token)
{
        struct net_dpdk *d = w->net_state;
        uint32_t idx = token & 0xffffff;
        if (idx >= d->conns_max || d->gen[idx] != token >> 24)
                return; /* the view of a connection that is gone */
        uint32_t n = d->rx_lent[idx];
        d->rx_lent[idx] = 0;
        struct tcp_conn *t = tcp_stack_conn(d->stack, idx);
        if (n && t)
                tcp_conn_rx_consume(d->stack, t, n, w->now_ms);
}

/* iovcnt < 0: the retry after the peer acknowledged bytes (c->iov and the
 * count stay as the generic layer built them). */
static void dpdk_tx_submit(struct sl_worker *w, struct sl_conn *c, int iovcnt)
{
        struct net_dpdk *d = w->net_state;
        struct tcp_conn *t = conn_tcp(d, c);
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
        uint64_t copied = tcp_conn_sendv(d->stack, t, pieces, count, w->now_ms);
        if (copied == 0) {
                if (tcp_conn_tx_room(t) == 0 && tcp_conn_tx_queued(t) == 0) {
                        net_conn_tx_done(w, c, -EPIPE); /* the stream no longer sends */
                        return;
                }
                d->tx_blocked[c->fd] = 1; /* on_writable resubmits */
                return;
        }
        net_conn_tx_done(w, c, (long)copied);
}

static void dpdk_shutdown(struct sl_worker *w, struct sl_conn *c)
{
        struct net_dpdk *d = w->net_state;
        struct tcp_conn *t = conn_tcp(d, c);
        if (t) {
                uint32_t idx = (uint32_t)c->fd;
                d->by_tcp[idx] = NULL;
                d->tx_blocked[idx] = 0;
                if (d->rx_lent[idx])
                        dpdk_rx_release(w, view_token(d, idx));
                /* graceful: what TCP holds is still delivered, then FIN */
                tcp_conn_close(d->stack, t, w->now_ms);
        }
        c->fd = -1;
        c->flags &= ~(SL_CONN_RX_ARMED | SL_CONN_TX_INFLIGHT);
        net_conn_released(w, c);
}

static void dpdk_flush(struct sl_worker *w)
{
        struct net_dpdk *d = w->net_state;
        if (d->port)
                tx_flush(d);
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
