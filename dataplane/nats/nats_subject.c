/* Subject validity and token splitting; the rules of nats-server's
 * sublist.go (isValidSubject), plus NUL is refused. */
#include "nats_subject.h"

#include <errno.h>
#include <string.h>

static bool token_char_ok(uint8_t c)
{
        return c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\0';
}

/* Walks tokens; wildcard tokens allowed only if wild. */
static bool subject_check(const uint8_t *s, size_t len, bool wild)
{
        if (len == 0)
                return false;
        bool saw_fwc = false;
        size_t start = 0;
        for (size_t i = 0; i <= len; i++) {
                if (i < len && s[i] != '.') {
                        if (!token_char_ok(s[i]))
                                return false;
                        continue;
                }
                size_t tlen = i - start;
                if (tlen == 0 || saw_fwc)
                        return false; /* empty token, or anything after '>' */
                if (tlen == 1 && (s[start] == '*' || s[start] == '>')) {
                        if (!wild)
                                return false;
                        saw_fwc = s[start] == '>';
                }
                start = i + 1;
        }
        return true;
}

bool nats_subject_valid(const uint8_t *s, size_t len)
{
        return subject_check(s, len, true);
}

bool nats_subject_valid_literal(const uint8_t *s, size_t len)
{
        return subject_check(s, len, false);
}

bool nats_queue_valid(const uint8_t *s, size_t len)
{
        return subject_check(s, len, false);
}

int nats_subject_tokens(const uint8_t *s, size_t len, struct nats_view *tok, size_t cap)
{
        size_t n = 0, start = 0;
        for (size_t i = 0; i <= len; i++) {
                if (i < len && s[i] != '.')
                        continue;
                if (n == cap)
                        return -E2BIG;
                tok[n].ptr = s + start;
                tok[n].len = i - start;
                n++;
                start = i + 1;
        }
        return (int)n;
}
