/* The per-worker TCP/IP stack driven with frames in memory: a scripted peer
 * builds Ethernet/IPv4/TCP frames, the stack's output is captured, checked
 * for valid checksums and parsed. Time is a variable the tests advance. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tcp_internal.h"
#include "tcp_stack.h"

#define SERVER_IP   0x0a000002u /* 10.0.0.2 */
#define PEER_IP     0x0a000001u /* 10.0.0.1 */
#define SERVER_PORT 4222
#define OUT_MAX     512
#define BUF_BYTES   16384

static const uint8_t server_mac[6] = {0x02, 0, 0, 0, 0, 2};
static const uint8_t peer_mac[6] = {0x02, 0, 0, 0, 0, 1};
static const uint8_t router_mac[6] = {0x02, 0, 0, 0, 0, 0xfe};
#define ROUTER_IP  0x0a0000feu /* 10.0.0.254, the gateway */
#define OFFLINK_IP 0x0a4d0001u /* 10.77.0.1, a client behind the router */

/* Who the peer frames come from: PEER_IP on the link, or an off-link
 * client whose frames the router (router_mac) forwards. */
static uint32_t peer_ip;
static const uint8_t *peer_eth;
/* Where the stack's frames to the peer must go: peer_eth on the link, the
 * gateway's MAC off it (whichever MAC the peer's frames came from). */
static const uint8_t *reply_eth;
static const uint8_t other_router_mac[6] = {0x02, 0, 0, 0, 0, 0xfd};

struct out_frame {
        uint8_t data[FRAME_BYTES_MAX];
        uint32_t len;
};

/* What the test saw of one emitted TCP segment. */
struct oseg {
        uint16_t sport, dport, wnd;
        uint32_t seq, ack;
        uint8_t flags;
        const uint8_t *data;
        uint32_t len;
        uint16_t mss;
        int wscale;
        bool sack_ok, ts;
        uint32_t tsval, tsecr;
};

static struct out_frame out[OUT_MAX];
static uint32_t out_count, out_read;
static struct tcp_stack *st;
static uint64_t now;

/* upcall records */
static struct tcp_conn *accepted_conn;
static int accept_refuse;
static uint8_t received[1 << 20];
static uint32_t received_len;
static bool saw_eof;
static int closed_err;
static bool closed_called;
static uint32_t writable_calls;

/* The driver-side frame buffer (tcp_stack_config.tx_frame) when a test
 * offers one: frames built in it count as in_place. */
static uint8_t driver_frame[FRAME_BYTES_MAX];
static uint32_t in_place;

static uint8_t *tx_frame(void *drv)
{
        (void)drv;
        return driver_frame;
}

static int xmit(void *drv, const uint8_t *frame, uint32_t len, bool offload)
{
        (void)drv;
        if (frame == driver_frame)
                in_place++;
        assert_false(offload);
        assert_true(out_count < OUT_MAX);
        assert_true(len <= FRAME_BYTES_MAX);
        memcpy(out[out_count].data, frame, len);
        out[out_count].len = len;
        out_count++;
        return 0;
}

static int on_accepted(void *user, struct tcp_conn *c)
{
        (void)user;
        if (accept_refuse)
                return -1;
        accepted_conn = c;
        return 0;
}

static void drain(struct tcp_conn *c)
{
        const uint8_t *p;
        uint32_t n;
        while ((n = tcp_conn_rx_peek(c, &p)) > 0) {
                assert_true(received_len + n <= sizeof(received));
                memcpy(received + received_len, p, n);
                received_len += n;
                tcp_conn_rx_consume(st, c, n, now);
        }
        if (tcp_conn_rx_eof(c))
                saw_eof = true;
}

static bool auto_drain = true;

static void on_readable(void *user, struct tcp_conn *c)
{
        (void)user;
        if (auto_drain)
                drain(c);
}

static void on_writable(void *user, struct tcp_conn *c)
{
        (void)user;
        (void)c;
        writable_calls++;
}

static void on_closed(void *user, struct tcp_conn *c, int err)
{
        (void)user;
        assert_ptr_equal(c, accepted_conn);
        closed_called = true;
        closed_err = err;
        accepted_conn = NULL;
}

static struct tcp_stack_config config(void)
{
        struct tcp_stack_config cfg = {
            .ip = SERVER_IP,
            .prefix_len = 24,
            .mtu = 1500,
            .conns_max = 8,
            .syn_backlog_max = 4,
            .buf_bytes = BUF_BYTES,
            .rto_min_ms = 200,
            .rto_max_ms = 60000,
            .rto_initial_ms = 1000,
            .retries_max = 5,
            .delack_ms = 40,
            .time_wait_ms = 2000,
            .keepalive_idle_ms = 0,
            .keepalive_interval_ms = 1000,
            .keepalive_probes = 3,
            .isn_secret = 0x1234567890abcdefULL,
            .xmit = xmit,
            .accepted = on_accepted,
            .readable = on_readable,
            .writable = on_writable,
            .closed = on_closed,
        };
        memcpy(cfg.mac, server_mac, 6);
        return cfg;
}

static int setup_with(const struct tcp_stack_config *cfg)
{
        out_count = out_read = 0;
        now = 1000;
        accepted_conn = NULL;
        accept_refuse = 0;
        received_len = 0;
        saw_eof = false;
        closed_called = false;
        closed_err = 0;
        writable_calls = 0;
        in_place = 0;
        auto_drain = true;
        peer_ip = PEER_IP;
        peer_eth = peer_mac;
        reply_eth = peer_mac;
        st = tcp_stack_create(cfg);
        if (!st)
                return -1;
        return tcp_stack_listen(st, SERVER_PORT);
}

static int setup(void **state)
{
        (void)state;
        struct tcp_stack_config cfg = config();
        return setup_with(&cfg);
}

static int teardown(void **state)
{
        (void)state;
        tcp_stack_destroy(st);
        st = NULL;
        return 0;
}

/* For the keepalive and timer tests: the fixture's stack again, with
 * keepalive after idle_ms instead of Linux's two hours. */
static void restart_with_keepalive(uint32_t idle_ms)
{
        teardown(NULL);
        struct tcp_stack_config cfg = config();
        cfg.keepalive_idle_ms = idle_ms;
        assert_int_equal(setup_with(&cfg), 0);
}

/* ---- frames the peer sends ---- */

static uint32_t eth_ip_build(uint8_t *f, uint8_t proto, uint32_t l4_len, uint16_t frag)
{
        memcpy(f, server_mac, 6);
        memcpy(f + 6, peer_eth, 6);
        wr16(f + 12, ETH_TYPE_IPV4);
        uint8_t *ip = f + ETH_HDR_LEN;
        memset(ip, 0, IP_HDR_LEN);
        ip[0] = 0x45;
        wr16(ip + 2, (uint16_t)(IP_HDR_LEN + l4_len));
        wr16(ip + 6, frag);
        ip[8] = 64;
        ip[9] = proto;
        wr32(ip + 12, peer_ip);
        wr32(ip + 16, SERVER_IP);
        wr16(ip + 10, csum_fold(csum_add(0, ip, IP_HDR_LEN)));
        return ETH_HDR_LEN + IP_HDR_LEN + l4_len;
}

struct iseg {
        uint16_t sport;
        uint16_t dport; /* 0: SERVER_PORT */
        uint32_t seq, ack;
        uint8_t flags;
        uint16_t wnd; /* 0: 65535 */
        const uint8_t *opts;
        uint32_t opts_len;
        const void *data;
        uint32_t len;
};

static void peer_send(const struct iseg *g)
{
        static uint8_t f[FRAME_BYTES_MAX];
        uint8_t *t = f + ETH_HDR_LEN + IP_HDR_LEN;
        uint32_t hl = TCP_HDR_LEN + g->opts_len;
        assert_int_equal(hl % 4, 0);
        memset(t, 0, TCP_HDR_LEN);
        wr16(t, g->sport);
        wr16(t + 2, g->dport ? g->dport : SERVER_PORT);
        wr32(t + 4, g->seq);
        wr32(t + 8, g->ack);
        t[12] = (uint8_t)((hl / 4) << 4);
        t[13] = g->flags;
        wr16(t + 14, g->wnd ? g->wnd : 65535);
        if (g->opts_len)
                memcpy(t + TCP_HDR_LEN, g->opts, g->opts_len);
        if (g->len)
                memcpy(t + hl, g->data, g->len);
        uint32_t len = hl + g->len;
        uint32_t sum = csum_pseudo(peer_ip, SERVER_IP, IP_PROTO_TCP, (uint16_t)len);
        wr16(t + 16, csum_fold(csum_add(sum, t, len)));
        uint32_t flen = eth_ip_build(f, IP_PROTO_TCP, len, 0);
        tcp_stack_input(st, f, flen, false, now);
}

/* ---- frames the stack sends ---- */

static bool next_out(struct out_frame **f)
{
        if (out_read == out_count)
                return false;
        *f = &out[out_read++];
        return true;
}

/* The next emitted frame must be a TCP segment to the peer with valid
 * IPv4 and TCP checksums. */
static struct oseg expect_seg(void)
{
        struct out_frame *f = NULL;
        if (!next_out(&f))
                fail_msg("expected a segment, the stack sent nothing");
        assert_memory_equal(f->data, reply_eth, 6);
        assert_memory_equal(f->data + 6, server_mac, 6);
        assert_int_equal(rd16(f->data + 12), ETH_TYPE_IPV4);
        const uint8_t *ip = f->data + ETH_HDR_LEN;
        assert_int_equal(csum_fold(csum_add(0, ip, IP_HDR_LEN)), 0);
        assert_int_equal(ip[9], IP_PROTO_TCP);
        assert_int_equal(rd32(ip + 12), SERVER_IP);
        assert_int_equal(rd32(ip + 16), peer_ip);
        uint32_t len = rd16(ip + 2) - IP_HDR_LEN;
        assert_int_equal(f->len, ETH_HDR_LEN + IP_HDR_LEN + len);
        const uint8_t *t = ip + IP_HDR_LEN;
        uint32_t sum = csum_pseudo(SERVER_IP, peer_ip, IP_PROTO_TCP, (uint16_t)len);
        assert_int_equal(csum_fold(csum_add(sum, t, len)), 0);
        struct oseg g = {0};
        g.sport = rd16(t);
        g.dport = rd16(t + 2);
        g.seq = rd32(t + 4);
        g.ack = rd32(t + 8);
        g.flags = t[13];
        g.wnd = rd16(t + 14);
        uint32_t hl = (uint32_t)(t[12] >> 4) * 4;
        g.data = t + hl;
        g.len = len - hl;
        g.wscale = -1;
        for (uint32_t i = TCP_HDR_LEN; i < hl;) {
                uint8_t kind = t[i];
                if (kind == 0)
                        break;
                if (kind == 1) {
                        i++;
                        continue;
                }
                uint8_t ol = t[i + 1];
                if (kind == 2)
                        g.mss = rd16(t + i + 2);
                if (kind == 3)
                        g.wscale = t[i + 2];
                if (kind == 4)
                        g.sack_ok = true;
                if (kind == 8) {
                        g.ts = true;
                        g.tsval = rd32(t + i + 2);
                        g.tsecr = rd32(t + i + 6);
                }
                i += ol;
        }
        return g;
}

static void expect_nothing(void)
{
        if (out_read != out_count)
                fail_msg("expected no frame, the stack sent %u", out_count - out_read);
}

static void advance(uint64_t ms)
{
        /* step in 5 ms ticks like a worker loop would */
        uint64_t end = now + ms;
        while (now < end) {
                now += 5;
                if (now > end)
                        now = end;
                tcp_stack_timers(st, now);
        }
}

/* ---- a connected peer ---- */

struct peer {
        uint16_t port;
        uint32_t snd_nxt; /* next seq the peer sends */
        uint32_t rcv_nxt; /* next seq the peer expects */
        uint32_t server_iss;
        bool ts;
};

static const uint8_t syn_opts_full[] = {2, 4, 0x05, 0xb4,                         /* MSS 1460 */
                                        1, 3, 3,    7,                            /* NOP, WS 7 */
                                        4, 2, 8,    10,   0, 0, 0, 9, 0, 0, 0, 0, /* SACK_OK, TS */
                                        1, 1, 1,    1};
static const uint8_t syn_opts_mss[] = {2, 4, 0x05, 0xb4};

static struct peer connect_peer(uint16_t port, uint32_t isn, bool full_opts)
{
        struct peer p = {.port = port, .snd_nxt = isn, .ts = full_opts};
        accepted_conn = NULL;
        peer_send(
            &(struct iseg){.sport = port,
                           .seq = isn,
                           .flags = TH_SYN,
                           .opts = full_opts ? syn_opts_full : syn_opts_mss,
                           .opts_len = full_opts ? sizeof(syn_opts_full) : sizeof(syn_opts_mss)});
        struct oseg sa = expect_seg();
        assert_int_equal(sa.flags, TH_SYN | TH_ACK);
        assert_int_equal(sa.ack, isn + 1);
        assert_int_equal(sa.sport, SERVER_PORT);
        assert_int_equal(sa.dport, port);
        p.snd_nxt = isn + 1;
        p.server_iss = sa.seq;
        p.rcv_nxt = sa.seq + 1;
        assert_null(accepted_conn);
        peer_send(
            &(struct iseg){.sport = port, .seq = p.snd_nxt, .ack = p.rcv_nxt, .flags = TH_ACK});
        assert_non_null(accepted_conn);
        expect_nothing();
        return p;
}

/* The peer sends data (ACK set). */
static void peer_data(struct peer *p, const void *data, uint32_t len)
{
        peer_send(&(struct iseg){.sport = p->port,
                                 .seq = p->snd_nxt,
                                 .ack = p->rcv_nxt,
                                 .flags = TH_ACK | TH_PSH,
                                 .data = data,
                                 .len = len});
        p->snd_nxt += len;
}

static void peer_ack(struct peer *p, uint32_t ack)
{
        peer_send(&(struct iseg){.sport = p->port, .seq = p->snd_nxt, .ack = ack, .flags = TH_ACK});
}

static void pattern(uint8_t *buf, uint32_t len, uint32_t salt)
{
        for (uint32_t i = 0; i < len; i++)
                buf[i] = (uint8_t)((i * 31 + salt) ^ (i >> 8));
}

/* ==================================================================== */

static void test_seq_arithmetic_wraps(void **state)
{
        (void)state;
        assert_true(seq_lt(0xfffffff0u, 0x10u));
        assert_true(seq_gt(0x10u, 0xfffffff0u));
        assert_true(seq_leq(5u, 5u));
        assert_true(seq_geq(0u, 0xffffffffu));
        assert_false(seq_lt(0x10u, 0xfffffff0u));
        assert_true(seq_lt(0x7ffffffeu, 0x7fffffffu));
        assert_true(seq_lt(0xffffffffu, 0x0u));
}

static void test_arp_reply_and_announce(void **state)
{
        (void)state;
        uint8_t f[60] = {0};
        memset(f, 0xff, 6);
        memcpy(f + 6, peer_mac, 6);
        wr16(f + 12, ETH_TYPE_ARP);
        uint8_t *a = f + ETH_HDR_LEN;
        wr16(a, 1);
        wr16(a + 2, ETH_TYPE_IPV4);
        a[4] = 6;
        a[5] = 4;
        wr16(a + 6, 1);
        memcpy(a + 8, peer_mac, 6);
        wr32(a + 14, PEER_IP);
        wr32(a + 24, SERVER_IP);
        tcp_stack_input(st, f, sizeof(f), false, now);

        struct out_frame *o = NULL;
        assert_true(next_out(&o));
        assert_int_equal(o->len, 60);
        assert_memory_equal(o->data, peer_mac, 6);
        assert_int_equal(rd16(o->data + 12), ETH_TYPE_ARP);
        assert_int_equal(rd16(o->data + ETH_HDR_LEN + 6), 2); /* reply */
        assert_memory_equal(o->data + ETH_HDR_LEN + 8, server_mac, 6);
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 14), SERVER_IP);
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 24), PEER_IP);
        uint8_t mac[6];
        assert_true(tcp_stack_neighbour(st, PEER_IP, mac));
        assert_memory_equal(mac, peer_mac, 6);
        assert_int_equal(tcp_stack_stats(st)->arp_replies, 1);

        /* a request for another host gets no answer */
        wr32(a + 24, SERVER_IP + 1);
        tcp_stack_input(st, f, sizeof(f), false, now);
        expect_nothing();

        tcp_stack_announce(st, now);
        assert_true(next_out(&o));
        assert_memory_equal(o->data, "\xff\xff\xff\xff\xff\xff", 6);
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 14), SERVER_IP);
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 24), SERVER_IP);
}

static void test_icmp_echo(void **state)
{
        (void)state;
        uint8_t f[128];
        uint8_t *icmp = f + ETH_HDR_LEN + IP_HDR_LEN;
        memset(icmp, 0, 64);
        icmp[0] = 8;
        wr16(icmp + 4, 0x1234);
        wr16(icmp + 6, 7);
        memcpy(icmp + 8, "ping payload", 12);
        wr16(icmp + 2, csum_fold(csum_add(0, icmp, 64)));
        uint32_t len = eth_ip_build(f, IP_PROTO_ICMP, 64, 0);
        tcp_stack_input(st, f, len, false, now);

        struct out_frame *o = NULL;
        assert_true(next_out(&o));
        const uint8_t *ip = o->data + ETH_HDR_LEN;
        assert_int_equal(csum_fold(csum_add(0, ip, IP_HDR_LEN)), 0);
        assert_int_equal(rd32(ip + 16), PEER_IP);
        const uint8_t *r = ip + IP_HDR_LEN;
        assert_int_equal(r[0], 0);
        assert_int_equal(rd16(r + 4), 0x1234);
        assert_memory_equal(r + 8, "ping payload", 12);
        assert_int_equal(csum_fold(csum_add(0, r, 64)), 0);
        assert_int_equal(tcp_stack_stats(st)->icmp_echo_replies, 1);

        /* a corrupted echo request is not answered */
        icmp[9] ^= 1;
        tcp_stack_input(st, f, len, false, now);
        expect_nothing();
}

static void test_ip_fragments_and_bad_headers_dropped(void **state)
{
        (void)state;
        uint8_t f[128];
        memset(f, 0, sizeof(f));
        uint32_t len = eth_ip_build(f, IP_PROTO_ICMP, 40, 0x2000); /* MF */
        tcp_stack_input(st, f, len, false, now);
        len = eth_ip_build(f, IP_PROTO_ICMP, 40, 0x0010); /* offset */
        tcp_stack_input(st, f, len, false, now);
        assert_int_equal(tcp_stack_stats(st)->ip_fragments_dropped, 2);

        len = eth_ip_build(f, IP_PROTO_ICMP, 40, 0);
        f[ETH_HDR_LEN + 8] = 3; /* TTL changed, checksum not */
        tcp_stack_input(st, f, len, false, now);
        assert_int_equal(tcp_stack_stats(st)->ip_bad, 1);
        /* total length beyond the frame */
        len = eth_ip_build(f, IP_PROTO_ICMP, 40, 0);
        tcp_stack_input(st, f, len - 1, false, now);
        assert_int_equal(tcp_stack_stats(st)->ip_bad, 2);
        /* another destination */
        len = eth_ip_build(f, IP_PROTO_ICMP, 40, 0);
        wr32(f + ETH_HDR_LEN + 16, SERVER_IP + 1);
        wr16(f + ETH_HDR_LEN + 10, 0);
        wr16(f + ETH_HDR_LEN + 10, csum_fold(csum_add(0, f + ETH_HDR_LEN, IP_HDR_LEN)));
        tcp_stack_input(st, f, len, false, now);
        assert_int_equal(tcp_stack_stats(st)->ip_not_ours, 1);
        /* runt and foreign MAC */
        tcp_stack_input(st, f, 10, false, now);
        f[0] = 0x04;
        tcp_stack_input(st, f, len, false, now);
        assert_int_equal(tcp_stack_stats(st)->eth_dropped, 2);
        expect_nothing();
}

static void test_handshake_negotiates_options(void **state)
{
        (void)state;
        peer_send(&(struct iseg){.sport = 40000,
                                 .seq = 1000,
                                 .flags = TH_SYN,
                                 .opts = syn_opts_full,
                                 .opts_len = sizeof(syn_opts_full)});
        struct oseg sa = expect_seg();
        assert_int_equal(sa.flags, TH_SYN | TH_ACK);
        assert_int_equal(sa.ack, 1001);
        assert_int_equal(sa.mss, 1460);
        assert_int_equal(sa.wscale, 0); /* a 16 KiB ring needs no scaling */
        assert_true(sa.sack_ok);
        assert_true(sa.ts);
        assert_int_equal(sa.tsecr, 9);
        assert_int_equal(sa.wnd, BUF_BYTES);
        assert_null(accepted_conn);

        /* the SYN again (our SYN-ACK was lost): the same SYN-ACK again */
        peer_send(&(struct iseg){.sport = 40000,
                                 .seq = 1000,
                                 .flags = TH_SYN,
                                 .opts = syn_opts_full,
                                 .opts_len = sizeof(syn_opts_full)});
        struct oseg again = expect_seg();
        assert_int_equal(again.seq, sa.seq);
        assert_int_equal(tcp_stack_conns_in_use(st), 1);

        /* an ACK that does not acknowledge our SYN is answered with RST */
        peer_send(&(struct iseg){.sport = 40000, .seq = 1001, .ack = sa.seq + 5, .flags = TH_ACK});
        struct oseg rst = expect_seg();
        assert_int_equal(rst.flags, TH_RST);
        assert_int_equal(rst.seq, sa.seq + 5);
        assert_null(accepted_conn);

        peer_send(&(struct iseg){.sport = 40000, .seq = 1001, .ack = sa.seq + 1, .flags = TH_ACK});
        assert_non_null(accepted_conn);
        assert_int_equal(tcp_conn_peer_ip(accepted_conn), PEER_IP);
        assert_int_equal(tcp_conn_peer_port(accepted_conn), 40000);
        assert_int_equal(tcp_conn_local_port(accepted_conn), SERVER_PORT);
        assert_int_equal(tcp_stack_stats(st)->conns_accepted, 1);
        expect_nothing();
}

static void test_window_scale_for_large_buffers(void **state)
{
        (void)state;
        teardown(NULL);
        struct tcp_stack_config cfg = config();
        cfg.buf_bytes = 1u << 20;
        cfg.conns_max = 2;
        assert_int_equal(setup_with(&cfg), 0);
        peer_send(&(struct iseg){.sport = 40001,
                                 .seq = 5,
                                 .flags = TH_SYN,
                                 .opts = syn_opts_full,
                                 .opts_len = sizeof(syn_opts_full)});
        struct oseg sa = expect_seg();
        assert_int_equal(sa.wscale, 5);   /* 1 MiB >> 5 fits 16 bits */
        assert_int_equal(sa.wnd, 0xffff); /* a SYN's window is never scaled */
        peer_send(&(struct iseg){.sport = 40001, .seq = 6, .ack = sa.seq + 1, .flags = TH_ACK});
        assert_non_null(accepted_conn);
        uint8_t d[100] = {0};
        peer_send(&(struct iseg){.sport = 40001,
                                 .seq = 6,
                                 .ack = sa.seq + 1,
                                 .flags = TH_ACK | TH_PSH,
                                 .opts = syn_opts_full + 12,
                                 .opts_len = 12,
                                 .data = d,
                                 .len = 100});
        advance(50);
        struct oseg ack = expect_seg();
        assert_int_equal(ack.ack, 106);
        assert_int_equal(ack.wnd, (1u << 20) >> 5); /* read at once: the window is whole */
}

static void test_refused_accept_resets(void **state)
{
        (void)state;
        accept_refuse = 1;
        peer_send(&(struct iseg){.sport = 40002, .seq = 1, .flags = TH_SYN});
        struct oseg sa = expect_seg();
        peer_send(&(struct iseg){.sport = 40002, .seq = 2, .ack = sa.seq + 1, .flags = TH_ACK});
        struct oseg rst = expect_seg();
        assert_true(rst.flags & TH_RST);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
        assert_int_equal(tcp_stack_stats(st)->conns_refused, 1);
}

static void test_data_both_ways(void **state)
{
        (void)state;
        struct peer p = connect_peer(41000, 77, false);
        static uint8_t in[3000], outb[5000];
        pattern(in, sizeof(in), 1);
        pattern(outb, sizeof(outb), 2);

        peer_data(&p, in, 1460);
        expect_nothing(); /* one segment: the ACK is delayed */
        peer_data(&p, in + 1460, 1080);
        struct oseg ack = expect_seg(); /* the second segment: ACK at once */
        assert_int_equal(ack.ack, p.snd_nxt);
        assert_int_equal(received_len, 3000 - 460);
        assert_memory_equal(received, in, received_len);

        /* a lone segment is acknowledged by the delayed-ACK timer */
        peer_data(&p, in + 2540, 460);
        expect_nothing();
        advance(30);
        expect_nothing();
        advance(20);
        ack = expect_seg();
        assert_int_equal(ack.ack, p.snd_nxt);
        assert_int_equal(received_len, 3000);
        assert_memory_equal(received, in, 3000);

        /* the server sends 5000 bytes: MSS-sized segments in one window */
        assert_int_equal(tcp_conn_send(st, accepted_conn, outb, 5000, now), 5000);
        uint32_t got = 0;
        while (got < 5000) {
                struct oseg d = expect_seg();
                assert_int_equal(d.seq, p.rcv_nxt + got);
                assert_true(d.len <= 1460);
                assert_memory_equal(d.data, outb + got, d.len);
                got += d.len;
        }
        expect_nothing();
        assert_int_equal(tcp_conn_tx_queued(accepted_conn), 5000);
        peer_ack(&p, p.rcv_nxt + 5000);
        p.rcv_nxt += 5000;
        assert_int_equal(tcp_conn_tx_queued(accepted_conn), 0);
        assert_int_equal(writable_calls, 1);
        assert_int_equal(tcp_conn_tx_room(accepted_conn), BUF_BYTES);
        expect_nothing();
}

/* Pieces sent together share MSS-sized segments (NATS and Kafka replies
 * are a header, a payload and a trailer): 4 pieces, 2 full segments. */
static void test_sendv_fills_mss_sized_segments(void **state)
{
        (void)state;
        connect_peer(41001, 500, false);
        static uint8_t data[2920];
        pattern(data, sizeof(data), 3);
        const struct tcp_piece pieces[] = {
            {data, 12}, {data + 12, 1000}, {data + 1012, 2}, {data + 1014, 1906}};
        assert_int_equal(tcp_conn_sendv(st, accepted_conn, pieces, 4, now), 2920);
        struct oseg a = expect_seg();
        struct oseg b = expect_seg();
        expect_nothing();
        assert_int_equal(a.len, 1460);
        assert_int_equal(b.len, 1460);
        assert_int_equal(b.seq, a.seq + 1460);
        assert_memory_equal(a.data, data, 1460);
        assert_memory_equal(b.data, data + 1460, 1460);

        /* a piece larger than the room left: a prefix is taken, no more */
        uint32_t room = tcp_conn_tx_room(accepted_conn);
        static uint8_t big[BUF_BYTES];
        const struct tcp_piece over[] = {{big, room - 10}, {big, 20}, {big, 5}};
        assert_int_equal(tcp_conn_sendv(st, accepted_conn, over, 3, now), room);
        assert_int_equal(tcp_conn_tx_room(accepted_conn), 0);
}

/* A driver that offers its transmit buffer gets every frame built in it
 * (no copy in xmit), handshake, data and ARP alike. */
static void test_frames_built_in_the_driver_buffer(void **state)
{
        (void)state;
        tcp_stack_destroy(st);
        struct tcp_stack_config cfg = config();
        cfg.tx_frame = tx_frame;
        assert_int_equal(setup_with(&cfg), 0);
        connect_peer(41002, 900, false);
        static uint8_t data[3000];
        pattern(data, sizeof(data), 4);
        assert_int_equal(tcp_conn_send(st, accepted_conn, data, sizeof(data), now), 3000);
        uint32_t got = 0;
        while (got < 3000) {
                struct oseg d = expect_seg();
                assert_memory_equal(d.data, data + got, d.len);
                got += d.len;
        }
        tcp_stack_announce(st, now);
        assert_int_equal(in_place, out_count);
        assert_true(in_place >= 5); /* SYN-ACK, 3 data segments, the ARP */
}

/* The reference Toeplitz, written from the definition: the key as a bit
 * string; for input bit i set, XOR in key bits i..i+31. */
static uint32_t toeplitz_reference(const uint8_t *key, const uint8_t *in, uint32_t len)
{
        uint32_t h = 0;
        for (uint32_t i = 0; i < len * 8; i++) {
                if (!(in[i / 8] & (0x80 >> (i % 8))))
                        continue;
                uint32_t w = 0;
                for (uint32_t j = 0; j < 32; j++) {
                        uint32_t k = i + j;
                        uint32_t bit =
                            k / 8 < TCP_RSS_KEY_LEN ? (key[k / 8] >> (7 - k % 8)) & 1 : 0;
                        w = (w << 1) | bit;
                }
                h ^= w;
        }
        return h;
}

/* Microsoft's RSS verification suite (IPv4 with TCP ports): the software
 * hash is the one NICs compute. */
static void test_toeplitz_matches_the_rss_specification(void **state)
{
        (void)state;
        static const uint8_t ms_key[TCP_RSS_KEY_LEN] = {
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};
        static const struct {
                uint8_t src[4], dst[4];
                uint16_t sport, dport;
                uint32_t hash;
        } v[] = {
            {{66, 9, 149, 187}, {161, 142, 100, 80}, 2794, 1766, 0x51ccc178},
            {{199, 92, 111, 2}, {65, 69, 140, 83}, 14230, 4739, 0xc626b0ea},
            {{24, 19, 198, 95}, {12, 22, 207, 184}, 12898, 38024, 0x5c2b394a},
            {{38, 27, 205, 30}, {209, 142, 163, 6}, 48228, 2217, 0xafc7327f},
            {{153, 39, 163, 191}, {202, 188, 127, 2}, 44251, 1303, 0x10e828a2},
        };
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
                uint8_t in[12];
                memcpy(in, v[i].src, 4);
                memcpy(in + 4, v[i].dst, 4);
                wr16(in + 8, v[i].sport);
                wr16(in + 10, v[i].dport);
                assert_int_equal(tcp_toeplitz(ms_key, in, 12), v[i].hash);
                assert_int_equal(toeplitz_reference(ms_key, in, 12), v[i].hash);
        }
}

/* The worker that owns a flow is the queue RSS with sluiced's key and a
 * table of entry i -> queue i % workers delivers it to. */
static void test_flow_owner_is_the_rss_queue(void **state)
{
        (void)state;
        uint64_t rng = 88172645463325252ull;
        for (int i = 0; i < 2000; i++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                uint32_t peer = (uint32_t)rng, local = 0x0a4d0002;
                uint16_t pport = (uint16_t)(rng >> 32), lport = (uint16_t)(rng >> 48);
                uint8_t in[12];
                wr32(in, peer);
                wr32(in + 4, local);
                wr16(in + 8, pport);
                wr16(in + 10, lport);
                uint32_t h = toeplitz_reference(tcp_rss_key, in, 12);
                assert_int_equal(tcp_rss_hash_ipv4_tcp(peer, local, pport, lport), h);
                for (uint16_t n = 1; n <= 4; n++) {
                        uint16_t reta_size = 128, queue = (uint16_t)((h & (reta_size - 1)) % n);
                        assert_int_equal(tcp_rss_owner(peer, local, pport, lport, reta_size, n),
                                         queue);
                        assert_int_equal(tcp_rss_owner(peer, local, pport, lport, 0, n), h % n);
                }
        }
}

static void test_sequence_wrap_around(void **state)
{
        (void)state;
        /* the peer's sequence numbers cross 2^32 in the middle of the data */
        struct peer p = connect_peer(41001, 0xfffffc00u, false);
        static uint8_t in[6000];
        pattern(in, sizeof(in), 3);
        for (uint32_t off = 0; off < sizeof(in); off += 1000)
                peer_data(&p, in + off, 1000);
        advance(50);
        assert_int_equal(received_len, 6000);
        assert_memory_equal(received, in, 6000);
        assert_true(p.snd_nxt < 0x2000u); /* it did wrap */
        /* and the ring wraps too: push several ring sizes through */
        for (int round = 0; round < 5; round++)
                for (uint32_t off = 0; off < sizeof(in); off += 1000)
                        peer_data(&p, in + off, 1000);
        advance(50);
        assert_int_equal(received_len, 36000);
        for (int round = 0; round < 6; round++)
                assert_memory_equal(received + round * 6000, in, 6000);
        struct oseg last;
        do
                last = expect_seg();
        while (out_read < out_count);
        assert_int_equal(last.ack, p.snd_nxt);
}

static void test_out_of_order_reassembly(void **state)
{
        (void)state;
        struct peer p = connect_peer(41002, 5000, false);
        static uint8_t in[4000];
        pattern(in, sizeof(in), 4);
        uint32_t base = p.snd_nxt;
        /* segment 2, then 4, then 3: each out of order, each a duplicate ACK */
        peer_send(&(struct iseg){.sport = p.port,
                                 .seq = base + 1000,
                                 .ack = p.rcv_nxt,
                                 .flags = TH_ACK,
                                 .data = in + 1000,
                                 .len = 1000});
        struct oseg dup = expect_seg();
        assert_int_equal(dup.ack, base);
        peer_send(&(struct iseg){.sport = p.port,
                                 .seq = base + 3000,
                                 .ack = p.rcv_nxt,
                                 .flags = TH_ACK,
                                 .data = in + 3000,
                                 .len = 1000});
        dup = expect_seg();
        assert_int_equal(dup.ack, base);
        /* overlapping the two ranges: 1500..3500 */
        peer_send(&(struct iseg){.sport = p.port,
                                 .seq = base + 1500,
                                 .ack = p.rcv_nxt,
                                 .flags = TH_ACK,
                                 .data = in + 1500,
                                 .len = 2000});
        dup = expect_seg();
        assert_int_equal(dup.ack, base);
        assert_int_equal(received_len, 0);
        assert_int_equal(tcp_stack_stats(st)->ooo_segments, 3);
        /* the hole fills: everything is delivered and acknowledged at once */
        peer_send(&(struct iseg){.sport = p.port,
                                 .seq = base,
                                 .ack = p.rcv_nxt,
                                 .flags = TH_ACK,
                                 .data = in,
                                 .len = 1000});
        struct oseg ack = expect_seg();
        assert_int_equal(ack.ack, base + 4000);
        assert_int_equal(received_len, 4000);
        assert_memory_equal(received, in, 4000);
        /* an old duplicate is acknowledged, not delivered again */
        peer_send(&(struct iseg){.sport = p.port,
                                 .seq = base,
                                 .ack = p.rcv_nxt,
                                 .flags = TH_ACK,
                                 .data = in,
                                 .len = 1000});
        ack = expect_seg();
        assert_int_equal(ack.ack, base + 4000);
        assert_int_equal(received_len, 4000);
}

static void test_receive_window_limits_and_reopens(void **state)
{
        (void)state;
        struct peer p = connect_peer(41003, 1, false);
        auto_drain = false; /* the application stops reading */
        static uint8_t in[BUF_BYTES + 2000];
        pattern(in, sizeof(in), 5);
        for (uint32_t off = 0; off < BUF_BYTES; off += 1000)
                peer_data(&p, in + off, off + 1000 <= BUF_BYTES ? 1000 : BUF_BYTES - off);
        advance(50);
        struct oseg last;
        do
                last = expect_seg();
        while (out_read < out_count);
        assert_int_equal(last.ack, p.snd_nxt);
        assert_int_equal(last.wnd, 0);
        /* beyond the window: dropped, answered with an ACK */
        peer_data(&p, in + BUF_BYTES, 1000);
        p.snd_nxt -= 1000;
        last = expect_seg();
        assert_int_equal(last.ack, p.snd_nxt);
        assert_int_equal(last.wnd, 0);
        assert_true(tcp_stack_stats(st)->out_of_window >= 1);
        /* reading opens the window and the peer hears about it */
        drain(accepted_conn);
        last = expect_seg();
        assert_int_equal(last.ack, p.snd_nxt);
        assert_true(last.wnd > BUF_BYTES / 2);
        assert_int_equal(received_len, BUF_BYTES);
        assert_memory_equal(received, in, BUF_BYTES);
}

static void test_retransmit_with_backoff(void **state)
{
        (void)state;
        struct peer p = connect_peer(41004, 1, false);
        uint8_t msg[100];
        pattern(msg, sizeof(msg), 6);
        tcp_conn_send(st, accepted_conn, msg, sizeof(msg), now);
        struct oseg first = expect_seg();
        assert_int_equal(first.len, 100);
        /* lost: nothing before the RTO (1 s, no RTT sample yet) */
        advance(990);
        expect_nothing();
        advance(15);
        struct oseg re = expect_seg();
        assert_int_equal(re.seq, first.seq);
        assert_memory_equal(re.data, msg, 100);
        /* lost again: the RTO doubled */
        advance(1990);
        expect_nothing();
        advance(15);
        re = expect_seg();
        assert_int_equal(re.seq, first.seq);
        assert_int_equal(tcp_stack_stats(st)->retransmits, 2);
        peer_ack(&p, first.seq + 100);
        advance(10000);
        expect_nothing();
}

static void test_retransmissions_exhausted_drop_the_connection(void **state)
{
        (void)state;
        connect_peer(41005, 1, false);
        tcp_conn_send(st, accepted_conn, "x", 1, now);
        advance(200000);
        assert_true(closed_called);
        assert_int_equal(closed_err, -ETIMEDOUT);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
        assert_int_equal(tcp_stack_stats(st)->timeouts, 1);
        /* 1 send + 5 retransmissions, then a RST */
        uint32_t n = 0;
        struct oseg g;
        while (out_read < out_count) {
                g = expect_seg();
                n++;
        }
        assert_int_equal(n, 7);
        assert_true(g.flags & TH_RST);
}

static void test_fast_retransmit_on_three_duplicate_acks(void **state)
{
        (void)state;
        struct peer p = connect_peer(41006, 1, false);
        static uint8_t msg[5840];
        pattern(msg, sizeof(msg), 7);
        tcp_conn_send(st, accepted_conn, msg, sizeof(msg), now);
        struct oseg s1 = expect_seg(), s2 = expect_seg();
        expect_seg();
        expect_seg();
        expect_nothing();
        /* segment 2 is lost: the peer ACKs segment 1, then duplicates */
        peer_ack(&p, s2.seq);
        peer_ack(&p, s2.seq);
        peer_ack(&p, s2.seq);
        expect_nothing();
        peer_ack(&p, s2.seq);
        struct oseg re = expect_seg();
        assert_int_equal(re.seq, s2.seq);
        assert_memory_equal(re.data, msg + (s2.seq - s1.seq), re.len);
        assert_int_equal(tcp_stack_stats(st)->fast_retransmits, 1);
        assert_int_equal(tcp_stack_stats(st)->rto_expiries, 0);
        peer_ack(&p, s1.seq + sizeof(msg));
        assert_int_equal(tcp_conn_tx_queued(accepted_conn), 0);
}

static void test_peer_closes_first(void **state)
{
        (void)state;
        struct peer p = connect_peer(41007, 1, false);
        peer_data(&p, "bye", 3);
        peer_send(&(struct iseg){
            .sport = p.port, .seq = p.snd_nxt, .ack = p.rcv_nxt, .flags = TH_ACK | TH_FIN});
        p.snd_nxt++;
        struct oseg ack = expect_seg();
        assert_int_equal(ack.ack, p.snd_nxt);
        assert_true(saw_eof);
        assert_int_equal(received_len, 3);
        /* half-closed: we may still send */
        assert_int_equal(tcp_conn_send(st, accepted_conn, "last", 4, now), 4);
        struct oseg d = expect_seg();
        assert_int_equal(d.len, 4);
        struct tcp_conn *c = accepted_conn;
        tcp_conn_close(st, c, now);
        struct oseg fin = expect_seg();
        assert_true(fin.flags & TH_FIN);
        assert_int_equal(fin.seq, d.seq + 4);
        assert_int_equal(tcp_stack_conns_in_use(st), 1);
        peer_ack(&p, fin.seq + 1);
        assert_int_equal(tcp_stack_conns_in_use(st), 0); /* LAST_ACK done */
        expect_nothing();
}

static void test_we_close_first_then_time_wait(void **state)
{
        (void)state;
        struct peer p = connect_peer(41008, 1, false);
        tcp_conn_send(st, accepted_conn, "hello", 5, now);
        tcp_conn_close(st, accepted_conn, now);
        struct oseg d = expect_seg();
        struct oseg fin = d.flags & TH_FIN ? d : expect_seg();
        assert_true(fin.flags & TH_FIN);
        uint32_t fin_seq = fin.seq + fin.len;
        assert_int_equal(fin_seq, d.seq + 5); /* the FIN follows the data */
        /* the FIN is lost: retransmitted with the data */
        advance(1010);
        struct oseg re = expect_seg();
        assert_int_equal(re.seq, d.seq);
        if (!(re.flags & TH_FIN))
                assert_true(expect_seg().flags & TH_FIN);
        peer_ack(&p, fin_seq + 1); /* FIN_WAIT_2 */
        expect_nothing();
        peer_send(&(struct iseg){
            .sport = p.port, .seq = p.snd_nxt, .ack = fin_seq + 1, .flags = TH_ACK | TH_FIN});
        struct oseg ack = expect_seg();
        assert_int_equal(ack.ack, p.snd_nxt + 1);
        assert_int_equal(tcp_stack_conns_in_use(st), 1); /* TIME_WAIT */
        /* the peer's FIN again (our ACK was lost): ACKed again */
        peer_send(&(struct iseg){
            .sport = p.port, .seq = p.snd_nxt, .ack = fin_seq + 1, .flags = TH_ACK | TH_FIN});
        ack = expect_seg();
        assert_int_equal(ack.ack, p.snd_nxt + 1);
        advance(2100);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
        assert_false(closed_called); /* the user had let go: no upcall */
}

static void test_reset_handling(void **state)
{
        (void)state;
        struct peer p = connect_peer(41009, 100, false);
        /* in the window but not exact: a challenge ACK, the connection lives */
        peer_send(&(struct iseg){.sport = p.port, .seq = p.snd_nxt + 10, .flags = TH_RST});
        struct oseg ch = expect_seg();
        assert_int_equal(ch.flags, TH_ACK);
        assert_int_equal(ch.ack, p.snd_nxt);
        assert_false(closed_called);
        /* a SYN on an established connection: a challenge ACK too */
        peer_send(&(struct iseg){.sport = p.port, .seq = p.snd_nxt, .flags = TH_SYN});
        ch = expect_seg();
        assert_int_equal(ch.flags, TH_ACK);
        assert_false(closed_called);
        /* the exact RST closes it and tells the user */
        peer_send(&(struct iseg){.sport = p.port, .seq = p.snd_nxt, .flags = TH_RST});
        assert_true(closed_called);
        assert_int_equal(closed_err, -ECONNRESET);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
        expect_nothing();

        /* a segment for no connection gets a RST; a RST for none, nothing */
        peer_send(
            &(struct iseg){.sport = 5, .dport = 9999, .seq = 7, .ack = 1234, .flags = TH_ACK});
        struct oseg rst = expect_seg();
        assert_int_equal(rst.flags, TH_RST);
        assert_int_equal(rst.seq, 1234);
        peer_send(&(struct iseg){.sport = 5, .dport = 9999, .seq = 7, .flags = TH_SYN});
        rst = expect_seg();
        assert_int_equal(rst.flags, TH_RST | TH_ACK);
        assert_int_equal(rst.ack, 8);
        peer_send(&(struct iseg){.sport = 5, .dport = 9999, .seq = 7, .flags = TH_RST});
        expect_nothing();
}

static void test_abort_sends_reset(void **state)
{
        (void)state;
        struct peer p = connect_peer(41010, 100, false);
        tcp_conn_abort(st, accepted_conn);
        struct oseg rst = expect_seg();
        assert_int_equal(rst.flags, TH_RST);
        assert_int_equal(rst.seq, p.rcv_nxt);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
}

static void test_syn_flood_answered_with_cookies(void **state)
{
        (void)state;
        /* backlog 4, pool 8: SYNs beyond the queue get stateless cookies and
         * never take a slot */
        for (uint16_t i = 0; i < 20; i++)
                peer_send(&(struct iseg){.sport = (uint16_t)(50000 + i),
                                         .seq = 1000u * i,
                                         .flags = TH_SYN,
                                         .opts = syn_opts_full,
                                         .opts_len = sizeof(syn_opts_full)});
        assert_int_equal(tcp_stack_conns_in_use(st), 4);
        assert_int_equal(tcp_stack_stats(st)->syn_cookies_sent, 16);
        struct oseg cookie = {0};
        for (int i = 0; i < 20; i++) {
                struct oseg sa = expect_seg();
                assert_int_equal(sa.flags, TH_SYN | TH_ACK);
                if (i == 19)
                        cookie = sa;
        }
        /* a cookie SYN-ACK offers only the MSS: nothing else survives */
        assert_int_equal(cookie.dport, 50019);
        assert_int_equal(cookie.mss, 1460);
        assert_int_equal(cookie.wscale, -1);
        assert_false(cookie.ts);
        assert_false(cookie.sack_ok);

        /* a forged ACK (wrong cookie) is reset, no slot taken */
        peer_send(
            &(struct iseg){.sport = 50018, .seq = 18001, .ack = cookie.seq + 1, .flags = TH_ACK});
        assert_int_equal(expect_seg().flags, TH_RST);
        assert_null(accepted_conn);
        /* the real client's ACK carries its cookie: a connection at last */
        peer_send(&(struct iseg){.sport = 50019,
                                 .seq = 19001,
                                 .ack = cookie.seq + 1,
                                 .flags = TH_ACK | TH_PSH,
                                 .data = "PING",
                                 .len = 4});
        assert_non_null(accepted_conn);
        assert_int_equal(tcp_stack_stats(st)->syn_cookies_accepted, 1);
        assert_int_equal(received_len, 4);
        assert_memory_equal(received, "PING", 4);
        assert_int_equal(tcp_conn_send(st, accepted_conn, "PONG", 4, now), 4);
        struct oseg d = expect_seg();
        assert_int_equal(d.len, 4);
        assert_int_equal(d.seq, cookie.seq + 1);
        assert_int_equal(d.ack, 19005);
        peer_send(
            &(struct iseg){.sport = 50019, .seq = 19005, .ack = cookie.seq + 5, .flags = TH_ACK});
        assert_int_equal(tcp_conn_tx_queued(accepted_conn), 0);
        /* a cookie from the previous 65.5 s period is still good... */
        peer_send(&(struct iseg){.sport = 50016, .seq = 16000, .flags = TH_SYN});
        struct oseg prev = expect_seg();
        now += 65536;
        peer_send(
            &(struct iseg){.sport = 50016, .seq = 16001, .ack = prev.seq + 1, .flags = TH_ACK});
        assert_int_equal(tcp_stack_stats(st)->syn_cookies_accepted, 2);
        /* ...one from two periods back is not */
        peer_send(&(struct iseg){.sport = 50017, .seq = 17000, .flags = TH_SYN});
        struct oseg old = expect_seg();
        now += 2u * 65536;
        peer_send(
            &(struct iseg){.sport = 50017, .seq = 17001, .ack = old.seq + 1, .flags = TH_ACK});
        assert_int_equal(expect_seg().flags, TH_RST);

        /* unanswered SYN-ACKs of the queue are retried, then the slots free */
        out_read = out_count;
        advance(70000);
        out_read = out_count;
        /* left: the two connections established from cookies */
        assert_int_equal(tcp_stack_conns_in_use(st), 2);
}

static void test_keepalive_probes_then_drop(void **state)
{
        (void)state;
        restart_with_keepalive(10000);
        struct peer p = connect_peer(41012, 1, false);
        peer_data(&p, "x", 1);
        advance(100);
        expect_seg(); /* delayed ACK */
        advance(9950);
        struct oseg probe = expect_seg();
        assert_int_equal(probe.seq, p.rcv_nxt - 1);
        assert_int_equal(probe.len, 0);
        /* the peer answers: the idle clock restarts */
        peer_ack(&p, p.rcv_nxt);
        advance(9000);
        expect_nothing();
        /* then goes silent: 3 probes a second apart, then the drop */
        advance(1100);
        expect_seg();
        advance(3100);
        assert_true(closed_called);
        assert_int_equal(closed_err, -ETIMEDOUT);
        assert_int_equal(tcp_stack_stats(st)->keepalive_probes, 4);
}

/* The churn a client's close/reset leaves when its RST is lost on the way
 * (a full tap queue): the connection stays established here, as it would
 * in Linux, until keepalive probes it. The peer's host no longer knows it
 * and answers the probe with a RST whose seq is the probe's ACK (RFC 9293
 * 3.10.7.1): exactly rcv_nxt, so it must free the connection at once
 * rather than draw a challenge ACK. */
static void test_keepalive_probe_answered_by_reset_frees(void **state)
{
        (void)state;
        restart_with_keepalive(3000);
        struct peer p = connect_peer(41013, 7, true);
        (void)p;
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_ESTABLISHED), 1);
        /* the peer reset and the RST never arrived: silence */
        advance(2990);
        expect_nothing();
        advance(20);
        struct oseg probe = expect_seg();
        assert_int_equal(probe.flags, TH_ACK);
        assert_false(closed_called);
        peer_send(&(struct iseg){.sport = p.port, .seq = probe.ack, .flags = TH_RST});
        assert_true(closed_called);
        assert_int_equal(closed_err, -ECONNRESET);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_ESTABLISHED), 0);
        expect_nothing();
}

/* The per-state gauges follow every transition, and the states add up to
 * the pool. */
static void test_state_counts_follow_each_transition(void **state)
{
        (void)state;
        uint32_t pool = config().conns_max;
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_FREE), pool);
        /* the peer closes first: CLOSE_WAIT, then LAST_ACK, then free */
        struct peer a = connect_peer(41014, 1, false);
        struct tcp_conn *ca = accepted_conn;
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_ESTABLISHED), 1);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_FREE), pool - 1);
        peer_send(&(struct iseg){
            .sport = a.port, .seq = a.snd_nxt, .ack = a.rcv_nxt, .flags = TH_ACK | TH_FIN});
        a.snd_nxt++;
        expect_seg();
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_CLOSE_WAIT), 1);
        tcp_conn_close(st, ca, now);
        struct oseg fin = expect_seg();
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_LAST_ACK), 1);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_CLOSE_WAIT), 0);
        peer_ack(&a, fin.seq + 1);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_LAST_ACK), 0);
        /* we close first: FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT, free */
        struct peer b = connect_peer(41015, 1, false);
        tcp_conn_close(st, accepted_conn, now);
        fin = expect_seg();
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_FIN_WAIT_1), 1);
        peer_ack(&b, fin.seq + 1);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_FIN_WAIT_2), 1);
        peer_send(&(struct iseg){
            .sport = b.port, .seq = b.snd_nxt, .ack = fin.seq + 1, .flags = TH_ACK | TH_FIN});
        expect_seg();
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_TIME_WAIT), 1);
        assert_int_equal(tcp_stack_conns_in_use(st), 1);
        advance(2100);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_TIME_WAIT), 0);
        /* a half-open one: SYN_RECEIVED until the handshake's ACK */
        peer_send(&(struct iseg){.sport = 41016, .seq = 5, .flags = TH_SYN});
        expect_seg();
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_SYN_RECEIVED), 1);
        uint32_t sum = 0;
        for (int k = 0; k < TCPS_COUNT; k++)
                sum += tcp_stack_conns_in_state(st, (enum tcp_state)k);
        assert_int_equal(sum, pool);
        assert_string_equal(tcp_state_name(TCPS_CLOSE_WAIT), "close_wait");
}

/* The timer wheel: idle connections whose only timer is hours away cost
 * one look per turn of the wheel (2.56 s), not one per 5 ms tick; the
 * full scan this replaced looked at each of them 2,000 times a second. */
static void test_idle_connections_cost_one_look_per_turn(void **state)
{
        (void)state;
        restart_with_keepalive(7200000);
        for (uint16_t i = 0; i < 6; i++)
                connect_peer((uint16_t)(42000 + i), 1, false);
        advance(10);
        uint64_t visits0 = tcp_stack_stats(st)->timer_visits;
        advance(10000);
        uint64_t visits = tcp_stack_stats(st)->timer_visits - visits0;
        /* 10 s is under 4 turns: at most 5 looks each */
        assert_true(visits <= 6 * 5);
        expect_nothing();
}

/* A deadline beyond one turn of the wheel (TIME_WAIT's 60 s) waits out
 * the turns in between and fires on time, neither early nor a turn late. */
static void test_timer_beyond_one_turn_fires_on_time(void **state)
{
        (void)state;
        teardown(NULL);
        struct tcp_stack_config cfg = config();
        cfg.time_wait_ms = 60000;
        assert_int_equal(setup_with(&cfg), 0);
        struct peer p = connect_peer(42010, 1, false);
        tcp_conn_close(st, accepted_conn, now);
        struct oseg fin = expect_seg();
        peer_send(&(struct iseg){
            .sport = p.port, .seq = p.snd_nxt, .ack = fin.seq + 1, .flags = TH_ACK | TH_FIN});
        expect_seg();
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_TIME_WAIT), 1);
        advance(59990);
        assert_int_equal(tcp_stack_conns_in_state(st, TCPS_TIME_WAIT), 1);
        advance(10);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
}

/* A connection filed for a far deadline (keepalive in 10 s) that then
 * needs an earlier one (the RTO of data sent now) is filed again: the
 * retransmission comes after 1 s, not when keepalive would have woken it. */
static void test_earlier_timer_moves_the_connection_forward(void **state)
{
        (void)state;
        restart_with_keepalive(10000);
        connect_peer(42020, 1, false);
        advance(3000);
        expect_nothing();
        tcp_conn_send(st, accepted_conn, "data", 4, now);
        struct oseg first = expect_seg();
        advance(995);
        expect_nothing();
        advance(10);
        struct oseg re = expect_seg();
        assert_int_equal(re.seq, first.seq);
        assert_int_equal(re.len, 4);
}

static void test_timestamps_echoed(void **state)
{
        (void)state;
        struct peer p = connect_peer(41013, 1, true);
        static const uint8_t ts_opt[] = {1, 1, 8, 10, 0, 0, 0, 42, 0, 0, 0, 0};
        peer_send(&(struct iseg){.sport = p.port,
                                 .seq = p.snd_nxt,
                                 .ack = p.rcv_nxt,
                                 .flags = TH_ACK | TH_PSH,
                                 .opts = ts_opt,
                                 .opts_len = sizeof(ts_opt),
                                 .data = "abc",
                                 .len = 3});
        p.snd_nxt += 3;
        tcp_conn_send(st, accepted_conn, "reply", 5, now);
        struct oseg d = expect_seg();
        assert_true(d.ts);
        assert_int_equal(d.tsecr, 42);
        assert_int_equal(d.ack, p.snd_nxt); /* the ACK rides on the data */
        assert_int_equal(d.len, 5);
        advance(100);
        expect_nothing(); /* no separate delayed ACK: it was piggybacked */
}

static void test_pool_limit(void **state)
{
        (void)state;
        teardown(NULL);
        struct tcp_stack_config cfg = config();
        cfg.conns_max = 2;
        cfg.syn_backlog_max = 2;
        assert_int_equal(setup_with(&cfg), 0);
        connect_peer(41014, 1, false);
        connect_peer(41015, 1, false);
        peer_send(&(struct iseg){.sport = 41016, .seq = 1, .flags = TH_SYN});
        expect_nothing();
        assert_int_equal(tcp_stack_stats(st)->conn_pool_dropped, 1);
}

static void test_bad_tcp_checksum_dropped(void **state)
{
        (void)state;
        uint8_t f[128];
        uint8_t *t = f + ETH_HDR_LEN + IP_HDR_LEN;
        memset(t, 0, TCP_HDR_LEN);
        wr16(t, 1234);
        wr16(t + 2, SERVER_PORT);
        t[12] = 5 << 4;
        t[13] = TH_SYN;
        wr16(t + 16, 0xbeef);
        uint32_t len = eth_ip_build(f, IP_PROTO_TCP, TCP_HDR_LEN, 0);
        tcp_stack_input(st, f, len, false, now);
        expect_nothing();
        assert_int_equal(tcp_stack_stats(st)->tcp_bad, 1);
        /* with the NIC's word that it checked, the same frame is a SYN */
        tcp_stack_input(st, f, len, true, now);
        assert_int_equal(expect_seg().flags, TH_SYN | TH_ACK);
}

/* The word-at-a-time checksum against the RFC 1071 example and the plain
 * big-endian 16-bit definition, for every length and alignment, chained
 * the way headers and payloads are summed. */
static uint32_t csum_reference(uint32_t sum, const uint8_t *p, size_t n)
{
        size_t i = 0;
        for (; i + 1 < n; i += 2)
                sum += (uint32_t)((p[i] << 8) | p[i + 1]);
        if (i < n)
                sum += (uint32_t)(p[i] << 8);
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return sum;
}

static void test_checksum_matches_definition(void **state)
{
        (void)state;
        static const uint8_t rfc1071[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
        uint32_t s = csum_add(0, rfc1071, sizeof(rfc1071));
        while (s >> 16)
                s = (s & 0xffff) + (s >> 16);
        assert_int_equal(s, 0xddf2);
        uint8_t buf[1600];
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i < sizeof(buf); i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                buf[i] = (uint8_t)(i % 7 == 0 ? 0xff : x); /* runs of 0xff carry */
        }
        for (size_t off = 0; off < 8; off++) {
                for (size_t n = 0; n + off <= 1540; n++) {
                        uint32_t seed = 0x1234 + (uint32_t)n;
                        assert_int_equal(csum_fold(csum_add(seed, buf + off, n)),
                                         csum_fold(csum_reference(seed, buf + off, n)));
                }
                /* an even-length header chained before a payload */
                uint32_t a = csum_add(csum_add(0, buf + off, 20), buf + off + 20, 1441);
                assert_int_equal(csum_fold(a), csum_fold(csum_reference(0, buf + off, 1461)));
        }
}

/* ---- next hop: the gateway ---- */

static void arp_from(uint16_t op, const uint8_t sha[6], uint32_t spa, uint32_t tpa)
{
        uint8_t f[60] = {0};
        memset(f, 0xff, 6);
        memcpy(f + 6, sha, 6);
        wr16(f + 12, ETH_TYPE_ARP);
        uint8_t *a = f + ETH_HDR_LEN;
        wr16(a, 1);
        wr16(a + 2, ETH_TYPE_IPV4);
        a[4] = 6;
        a[5] = 4;
        wr16(a + 6, op);
        memcpy(a + 8, sha, 6);
        wr32(a + 14, spa);
        wr32(a + 24, tpa);
        tcp_stack_input(st, f, sizeof(f), false, now);
}

/* The next frame must be a broadcast ARP request from us for ROUTER_IP. */
static void expect_gateway_request(void)
{
        struct out_frame *o = NULL;
        if (!next_out(&o))
                fail_msg("expected an ARP request for the gateway, the stack sent nothing");
        assert_memory_equal(o->data, "\xff\xff\xff\xff\xff\xff", 6);
        assert_int_equal(rd16(o->data + 12), ETH_TYPE_ARP);
        assert_int_equal(rd16(o->data + ETH_HDR_LEN + 6), 1);
        assert_memory_equal(o->data + ETH_HDR_LEN + 8, server_mac, 6);
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 14), SERVER_IP);
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 24), ROUTER_IP);
}

static int setup_gateway(void **state)
{
        (void)state;
        struct tcp_stack_config cfg = config();
        cfg.gateway = ROUTER_IP;
        return setup_with(&cfg);
}

static void offlink_syn(uint16_t port)
{
        peer_send(&(struct iseg){.sport = port,
                                 .seq = 5000,
                                 .flags = TH_SYN,
                                 .opts = syn_opts_mss,
                                 .opts_len = sizeof(syn_opts_mss)});
}

static void test_offlink_peer_without_gateway_dropped_and_counted(void **state)
{
        (void)state;
        peer_ip = OFFLINK_IP;
        peer_eth = router_mac;
        reply_eth = router_mac;
        offlink_syn(41000);
        expect_nothing();
        assert_int_equal(tcp_stack_stats(st)->ip_no_route, 1);
        assert_int_equal(tcp_stack_conns_in_use(st), 0);
        /* nor an echo request: no reply to the MAC it came from */
        uint8_t f[128];
        uint8_t *icmp = f + ETH_HDR_LEN + IP_HDR_LEN;
        memset(icmp, 0, 64);
        icmp[0] = 8;
        wr16(icmp + 2, csum_fold(csum_add(0, icmp, 64)));
        tcp_stack_input(st, f, eth_ip_build(f, IP_PROTO_ICMP, 64, 0), false, now);
        expect_nothing();
        assert_int_equal(tcp_stack_stats(st)->ip_no_route, 2);
        /* the link's own peers are still served */
        peer_ip = PEER_IP;
        peer_eth = peer_mac;
        reply_eth = peer_mac;
        connect_peer(41001, 100, false);
        assert_int_equal(tcp_stack_stats(st)->ip_no_route, 2);
}

static void test_gateway_must_be_inside_the_prefix(void **state)
{
        (void)state;
        struct tcp_stack_config cfg = config();
        cfg.gateway = 0x0a000101u; /* 10.0.1.1: outside 10.0.0.0/24 */
        assert_null(tcp_stack_create(&cfg));
        cfg.gateway = SERVER_IP; /* ourselves */
        assert_null(tcp_stack_create(&cfg));
        cfg.gateway = ROUTER_IP;
        struct tcp_stack *ok = tcp_stack_create(&cfg);
        assert_non_null(ok);
        tcp_stack_destroy(ok);
}

static void test_gateway_resolved_by_arp_then_offlink_served(void **state)
{
        (void)state;
        tcp_stack_announce(st, now);
        struct out_frame *o = NULL;
        assert_true(next_out(&o)); /* the gratuitous ARP */
        assert_int_equal(rd32(o->data + ETH_HDR_LEN + 24), SERVER_IP);
        expect_gateway_request();
        advance(900);
        expect_nothing();
        advance(200); /* no answer: asked again each second */
        expect_gateway_request();
        assert_int_equal(tcp_stack_stats(st)->arp_requests, 2);

        /* an off-link SYN before the gateway answered: the SYN-ACK is not
         * sent to any guessed MAC (not even the frame's source). The SYN
         * comes through another router (asymmetric routing), so a reply to
         * its source MAC would be the wrong next hop. */
        peer_ip = OFFLINK_IP;
        peer_eth = other_router_mac;
        reply_eth = router_mac;
        offlink_syn(42000);
        expect_nothing();
        assert_int_equal(tcp_stack_stats(st)->gw_unresolved, 1);

        arp_from(2, router_mac, ROUTER_IP, SERVER_IP);
        expect_nothing();
        uint8_t mac[6];
        assert_true(tcp_stack_neighbour(st, ROUTER_IP, mac));
        assert_memory_equal(mac, router_mac, 6);

        /* the SYN-ACK's retransmission now goes to the router's MAC
         * (expect_seg checks peer_eth), and no more ARP requests */
        for (int i = 0; i < 600 && out_read == out_count; i++)
                advance(5);
        struct oseg sa = expect_seg();
        assert_int_equal(sa.flags, TH_SYN | TH_ACK);
        assert_int_equal(sa.ack, 5001);
        peer_send(&(struct iseg){.sport = 42000, .seq = 5001, .ack = sa.seq + 1, .flags = TH_ACK});
        assert_non_null(accepted_conn);
        struct peer p = {.port = 42000, .snd_nxt = 5001, .rcv_nxt = sa.seq + 1};
        peer_data(&p, "PING\r\n", 6);
        assert_int_equal(received_len, 6);
        assert_int_equal(tcp_conn_send(st, accepted_conn, "PONG\r\n", 6, now), 6);
        struct oseg d = expect_seg();
        assert_int_equal(d.len, 6);
        assert_memory_equal(d.data, "PONG\r\n", 6);
        assert_int_equal(tcp_stack_stats(st)->arp_requests, 2);

        /* an on-link peer is still answered at its own MAC, not the router's */
        peer_ip = PEER_IP;
        peer_eth = peer_mac;
        reply_eth = peer_mac;
        connect_peer(42001, 700, false);
        assert_int_equal(tcp_stack_stats(st)->ip_no_route, 0);
}

/* The gateway's MAC lives outside the hashed table: an on-link neighbour
 * that lands in its slot must not cut every off-link peer off. */
static void test_gateway_survives_neighbour_churn(void **state)
{
        (void)state;
        arp_from(1, router_mac, ROUTER_IP, SERVER_IP); /* the router asks for us */
        out_read = out_count;                          /* our ARP reply */
        uint8_t mac[6] = {0x02, 0, 0, 0, 1, 0};
        for (uint32_t host = 1; host < 254; host++) {
                mac[5] = (uint8_t)host;
                arp_from(1, mac, 0x0a000000u | host, SERVER_IP);
        }
        out_read = out_count;
        uint8_t got[6];
        assert_true(tcp_stack_neighbour(st, ROUTER_IP, got));
        assert_memory_equal(got, router_mac, 6);
        peer_ip = OFFLINK_IP;
        peer_eth = router_mac;
        reply_eth = router_mac;
        offlink_syn(43000);
        struct oseg sa = expect_seg();
        assert_int_equal(sa.flags, TH_SYN | TH_ACK);
}

/* A worker that does not own ARP sends no requests and uses the MAC the
 * owner publishes. */
static void test_arp_passive_stack_takes_the_published_gateway(void **state)
{
        (void)state;
        struct tcp_stack_config cfg = config();
        cfg.gateway = ROUTER_IP;
        cfg.arp_passive = true;
        tcp_stack_destroy(st);
        assert_int_equal(setup_with(&cfg), 0);
        tcp_stack_announce(st, now);
        out_read = out_count; /* the gratuitous ARP */
        advance(3000);
        expect_nothing();
        assert_int_equal(tcp_stack_stats(st)->arp_requests, 0);
        peer_ip = OFFLINK_IP;
        peer_eth = router_mac;
        reply_eth = router_mac;
        offlink_syn(44000);
        expect_nothing();
        tcp_stack_neighbour_set(st, ROUTER_IP, router_mac);
        offlink_syn(44000);
        struct oseg sa = expect_seg();
        assert_int_equal(sa.flags, TH_SYN | TH_ACK);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
            T(test_seq_arithmetic_wraps),
            T(test_toeplitz_matches_the_rss_specification),
            T(test_flow_owner_is_the_rss_queue),
            T(test_checksum_matches_definition),
            T(test_arp_reply_and_announce),
            T(test_icmp_echo),
            T(test_ip_fragments_and_bad_headers_dropped),
            T(test_handshake_negotiates_options),
            T(test_window_scale_for_large_buffers),
            T(test_refused_accept_resets),
            T(test_data_both_ways),
            T(test_sendv_fills_mss_sized_segments),
            T(test_frames_built_in_the_driver_buffer),
            T(test_sequence_wrap_around),
            T(test_out_of_order_reassembly),
            T(test_receive_window_limits_and_reopens),
            T(test_retransmit_with_backoff),
            T(test_retransmissions_exhausted_drop_the_connection),
            T(test_fast_retransmit_on_three_duplicate_acks),
            T(test_peer_closes_first),
            T(test_we_close_first_then_time_wait),
            T(test_reset_handling),
            T(test_abort_sends_reset),
            T(test_syn_flood_answered_with_cookies),
            T(test_keepalive_probes_then_drop),
            T(test_keepalive_probe_answered_by_reset_frees),
            T(test_state_counts_follow_each_transition),
            T(test_idle_connections_cost_one_look_per_turn),
            T(test_timer_beyond_one_turn_fires_on_time),
            T(test_earlier_timer_moves_the_connection_forward),
            T(test_timestamps_echoed),
            T(test_pool_limit),
            T(test_bad_tcp_checksum_dropped),
            T(test_offlink_peer_without_gateway_dropped_and_counted),
            T(test_gateway_must_be_inside_the_prefix),
            cmocka_unit_test_setup_teardown(test_gateway_resolved_by_arp_then_offlink_served,
                                            setup_gateway, teardown),
            cmocka_unit_test_setup_teardown(test_gateway_survives_neighbour_churn, setup_gateway,
                                            teardown),
            T(test_arp_passive_stack_takes_the_published_gateway),
        };
        return cmocka_run_group_tests_name("tcp", tests, NULL, NULL);
}
