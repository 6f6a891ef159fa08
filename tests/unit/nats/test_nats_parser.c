/* Unit tests of the NATS protocol parser, the -ERR table and the CONNECT
 * scanner: every input is fed whole, one byte at a time and split at every
 * point, and must give the same ops and the same error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nats_parser.h"

/* A growable text record of what the parser produced, one line per complete
 * op; payloads of split messages are assembled. */
struct rec {
        char *s;
        size_t len, cap;
        /* message being assembled from fragments */
        bool in_msg;
        char head[8192];
        struct nats_view subj_view; /* from the partial op: must stay valid */
        char subj_copy[4200];
        uint8_t *payload;
        size_t payload_len, payload_total;
};

static void rec_put(struct rec *r, const void *p, size_t n)
{
        if (r->len + n + 1 > r->cap) {
                r->cap = (r->len + n + 1) * 2;
                r->s = realloc(r->s, r->cap);
                assert_non_null(r->s);
        }
        memcpy(r->s + r->len, p, n);
        r->len += n;
        r->s[r->len] = 0;
}

static void rec_printf(struct rec *r, const char *fmt, ...)
{
        char tmp[8192 + 512];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        assert_true(n >= 0 && (size_t)n < sizeof(tmp));
        rec_put(r, tmp, (size_t)n);
}

static const char *op_name(enum nats_op_type t)
{
        static const char *names[] = {"NONE", "CONNECT", "PUB",  "HPUB", "SUB", "UNSUB",
                                      "PING", "PONG",    "INFO", "OK",   "ERR", "PAYLOAD"};
        return names[t];
}

#define V(v) (int)(v).len, (const char *)(v).ptr

static void head_of(const struct nats_op *op, char *out, size_t cap)
{
        snprintf(out, cap,
                 "%s subj=[%.*s] reply=[%.*s] queue=[%.*s] sid=[%.*s] hdr=%u total=%u max=%lld",
                 op_name(op->type), V(op->subject), V(op->reply), V(op->queue), V(op->sid),
                 op->hdr_len, op->total_len, (long long)op->max_msgs);
}

static void rec_op(struct rec *r, const struct nats_op *op)
{
        char head[8192];
        switch (op->type) {
        case NATS_OP_PUB:
        case NATS_OP_HPUB:
                assert_false(r->in_msg);
                head_of(op, head, sizeof(head));
                if (!op->partial) {
                        assert_int_equal(op->payload.len, op->total_len);
                        rec_printf(r, "%s payload=[", head);
                        rec_put(r, op->payload.ptr, op->payload.len);
                        rec_printf(r, "]\n");
                        return;
                }
                r->in_msg = true;
                strcpy(r->head, head);
                r->subj_view = op->subject;
                memcpy(r->subj_copy, op->subject.ptr, op->subject.len);
                r->payload_total = op->total_len;
                r->payload = realloc(r->payload, op->total_len + 1);
                memcpy(r->payload, op->payload.ptr, op->payload.len);
                r->payload_len = op->payload.len;
                return;
        case NATS_OP_PAYLOAD:
                assert_true(r->in_msg);
                assert_true(r->payload_len + op->payload.len <= r->payload_total);
                memcpy(r->payload + r->payload_len, op->payload.ptr, op->payload.len);
                r->payload_len += op->payload.len;
                /* the split message's subject view must survive until its end */
                assert_memory_equal(r->subj_view.ptr, r->subj_copy, r->subj_view.len);
                if (!op->end)
                        return;
                assert_int_equal(r->payload_len, r->payload_total);
                r->in_msg = false;
                rec_printf(r, "%s payload=[", r->head);
                rec_put(r, r->payload, r->payload_len);
                rec_printf(r, "]\n");
                return;
        case NATS_OP_CONNECT:
        case NATS_OP_INFO:
        case NATS_OP_ERR:
                rec_printf(r, "%s arg=[%.*s]\n", op_name(op->type), V(op->arg));
                return;
        default:
                head_of(op, head, sizeof(head));
                rec_printf(r, "%s\n", head);
        }
}

/* Feed chunk through p, recording ops; returns the error or 0. Also checks
 * the parser contract on every call. */
static int feed(struct rec *r, struct nats_parser *p, const uint8_t *chunk, size_t n)
{
        size_t off = 0;
        while (off < n) {
                struct nats_op op;
                size_t used = 12345;
                int rc = nats_parse(p, chunk + off, n - off, &used, &op);
                if (rc < 0) {
                        assert_true(used < n - off);
                        rec_printf(r, "ERROR %d\n", rc);
                        return rc;
                }
                if (rc == NATS_PARSE_AGAIN) {
                        assert_int_equal(used, n - off);
                        return 0;
                }
                assert_int_equal(rc, NATS_PARSE_OP);
                assert_true(used > 0 && used <= n - off);
                off += used;
                rec_op(r, &op);
        }
        return 0;
}

/* Feed input in chunks ending at cuts[0..ncuts) (ascending). */
static char *run_cuts(const struct nats_parser_config *cfg, const char *in, size_t len,
                      const size_t *cuts, size_t ncuts, int *err)
{
        struct nats_parser *p = malloc(sizeof(*p));
        struct rec r = {0};
        nats_parser_init(p, cfg);
        size_t prev = 0;
        *err = 0;
        for (size_t k = 0; k <= ncuts && !*err; k++) {
                size_t end = k < ncuts ? cuts[k] : len;
                /* each chunk in its own allocation so views into a released
                 * chunk would be caught by ASan */
                uint8_t *c = malloc(end - prev + 1);
                memcpy(c, in + prev, end - prev);
                *err = feed(&r, p, c, end - prev);
                free(c);
                prev = end;
        }
        if (!*err && r.in_msg)
                rec_printf(&r, "INCOMPLETE\n");
        if (!r.s)
                rec_put(&r, "", 0);
        free(r.payload);
        free(p);
        return r.s;
}

static char *run_whole(const struct nats_parser_config *cfg, const char *in, size_t len, int *err)
{
        return run_cuts(cfg, in, len, NULL, 0, err);
}

/* Whole vs one byte at a time vs every single split point vs (for short
 * inputs) every pair of split points: identical records and errors. */
static void check_all_splits(const struct nats_parser_config *cfg, const char *in, size_t len,
                             const char *expect, int expect_err)
{
        int err, err2;
        char *whole = run_whole(cfg, in, len, &err);
        if (expect && strcmp(whole, expect) != 0)
                fail_msg("whole:\n%s\nexpected:\n%s", whole, expect);
        assert_int_equal(err, expect_err);

        size_t *cuts = calloc(len + 2, sizeof(size_t));
        for (size_t i = 0; i < len; i++)
                cuts[i] = i + 1;
        char *bytes = run_cuts(cfg, in, len, cuts, len ? len - 1 : 0, &err2);
        if (strcmp(whole, bytes) != 0)
                fail_msg("byte-at-a-time:\n%s\nwhole:\n%s", bytes, whole);
        assert_int_equal(err2, err);
        free(bytes);

        for (size_t i = 1; i < len; i++) {
                cuts[0] = i;
                char *s = run_cuts(cfg, in, len, cuts, 1, &err2);
                if (strcmp(whole, s) != 0)
                        fail_msg("split at %zu:\n%s\nwhole:\n%s", i, s, whole);
                assert_int_equal(err2, err);
                free(s);
        }
        if (len <= 400) {
                for (size_t i = 1; i < len; i++)
                        for (size_t j = i + 1; j < len; j++) {
                                cuts[0] = i;
                                cuts[1] = j;
                                char *s = run_cuts(cfg, in, len, cuts, 2, &err2);
                                if (strcmp(whole, s) != 0)
                                        fail_msg("split at %zu,%zu:\n%s\nwhole:\n%s", i, j, s,
                                                 whole);
                                assert_int_equal(err2, err);
                                free(s);
                        }
        }
        free(cuts);
        free(whole);
}

static struct nats_parser_config cfg_default(void)
{
        struct nats_parser_config c;
        nats_parser_config_default(&c);
        return c;
}

#define S(x) x, sizeof(x) - 1

static void test_every_op(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        static const char in[] = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n"
                                 "PING\r\n"
                                 "PONG\r\n"
                                 "SUB foo 1\r\n"
                                 "SUB foo.* workers 2\r\n"
                                 "UNSUB 1\r\n"
                                 "UNSUB 2 10\r\n"
                                 "PUB foo 5\r\nhello\r\n"
                                 "PUB foo _INBOX.x 0\r\n\r\n"
                                 "HPUB foo 22 27\r\nNATS/1.0\r\nBar: Baz\r\n\r\nhello\r\n"
                                 "hpub foo r 12 12\r\nNATS/1.0\r\n\r\n\r\n"
                                 "sUb\tbar \t q\t3\n"
                                 "pub  bar   3\nabc\r\n"
                                 "+OK\r\n"
                                 "INFO {}\r\n"
                                 "-ERR 'oops'\r\n"
                                 "ping \t\r\n"
                                 "pong\n";
        static const char expect[] =
            "CONNECT arg=[{\"verbose\":false,\"pedantic\":false}]\n"
            "PING subj=[] reply=[] queue=[] sid=[] hdr=0 total=0 max=-1\n"
            "PONG subj=[] reply=[] queue=[] sid=[] hdr=0 total=0 max=-1\n"
            "SUB subj=[foo] reply=[] queue=[] sid=[1] hdr=0 total=0 max=-1\n"
            "SUB subj=[foo.*] reply=[] queue=[workers] sid=[2] hdr=0 total=0 max=-1\n"
            "UNSUB subj=[] reply=[] queue=[] sid=[1] hdr=0 total=0 max=-1\n"
            "UNSUB subj=[] reply=[] queue=[] sid=[2] hdr=0 total=0 max=10\n"
            "PUB subj=[foo] reply=[] queue=[] sid=[] hdr=0 total=5 max=-1 payload=[hello]\n"
            "PUB subj=[foo] reply=[_INBOX.x] queue=[] sid=[] hdr=0 total=0 max=-1 payload=[]\n"
            "HPUB subj=[foo] reply=[] queue=[] sid=[] hdr=22 total=27 max=-1 "
            "payload=[NATS/1.0\r\nBar: Baz\r\n\r\nhello]\n"
            "HPUB subj=[foo] reply=[r] queue=[] sid=[] hdr=12 total=12 max=-1 "
            "payload=[NATS/1.0\r\n\r\n]\n"
            "SUB subj=[bar] reply=[] queue=[q] sid=[3] hdr=0 total=0 max=-1\n"
            "PUB subj=[bar] reply=[] queue=[] sid=[] hdr=0 total=3 max=-1 payload=[abc]\n"
            "OK subj=[] reply=[] queue=[] sid=[] hdr=0 total=0 max=-1\n"
            "INFO arg=[{}]\n"
            "ERR arg=['oops']\n"
            "PING subj=[] reply=[] queue=[] sid=[] hdr=0 total=0 max=-1\n"
            "PONG subj=[] reply=[] queue=[] sid=[] hdr=0 total=0 max=-1\n";
        check_all_splits(&cfg, S(in), expect, 0);
}

static void test_pub_whole_is_zero_copy(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        struct nats_parser p;
        struct nats_op op;
        size_t used;
        static const uint8_t in[] = "PUB orders.new _INBOX.abc.1 5\r\nhello\r\nPING\r\n";
        nats_parser_init(&p, &cfg);
        assert_int_equal(nats_parse(&p, in, sizeof(in) - 1, &used, &op), NATS_PARSE_OP);
        assert_int_equal(op.type, NATS_OP_PUB);
        assert_false(op.partial);
        assert_ptr_equal(op.subject.ptr, in + 4);
        assert_ptr_equal(op.reply.ptr, in + 15);
        assert_ptr_equal(op.payload.ptr, in + 31);
        assert_int_equal(used, 38);
        /* the caller may stop here (backpressure) and come back later */
        assert_int_equal(nats_parse(&p, in + used, sizeof(in) - 1 - used, &used, &op),
                         NATS_PARSE_OP);
        assert_int_equal(op.type, NATS_OP_PING);
        assert_int_equal(used, 6);
        assert_int_equal(p.offset, sizeof(in) - 1);
}

static void test_split_payload_fragments(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        struct nats_parser p;
        struct nats_op op;
        size_t used;
        static const uint8_t a[] = "PUB fo", b[] = "o 10\r\n0123", c[] = "456789\r", d[] = "\n";
        nats_parser_init(&p, &cfg);
        assert_int_equal(nats_parse(&p, a, 6, &used, &op), NATS_PARSE_AGAIN);
        assert_int_equal(used, 6);
        assert_int_equal(nats_parse(&p, b, 10, &used, &op), NATS_PARSE_OP);
        assert_int_equal(op.type, NATS_OP_PUB);
        assert_true(op.partial);
        assert_ptr_equal(op.subject.ptr, p.scratch); /* line was split: scratch */
        assert_memory_equal(op.subject.ptr, "foo", 3);
        assert_int_equal(op.payload.len, 4);
        assert_ptr_equal(op.payload.ptr, b + 6);
        assert_int_equal(used, 10);
        assert_int_equal(nats_parse(&p, c, 7, &used, &op), NATS_PARSE_OP);
        assert_int_equal(op.type, NATS_OP_PAYLOAD);
        assert_false(op.end);
        assert_int_equal(op.payload.len, 6);
        assert_int_equal(used, 6);
        assert_int_equal(nats_parse(&p, c + 6, 1, &used, &op), NATS_PARSE_AGAIN);
        assert_int_equal(nats_parse(&p, d, 1, &used, &op), NATS_PARSE_OP);
        assert_int_equal(op.type, NATS_OP_PAYLOAD);
        assert_true(op.end);
        assert_int_equal(op.payload.len, 0);
}

struct err_case {
        const char *in;
        int err;
};

static void run_err_cases(const struct nats_parser_config *cfg, const struct err_case *c, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                print_message("error case %zu: %s\n", i, c[i].in);
                check_all_splits(cfg, c[i].in, strlen(c[i].in), NULL, c[i].err);
        }
}

static void test_errors(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        static const struct err_case cases[] = {
            {"FOO bar\r\n", NATS_ERR_UNKNOWN_OP},
            {"PING\r\nPUX foo 1\r\n", NATS_ERR_UNKNOWN_OP},
            {"\r\n", NATS_ERR_UNKNOWN_OP},
            {"MSG foo 1 5\r\nhello\r\n", NATS_ERR_UNKNOWN_OP},
            {"HMSG foo 1 12 12\r\nNATS/1.0\r\n\r\n\r\n", NATS_ERR_UNKNOWN_OP},
            {"PINGX\r\n", NATS_ERR_UNKNOWN_OP},
            {"PUB\r\n", NATS_ERR_UNKNOWN_OP},
            {"PUBfoo 1\r\n", NATS_ERR_UNKNOWN_OP},
            /* argument counts */
            {"PUB foo\r\n", NATS_ERR_BAD_ARGS},
            {"PUB \r\n", NATS_ERR_BAD_ARGS},
            {"PUB a b c 1\r\n", NATS_ERR_BAD_ARGS},
            {"HPUB foo 5\r\n", NATS_ERR_BAD_ARGS},
            {"HPUB a b c d e\r\n", NATS_ERR_BAD_ARGS},
            {"SUB foo\r\n", NATS_ERR_BAD_ARGS},
            {"SUB a b c d\r\n", NATS_ERR_BAD_ARGS},
            {"UNSUB 1 2 3\r\n", NATS_ERR_BAD_ARGS},
            {"UNSUB \r\n", NATS_ERR_BAD_ARGS},
            /* sizes */
            {"PUB foo abc\r\n", NATS_ERR_BAD_SIZE},
            {"PUB foo -1\r\n", NATS_ERR_BAD_SIZE},
            {"PUB foo 5x\r\n", NATS_ERR_BAD_SIZE},
            {"PUB foo 1234567890\r\n", NATS_ERR_BAD_SIZE},
            {"PUB foo 99999999999999999999999999\r\n", NATS_ERR_BAD_SIZE},
            {"HPUB foo x 5\r\n", NATS_ERR_BAD_SIZE},
            {"HPUB foo 5 x\r\n", NATS_ERR_BAD_SIZE},
            {"UNSUB 1 x\r\n", NATS_ERR_BAD_SIZE},
            {"HPUB foo 10 5\r\n", NATS_ERR_HDR_SIZE},
            /* payload framing */
            {"PUB foo 5\r\nhelloX\r\n", NATS_ERR_PAYLOAD_END},
            {"PUB foo 5\r\nhello\rX", NATS_ERR_PAYLOAD_END},
            {"PUB foo 5\r\nhello\n", NATS_ERR_PAYLOAD_END},
            {"PUB foo 0\r\nPING\r\n", NATS_ERR_PAYLOAD_END},
            {"HPUB foo 12 12\r\nNATS/1.0\r\n\r\nX\r\n", NATS_ERR_PAYLOAD_END},
            {"PUB foo 3\r\nabc\r\nPUB foo 3\r\nabcd\r\n", NATS_ERR_PAYLOAD_END},
        };
        run_err_cases(&cfg, cases, SL_ARRAY_LEN(cases));
}

static void test_error_is_sticky(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        struct nats_parser p;
        struct nats_op op;
        size_t used;
        static const uint8_t in[] = "PING\r\nXYZ\r\n";
        nats_parser_init(&p, &cfg);
        assert_int_equal(nats_parse(&p, in, 11, &used, &op), NATS_PARSE_OP);
        assert_int_equal(nats_parse(&p, in + 6, 5, &used, &op), NATS_ERR_UNKNOWN_OP);
        assert_int_equal(used, 0);
        assert_int_equal(p.err_offset, 6);
        assert_int_equal(nats_parse(&p, (const uint8_t *)"PING\r\n", 6, &used, &op),
                         NATS_ERR_UNKNOWN_OP);
}

static void test_max_payload_boundary(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        cfg.max_payload = 8;
        static const struct err_case cases[] = {
            {"PUB foo 9\r\n", NATS_ERR_MAX_PAYLOAD},
            {"HPUB foo 2 9\r\n", NATS_ERR_MAX_PAYLOAD},
            {"PUB foo 8\r\n12345678\r\nPUB foo 9\r\n123456789\r\n", NATS_ERR_MAX_PAYLOAD},
            {"PUB foo 8\r\n12345678\r\nHPUB foo 8 8\r\n12345678\r\n", 0},
        };
        run_err_cases(&cfg, cases, SL_ARRAY_LEN(cases));

        /* default limit: 1 MiB passes, one more byte does not; checked from the
         * control line before any payload arrives */
        cfg = cfg_default();
        struct nats_parser p;
        struct nats_op op;
        size_t used;
        nats_parser_init(&p, &cfg);
        assert_int_equal(nats_parse(&p, (const uint8_t *)"PUB foo 1048576\r\n", 17, &used, &op),
                         NATS_PARSE_OP);
        assert_true(op.partial);
        assert_int_equal(op.total_len, 1048576);
        nats_parser_init(&p, &cfg);
        assert_int_equal(nats_parse(&p, (const uint8_t *)"PUB foo 1048577\r\n", 17, &used, &op),
                         NATS_ERR_MAX_PAYLOAD);
}

static void test_max_control_line_boundary(void **state)
{
        (void)state;
        struct nats_parser_config cfg = cfg_default();
        cfg.max_control_line = 8;
        static const struct err_case cases[] = {
            {"SUB ab 12345\r\n", 0},                          /* args of 8 bytes */
            {"SUB ab 12345\n", 0},                            /* bare LF */
            {"SUB ab 123456\r\n", NATS_ERR_MAX_CONTROL_LINE}, /* 9 */
            {"SUB ab 123456\n", NATS_ERR_MAX_CONTROL_LINE},
            {"SUB a 123456789012345678901234567890", NATS_ERR_MAX_CONTROL_LINE},
            {"SUB          a 1\r\n", NATS_ERR_MAX_CONTROL_LINE}, /* whitespace run */
            {"PING          \r\n", NATS_ERR_MAX_CONTROL_LINE},
            {"CONNECT {\"ab\":12}\r\n", NATS_ERR_MAX_CONTROL_LINE},
        };
        run_err_cases(&cfg, cases, SL_ARRAY_LEN(cases));

        /* the default 4096 at its boundary, split and whole */
        cfg = cfg_default();
        char *line = malloc(5000);
        memcpy(line, "SUB ", 4);
        memset(line + 4, 'x', 4094);
        memcpy(line + 4 + 4094, " 1\r\n", 4); /* args = 4096 bytes */
        check_all_splits(&cfg, line, 4 + 4096 + 2, NULL, 0);
        memcpy(line + 4 + 4094, " 12\r\n", 5); /* 4097 */
        check_all_splits(&cfg, line, 4 + 4097 + 2, NULL, NATS_ERR_MAX_CONTROL_LINE);
        free(line);
}

static void test_err_texts(void **state)
{
        (void)state;
        assert_string_equal(nats_err_text(NATS_ERR_UNKNOWN_OP), "Unknown Protocol Operation");
        assert_string_equal(nats_err_text(NATS_ERR_MAX_CONTROL_LINE),
                            "maximum control line exceeded");
        assert_string_equal(nats_err_text(NATS_ERR_MAX_PAYLOAD), "Maximum Payload Violation");
        assert_string_equal(nats_err_text(NATS_ERR_BAD_ARGS), "Parser Error");
        assert_string_equal(nats_err_text(NATS_ERR_INVALID_SUBJECT), "Invalid Subject");
        assert_string_equal(nats_err_text(NATS_ERR_BAD_PROTOCOL), "invalid client protocol");
        assert_string_equal(nats_err_text(NATS_ERR_NO_RESPONDERS_HEADERS),
                            "no responders requires headers support");
        assert_string_equal(nats_err_text(NATS_ERR_STALE_CONNECTION), "Stale Connection");
        assert_true(nats_err_closes(NATS_ERR_UNKNOWN_OP));
        assert_true(nats_err_closes(NATS_ERR_MAX_PAYLOAD));
        assert_true(nats_err_closes(NATS_ERR_PAYLOAD_END));
        assert_false(nats_err_closes(NATS_ERR_INVALID_SUBJECT));
        assert_false(nats_err_closes(NATS_ERR_INVALID_PUB_SUBJECT));
        assert_false(nats_err_closes(NATS_ERR_MAX_SUBSCRIPTIONS));
}

/* ---- CONNECT ---- */

static int connect_str(const char *json, struct nats_connect *c, uint8_t *buf, size_t buf_len)
{
        return nats_connect_parse((const uint8_t *)json, strlen(json), c, buf, buf_len);
}

static bool view_is(struct nats_view v, const char *s)
{
        return v.len == strlen(s) && memcmp(v.ptr, s, v.len) == 0;
}

static void test_connect_defaults(void **state)
{
        (void)state;
        struct nats_connect c;
        uint8_t buf[64];
        assert_int_equal(connect_str("{}", &c, buf, sizeof(buf)), 0);
        assert_true(c.verbose);
        assert_true(c.pedantic);
        assert_true(c.echo);
        assert_false(c.headers);
        assert_false(c.no_responders);
        assert_int_equal(c.protocol, 0);
        assert_int_equal(c.name.len, 0);
        assert_int_equal(nats_connect_validate(&c), 0);
}

static void test_connect_fields(void **state)
{
        (void)state;
        struct nats_connect c;
        uint8_t buf[64];
        const char *j = " {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,"
                        "\"name\":\"svc\",\"lang\":\"go\",\"version\":\"1.31.0\",\"protocol\":1,"
                        "\"echo\":false,\"headers\":true,\"no_responders\":true,"
                        "\"user\":\"bob\",\"pass\":\"s\\\"e\\\\c\\u00e9\\ud83d\\ude00\","
                        "\"auth_token\":null,\"sig\":\"x\",\"jwt\":\"j\",\"nkey\":\"n\","
                        "\"unknown\":{\"a\":[1,2.5e-3,{\"b\":null}],\"c\":\"d\"},\"Z\":[] } ";
        assert_int_equal(connect_str(j, &c, buf, sizeof(buf)), 0);
        assert_false(c.verbose);
        assert_false(c.pedantic);
        assert_false(c.echo);
        assert_true(c.headers);
        assert_true(c.no_responders);
        assert_int_equal(c.protocol, 1);
        assert_true(view_is(c.name, "svc"));
        assert_true(view_is(c.lang, "go"));
        assert_true(view_is(c.version, "1.31.0"));
        assert_true(view_is(c.user, "bob"));
        assert_true(view_is(c.pass, "s\"e\\c\xc3\xa9\xf0\x9f\x98\x80"));
        assert_ptr_equal(c.pass.ptr, buf); /* escaped: decoded into buf */
        assert_ptr_equal(c.name.ptr, (const uint8_t *)strstr(j, "svc")); /* plain: a view */
        assert_int_equal(c.auth_token.len, 0);
        assert_true(view_is(c.sig, "x"));
        assert_int_equal(nats_connect_validate(&c), 0);

        /* Go's encoding/json matches keys case-insensitively */
        assert_int_equal(connect_str("{\"Verbose\":false,\"AUTH_TOKEN\":\"t\"}", &c, buf, 64), 0);
        assert_false(c.verbose);
        assert_true(view_is(c.auth_token, "t"));
        /* duplicate keys: the last wins */
        assert_int_equal(connect_str("{\"echo\":false,\"echo\":true}", &c, buf, 64), 0);
        assert_true(c.echo);
        assert_int_equal(connect_str("{\"protocol\":-5}", &c, buf, 64), 0);
        assert_int_equal(c.protocol, -5);
}

static void test_connect_validate(void **state)
{
        (void)state;
        struct nats_connect c;
        uint8_t buf[8];
        assert_int_equal(connect_str("{\"protocol\":2}", &c, buf, 8), 0);
        assert_int_equal(nats_connect_validate(&c), NATS_ERR_BAD_PROTOCOL);
        assert_int_equal(connect_str("{\"protocol\":-1}", &c, buf, 8), 0);
        assert_int_equal(nats_connect_validate(&c), NATS_ERR_BAD_PROTOCOL);
        assert_int_equal(connect_str("{\"no_responders\":true}", &c, buf, 8), 0);
        assert_int_equal(nats_connect_validate(&c), NATS_ERR_NO_RESPONDERS_HEADERS);
        assert_int_equal(connect_str("{\"no_responders\":true,\"headers\":true}", &c, buf, 8), 0);
        assert_int_equal(nats_connect_validate(&c), 0);
}

static void test_connect_bad_json(void **state)
{
        (void)state;
        static const char *bad[] = {
            "",
            "   ",
            "[]",
            "{",
            "}",
            "{\"verbose\":false",
            "{\"verbose\" false}",
            "{\"verbose\":false,}",
            "{,}",
            "{verbose:false}",
            "{'verbose':false}",
            "{\"verbose\":\"false\"}",             /* wrong type */
            "{\"verbose\":1}",                     /* wrong type */
            "{\"name\":5}",                        /* wrong type */
            "{\"protocol\":1.5}",                  /* not an integer */
            "{\"protocol\":1e0}",                  /* Go refuses this for an int */
            "{\"protocol\":\"1\"}",                /* wrong type */
            "{\"protocol\":99999999999999999999}", /* overflow */
            "{\"protocol\":01}",
            "{\"protocol\":-}",
            "{\"x\":tru}",
            "{\"x\":nul}",
            "{\"x\":[1,]}",
            "{\"x\":[1 2]}",
            "{\"x\":{\"a\"}}",
            "{\"x\":1.}",
            "{\"x\":.5}",
            "{\"x\":1e}",
            "{\"x\":\"a\\x\"}",     /* bad escape */
            "{\"x\":\"a\\u12g4\"}", /* bad \u */
            "{\"x\":\"a\nb\"}",     /* raw control char */
            "{\"x\":\"abc}",
            "{} {}", /* trailing data */
            "{}x",
            "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
            "]]}",
        };
        for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
                struct nats_connect c;
                uint8_t buf[64];
                int rc = connect_str(bad[i], &c, buf, sizeof(buf));
                if (rc != NATS_ERR_BAD_CONNECT)
                        fail_msg("accepted or wrong error %d: %s", rc, bad[i]);
        }
}

static void test_connect_escape_buffer_too_small(void **state)
{
        (void)state;
        struct nats_connect c;
        uint8_t buf[4];
        assert_int_equal(connect_str("{\"user\":\"a\\tbcdef\"}", &c, buf, sizeof(buf)), -ENOBUFS);
        assert_int_equal(connect_str("{\"user\":\"abcdefgh\"}", &c, buf, sizeof(buf)), 0);
        assert_int_equal(connect_str("{\"user\":\"a\\tb\"}", &c, NULL, 0), -ENOBUFS);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_every_op),
            cmocka_unit_test(test_pub_whole_is_zero_copy),
            cmocka_unit_test(test_split_payload_fragments),
            cmocka_unit_test(test_errors),
            cmocka_unit_test(test_error_is_sticky),
            cmocka_unit_test(test_max_payload_boundary),
            cmocka_unit_test(test_max_control_line_boundary),
            cmocka_unit_test(test_err_texts),
            cmocka_unit_test(test_connect_defaults),
            cmocka_unit_test(test_connect_fields),
            cmocka_unit_test(test_connect_validate),
            cmocka_unit_test(test_connect_bad_json),
            cmocka_unit_test(test_connect_escape_buffer_too_small),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
