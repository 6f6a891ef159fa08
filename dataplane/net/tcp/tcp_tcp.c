/* TCP for a server (RFC 9293 with RFC 7323 options, RFC 6298 timers,
 * RFC 5681/6582 congestion control, RFC 5961 challenge ACKs): passive open
 * with a bounded SYN queue, in-order delivery plus out-of-order ranges held
 * in the receive ring, delayed ACKs, retransmission with exponential
 * backoff, fast retransmit and NewReno recovery, keepalive, FIN/RST and
 * TIME_WAIT. Sequence numbers compare modulo 2^32 everywhere (seq_lt...).
 *
 * Both rings are indexed by sequence number (byte q lives at q & mask), so
 * wrap-around of the sequence space and of the ring are the same thing. */
#include <errno.h>

#include "tcp_internal.h"

#define OPT_EOL     0
#define OPT_NOP     1
#define OPT_MSS     2
#define OPT_WS      3
#define OPT_SACK_OK 4
#define OPT_TS      8
#define WSCALE_MAX  14
#define MSS_DEFAULT 536 /* RFC 9293: when the peer sends no MSS option */

struct seg_opts {
        uint16_t mss;
        int wscale; /* -1: absent */
        bool sack_ok, ts;
        uint32_t tsval, tsecr;
};

struct seg {
        uint32_t seq, ack;
        uint16_t sport, dport, wnd;
        uint8_t flags;
        const uint8_t *data;
        uint32_t len;
        struct seg_opts opt;
};

static uint32_t mask_of(const struct tcp_stack *s)
{
        return s->cfg.buf_bytes - 1;
}

static uint64_t mix64(uint64_t x)
{
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return x;
}

static uint32_t tuple_hash(const struct tcp_stack *s, uint32_t rip, uint16_t rport, uint16_t lport)
{
        uint64_t k = ((uint64_t)rip << 32) | ((uint32_t)rport << 16) | lport;
        return (uint32_t)mix64(k ^ s->cfg.isn_secret);
}

/* RFC 6528: a keyed hash of the 4-tuple plus a clock ticking every 4 us. */
static uint32_t isn_make(const struct tcp_stack *s, uint32_t rip, uint16_t rport, uint16_t lport,
                         uint64_t now_ms)
{
        uint64_t k = ((uint64_t)rip << 32) | ((uint32_t)rport << 16) | lport;
        return (uint32_t)mix64(k ^ mix64(s->cfg.isn_secret + 1)) + (uint32_t)(now_ms * 250);
}

/* ---- the timer wheel ----
 * A connection with any timer running is filed in one slot of a hashed
 * wheel, by the tick of its earliest deadline (rounded up, so it never
 * fires early); each tick expires one slot. A deadline beyond one turn
 * (keepalive, TIME_WAIT) waits in its slot for the turns in between, so an
 * idle connection costs one look per turn, not one per tick. */

static void wheel_unlink(struct tcp_stack *s, struct tcp_conn *c)
{
        if (!c->wheel_slot)
                return;
        if (c->wheel_prev)
                s->conns[c->wheel_prev - 1].wheel_next = c->wheel_next;
        else
                s->wheel[c->wheel_slot - 1] = c->wheel_next;
        if (c->wheel_next)
                s->conns[c->wheel_next - 1].wheel_prev = c->wheel_prev;
        c->wheel_slot = c->wheel_next = c->wheel_prev = 0;
}

static void wheel_link(struct tcp_stack *s, struct tcp_conn *c, uint32_t slot)
{
        c->wheel_slot = slot + 1;
        c->wheel_prev = 0;
        c->wheel_next = s->wheel[slot];
        if (c->wheel_next)
                s->conns[c->wheel_next - 1].wheel_prev = c->idx + 1;
        s->wheel[slot] = c->idx + 1;
}

static void wheel_file(struct tcp_stack *s, struct tcp_conn *c, uint64_t at)
{
        uint64_t tick = (at + TCP_TICK_MS - 1) / TCP_TICK_MS;
        if (tick <= s->wheel_tick)
                tick = s->wheel_tick + 1; /* that slot is done (or being done) */
        wheel_unlink(s, c);
        c->wheel_at = at;
        wheel_link(s, c, (uint32_t)(tick & (WHEEL_SLOTS - 1)));
}

/* Sets one of c's timers (0: off). Only a deadline earlier than the one c
 * is filed under moves it; a later one is found when c wakes. */
static void timer_arm(struct tcp_stack *s, struct tcp_conn *c, uint64_t *timer, uint64_t at)
{
        *timer = at;
        if (at && (!c->wheel_slot || at < c->wheel_at))
                wheel_file(s, c, at);
}

static uint64_t timer_next(const struct tcp_conn *c)
{
        uint64_t next = 0;
        const uint64_t t[4] = {c->tw_at, c->delack_at, c->rto_at, c->keepalive_at};
        for (int i = 0; i < 4; i++)
                if (t[i] && (!next || t[i] < next))
                        next = t[i];
        return next;
}

/* ---- the connection table ---- */

static struct tcp_conn *conn_lookup(struct tcp_stack *s, uint32_t rip, uint16_t rport,
                                    uint16_t lport)
{
        uint32_t h = tuple_hash(s, rip, rport, lport);
        for (uint32_t i = s->hash_heads[h & s->hash_mask]; i; i = s->conns[i - 1].hash_next) {
                struct tcp_conn *c = &s->conns[i - 1];
                if (c->rip == rip && c->rport == rport && c->lport == lport)
                        return c;
        }
        return NULL;
}

static struct tcp_conn *conn_alloc(struct tcp_stack *s, uint32_t rip, uint16_t rport,
                                   uint16_t lport)
{
        if (s->free_count == 0)
                return NULL;
        struct tcp_conn *c = &s->conns[s->free_stack[--s->free_count]];
        uint32_t idx = c->idx;
        uint8_t *rx = c->rx_buf, *tx = c->tx_buf;
        memset(c, 0, sizeof(*c));
        c->idx = idx;
        c->rx_buf = rx;
        c->tx_buf = tx;
        c->rip = rip;
        c->rport = rport;
        c->lport = lport;
        c->hash = tuple_hash(s, rip, rport, lport);
        uint32_t *head = &s->hash_heads[c->hash & s->hash_mask];
        c->hash_next = *head;
        *head = idx + 1;
        return c;
}

static void conn_free(struct tcp_stack *s, struct tcp_conn *c)
{
        uint32_t *link = &s->hash_heads[c->hash & s->hash_mask];
        while (*link && *link != c->idx + 1)
                link = &s->conns[*link - 1].hash_next;
        if (*link)
                *link = c->hash_next;
        wheel_unlink(s, c);
        if (c->state == TCPS_SYN_RECEIVED)
                s->syn_received--;
        conn_state_set(s, c, TCPS_FREE);
        c->attached = false;
        c->user = NULL;
        s->free_stack[s->free_count++] = c->idx;
}

/* ---- options ---- */

static bool opts_parse(const uint8_t *p, uint32_t n, struct seg_opts *o)
{
        o->mss = 0;
        o->wscale = -1;
        o->sack_ok = o->ts = false;
        uint32_t i = 0;
        while (i < n) {
                uint8_t kind = p[i];
                if (kind == OPT_EOL)
                        break;
                if (kind == OPT_NOP) {
                        i++;
                        continue;
                }
                if (i + 1 >= n || p[i + 1] < 2 || i + p[i + 1] > n)
                        return false;
                uint8_t len = p[i + 1];
                if (kind == OPT_MSS && len == 4)
                        o->mss = rd16(p + i + 2);
                else if (kind == OPT_WS && len == 3)
                        o->wscale = p[i + 2] > WSCALE_MAX ? WSCALE_MAX : p[i + 2];
                else if (kind == OPT_SACK_OK && len == 2)
                        o->sack_ok = true;
                else if (kind == OPT_TS && len == 10) {
                        o->ts = true;
                        o->tsval = rd32(p + i + 2);
                        o->tsecr = rd32(p + i + 6);
                }
                i += len;
        }
        return true;
}

/* ---- output ---- */

static uint32_t rcv_wnd(const struct tcp_stack *s, const struct tcp_conn *c)
{
        return c->rx_read + s->cfg.buf_bytes - c->rcv_nxt;
}

/* Builds and sends one segment of c. Data comes from the send ring at
 * sequence seq. Every segment but a RST carries our ACK, so a pending
 * delayed ACK is settled here. */
static void seg_emit(struct tcp_stack *s, struct tcp_conn *c, uint32_t seq, uint8_t flags,
                     uint32_t n, uint64_t now_ms)
{
        uint8_t *t = ip_l4_area(s);
        uint32_t ol = 0;
        uint8_t *o = t + TCP_HDR_LEN;
        if (flags & TH_SYN) {
                o[ol++] = OPT_MSS;
                o[ol++] = 4;
                wr16(o + ol, s->mss_local);
                ol += 2;
                if (c->rcv_wscale || c->snd_wscale) {
                        o[ol++] = OPT_NOP;
                        o[ol++] = OPT_WS;
                        o[ol++] = 3;
                        o[ol++] = c->rcv_wscale;
                }
                if (c->sack_ok) {
                        o[ol++] = OPT_NOP;
                        o[ol++] = OPT_NOP;
                        o[ol++] = OPT_SACK_OK;
                        o[ol++] = 2;
                }
        }
        if (c->ts_ok && !(flags & TH_RST)) {
                o[ol++] = OPT_NOP;
                o[ol++] = OPT_NOP;
                o[ol++] = OPT_TS;
                o[ol++] = 10;
                wr32(o + ol, (uint32_t)now_ms);
                wr32(o + ol + 4, c->ts_recent);
                ol += 8;
        }
        uint32_t wnd = rcv_wnd(s, c);
        uint32_t field = (flags & TH_SYN) ? wnd : wnd >> c->rcv_wscale;
        if (field > 0xffff)
                field = 0xffff;
        wr16(t, c->lport);
        wr16(t + 2, c->rport);
        wr32(t + 4, seq);
        wr32(t + 8, (flags & TH_RST) ? 0 : c->rcv_nxt);
        t[12] = (uint8_t)(((TCP_HDR_LEN + ol) / 4) << 4);
        t[13] = (uint8_t)(flags | ((flags & TH_RST) ? 0 : TH_ACK));
        wr16(t + 14, (uint16_t)field);
        wr16(t + 16, 0);
        wr16(t + 18, 0);
        uint8_t *d = o + ol;
        uint32_t mask = mask_of(s);
        for (uint32_t done = 0; done < n;) {
                uint32_t off = (seq + done) & mask;
                uint32_t chunk = n - done;
                if (chunk > s->cfg.buf_bytes - off)
                        chunk = s->cfg.buf_bytes - off;
                memcpy(d + done, c->tx_buf + off, chunk);
                done += chunk;
        }
        uint32_t len = TCP_HDR_LEN + ol + n;
        uint32_t sum = csum_pseudo(s->cfg.ip, c->rip, IP_PROTO_TCP, (uint16_t)len);
        if (s->cfg.tx_csum_offload)
                wr16(t + 16, (uint16_t)~csum_fold(sum));
        else
                wr16(t + 16, csum_fold(csum_add(sum, t, len)));
        if (!(flags & TH_RST)) {
                uint32_t edge = c->rcv_nxt + (field << ((flags & TH_SYN) ? 0 : c->rcv_wscale));
                if (seq_gt(edge, c->rcv_adv))
                        c->rcv_adv = edge;
                c->delack_at = 0;
                c->segs_unacked = 0;
        }
        if (flags & TH_RST)
                s->stats.rst_sent++;
        ip_output(s, c->rmac, c->rip, IP_PROTO_TCP, t, len);
}

static void ack_send(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms)
{
        seg_emit(s, c, c->snd_nxt, 0, 0, now_ms);
}

/* RST for a segment that has no connection (RFC 9293 3.10.7.1). */
static void rst_reply(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip,
                      const struct seg *g)
{
        uint8_t *t = ip_l4_area(s);
        uint32_t seq = 0, ack = 0;
        uint8_t flags = TH_RST;
        if (g->flags & TH_ACK) {
                seq = g->ack;
        } else {
                ack =
                    g->seq + g->len + ((g->flags & TH_SYN) ? 1 : 0) + ((g->flags & TH_FIN) ? 1 : 0);
                flags |= TH_ACK;
        }
        memset(t, 0, TCP_HDR_LEN);
        wr16(t, g->dport);
        wr16(t + 2, g->sport);
        wr32(t + 4, seq);
        wr32(t + 8, ack);
        t[12] = (TCP_HDR_LEN / 4) << 4;
        t[13] = flags;
        uint32_t sum = csum_pseudo(s->cfg.ip, src_ip, IP_PROTO_TCP, TCP_HDR_LEN);
        if (s->cfg.tx_csum_offload)
                wr16(t + 16, (uint16_t)~csum_fold(sum));
        else
                wr16(t + 16, csum_fold(csum_add(sum, t, TCP_HDR_LEN)));
        s->stats.rst_sent++;
        ip_output(s, eth_src, src_ip, IP_PROTO_TCP, t, TCP_HDR_LEN);
}

static bool state_sends(enum tcp_state st)
{
        return st == TCPS_ESTABLISHED || st == TCPS_CLOSE_WAIT || st == TCPS_FIN_WAIT_1 ||
               st == TCPS_CLOSING || st == TCPS_LAST_ACK;
}

/* Sends what the send and congestion windows allow. probe: send one byte
 * (or the FIN) even into a zero window, as the persist timer must. */
static void tcp_output(struct tcp_stack *s, struct tcp_conn *c, bool probe, uint64_t now_ms)
{
        if (!state_sends(c->state))
                return;
        for (;;) {
                uint32_t flight = c->snd_nxt - c->snd_una;
                uint32_t unsent = c->tx_len > flight ? c->tx_len - flight : 0;
                uint32_t wnd = c->snd_wnd < c->cwnd ? c->snd_wnd : c->cwnd;
                uint32_t room = wnd > flight ? wnd - flight : 0;
                if (probe && room == 0)
                        room = 1;
                uint32_t n = unsent < room ? unsent : room;
                if (n > c->snd_mss)
                        n = c->snd_mss;
                bool fin = c->fin_queued && c->snd_nxt + n == c->fin_seqno;
                if (n == 0 && !fin)
                        break;
                probe = false;
                uint8_t flags = (uint8_t)((fin ? TH_FIN : 0) | (n ? TH_PSH : 0));
                if (c->snd_nxt != c->snd_max)
                        s->stats.retransmits++;
                else if (!c->rtt_timing && !c->ts_ok) {
                        c->rtt_timing = true;
                        c->rtt_seq = c->snd_nxt;
                        c->rtt_start_ms = now_ms;
                }
                seg_emit(s, c, c->snd_nxt, flags, n, now_ms);
                c->snd_nxt += n + (fin ? 1 : 0);
                if (fin)
                        c->fin_sent = true;
                if (seq_gt(c->snd_nxt, c->snd_max))
                        c->snd_max = c->snd_nxt;
                if (!c->rto_at)
                        timer_arm(s, c, &c->rto_at, now_ms + c->rto_ms);
                if (fin)
                        break;
        }
        /* Data waits on a zero window with nothing in flight: the RTO timer
         * doubles as the persist timer and probes the window. */
        if (!c->rto_at && c->tx_len > c->snd_nxt - c->snd_una)
                timer_arm(s, c, &c->rto_at, now_ms + c->rto_ms);
}

/* ---- state changes ---- */

static void time_wait_enter(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms)
{
        conn_state_set(s, c, TCPS_TIME_WAIT);
        c->rto_at = c->keepalive_at = 0;
        timer_arm(s, c, &c->tw_at, now_ms + s->cfg.time_wait_ms);
}

/* The stack gives up on c: tell an attached user, reset the peer, free. */
static void conn_drop(struct tcp_stack *s, struct tcp_conn *c, int err, bool send_rst,
                      uint64_t now_ms)
{
        if (send_rst)
                seg_emit(s, c, c->snd_nxt, TH_RST, 0, now_ms);
        bool attached = c->attached;
        c->attached = false;
        if (attached && s->cfg.closed)
                s->cfg.closed(s->cfg.user, c, err);
        conn_free(s, c);
}

static void rtt_sample(struct tcp_stack *s, struct tcp_conn *c, uint32_t rtt_ms)
{
        if (rtt_ms == 0)
                rtt_ms = 1;
        if (c->srtt_ms8 == 0) {
                c->srtt_ms8 = rtt_ms << 3;
                c->rttvar_ms4 = rtt_ms << 1;
        } else {
                int32_t delta = (int32_t)rtt_ms - (int32_t)(c->srtt_ms8 >> 3);
                c->srtt_ms8 = (uint32_t)((int32_t)c->srtt_ms8 + delta);
                if (delta < 0)
                        delta = -delta;
                c->rttvar_ms4 =
                    (uint32_t)((int32_t)c->rttvar_ms4 + (delta - (int32_t)(c->rttvar_ms4 >> 2)));
        }
        uint32_t rto = (c->srtt_ms8 >> 3) + c->rttvar_ms4;
        if (rto < s->cfg.rto_min_ms)
                rto = s->cfg.rto_min_ms;
        if (rto > s->cfg.rto_max_ms)
                rto = s->cfg.rto_max_ms;
        c->rto_ms = rto;
}

/* ---- SYN cookies ----
 * With the SYN queue full (a flood), a SYN is answered statelessly: our
 * initial sequence number encodes a keyed hash of the 4-tuple and the
 * client's ISN, a 5-bit clock (65 s periods) and the MSS as an index. The
 * ACK that completes the handshake proves the client saw it; only then is
 * a connection allocated. A cookie SYN-ACK offers no window scaling,
 * timestamps or SACK: nothing else would survive without state. */
static const uint16_t cookie_mss[8] = {536, 1200, 1360, 1400, 1440, 1452, 1460, 8960};

static uint32_t cookie_hash(const struct tcp_stack *s, uint32_t rip, uint16_t rport, uint16_t lport,
                            uint32_t irs, uint32_t period)
{
        uint64_t k = ((uint64_t)rip << 32) | ((uint32_t)rport << 16) | lport;
        return (uint32_t)mix64(k ^ mix64(s->cfg.isn_secret + 2 + period) ^ ((uint64_t)irs << 17));
}

static uint32_t cookie_period(uint64_t now_ms)
{
        return (uint32_t)(now_ms >> 16) & 0x1f;
}

static uint32_t cookie_make(const struct tcp_stack *s, uint32_t rip, const struct seg *g,
                            uint64_t now_ms)
{
        uint32_t mss = g->opt.mss ? g->opt.mss : MSS_DEFAULT;
        uint32_t mi = 0;
        while (mi + 1 < 8 && cookie_mss[mi + 1] <= mss)
                mi++;
        uint32_t t = cookie_period(now_ms);
        return (cookie_hash(s, rip, g->sport, g->dport, g->seq, t) & ~0xffu) | (t << 3) | mi;
}

/* The MSS the cookie in g's ACK carries, or 0 when it is not ours (or
 * older than one period). */
static uint32_t cookie_check(const struct tcp_stack *s, uint32_t rip, const struct seg *g,
                             uint64_t now_ms)
{
        uint32_t c = g->ack - 1, irs = g->seq - 1;
        uint32_t t = (c >> 3) & 0x1f;
        if (((cookie_period(now_ms) - t) & 0x1f) > 1)
                return 0;
        if ((cookie_hash(s, rip, g->sport, g->dport, irs, t) & ~0xffu) != (c & ~0xffu))
                return 0;
        return cookie_mss[c & 7];
}

static void cookie_send(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip,
                        const struct seg *g, uint64_t now_ms)
{
        struct tcp_conn tmp;
        memset(&tmp, 0, sizeof(tmp));
        tmp.rip = src_ip;
        tmp.rport = g->sport;
        tmp.lport = g->dport;
        memcpy(tmp.rmac, eth_src, 6);
        tmp.rcv_nxt = tmp.rx_read = g->seq + 1; /* a full window, unscaled */
        seg_emit(s, &tmp, cookie_make(s, src_ip, g, now_ms), TH_SYN, 0, now_ms);
        s->stats.syn_cookies_sent++;
}

static void syn_input(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip,
                      const struct seg *g, uint64_t now_ms)
{
        if (s->syn_received >= s->cfg.syn_backlog_max) {
                /* a flood fills the SYN queue, never the pool */
                cookie_send(s, eth_src, src_ip, g, now_ms);
                return;
        }
        struct tcp_conn *c = conn_alloc(s, src_ip, g->sport, g->dport);
        if (!c) {
                s->stats.conn_pool_dropped++; /* the client retries its SYN */
                return;
        }
        s->syn_received++;
        conn_state_set(s, c, TCPS_SYN_RECEIVED);
        memcpy(c->rmac, eth_src, 6);
        c->irs = g->seq;
        c->rcv_nxt = g->seq + 1;
        c->rx_read = c->rcv_nxt;
        c->rcv_adv = c->rcv_nxt;
        c->iss = isn_make(s, src_ip, g->sport, g->dport, now_ms);
        c->snd_una = c->snd_nxt = c->snd_max = c->iss;
        c->ts_ok = g->opt.ts;
        c->ts_recent = g->opt.tsval;
        c->sack_ok = g->opt.sack_ok; /* parsed and agreed; we send no SACK blocks yet */
        if (g->opt.wscale >= 0) {
                c->snd_wscale = (uint8_t)g->opt.wscale;
                while (c->rcv_wscale < WSCALE_MAX && (s->cfg.buf_bytes >> c->rcv_wscale) > 0xffff)
                        c->rcv_wscale++;
        }
        uint32_t mss = g->opt.mss ? g->opt.mss : MSS_DEFAULT;
        if (mss > s->mss_local)
                mss = s->mss_local;
        if (c->ts_ok)
                mss -= 12;
        if (mss < 64)
                mss = 64; /* a peer announcing a tiny MSS cannot make us spin */
        c->snd_mss = (uint16_t)mss;
        c->snd_wnd = g->wnd; /* never scaled in a SYN */
        c->snd_wl1 = g->seq;
        c->snd_wl2 = c->iss;
        c->cwnd = 10 * mss; /* RFC 6928 */
        c->ssthresh = UINT32_MAX;
        c->rto_ms = s->cfg.rto_initial_ms;
        seg_emit(s, c, c->iss, TH_SYN, 0, now_ms);
        c->snd_nxt = c->snd_max = c->iss + 1;
        timer_arm(s, c, &c->rto_at, now_ms + c->rto_ms);
}

/* ---- receive ring ---- */

static void ooo_add(struct tcp_conn *c, uint32_t a, uint32_t b)
{
        /* merge with every range it touches, then insert sorted */
        for (int i = 0; i < c->ooo_count;) {
                struct tcp_ooo *r = &c->ooo[i];
                if (seq_leq(a, r->end) && seq_leq(r->start, b)) {
                        if (seq_lt(r->start, a))
                                a = r->start;
                        if (seq_gt(r->end, b))
                                b = r->end;
                        memmove(r, r + 1, (size_t)(c->ooo_count - i - 1) * sizeof(*r));
                        c->ooo_count--;
                        continue;
                }
                i++;
        }
        if (c->ooo_count == OOO_RANGES_MAX)
                return; /* the bytes stay unclaimed: the peer resends them */
        int pos = 0;
        while (pos < c->ooo_count && seq_lt(c->ooo[pos].start, a))
                pos++;
        memmove(&c->ooo[pos + 1], &c->ooo[pos], (size_t)(c->ooo_count - pos) * sizeof(c->ooo[0]));
        c->ooo[pos] = (struct tcp_ooo){a, b};
        c->ooo_count++;
}

static void ooo_advance(struct tcp_conn *c)
{
        while (c->ooo_count && seq_leq(c->ooo[0].start, c->rcv_nxt)) {
                if (seq_gt(c->ooo[0].end, c->rcv_nxt))
                        c->rcv_nxt = c->ooo[0].end;
                memmove(&c->ooo[0], &c->ooo[1], (size_t)(c->ooo_count - 1) * sizeof(c->ooo[0]));
                c->ooo_count--;
        }
}

static void rx_store(struct tcp_stack *s, struct tcp_conn *c, uint32_t seq, const uint8_t *p,
                     uint32_t n)
{
        uint32_t mask = mask_of(s);
        for (uint32_t done = 0; done < n;) {
                uint32_t off = (seq + done) & mask;
                uint32_t chunk = n - done;
                if (chunk > s->cfg.buf_bytes - off)
                        chunk = s->cfg.buf_bytes - off;
                memcpy(c->rx_buf + off, p + done, chunk);
                done += chunk;
        }
}

/* ---- input ---- */

static bool seq_acceptable(const struct tcp_stack *s, const struct tcp_conn *c, const struct seg *g)
{
        uint32_t wnd = rcv_wnd(s, c);
        uint32_t seglen = g->len + ((g->flags & TH_SYN) ? 1 : 0) + ((g->flags & TH_FIN) ? 1 : 0);
        uint32_t lo = c->rcv_nxt, hi = c->rcv_nxt + wnd;
        bool start_in = seq_leq(lo, g->seq) && seq_lt(g->seq, hi);
        if (seglen == 0)
                return wnd == 0 ? g->seq == lo : start_in;
        if (wnd == 0)
                return false;
        uint32_t last = g->seq + seglen - 1;
        return start_in || (seq_leq(lo, last) && seq_lt(last, hi));
}

static bool seg_parse(const uint8_t *t, uint32_t len, struct seg *g)
{
        if (len < TCP_HDR_LEN)
                return false;
        uint32_t off = (uint32_t)(t[12] >> 4) * 4;
        if (off < TCP_HDR_LEN || off > len)
                return false;
        g->sport = rd16(t);
        g->dport = rd16(t + 2);
        g->seq = rd32(t + 4);
        g->ack = rd32(t + 8);
        g->flags = t[13] & 0x3f;
        g->wnd = rd16(t + 14);
        g->data = t + off;
        g->len = len - off;
        return opts_parse(t + TCP_HDR_LEN, off - TCP_HDR_LEN, &g->opt);
}

static bool port_listening(const struct tcp_stack *s, uint16_t port)
{
        for (uint32_t i = 0; i < s->listen_count; i++)
                if (s->listen_ports[i] == port)
                        return true;
        return false;
}

/* A connection from a valid cookie: SYN_RECEIVED as if it had been
 * queued, so the handshake's ACK completes it on the usual path. */
static struct tcp_conn *cookie_conn(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip,
                                    const struct seg *g, uint32_t mss, uint64_t now_ms)
{
        struct tcp_conn *c = conn_alloc(s, src_ip, g->sport, g->dport);
        if (!c) {
                s->stats.conn_pool_dropped++;
                return NULL;
        }
        s->syn_received++; /* balanced by the establishment below */
        s->stats.syn_cookies_accepted++;
        conn_state_set(s, c, TCPS_SYN_RECEIVED);
        memcpy(c->rmac, eth_src, 6);
        c->irs = g->seq - 1;
        c->rcv_nxt = c->rx_read = g->seq;
        /* what the cookie SYN-ACK advertised: the ring, unscaled */
        c->rcv_adv = g->seq + (s->cfg.buf_bytes < 0xffff ? s->cfg.buf_bytes : 0xffff);
        c->iss = g->ack - 1;
        c->snd_una = c->iss;
        c->snd_nxt = c->snd_max = g->ack;
        if (mss > s->mss_local)
                mss = s->mss_local;
        c->snd_mss = (uint16_t)mss;
        c->cwnd = 10 * mss;
        c->ssthresh = UINT32_MAX;
        c->rto_ms = s->cfg.rto_initial_ms;
        (void)now_ms;
        return c;
}

/* The ACK field of a segment on a synchronized connection. Returns bytes
 * of data it acknowledged. */
static uint32_t ack_process(struct tcp_stack *s, struct tcp_conn *c, const struct seg *g,
                            uint64_t now_ms)
{
        uint32_t acked_data = 0;
        bool wnd_update =
            seq_lt(c->snd_wl1, g->seq) || (c->snd_wl1 == g->seq && seq_leq(c->snd_wl2, g->ack));
        uint32_t new_wnd = (uint32_t)g->wnd << c->snd_wscale;

        if (seq_gt(g->ack, c->snd_una)) {
                uint32_t acked = g->ack - c->snd_una;
                acked_data = acked < c->tx_len ? acked : c->tx_len;
                c->tx_len -= acked_data;
                c->snd_una = g->ack;
                if (seq_lt(c->snd_nxt, c->snd_una))
                        c->snd_nxt = c->snd_una;
                /* Karn: only timestamps or a segment never retransmitted
                 * give an RTT sample. */
                if (c->ts_ok && g->opt.ts && g->opt.tsecr)
                        rtt_sample(s, c, (uint32_t)now_ms - g->opt.tsecr);
                else if (c->rtt_timing && seq_gt(g->ack, c->rtt_seq)) {
                        rtt_sample(s, c, (uint32_t)(now_ms - c->rtt_start_ms));
                        c->rtt_timing = false;
                }
                c->retries = 0;
                uint32_t mss = c->snd_mss;
                if (c->in_recovery) {
                        if (seq_geq(g->ack, c->recover)) {
                                c->in_recovery = false;
                                c->cwnd = c->ssthresh;
                        } else {
                                /* NewReno partial ACK: the next hole is lost too */
                                uint32_t n = c->tx_len < mss ? c->tx_len : mss;
                                if (n) {
                                        seg_emit(s, c, c->snd_una, TH_PSH, n, now_ms);
                                        s->stats.retransmits++;
                                }
                                c->cwnd = c->cwnd > acked ? c->cwnd - acked + mss : mss;
                        }
                } else if (c->cwnd < c->ssthresh) {
                        c->cwnd += acked < mss ? acked : mss;
                } else {
                        c->cwnd += mss * mss / (c->cwnd ? c->cwnd : 1) + 1;
                }
                c->dupacks = 0;
                bool outstanding = c->snd_max != c->snd_una;
                timer_arm(s, c, &c->rto_at, outstanding ? now_ms + c->rto_ms : 0);
        } else if (g->ack == c->snd_una && g->len == 0 && !(g->flags & (TH_FIN | TH_SYN)) &&
                   new_wnd == c->snd_wnd && c->snd_max != c->snd_una) {
                if (++c->dupacks == 3) {
                        uint32_t flight = c->snd_max - c->snd_una;
                        uint32_t half = flight / 2;
                        c->ssthresh = half > 2u * c->snd_mss ? half : 2u * c->snd_mss;
                        c->cwnd = c->ssthresh + 3u * c->snd_mss;
                        c->recover = c->snd_max;
                        c->in_recovery = true;
                        uint32_t n = c->tx_len < c->snd_mss ? c->tx_len : c->snd_mss;
                        if (n) {
                                seg_emit(s, c, c->snd_una, TH_PSH, n, now_ms);
                                s->stats.fast_retransmits++;
                                s->stats.retransmits++;
                        }
                } else if (c->dupacks > 3) {
                        c->cwnd += c->snd_mss;
                }
        }
        if (wnd_update) {
                c->snd_wnd = new_wnd;
                c->snd_wl1 = g->seq;
                c->snd_wl2 = g->ack;
        }
        return acked_data;
}

void tcp_input(struct tcp_stack *s, const uint8_t *eth_src, uint32_t src_ip, uint32_t dst_ip,
               const uint8_t *t, uint32_t len, bool csum_ok, uint64_t now_ms)
{
        struct seg g;
        if (!seg_parse(t, len, &g) ||
            (!csum_ok &&
             csum_fold(csum_add(csum_pseudo(src_ip, dst_ip, IP_PROTO_TCP, (uint16_t)len), t,
                                len)) != 0)) {
                s->stats.tcp_bad++;
                return;
        }
        struct tcp_conn *c = conn_lookup(s, src_ip, g.sport, g.dport);

        if (c && c->state == TCPS_TIME_WAIT && (g.flags & (TH_SYN | TH_ACK)) == TH_SYN &&
            seq_gt(g.seq, c->rcv_nxt)) {
                conn_free(s, c); /* a new incarnation (RFC 9293 3.10.7.4) */
                c = NULL;
        }
        bool from_cookie = false;
        if (!c) {
                if (g.flags & TH_RST)
                        return;
                if ((g.flags & (TH_SYN | TH_ACK | TH_FIN)) == TH_SYN &&
                    port_listening(s, g.dport)) {
                        syn_input(s, eth_src, src_ip, &g, now_ms);
                        return;
                }
                uint32_t mss = (g.flags & (TH_SYN | TH_ACK)) == TH_ACK && port_listening(s, g.dport)
                                   ? cookie_check(s, src_ip, &g, now_ms)
                                   : 0;
                if (!mss) {
                        rst_reply(s, eth_src, src_ip, &g);
                        return;
                }
                c = cookie_conn(s, eth_src, src_ip, &g, mss, now_ms);
                if (!c)
                        return; /* no slot: the client's retransmission retries */
                from_cookie = true;
        }
        c->probes = 0;

        if (c->state == TCPS_SYN_RECEIVED && !from_cookie) {
                if (g.flags & TH_RST) {
                        if (g.seq == c->rcv_nxt)
                                conn_free(s, c); /* never attached: nobody to tell */
                        return;
                }
                if (g.flags & TH_SYN) {
                        /* the SYN again: our SYN-ACK was lost */
                        if ((g.flags & TH_ACK) == 0 && g.seq == c->irs)
                                seg_emit(s, c, c->iss, TH_SYN, 0, now_ms);
                        return;
                }
                if (!(g.flags & TH_ACK))
                        return;
                if (g.ack != c->iss + 1 || !seq_acceptable(s, c, &g)) {
                        rst_reply(s, eth_src, src_ip, &g);
                        return;
                }
        }
        if (c->state == TCPS_SYN_RECEIVED) {
                s->syn_received--;
                conn_state_set(s, c, TCPS_ESTABLISHED);
                c->snd_una = g.ack;
                c->snd_wnd = (uint32_t)g.wnd << c->snd_wscale;
                c->snd_wl1 = g.seq;
                c->snd_wl2 = g.ack;
                c->rto_at = 0;
                c->retries = 0;
                c->attached = true;
                s->stats.conns_accepted++;
                if (s->cfg.accepted && s->cfg.accepted(s->cfg.user, c) != 0) {
                        s->stats.conns_refused++;
                        c->attached = false;
                        seg_emit(s, c, c->snd_nxt, TH_RST, 0, now_ms);
                        conn_free(s, c);
                        return;
                }
                if (c->state == TCPS_FREE)
                        return; /* the user aborted it in the upcall */
        }

        if (!seq_acceptable(s, c, &g)) {
                s->stats.out_of_window++;
                if (!(g.flags & TH_RST))
                        ack_send(s, c, now_ms);
                return;
        }
        if (g.flags & TH_RST) {
                if (g.seq != c->rcv_nxt) {
                        ack_send(s, c, now_ms); /* RFC 5961 challenge ACK */
                        return;
                }
                s->stats.rst_received++;
                if (c->state == TCPS_TIME_WAIT) {
                        conn_free(s, c);
                        return;
                }
                conn_drop(s, c, -ECONNRESET, false, now_ms);
                return;
        }
        if (g.flags & TH_SYN) {
                ack_send(s, c, now_ms); /* RFC 5961 challenge ACK */
                return;
        }
        if (!(g.flags & TH_ACK))
                return;
        if (seq_gt(g.ack, c->snd_max)) {
                ack_send(s, c, now_ms);
                return;
        }
        uint32_t acked = ack_process(s, c, &g, now_ms);
        bool fin_acked = c->fin_sent && seq_gt(c->snd_una, c->fin_seqno);
        if (fin_acked) {
                if (c->state == TCPS_FIN_WAIT_1) {
                        conn_state_set(s, c, TCPS_FIN_WAIT_2);
                        /* the user is gone: a peer that never closes must
                         * not hold the slot forever (Linux: tcp_fin_timeout) */
                        timer_arm(s, c, &c->tw_at, now_ms + TCP_FIN_WAIT_2_MS);
                } else if (c->state == TCPS_CLOSING)
                        time_wait_enter(s, c, now_ms);
                else if (c->state == TCPS_LAST_ACK) {
                        conn_free(s, c);
                        return;
                }
        }
        if (c->ts_ok && g.opt.ts && seq_leq(g.seq, c->rcv_nxt))
                c->ts_recent = g.opt.tsval;

        bool ack_now = false, readable = false;
        bool receiving = c->state == TCPS_ESTABLISHED || c->state == TCPS_FIN_WAIT_1 ||
                         c->state == TCPS_FIN_WAIT_2;
        uint32_t seq = g.seq;
        const uint8_t *data = g.data;
        uint32_t n = g.len;
        bool fin = (g.flags & TH_FIN) != 0;
        if (n && receiving) {
                if (seq_lt(seq, c->rcv_nxt)) {
                        uint32_t skip = c->rcv_nxt - seq;
                        if (skip > n)
                                skip = n;
                        seq += skip;
                        data += skip;
                        n -= skip;
                }
                uint32_t right = c->rx_read + s->cfg.buf_bytes;
                if (n && seq_gt(seq + n, right)) {
                        n = seq_lt(seq, right) ? right - seq : 0;
                        fin = false; /* the FIN lies past what we keep */
                }
                if (n) {
                        rx_store(s, c, seq, data, n);
                        if (seq == c->rcv_nxt) {
                                c->rcv_nxt += n;
                                if (c->ooo_count) {
                                        ooo_advance(c);
                                        ack_now = true; /* a hole filled: tell the peer now */
                                }
                                readable = true;
                                c->segs_unacked++;
                        } else {
                                ooo_add(c, seq, seq + n);
                                s->stats.ooo_segments++;
                                ack_now = true; /* a duplicate ACK drives fast retransmit */
                                fin = false;
                        }
                } else {
                        ack_now = true; /* all duplicate: the peer missed our ACK */
                }
        } else if (g.len && !receiving) {
                ack_now = true;
                fin = false;
        }
        if (fin && seq + n == c->rcv_nxt && !c->fin_rcvd &&
            (receiving || c->state == TCPS_TIME_WAIT)) {
                c->rcv_nxt++;
                c->fin_rcvd = true;
                ack_now = true;
                readable = true;
                if (c->state == TCPS_ESTABLISHED)
                        conn_state_set(s, c, TCPS_CLOSE_WAIT);
                else if (c->state == TCPS_FIN_WAIT_1)
                        conn_state_set(s, c, TCPS_CLOSING);
                else if (c->state == TCPS_FIN_WAIT_2)
                        time_wait_enter(s, c, now_ms);
        } else if (fin && c->state == TCPS_TIME_WAIT) {
                ack_now = true; /* our last ACK was lost: resend, restart the wait */
                timer_arm(s, c, &c->tw_at, now_ms + s->cfg.time_wait_ms);
        }

        if (s->cfg.keepalive_idle_ms && c->attached)
                timer_arm(s, c, &c->keepalive_at, now_ms + s->cfg.keepalive_idle_ms);
        tcp_output(s, c, false, now_ms);
        if (c->segs_unacked >= 2)
                ack_now = true;
        if (ack_now)
                ack_send(s, c, now_ms);
        else if (c->segs_unacked && !c->delack_at)
                timer_arm(s, c, &c->delack_at, now_ms + s->cfg.delack_ms);

        if (!c->attached)
                return;
        if (acked && s->cfg.writable)
                s->cfg.writable(s->cfg.user, c);
        if (readable && c->state != TCPS_FREE && c->attached && s->cfg.readable)
                s->cfg.readable(s->cfg.user, c);
}

/* ---- timers ---- */

static void rto_expire(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms)
{
        s->stats.rto_expiries++;
        c->rto_at = 0;
        if (c->state == TCPS_SYN_RECEIVED) {
                if (++c->retries > TCP_SYNACK_TRIES) {
                        conn_free(s, c);
                        return;
                }
                c->rto_ms = c->rto_ms * 2 > s->cfg.rto_max_ms ? s->cfg.rto_max_ms : c->rto_ms * 2;
                seg_emit(s, c, c->iss, TH_SYN, 0, now_ms);
                s->stats.retransmits++;
                timer_arm(s, c, &c->rto_at, now_ms + c->rto_ms);
                return;
        }
        bool persist = c->snd_max == c->snd_una; /* nothing in flight: a window probe */
        if (!persist && ++c->retries > s->cfg.retries_max) {
                s->stats.timeouts++;
                conn_drop(s, c, -ETIMEDOUT, true, now_ms);
                return;
        }
        if (!persist) {
                uint32_t flight = c->snd_max - c->snd_una;
                uint32_t half = flight / 2;
                c->ssthresh = half > 2u * c->snd_mss ? half : 2u * c->snd_mss;
                c->cwnd = c->snd_mss;
                c->snd_nxt = c->snd_una; /* go back: resend from the first hole */
                c->in_recovery = false;
                c->dupacks = 0;
                c->rtt_timing = false;
        }
        c->rto_ms = c->rto_ms * 2 > s->cfg.rto_max_ms ? s->cfg.rto_max_ms : c->rto_ms * 2;
        tcp_output(s, c, true, now_ms);
        if (!c->rto_at && c->snd_max != c->snd_una)
                timer_arm(s, c, &c->rto_at, now_ms + c->rto_ms);
}

static void keepalive_expire(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms)
{
        if (c->probes >= s->cfg.keepalive_probes) {
                s->stats.timeouts++;
                conn_drop(s, c, -ETIMEDOUT, true, now_ms);
                return;
        }
        c->probes++;
        s->stats.keepalive_probes++;
        /* seq one below snd_una: out of the peer's window, so it must ACK */
        seg_emit(s, c, c->snd_una - 1, 0, 0, now_ms);
        timer_arm(s, c, &c->keepalive_at, now_ms + s->cfg.keepalive_interval_ms);
}

/* c's timers that are due; then c is filed again for its next one. */
static void conn_timers(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms)
{
        if (c->tw_at && now_ms >= c->tw_at) {
                conn_free(s, c);
                return;
        }
        if (c->delack_at && now_ms >= c->delack_at)
                ack_send(s, c, now_ms);
        if (c->rto_at && now_ms >= c->rto_at) {
                rto_expire(s, c, now_ms);
                if (c->state == TCPS_FREE)
                        return;
        }
        if (c->keepalive_at && now_ms >= c->keepalive_at) {
                if (c->state == TCPS_ESTABLISHED || c->state == TCPS_CLOSE_WAIT) {
                        keepalive_expire(s, c, now_ms);
                        if (c->state == TCPS_FREE)
                                return;
                } else {
                        c->keepalive_at = 0; /* closing: keepalive no longer applies */
                }
        }
        uint64_t next = timer_next(c);
        if (next)
                wheel_file(s, c, next);
        else
                wheel_unlink(s, c);
}

/* Expires one slot: its list moves to the spare head, then each entry is
 * taken off it in turn, so whatever the timers do to any connection
 * (free it, file it again, an upcall closing another) leaves the lists
 * whole. Entries due on a later turn go back to the slot. */
static void wheel_expire(struct tcp_stack *s, uint32_t slot, uint64_t now_ms)
{
        const uint32_t spare = WHEEL_SLOTS;
        s->wheel[spare] = s->wheel[slot];
        s->wheel[slot] = 0;
        for (uint32_t i = s->wheel[spare]; i; i = s->conns[i - 1].wheel_next)
                s->conns[i - 1].wheel_slot = spare + 1;
        while (s->wheel[spare]) {
                struct tcp_conn *c = &s->conns[s->wheel[spare] - 1];
                wheel_unlink(s, c);
                s->stats.timer_visits++;
                if (c->wheel_at > now_ms)
                        wheel_link(s, c, slot); /* a later turn */
                else
                        conn_timers(s, c, now_ms);
        }
}

void tcp_stack_timers(struct tcp_stack *s, uint64_t now_ms)
{
        neigh_timers(s, now_ms);
        uint64_t tick = now_ms / TCP_TICK_MS;
        if (tick <= s->wheel_tick)
                return;
        /* every tick since the last call; after a long gap, one turn
         * (each entry compares its own deadline) */
        uint64_t from = s->wheel_tick + 1;
        if (tick - s->wheel_tick > WHEEL_SLOTS)
                from = tick - WHEEL_SLOTS + 1;
        for (uint64_t t = from; t <= tick; t++) {
                s->wheel_tick = t;
                wheel_expire(s, (uint32_t)(t & (WHEEL_SLOTS - 1)), now_ms);
        }
}

/* ---- the user's calls ---- */

struct tcp_conn *tcp_stack_conn(struct tcp_stack *s, uint32_t index)
{
        if (index >= s->cfg.conns_max || s->conns[index].state == TCPS_FREE)
                return NULL;
        return &s->conns[index];
}

uint32_t tcp_conn_index(const struct tcp_conn *c)
{
        return c->idx;
}

void tcp_conn_user_set(struct tcp_conn *c, void *user)
{
        c->user = user;
}
void *tcp_conn_user(const struct tcp_conn *c)
{
        return c->user;
}
uint32_t tcp_conn_peer_ip(const struct tcp_conn *c)
{
        return c->rip;
}
uint16_t tcp_conn_peer_port(const struct tcp_conn *c)
{
        return c->rport;
}
uint16_t tcp_conn_local_port(const struct tcp_conn *c)
{
        return c->lport;
}

static uint32_t rx_data_end(const struct tcp_conn *c)
{
        return c->fin_rcvd ? c->rcv_nxt - 1 : c->rcv_nxt;
}

uint32_t tcp_conn_rx_peek(const struct tcp_conn *c, const uint8_t **p)
{
        uint32_t avail = rx_data_end(c) - c->rx_read;
        if (avail == 0)
                return 0;
        /* buf_bytes is not in the conn: the ring end is where tx_buf starts */
        uint32_t buf_bytes = (uint32_t)(c->tx_buf - c->rx_buf);
        uint32_t off = c->rx_read & (buf_bytes - 1);
        *p = c->rx_buf + off;
        return avail < buf_bytes - off ? avail : buf_bytes - off;
}

void tcp_conn_rx_consume(struct tcp_stack *s, struct tcp_conn *c, uint32_t n, uint64_t now_ms)
{
        uint32_t avail = rx_data_end(c) - c->rx_read;
        if (n > avail)
                n = avail;
        c->rx_read += n;
        /* Tell the peer when the window opened by a useful amount (no
         * silly window: at least two segments or half the ring). */
        uint32_t edge = c->rx_read + s->cfg.buf_bytes;
        uint32_t step =
            2u * s->mss_local < s->cfg.buf_bytes / 2 ? 2u * s->mss_local : s->cfg.buf_bytes / 2;
        if (c->state != TCPS_SYN_RECEIVED && !c->fin_rcvd && seq_geq(edge, c->rcv_adv + step))
                ack_send(s, c, now_ms);
}

bool tcp_conn_rx_eof(const struct tcp_conn *c)
{
        return c->fin_rcvd && c->rx_read == c->rcv_nxt - 1;
}

uint32_t tcp_conn_tx_room(const struct tcp_conn *c)
{
        if ((c->state != TCPS_ESTABLISHED && c->state != TCPS_CLOSE_WAIT) || c->fin_queued)
                return 0;
        uint32_t buf_bytes = (uint32_t)(c->tx_buf - c->rx_buf);
        return buf_bytes - c->tx_len;
}

uint32_t tcp_conn_tx_queued(const struct tcp_conn *c)
{
        return c->tx_len;
}

/* Appends up to n bytes to the send ring without transmitting. */
static uint32_t tx_append(struct tcp_stack *s, struct tcp_conn *c, const void *p, uint32_t n)
{
        uint32_t room = tcp_conn_tx_room(c);
        if (n > room)
                n = room;
        uint32_t mask = mask_of(s);
        const uint8_t *src = p;
        uint32_t seq = c->snd_una + c->tx_len;
        for (uint32_t done = 0; done < n;) {
                uint32_t off = (seq + done) & mask;
                uint32_t chunk = n - done;
                if (chunk > s->cfg.buf_bytes - off)
                        chunk = s->cfg.buf_bytes - off;
                memcpy(c->tx_buf + off, src + done, chunk);
                done += chunk;
        }
        c->tx_len += n;
        return n;
}

uint32_t tcp_conn_send(struct tcp_stack *s, struct tcp_conn *c, const void *p, uint32_t n,
                       uint64_t now_ms)
{
        n = tx_append(s, c, p, n);
        if (n)
                tcp_output(s, c, false, now_ms);
        return n;
}

uint32_t tcp_conn_sendv(struct tcp_stack *s, struct tcp_conn *c, const struct tcp_piece *pieces,
                        uint32_t count, uint64_t now_ms)
{
        uint32_t total = 0;
        for (uint32_t i = 0; i < count; i++) {
                uint32_t took = tx_append(s, c, pieces[i].p, pieces[i].n);
                total += took;
                if (took < pieces[i].n)
                        break;
        }
        if (total)
                tcp_output(s, c, false, now_ms);
        return total;
}

void tcp_conn_close(struct tcp_stack *s, struct tcp_conn *c, uint64_t now_ms)
{
        c->attached = false;
        c->user = NULL;
        c->keepalive_at = 0;
        if (c->fin_queued)
                return;
        c->fin_queued = true;
        c->fin_seqno = c->snd_una + c->tx_len; /* no byte is queued after this */
        if (c->state == TCPS_ESTABLISHED)
                conn_state_set(s, c, TCPS_FIN_WAIT_1);
        else if (c->state == TCPS_CLOSE_WAIT)
                conn_state_set(s, c, TCPS_LAST_ACK);
        tcp_output(s, c, false, now_ms);
}

void tcp_conn_abort(struct tcp_stack *s, struct tcp_conn *c)
{
        c->attached = false;
        seg_emit(s, c, c->snd_nxt, TH_RST, 0, 0);
        conn_free(s, c);
}
