/* A small JSON object scanner for CONNECT: picks out the options sluice
 * uses, validates the rest of the text as JSON and skips it. No allocation;
 * strings are views unless escapes force a decode into the caller's buffer. */
#include "nats_parser.h"

#include <errno.h>
#include <string.h>

#define JSON_DEPTH_MAX 32 /* nested values in unknown keys */
#define JSON_KEY_MAX   32 /* longer keys are never ours: compared undecoded */

struct jscan {
        const uint8_t *s;
        size_t n, i;
        uint8_t *buf; /* decode area for escaped strings */
        size_t buf_len, buf_used;
        int err; /* first error: NATS_ERR_BAD_CONNECT or -ENOBUFS */
};

static int bad(struct jscan *j)
{
        if (!j->err)
                j->err = NATS_ERR_BAD_CONNECT;
        return -1;
}

static void skip_ws(struct jscan *j)
{
        while (j->i < j->n) {
                uint8_t c = j->s[j->i];
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                        break;
                j->i++;
        }
}

static int hexval(uint8_t c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        c |= 0x20;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

static int read_hex4(struct jscan *j, uint32_t *out)
{
        if (j->n - j->i < 4)
                return bad(j);
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
                int h = hexval(j->s[j->i++]);
                if (h < 0)
                        return bad(j);
                v = v << 4 | (uint32_t)h;
        }
        *out = v;
        return 0;
}

static size_t utf8_put(uint8_t *d, uint32_t cp)
{
        if (cp < 0x80) {
                d[0] = (uint8_t)cp;
                return 1;
        }
        if (cp < 0x800) {
                d[0] = (uint8_t)(0xc0 | cp >> 6);
                d[1] = (uint8_t)(0x80 | (cp & 0x3f));
                return 2;
        }
        if (cp < 0x10000) {
                d[0] = (uint8_t)(0xe0 | cp >> 12);
                d[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
                d[2] = (uint8_t)(0x80 | (cp & 0x3f));
                return 3;
        }
        d[0] = (uint8_t)(0xf0 | cp >> 18);
        d[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
        d[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        d[3] = (uint8_t)(0x80 | (cp & 0x3f));
        return 4;
}

/* Decode an escape after the backslash into d (>= 4 bytes). Lone
 * surrogates become U+FFFD, as Go does. */
static int decode_escape(struct jscan *j, uint8_t *d, size_t *dn)
{
        if (j->i >= j->n)
                return bad(j);
        uint8_t c = j->s[j->i++];
        switch (c) {
        case '"':
        case '\\':
        case '/':
                d[0] = c;
                *dn = 1;
                return 0;
        case 'b':
                d[0] = '\b';
                *dn = 1;
                return 0;
        case 'f':
                d[0] = '\f';
                *dn = 1;
                return 0;
        case 'n':
                d[0] = '\n';
                *dn = 1;
                return 0;
        case 'r':
                d[0] = '\r';
                *dn = 1;
                return 0;
        case 't':
                d[0] = '\t';
                *dn = 1;
                return 0;
        case 'u':
                break;
        default:
                return bad(j);
        }
        uint32_t cp, lo;
        if (read_hex4(j, &cp))
                return -1;
        if (cp >= 0xd800 && cp < 0xdc00 && j->n - j->i >= 6 && j->s[j->i] == '\\' &&
            j->s[j->i + 1] == 'u') {
                size_t save = j->i;
                j->i += 2;
                if (read_hex4(j, &lo))
                        return -1;
                if (lo >= 0xdc00 && lo < 0xe000)
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                        j->i = save; /* not a pair: decode the second on its own */
        }
        if (cp >= 0xd800 && cp < 0xe000)
                cp = 0xfffd;
        *dn = utf8_put(d, cp);
        return 0;
}

/*
 * String at j->i (the opening quote). With out == NULL it is only
 * validated; otherwise *out is a view into the JSON text, or, when there
 * are escapes, into the decode buffer (decode == true) or nothing.
 */
static int scan_string(struct jscan *j, struct nats_view *out, bool decode)
{
        if (j->i >= j->n || j->s[j->i] != '"')
                return bad(j);
        size_t start = ++j->i;
        bool escaped = false;
        while (j->i < j->n) {
                uint8_t c = j->s[j->i];
                if (c == '"')
                        break;
                if (c < 0x20)
                        return bad(j);
                if (c == '\\') {
                        escaped = true;
                        j->i++;
                        uint8_t tmp[4];
                        size_t dn;
                        if (decode_escape(j, tmp, &dn))
                                return -1;
                        continue;
                }
                j->i++;
        }
        if (j->i >= j->n)
                return bad(j);
        size_t end = j->i++; /* past the closing quote */
        if (!out)
                return 0;
        out->ptr = j->s + start;
        out->len = end - start;
        if (!escaped || !decode)
                return escaped ? 1 : 0;

        /* second pass: decode into the caller's buffer */
        if (!j->buf) {
                if (!j->err)
                        j->err = -ENOBUFS;
                return -1;
        }
        size_t save = j->i;
        uint8_t *d = j->buf + j->buf_used;
        size_t dlen = 0;
        j->i = start;
        while (j->i < end) {
                uint8_t tmp[4];
                size_t dn = 1;
                if (j->s[j->i] == '\\') {
                        j->i++;
                        if (decode_escape(j, tmp, &dn))
                                return -1;
                } else {
                        tmp[0] = j->s[j->i++];
                }
                if (j->buf_used + dlen + dn > j->buf_len) {
                        if (!j->err)
                                j->err = -ENOBUFS;
                        return -1;
                }
                memcpy(d + dlen, tmp, dn);
                dlen += dn;
        }
        j->i = save;
        j->buf_used += dlen;
        out->ptr = d;
        out->len = dlen;
        return 0;
}

static bool match_lit(struct jscan *j, const char *lit)
{
        size_t l = strlen(lit);
        if (j->n - j->i < l || memcmp(j->s + j->i, lit, l) != 0)
                return false;
        j->i += l;
        return true;
}

/* JSON number grammar; *is_int set when there is no fraction/exponent. */
static int scan_number(struct jscan *j, size_t *start, bool *is_int)
{
        *start = j->i;
        *is_int = true;
        if (j->i < j->n && j->s[j->i] == '-')
                j->i++;
        if (j->i >= j->n)
                return bad(j);
        if (j->s[j->i] == '0') {
                j->i++;
        } else if (j->s[j->i] >= '1' && j->s[j->i] <= '9') {
                while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
                        j->i++;
        } else {
                return bad(j);
        }
        if (j->i < j->n && j->s[j->i] == '.') {
                *is_int = false;
                j->i++;
                size_t d = j->i;
                while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
                        j->i++;
                if (j->i == d)
                        return bad(j);
        }
        if (j->i < j->n && (j->s[j->i] | 0x20) == 'e') {
                *is_int = false;
                j->i++;
                if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-'))
                        j->i++;
                size_t d = j->i;
                while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
                        j->i++;
                if (j->i == d)
                        return bad(j);
        }
        return 0;
}

/* Skip any value, validating it; bounded nesting. */
static int skip_value(struct jscan *j, int depth)
{
        if (depth > JSON_DEPTH_MAX)
                return bad(j);
        skip_ws(j);
        if (j->i >= j->n)
                return bad(j);
        uint8_t c = j->s[j->i];
        size_t st;
        bool is_int;
        switch (c) {
        case '"':
                return scan_string(j, NULL, false);
        case 't':
                return match_lit(j, "true") ? 0 : bad(j);
        case 'f':
                return match_lit(j, "false") ? 0 : bad(j);
        case 'n':
                return match_lit(j, "null") ? 0 : bad(j);
        case '[':
                j->i++;
                skip_ws(j);
                if (j->i < j->n && j->s[j->i] == ']') {
                        j->i++;
                        return 0;
                }
                for (;;) {
                        if (skip_value(j, depth + 1))
                                return -1;
                        skip_ws(j);
                        if (j->i >= j->n)
                                return bad(j);
                        if (j->s[j->i] == ']') {
                                j->i++;
                                return 0;
                        }
                        if (j->s[j->i++] != ',')
                                return bad(j);
                }
        case '{':
                j->i++;
                skip_ws(j);
                if (j->i < j->n && j->s[j->i] == '}') {
                        j->i++;
                        return 0;
                }
                for (;;) {
                        skip_ws(j);
                        if (scan_string(j, NULL, false))
                                return -1;
                        skip_ws(j);
                        if (j->i >= j->n || j->s[j->i++] != ':')
                                return bad(j);
                        if (skip_value(j, depth + 1))
                                return -1;
                        skip_ws(j);
                        if (j->i >= j->n)
                                return bad(j);
                        if (j->s[j->i] == '}') {
                                j->i++;
                                return 0;
                        }
                        if (j->s[j->i++] != ',')
                                return bad(j);
                }
        default:
                return scan_number(j, &st, &is_int);
        }
}

enum key_kind { K_SKIP, K_BOOL, K_INT, K_STR };

/* Go's encoding/json matches field names case-insensitively. */
static bool key_is(struct nats_view k, const char *name)
{
        size_t l = strlen(name);
        if (k.len != l)
                return false;
        for (size_t i = 0; i < l; i++) {
                uint8_t c = k.ptr[i];
                if (c >= 'A' && c <= 'Z')
                        c = (uint8_t)(c + ('a' - 'A'));
                if (c != (uint8_t)name[i])
                        return false;
        }
        return true;
}

static enum key_kind classify(struct nats_view k, struct nats_connect *c, bool **bp, int64_t **ip,
                              struct nats_view **sp)
{
        static const struct {
                const char *name;
                size_t off;
        } bools[] =
            {
                {"verbose", offsetof(struct nats_connect, verbose)},
                {"pedantic", offsetof(struct nats_connect, pedantic)},
                {"echo", offsetof(struct nats_connect, echo)},
                {"headers", offsetof(struct nats_connect, headers)},
                {"no_responders", offsetof(struct nats_connect, no_responders)},
                {"tls_required", offsetof(struct nats_connect, tls_required)},
            },
          strs[] = {
              {"name", offsetof(struct nats_connect, name)},
              {"lang", offsetof(struct nats_connect, lang)},
              {"version", offsetof(struct nats_connect, version)},
              {"user", offsetof(struct nats_connect, user)},
              {"pass", offsetof(struct nats_connect, pass)},
              {"auth_token", offsetof(struct nats_connect, auth_token)},
              {"jwt", offsetof(struct nats_connect, jwt)},
              {"nkey", offsetof(struct nats_connect, nkey)},
              {"sig", offsetof(struct nats_connect, sig)},
          };
        for (size_t i = 0; i < SL_ARRAY_LEN(bools); i++)
                if (key_is(k, bools[i].name)) {
                        *bp = (bool *)((char *)c + bools[i].off);
                        return K_BOOL;
                }
        for (size_t i = 0; i < SL_ARRAY_LEN(strs); i++)
                if (key_is(k, strs[i].name)) {
                        *sp = (struct nats_view *)((char *)c + strs[i].off);
                        return K_STR;
                }
        if (key_is(k, "protocol")) {
                *ip = &c->protocol;
                return K_INT;
        }
        return K_SKIP;
}

static int parse_int64(struct jscan *j, size_t start, int64_t *out)
{
        bool neg = j->s[start] == '-';
        uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (size_t k = start + neg; k < j->i; k++) {
                uint64_t d = (uint64_t)(j->s[k] - '0');
                if (v > (lim - d) / 10)
                        return bad(j); /* Go: value out of range */
                v = v * 10 + d;
        }
        *out = neg ? (int64_t)(0 - v) : (int64_t)v;
        return 0;
}

static int member_value(struct jscan *j, struct nats_view key, struct nats_connect *c)
{
        bool *bp = NULL;
        int64_t *ip = NULL;
        struct nats_view *sp = NULL;
        enum key_kind kind = classify(key, c, &bp, &ip, &sp);

        skip_ws(j);
        if (kind == K_SKIP)
                return skip_value(j, 1);
        if (match_lit(j, "null"))
                return 0; /* Go leaves the field as it was */
        if (j->i >= j->n)
                return bad(j);
        switch (kind) {
        case K_BOOL:
                if (match_lit(j, "true"))
                        *bp = true;
                else if (match_lit(j, "false"))
                        *bp = false;
                else
                        return bad(j);
                return 0;
        case K_INT: {
                size_t st;
                bool is_int;
                if (scan_number(j, &st, &is_int))
                        return -1;
                if (!is_int)
                        return bad(j);
                return parse_int64(j, st, ip);
        }
        case K_STR:
                if (j->s[j->i] != '"')
                        return bad(j);
                return scan_string(j, sp, true) < 0 ? -1 : 0;
        default:
                return bad(j);
        }
}

int nats_connect_parse(const uint8_t *json, size_t len, struct nats_connect *out, uint8_t *buf,
                       size_t buf_len)
{
        struct jscan j = {.s = json, .n = len, .buf = buf, .buf_len = buf ? buf_len : 0};

        memset(out, 0, sizeof(*out));
        out->verbose = true;
        out->pedantic = true;
        out->echo = true;

        skip_ws(&j);
        if (j.i >= j.n || j.s[j.i++] != '{')
                goto fail;
        skip_ws(&j);
        if (j.i < j.n && j.s[j.i] == '}') {
                j.i++;
                goto done;
        }
        for (;;) {
                struct nats_view key;
                skip_ws(&j);
                /* keys with escapes are never ours: no decode needed */
                int esc = scan_string(&j, &key, false);
                if (esc < 0)
                        goto fail;
                if (esc)
                        key.len = JSON_KEY_MAX + 1;
                skip_ws(&j);
                if (j.i >= j.n || j.s[j.i++] != ':') {
                        bad(&j);
                        goto fail;
                }
                if (member_value(&j, key, out))
                        goto fail;
                skip_ws(&j);
                if (j.i >= j.n) {
                        bad(&j);
                        goto fail;
                }
                if (j.s[j.i] == '}') {
                        j.i++;
                        break;
                }
                if (j.s[j.i++] != ',') {
                        bad(&j);
                        goto fail;
                }
        }
done:
        skip_ws(&j);
        if (j.i != j.n)
                goto fail; /* Go rejects trailing data */
        return 0;
fail:
        return j.err ? j.err : NATS_ERR_BAD_CONNECT;
}

int nats_connect_validate(const struct nats_connect *c)
{
        if (c->protocol < 0 || c->protocol > 1)
                return NATS_ERR_BAD_PROTOCOL;
        if (c->no_responders && !c->headers)
                return NATS_ERR_NO_RESPONDERS_HEADERS;
        return 0;
}
