/* Resumable parser of the client->server NATS protocol (CONNECT, PUB, HPUB,
 * SUB, UNSUB, PING, PONG; INFO/+OK/-ERR recognised), plus the CONNECT JSON
 * scanner and the table of -ERR texts. Pure: no I/O, no allocation. */
#ifndef NATS_PARSER_H
#define NATS_PARSER_H

#include "sl_common.h"

/* The scratch area holds a control line split across two chunks. Its size
 * caps the configurable max_control_line (nats-server default: 4096). */
#define NATS_CONTROL_LINE_MAX     4096u
#define NATS_CONTROL_LINE_DEFAULT 4096u
#define NATS_PAYLOAD_DEFAULT      (1024u * 1024u)
/* nats-server's parseSize() accepts at most 9 digits (999999999). */
#define NATS_SIZE_DIGITS_MAX 9u

/* A borrowed byte range: into the caller's chunk, the parser's scratch, or
 * (CONNECT strings with escapes) the caller's decode buffer. */
struct nats_view {
        const uint8_t *ptr;
        size_t len;
};

/* Return values of nats_parse() >= 0. */
enum nats_parse_rc {
        NATS_PARSE_AGAIN = 0, /* all input consumed; call again with more */
        NATS_PARSE_OP = 1,    /* *op is filled; *consumed bytes of buf used */
};

/* Errors: negative, not errno values. nats_err_text() gives the text to send
 * as -ERR '<text>', nats_err_closes() whether the connection must close. The
 * first group comes from the parser; the rest are for the connection handler
 * so all -ERR texts live in one table. */
enum nats_err {
        NATS_ERR_UNKNOWN_OP = -1,       /* unrecognised op, MSG/HMSG from a client */
        NATS_ERR_MAX_CONTROL_LINE = -2, /* control line (args) > max_control_line */
        NATS_ERR_MAX_PAYLOAD = -3,      /* PUB/HPUB size > max_payload (from the control line) */
        NATS_ERR_BAD_ARGS = -4,         /* wrong argument count */
        NATS_ERR_BAD_SIZE = -5,         /* size not 1..9 decimal digits */
        NATS_ERR_HDR_SIZE = -6,         /* HPUB header size > total size */
        NATS_ERR_PAYLOAD_END = -7,      /* payload not followed by CR LF */
        NATS_ERR_BAD_CONNECT = -8,      /* CONNECT JSON malformed or mistyped */
        /* handler-level (not produced by nats_parse) */
        NATS_ERR_BAD_PROTOCOL = -20,          /* CONNECT protocol outside 0..1 */
        NATS_ERR_NO_RESPONDERS_HEADERS = -21, /* no_responders without headers */
        NATS_ERR_HEADERS_NOT_SUPPORTED = -22, /* HPUB without CONNECT headers:true */
        NATS_ERR_INVALID_SUBJECT = -23,       /* bad SUB subject or queue; stays open */
        NATS_ERR_INVALID_PUB_SUBJECT = -24,   /* pedantic only; stays open */
        NATS_ERR_AUTH_VIOLATION = -25,
        NATS_ERR_AUTH_TIMEOUT = -26,
        NATS_ERR_STALE_CONNECTION = -27,
        NATS_ERR_SLOW_CONSUMER = -28,
        NATS_ERR_MAX_CONNECTIONS = -29,
        NATS_ERR_MAX_SUBSCRIPTIONS = -30, /* stays open */
        NATS_ERR_TLS_REQUIRED = -31,
};

/* Text for -ERR '<text>' (without quotes), spelled as nats-server sends it.
 * nats-server closes silently on malformed argument lists; sluice sends
 * 'Parser Error' for those (a text the protocol documents) before closing. */
const char *nats_err_text(int err);
bool nats_err_closes(int err);

enum nats_op_type {
        NATS_OP_NONE = 0,
        NATS_OP_CONNECT, /* arg = JSON text */
        NATS_OP_PUB,     /* subject, reply, total_len, payload */
        NATS_OP_HPUB,    /* subject, reply, hdr_len, total_len, payload (headers first) */
        NATS_OP_SUB,     /* subject, queue, sid */
        NATS_OP_UNSUB,   /* sid, max_msgs */
        NATS_OP_PING,
        NATS_OP_PONG,
        NATS_OP_INFO,    /* arg = JSON; nats-server ignores INFO from clients */
        NATS_OP_OK,      /* +OK; nats-server ignores it from clients */
        NATS_OP_ERR,     /* -ERR, arg = text; nats-server closes the connection */
        NATS_OP_PAYLOAD, /* a further fragment of a split PUB/HPUB payload */
};

/*
 * One parsed operation. All views are borrowed.
 *
 * Payloads. The hot path is zero-copy: when a PUB/HPUB with its payload and
 * trailing CR LF lies within one chunk, one PUB/HPUB op arrives with
 * partial == false and payload = the whole payload (a view into the chunk;
 * the CR LF has been checked).
 * When the payload runs past the chunk, the PUB/HPUB op arrives as soon as
 * its control line is complete, with partial == true and payload = the
 * payload bytes present in this chunk (possibly none). Then come one or more
 * NATS_OP_PAYLOAD ops with the following bytes as views into later chunks;
 * the last has end == true (possibly with an empty payload) and is delivered
 * only after the trailing CR LF has been checked. The caller copies or
 * references fragments as it likes; a message is valid only at end == true.
 * For a split message the parser keeps its control line in the scratch area,
 * so subject/reply stay valid until the end fragment has been returned.
 *
 * Validity: views into the chunk live as long as the caller keeps the chunk;
 * views into the scratch area (control lines split across chunks) live until
 * the next nats_parse() call, except as said above for split messages.
 */
struct nats_op {
        enum nats_op_type type;
        struct nats_view subject; /* PUB, HPUB, SUB */
        struct nats_view reply;   /* PUB, HPUB; len 0 = none */
        struct nats_view queue;   /* SUB; len 0 = no queue group */
        struct nats_view sid;     /* SUB, UNSUB */
        struct nats_view arg;     /* CONNECT/INFO/-ERR text; raw args for the others */
        struct nats_view payload; /* PUB/HPUB bytes present now; PAYLOAD fragment */
        uint32_t hdr_len;         /* HPUB: header bytes at the start of the payload */
        uint32_t total_len;       /* PUB/HPUB: payload bytes in total (headers included) */
        int64_t max_msgs;         /* UNSUB: -1 = none */
        bool partial;             /* PUB/HPUB: payload continues in PAYLOAD ops */
        bool end;                 /* PAYLOAD: last fragment, CR LF checked */
};

struct nats_parser_config {
        uint32_t max_control_line; /* 1..NATS_CONTROL_LINE_MAX; applies to the args */
        uint32_t max_payload;      /* PUB total / HPUB total bytes */
};

/* Per-connection parser state. Opaque apart from err_offset. */
struct nats_parser {
        struct nats_parser_config cfg;
        uint8_t state;
        uint8_t op;           /* enum nats_op_type of the line being parsed */
        uint8_t kw_len;       /* keyword matching: bytes of kw matched */
        const char *kw;       /* keyword being matched, upper case */
        uint32_t ws_len;      /* whitespace run length (bounded like a line) */
        uint32_t scratch_len; /* bytes of a split control line in scratch */
        uint32_t payload_left;
        uint64_t offset;     /* stream offset of buf[0] of the current call */
        uint64_t err_offset; /* stream offset of the byte that caused the error */
        int err;             /* sticky error once failed */
        uint8_t scratch[NATS_CONTROL_LINE_MAX + 8];
};

/* Defaults of nats-server: max_control_line 4096, max_payload 1 MiB. */
void nats_parser_config_default(struct nats_parser_config *cfg);
/* cfg is copied; may be changed later with nats_parser_set_config(). */
void nats_parser_init(struct nats_parser *p, const struct nats_parser_config *cfg);
void nats_parser_set_config(struct nats_parser *p, const struct nats_parser_config *cfg);

/*
 * Parse from buf (borrowed). Returns NATS_PARSE_OP with *op filled and
 * *consumed = bytes used (the caller continues with buf + *consumed, now or
 * later: stopping after any op is allowed, e.g. for backpressure);
 * NATS_PARSE_AGAIN with *consumed == len (a partial control line was copied
 * to the scratch area, so the chunk may be released); or a negative enum
 * nats_err with *consumed = index of the offending byte in buf and
 * p->err_offset = its stream offset. After an error the parser stays failed
 * and returns the same error. len 0 returns AGAIN.
 */
int nats_parse(struct nats_parser *p, const uint8_t *buf, size_t len, size_t *consumed,
               struct nats_op *op);

/* CONNECT options. Strings are views into the JSON text, or into the
 * caller's decode buffer when they contain escapes; len 0 = absent. */
struct nats_connect {
        bool verbose;       /* default true when omitted */
        bool pedantic;      /* default true when omitted */
        bool echo;          /* default true when omitted */
        bool headers;       /* default false */
        bool no_responders; /* default false */
        bool tls_required;  /* default false */
        int64_t protocol;   /* default 0 */
        struct nats_view name, lang, version, user, pass, auth_token, jwt, nkey, sig;
};

/*
 * Parse CONNECT's JSON object (json borrowed; strings with escapes decoded
 * into buf[0..buf_len), borrowed). Unknown keys and nested values are skipped
 * (but must be well formed); keys match case-insensitively like Go's
 * encoding/json; null leaves a field at its default. Returns 0,
 * NATS_ERR_BAD_CONNECT (malformed JSON, wrong type, trailing bytes), or
 * -ENOBUFS when escaped strings do not fit in buf.
 */
int nats_connect_parse(const uint8_t *json, size_t len, struct nats_connect *out, uint8_t *buf,
                       size_t buf_len);
/* Semantic checks nats-server applies after parsing: 0,
 * NATS_ERR_BAD_PROTOCOL or NATS_ERR_NO_RESPONDERS_HEADERS. */
int nats_connect_validate(const struct nats_connect *c);

#endif
