/* NATS subjects: validity of publish (literal) and subscription (wildcard)
 * subjects and queue names, and token splitting. Same rules as
 * nats-server's IsValidSubject / IsValidLiteralSubject. */
#ifndef NATS_SUBJECT_H
#define NATS_SUBJECT_H

#include "nats_parser.h" /* struct nats_view */

/* Subscription subject: non-empty tokens without whitespace or NUL; "*" and
 * ">" are wildcards only as whole tokens, and ">" only as the last token.
 * "foo*" or "foo>" are plain literal tokens. */
bool nats_subject_valid(const uint8_t *s, size_t len);
/* Publish subject: valid and without wildcard tokens. */
bool nats_subject_valid_literal(const uint8_t *s, size_t len);
/* Queue group names follow subject rules, without wildcards. */
bool nats_queue_valid(const uint8_t *s, size_t len);

/* Split on '.' into tok[0..cap). Returns the number of tokens (empty ones
 * included; validity is the caller's business), or -E2BIG when there are
 * more than cap (tok then holds the first cap). */
int nats_subject_tokens(const uint8_t *s, size_t len, struct nats_view *tok, size_t cap);

#endif
