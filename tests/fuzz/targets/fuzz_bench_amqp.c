/* Fuzzes sluice-bench's AMQP reader: what a broker (or anything listening on
 * the port it was pointed at) sends back goes through conn_parse, fed in two
 * reads split where the input says, with confirms, deliveries, manual acks
 * and a pending synchronous call all reachable. It must reject, never loop or
 * read out of bounds. */
#include "bench_amqp.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char rbuf[RBUF_BYTES], wbuf[WBUF_BYTES];
        static uint64_t sent_ns[INFLIGHT_RING];
        static struct bench_hist hist;
        static struct abench ab;
        static const struct bench_opts opts = {.size_bytes = 16};
        if (size < 3)
                return 0;
        memset(&ab, 0, sizeof(ab));
        memset(&hist, 0, sizeof(hist));
        ab.o = &opts;
        ab.mode = data[0] & 3;
        ab.frame_max = (data[0] & 4) ? 4096 : FRAME_MAX_BYTES;
        ab.hist = &hist;
        ab.sent_ns = sent_ns;
        ab.msg_bytes = 64;
        ab.pub_bytes = 1000 * ab.msg_bytes; /* tags 1..1000 were published */
        struct aconn *c = &ab.conns[1];
        c->fd = -1;
        c->role = ROLE_SUB;
        c->rbuf = rbuf;
        c->wbuf = wbuf;
        c->manual_ack = data[0] & 8;
        c->want = (data[0] & 16) ? CONNECTION_TUNE : 0;
        size_t split = data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
        if (split > size)
                split = size;
        int rc = 0;
        for (size_t off = 0; rc == 0 && off < size;) {
                size_t n = off == 0 ? split : size - off;
                if (off == 0 && n == 0)
                        n = size;
                /* what conn_read does before a read: make room, keep the rest */
                if (RBUF_BYTES - c->rlen < n && c->roff > 0) {
                        memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
                        c->rlen -= c->roff;
                        c->roff = 0;
                }
                if (n > RBUF_BYTES - c->rlen)
                        n = RBUF_BYTES - c->rlen;
                if (n == 0)
                        break;
                memcpy(c->rbuf + c->rlen, data + off, n);
                c->rlen += n;
                off += n;
                rc = conn_parse(&ab, c);
                c->woff = c->wlen = 0; /* acks "sent" */
        }
        return 0;
}
