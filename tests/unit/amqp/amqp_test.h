/* Helpers shared by the AMQP unit tests: byte comparison with a hex dump of
 * both sides on mismatch, so a failing golden test shows where it differs. */
#ifndef AMQP_TEST_H
#define AMQP_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static inline void amqp_test_dump(const char *what, const uint8_t *p, size_t n)
{
        fprintf(stderr, "%s (%zu):", what, n);
        for (size_t i = 0; i < n; i++)
                fprintf(stderr, "%s%02x", i % 16 ? " " : "\n  ", p[i]);
        fprintf(stderr, "\n");
}

static inline void amqp_test_bytes_eq(const void *got, size_t got_len, const void *want,
                                      size_t want_len, const char *file, int line)
{
        if (got_len == want_len && memcmp(got, want, got_len) == 0)
                return;
        amqp_test_dump("got", got, got_len);
        amqp_test_dump("want", want, want_len);
        _fail(file, line);
}

/* Variadic so that GOLDEN(...) expands to its two arguments first. */
#define assert_bytes_equal(...) assert_bytes_equal_(__VA_ARGS__)
#define assert_bytes_equal_(got, got_len, want, want_len)                                          \
        amqp_test_bytes_eq((got), (got_len), (want), (want_len), __FILE__, __LINE__)

/* A golden frame written as adjacent string literals (so "\x07" "product"
 * does not swallow hex digits); sizeof counts the terminating NUL. */
#define GOLDEN(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

#endif
