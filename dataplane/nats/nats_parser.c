/* Byte-state machine over client->server NATS input, in the manner of
 * nats-server's server/parser.go: op names byte by byte, arguments as views
 * found with memchr, a fixed scratch area only for lines split across chunks,
 * payloads as views (fragments when they cross chunks). */
#include "nats_parser.h"

#include <string.h>

enum {
        ST_START = 0,
        ST_P,          /* after 'P': PUB, PING or PONG */
        ST_KW,         /* matching p->kw */
        ST_SEP,        /* one space/tab required after PUB/HPUB/SUB/UNSUB/-ERR */
        ST_SKIP,       /* spaces/tabs before the arguments */
        ST_ARG,        /* arguments up to LF */
        ST_EOL,        /* PING/PONG/+OK: only spaces, tabs, CR until LF */
        ST_PAYLOAD,    /* payload_left bytes of a split payload */
        ST_PAYLOAD_CR, /* CR after a split payload */
        ST_PAYLOAD_LF, /* LF after a split payload */
        ST_DEAD,       /* failed: p->err */
};

#define NATS_ARGS_MAX 5 /* one more than any op takes, to detect excess */

static const struct {
        int err;
        const char *text;
        bool closes;
} nats_errs[] = {
    {NATS_ERR_UNKNOWN_OP, "Unknown Protocol Operation", true},
    {NATS_ERR_MAX_CONTROL_LINE, "maximum control line exceeded", true},
    {NATS_ERR_MAX_PAYLOAD, "Maximum Payload Violation", true},
    {NATS_ERR_BAD_ARGS, "Parser Error", true},
    {NATS_ERR_BAD_SIZE, "Parser Error", true},
    {NATS_ERR_HDR_SIZE, "Parser Error", true},
    /* nats-server's parser jumps to parseErr when the CR LF is missing */
    {NATS_ERR_PAYLOAD_END, "Unknown Protocol Operation", true},
    {NATS_ERR_BAD_CONNECT, "Parser Error", true},
    {NATS_ERR_BAD_PROTOCOL, "invalid client protocol", true},
    {NATS_ERR_NO_RESPONDERS_HEADERS, "no responders requires headers support", true},
    {NATS_ERR_HEADERS_NOT_SUPPORTED, "Parser Error", true},
    {NATS_ERR_INVALID_SUBJECT, "Invalid Subject", false},
    {NATS_ERR_INVALID_PUB_SUBJECT, "Invalid Publish Subject", false},
    {NATS_ERR_AUTH_VIOLATION, "Authorization Violation", true},
    {NATS_ERR_AUTH_TIMEOUT, "Authentication Timeout", true},
    {NATS_ERR_STALE_CONNECTION, "Stale Connection", true},
    {NATS_ERR_SLOW_CONSUMER, "Slow Consumer", true},
    {NATS_ERR_MAX_CONNECTIONS, "maximum connections exceeded", true},
    {NATS_ERR_MAX_SUBSCRIPTIONS, "maximum subscriptions exceeded", false},
    {NATS_ERR_TLS_REQUIRED, "Secure Connection - TLS Required", true},
};

const char *nats_err_text(int err)
{
        for (size_t i = 0; i < SL_ARRAY_LEN(nats_errs); i++)
                if (nats_errs[i].err == err)
                        return nats_errs[i].text;
        return "Parser Error";
}

bool nats_err_closes(int err)
{
        for (size_t i = 0; i < SL_ARRAY_LEN(nats_errs); i++)
                if (nats_errs[i].err == err)
                        return nats_errs[i].closes;
        return true;
}

void nats_parser_config_default(struct nats_parser_config *cfg)
{
        cfg->max_control_line = NATS_CONTROL_LINE_DEFAULT;
        cfg->max_payload = NATS_PAYLOAD_DEFAULT;
}

void nats_parser_set_config(struct nats_parser *p, const struct nats_parser_config *cfg)
{
        SL_ASSERT(cfg->max_control_line > 0 && cfg->max_control_line <= NATS_CONTROL_LINE_MAX);
        p->cfg = *cfg;
}

void nats_parser_init(struct nats_parser *p, const struct nats_parser_config *cfg)
{
        memset(p, 0, offsetof(struct nats_parser, scratch));
        nats_parser_set_config(p, cfg);
        p->state = ST_START;
}

static inline bool is_ws(uint8_t b)
{
        return b == ' ' || b == '\t';
}

/* Splits on runs of spaces/tabs; returns the count, NATS_ARGS_MAX meaning
 * "too many". */
static int split_args(const uint8_t *a, size_t n, struct nats_view *out)
{
        int count = 0;
        size_t i = 0;
        while (i < n) {
                while (i < n && is_ws(a[i]))
                        i++;
                if (i == n)
                        break;
                size_t start = i;
                while (i < n && !is_ws(a[i]))
                        i++;
                if (count == NATS_ARGS_MAX)
                        return NATS_ARGS_MAX;
                out[count].ptr = a + start;
                out[count].len = i - start;
                count++;
        }
        return count;
}

/* Like nats-server's parseSize: 1..9 decimal digits, else -1 (so no
 * overflow is possible). */
static int64_t parse_size(struct nats_view v)
{
        if (v.len == 0 || v.len > NATS_SIZE_DIGITS_MAX)
                return -1;
        int64_t n = 0;
        for (size_t i = 0; i < v.len; i++) {
                uint8_t c = v.ptr[i];
                if (c < '0' || c > '9')
                        return -1;
                n = n * 10 + (c - '0');
        }
        return n;
}

static int fail(struct nats_parser *p, int err, size_t at, size_t *consumed)
{
        p->state = ST_DEAD;
        p->err = err;
        p->err_offset = p->offset + at;
        *consumed = at;
        return err;
}

static int emit(struct nats_parser *p, size_t used, size_t *consumed)
{
        p->offset += used;
        *consumed = used;
        return NATS_PARSE_OP;
}

static int pub_args(struct nats_parser *p, struct nats_op *op, struct nats_view *av, int argc)
{
        int64_t hdr = 0, total;
        if (op->type == NATS_OP_PUB) {
                if (argc != 2 && argc != 3)
                        return NATS_ERR_BAD_ARGS;
                total = parse_size(av[argc - 1]);
        } else {
                if (argc != 3 && argc != 4)
                        return NATS_ERR_BAD_ARGS;
                hdr = parse_size(av[argc - 2]);
                total = parse_size(av[argc - 1]);
                if (hdr < 0)
                        return NATS_ERR_BAD_SIZE;
        }
        if (total < 0)
                return NATS_ERR_BAD_SIZE;
        if (hdr > total)
                return NATS_ERR_HDR_SIZE;
        if (total > p->cfg.max_payload)
                return NATS_ERR_MAX_PAYLOAD;
        op->subject = av[0];
        /* reply present when the optional argument is */
        if ((op->type == NATS_OP_PUB && argc == 3) || (op->type == NATS_OP_HPUB && argc == 4))
                op->reply = av[1];
        op->hdr_len = (uint32_t)hdr;
        op->total_len = (uint32_t)total;
        return 0;
}

static int sub_args(struct nats_op *op, struct nats_view *av, int argc)
{
        if (op->type == NATS_OP_SUB) {
                if (argc != 2 && argc != 3)
                        return NATS_ERR_BAD_ARGS;
                op->subject = av[0];
                if (argc == 3)
                        op->queue = av[1];
                op->sid = av[argc - 1];
                return 0;
        }
        if (argc != 1 && argc != 2)
                return NATS_ERR_BAD_ARGS;
        op->sid = av[0];
        if (argc == 2) {
                op->max_msgs = parse_size(av[1]);
                if (op->max_msgs < 0)
                        return NATS_ERR_BAD_SIZE;
        }
        return 0;
}

/* Rebase a view from the chunk into the scratch copy of its line. */
static void rebase(struct nats_view *v, const uint8_t *from, const uint8_t *to)
{
        if (v->len)
                v->ptr = to + (v->ptr - from);
}

/*
 * A control line is complete: its args are a[0..n) (in buf or in scratch,
 * CR stripped), its LF at buf[lf]. Fill op; for PUB/HPUB also take the
 * payload (whole, or the first part of a split one).
 */
static int line_done(struct nats_parser *p, const uint8_t *buf, size_t len, size_t lf,
                     const uint8_t *a, size_t n, size_t *consumed, struct nats_op *op)
{
        struct nats_view av[NATS_ARGS_MAX];
        int argc, rc = 0;

        memset(op, 0, sizeof(*op));
        op->type = (enum nats_op_type)p->op;
        op->arg.ptr = a;
        op->arg.len = n;
        op->max_msgs = -1;
        p->state = ST_START;

        switch (op->type) {
        case NATS_OP_CONNECT:
        case NATS_OP_INFO:
        case NATS_OP_ERR:
                return emit(p, lf + 1, consumed);
        case NATS_OP_SUB:
        case NATS_OP_UNSUB:
                argc = split_args(a, n, av);
                rc = sub_args(op, av, argc);
                if (rc < 0)
                        return fail(p, rc, lf, consumed);
                return emit(p, lf + 1, consumed);
        case NATS_OP_PUB:
        case NATS_OP_HPUB:
                argc = split_args(a, n, av);
                rc = pub_args(p, op, av, argc);
                if (rc < 0)
                        return fail(p, rc, lf, consumed);
                break;
        default:
                SL_ASSERT(!"line_done: op without arguments");
        }

        size_t j = lf + 1, avail = len - j, size = op->total_len;
        if (sl_likely(avail >= size + 2)) {
                /* hot path: the whole message is in this chunk */
                if (buf[j + size] != '\r')
                        return fail(p, NATS_ERR_PAYLOAD_END, j + size, consumed);
                if (buf[j + size + 1] != '\n')
                        return fail(p, NATS_ERR_PAYLOAD_END, j + size + 1, consumed);
                op->payload.ptr = buf + j;
                op->payload.len = size;
                return emit(p, j + size + 2, consumed);
        }

        /* Split: keep the control line in scratch so subject/reply outlive
         * this chunk until the end fragment. */
        if (a != p->scratch) {
                SL_DASSERT(n <= sizeof(p->scratch));
                memcpy(p->scratch, a, n);
                rebase(&op->subject, a, p->scratch);
                rebase(&op->reply, a, p->scratch);
                op->arg.ptr = p->scratch;
        }
        size_t take = SL_MIN(avail, size);
        op->payload.ptr = buf + j;
        op->payload.len = take;
        op->partial = true;
        p->payload_left = (uint32_t)(size - take);
        p->state = p->payload_left ? ST_PAYLOAD : ST_PAYLOAD_CR;
        return emit(p, j + take, consumed);
}

/* ST_ARG: find the LF with memchr within what max_control_line allows; copy
 * to scratch only when the chunk ends first. */
static int scan_arg(struct nats_parser *p, const uint8_t *buf, size_t len, size_t i,
                    size_t *consumed, struct nats_op *op)
{
        size_t arg_max = (size_t)p->cfg.max_control_line + 1; /* + a trailing CR */
        size_t room = arg_max - p->scratch_len;
        size_t avail = len - i;
        size_t win = SL_MIN(avail, room + 1);
        const uint8_t *lfp = memchr(buf + i, '\n', win);

        if (!lfp) {
                if (avail > room)
                        return fail(p, NATS_ERR_MAX_CONTROL_LINE, i + room, consumed);
                SL_ASSERT(p->scratch_len + avail <= sizeof(p->scratch));
                memcpy(p->scratch + p->scratch_len, buf + i, avail);
                p->scratch_len += (uint32_t)avail;
                p->offset += len;
                *consumed = len;
                return NATS_PARSE_AGAIN;
        }

        size_t lf = (size_t)(lfp - buf);
        const uint8_t *a = buf + i;
        size_t n = lf - i;
        if (p->scratch_len) {
                SL_ASSERT(p->scratch_len + n <= sizeof(p->scratch));
                memcpy(p->scratch + p->scratch_len, buf + i, n);
                a = p->scratch;
                n += p->scratch_len;
                p->scratch_len = 0;
        }
        if (n && a[n - 1] == '\r')
                n--;
        if (n > p->cfg.max_control_line)
                return fail(p, NATS_ERR_MAX_CONTROL_LINE, lf, consumed);
        return line_done(p, buf, len, lf, a, n, consumed, op);
}

static void start_kw(struct nats_parser *p, const char *kw, size_t matched, uint8_t opt)
{
        p->kw = kw;
        p->kw_len = (uint8_t)matched;
        p->op = opt;
        p->state = ST_KW;
}

/* After the op name: what must follow it. */
static void kw_done(struct nats_parser *p)
{
        p->ws_len = 0;
        p->scratch_len = 0;
        switch (p->op) {
        case NATS_OP_CONNECT:
        case NATS_OP_INFO:
                p->state = ST_SKIP; /* nats-server needs no space here */
                break;
        case NATS_OP_PING:
        case NATS_OP_PONG:
        case NATS_OP_OK:
                p->state = ST_EOL;
                break;
        default:
                p->state = ST_SEP;
        }
}

static int payload_fragment(struct nats_parser *p, const uint8_t *buf, size_t len, size_t i,
                            size_t *consumed, struct nats_op *op)
{
        size_t avail = len - i, left = p->payload_left;
        size_t take = SL_MIN(avail, left);

        memset(op, 0, sizeof(*op));
        op->type = NATS_OP_PAYLOAD;
        op->max_msgs = -1;
        op->payload.ptr = buf + i;
        op->payload.len = take;
        if (take == left && avail >= take + 2) {
                if (buf[i + take] != '\r')
                        return fail(p, NATS_ERR_PAYLOAD_END, i + take, consumed);
                if (buf[i + take + 1] != '\n')
                        return fail(p, NATS_ERR_PAYLOAD_END, i + take + 1, consumed);
                op->end = true;
                p->payload_left = 0;
                p->state = ST_START;
                return emit(p, i + take + 2, consumed);
        }
        p->payload_left -= (uint32_t)take;
        if (!p->payload_left)
                p->state = ST_PAYLOAD_CR;
        return emit(p, i + take, consumed);
}

int nats_parse(struct nats_parser *p, const uint8_t *buf, size_t len, size_t *consumed,
               struct nats_op *op)
{
        size_t i;

        if (sl_unlikely(p->state == ST_DEAD)) {
                *consumed = 0;
                return p->err;
        }
        for (i = 0; i < len; i++) {
                uint8_t b = buf[i];
                switch (p->state) {
                case ST_START:
                        switch (b) {
                        case 'P':
                        case 'p':
                                p->state = ST_P;
                                break;
                        case 'C':
                        case 'c':
                                start_kw(p, "CONNECT", 1, NATS_OP_CONNECT);
                                break;
                        case 'S':
                        case 's':
                                start_kw(p, "SUB", 1, NATS_OP_SUB);
                                break;
                        case 'U':
                        case 'u':
                                start_kw(p, "UNSUB", 1, NATS_OP_UNSUB);
                                break;
                        case 'H':
                        case 'h':
                                start_kw(p, "HPUB", 1, NATS_OP_HPUB);
                                break;
                        case 'I':
                        case 'i':
                                start_kw(p, "INFO", 1, NATS_OP_INFO);
                                break;
                        case '+':
                                start_kw(p, "+OK", 1, NATS_OP_OK);
                                break;
                        case '-':
                                start_kw(p, "-ERR", 1, NATS_OP_ERR);
                                break;
                        default:
                                /* includes MSG/HMSG: server->client only */
                                return fail(p, NATS_ERR_UNKNOWN_OP, i, consumed);
                        }
                        break;
                case ST_P:
                        switch (b) {
                        case 'U':
                        case 'u':
                                start_kw(p, "PUB", 2, NATS_OP_PUB);
                                break;
                        case 'I':
                        case 'i':
                                start_kw(p, "PING", 2, NATS_OP_PING);
                                break;
                        case 'O':
                        case 'o':
                                start_kw(p, "PONG", 2, NATS_OP_PONG);
                                break;
                        default:
                                return fail(p, NATS_ERR_UNKNOWN_OP, i, consumed);
                        }
                        break;
                case ST_KW:
                        /* kw letters are upper case A-Z, so |0x20 folds case
                         * without matching non-letters */
                        if ((b | 0x20) != (p->kw[p->kw_len] | 0x20))
                                return fail(p, NATS_ERR_UNKNOWN_OP, i, consumed);
                        if (p->kw[++p->kw_len] == '\0')
                                kw_done(p);
                        break;
                case ST_SEP:
                        if (!is_ws(b))
                                return fail(p, NATS_ERR_UNKNOWN_OP, i, consumed);
                        p->state = ST_SKIP;
                        break;
                case ST_SKIP:
                        if (is_ws(b)) {
                                if (++p->ws_len > p->cfg.max_control_line)
                                        return fail(p, NATS_ERR_MAX_CONTROL_LINE, i, consumed);
                                break;
                        }
                        p->state = ST_ARG;
                        return scan_arg(p, buf, len, i, consumed, op);
                case ST_ARG:
                        return scan_arg(p, buf, len, i, consumed, op);
                case ST_EOL:
                        if (b == '\n') {
                                memset(op, 0, sizeof(*op));
                                op->type = (enum nats_op_type)p->op;
                                op->max_msgs = -1;
                                p->state = ST_START;
                                return emit(p, i + 1, consumed);
                        }
                        if (!is_ws(b) && b != '\r')
                                return fail(p, NATS_ERR_UNKNOWN_OP, i, consumed);
                        if (++p->ws_len > p->cfg.max_control_line)
                                return fail(p, NATS_ERR_MAX_CONTROL_LINE, i, consumed);
                        break;
                case ST_PAYLOAD:
                        return payload_fragment(p, buf, len, i, consumed, op);
                case ST_PAYLOAD_CR:
                        if (b != '\r')
                                return fail(p, NATS_ERR_PAYLOAD_END, i, consumed);
                        p->state = ST_PAYLOAD_LF;
                        break;
                case ST_PAYLOAD_LF:
                        if (b != '\n')
                                return fail(p, NATS_ERR_PAYLOAD_END, i, consumed);
                        memset(op, 0, sizeof(*op));
                        op->type = NATS_OP_PAYLOAD;
                        op->max_msgs = -1;
                        op->payload.ptr = buf + i + 1;
                        op->end = true;
                        p->state = ST_START;
                        return emit(p, i + 1, consumed);
                default:
                        SL_ASSERT(!"nats_parse: bad state");
                }
        }
        p->offset += len;
        *consumed = len;
        return NATS_PARSE_AGAIN;
}
