/* CRC-32C against published vectors (both code paths agree) and record
 * batch validation: a corrupt batch is refused, never stored. */
#include "st_util.h"

#include <errno.h>

/* The worked example of shared/specs/kafka/RECORDS.md, section 4. */
static const uint8_t records_md_batch[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3e, 0xff, 0xff, 0xff,
    0xff, 0x02, 0x67, 0x5a, 0x95, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00,
    0x01, 0x18, 0x00, 0x00, 0x00, 0x02, 0x6b, 0x02, 0x76, 0x02, 0x02, 0x68, 0x02, 0x31,
};

static void test_crc_vectors(void **state)
{
        (void)state;
        assert_int_equal(sizeof(records_md_batch), 74);
        assert_int_equal(log_crc32c(0, "123456789", 9), 0xE3069283u);
        assert_int_equal(log_crc32c_sw(0, "123456789", 9), 0xE3069283u);
        uint8_t zeros[32] = {0};
        assert_int_equal(log_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
        assert_int_equal(log_crc32c(0, records_md_batch + 21, 53), 0x675a95fdu);
        assert_int_equal(log_crc32c_sw(0, records_md_batch + 21, 53), 0x675a95fdu);
        /* incremental == one shot, hw == sw, at every split and alignment */
        uint8_t buf[1031];
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t)(i * 7 + 3);
        for (size_t off = 0; off < 9; off++) {
                uint32_t whole = log_crc32c(0, buf + off, sizeof(buf) - off);
                assert_int_equal(whole, log_crc32c_sw(0, buf + off, sizeof(buf) - off));
                for (size_t cut = 0; cut < 40; cut++)
                        assert_int_equal(whole,
                                         log_crc32c(log_crc32c(0, buf + off, cut), buf + off + cut,
                                                    sizeof(buf) - off - cut));
        }
        /* the fused copy gives the same CRC and the same bytes */
        uint8_t dst[1040];
        for (size_t off = 0; off < 9; off++)
                for (size_t n = 0; n < sizeof(buf) - off; n += 97) {
                        memset(dst, 0xEE, sizeof(dst));
                        assert_int_equal(log_crc32c_copy(0, dst + (off ^ 3), buf + off, n),
                                         log_crc32c_sw(0, buf + off, n));
                        assert_memory_equal(dst + (off ^ 3), buf + off, n);
                        assert_int_equal(dst[(off ^ 3) + n], 0xEE);
                }
        printf("crc32c hardware path: %s\n", log_crc32c_hw() ? "sse4.2" : "table");
}

/* Byte-at-a-time reference, independent of log_crc32c.c's tables. */
static uint32_t ref_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
        static uint32_t tab[256];
        if (!tab[1])
                for (uint32_t i = 0; i < 256; i++) {
                        uint32_t c = i;
                        for (int k = 0; k < 8; k++)
                                c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
                        tab[i] = c;
                }
        crc = ~crc;
        while (n--)
                crc = tab[(crc ^ *p++) & 0xff] ^ (crc >> 8);
        return ~crc;
}

/* The three-stream path joins partial CRCs with shift tables; a wrong
 * table or a wrong block split shows up at some length or alignment. Every
 * length 0..4096 at every alignment covers the short blocks (3 x 256) and
 * the tails; random lengths up to 1 MiB cover the long blocks (3 x 8 KiB),
 * plus the lengths right around each block boundary. */
static void test_crc_3way_every_length_and_alignment(void **state)
{
        (void)state;
        enum { MAXN = (1 << 20) + 64 };
        uint8_t *buf = malloc(MAXN), *dst = malloc(MAXN + 16);
        assert_non_null(buf);
        assert_non_null(dst);
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < MAXN; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                buf[i] = (uint8_t)x;
        }
        for (size_t off = 0; off < 8; off++)
                for (size_t n = 0; n <= 4096; n++) {
                        uint32_t want = ref_crc32c(0, buf + off, n);
                        assert_int_equal(log_crc32c(0, buf + off, n), want);
                        assert_int_equal(log_crc32c_sw(0, buf + off, n), want);
                        /* the fused copy: same CRC, same bytes, nothing past n */
                        dst[off ^ 5] = 0;
                        dst[(off ^ 5) + n] = 0xEE;
                        assert_int_equal(log_crc32c_copy(0, dst + (off ^ 5), buf + off, n), want);
                        assert_int_equal(dst[(off ^ 5) + n], 0xEE);
                        assert_memory_equal(dst + (off ^ 5), buf + off, n);
                }
        const size_t edges[] = {3 * 8192 - 1,   3 * 8192,       3 * 8192 + 1, 3 * 8192 + 767,
                                3 * 8192 + 768, 6 * 8192 + 769, 1 << 20};
        for (size_t i = 0; i < 64 + sizeof(edges) / sizeof(edges[0]); i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                size_t off = x % 61;
                size_t n = i < 64 ? (size_t)(x >> 20) % (1u << 20) : edges[i - 64];
                uint32_t seed = (uint32_t)(x >> 7); /* continuing from another CRC */
                uint32_t want = ref_crc32c(seed, buf + off, n);
                assert_int_equal(log_crc32c(seed, buf + off, n), want);
                assert_int_equal(log_crc32c_sw(seed, buf + off, n), want);
                assert_int_equal(log_crc32c_copy(seed, dst + 3, buf + off, n), want);
                assert_memory_equal(dst + 3, buf + off, n);
        }
        free(buf);
        free(dst);
}

static void test_batch_validate(void **state)
{
        (void)state;
        uint8_t b[4096];
        assert_int_equal(log_batch_validate(records_md_batch, 74, 1 << 20), 0);
        uint32_t n = st_batch(b, 5, 100, 1700000000000, 1);
        assert_int_equal(log_batch_validate(b, n, 1 << 20), 0);
        assert_int_equal(log_batch_last_delta(b), 4);
        assert_int_equal(log_batch_len(b), n);
        assert_int_equal(log_batch_max_timestamp(b), 1700000000000);
        /* limits: one under passes, one over is too large */
        assert_int_equal(log_batch_validate(b, n, n), 0);
        assert_int_equal(log_batch_validate(b, n, n - 1), -EMSGSIZE);
        /* truncated, wrong length field, wrong magic */
        assert_int_equal(log_batch_validate(b, 60, 1 << 20), -EBADMSG);
        assert_int_equal(log_batch_validate(b, n - 1, 1 << 20), -EBADMSG);
        b[16] = 1;
        assert_int_equal(log_batch_validate(b, n, 1 << 20), -EBADMSG);
        b[16] = 2;
        /* a flipped payload bit breaks the CRC */
        b[n - 3] ^= 0x10;
        assert_int_equal(log_batch_validate(b, n, 1 << 20), -EBADMSG);
        b[n - 3] ^= 0x10;
        /* lastOffsetDelta must be records - 1 (CRC recomputed so only that
         * check can fail) */
        st_be32(b + 23, 3);
        st_be32(b + 17, log_crc32c(0, b + 21, n - 21));
        assert_int_equal(log_batch_validate(b, n, 1 << 20), -EBADMSG);
        st_be32(b + 23, 4);
        st_be32(b + 17, log_crc32c(0, b + 21, n - 21));
        /* baseOffset and leader epoch lie outside the CRC: stamping them is
         * free */
        st_be64(b, 12345);
        st_be32(b + 12, 7);
        assert_int_equal(log_batch_validate(b, n, 1 << 20), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_crc_vectors),
            cmocka_unit_test(test_crc_3way_every_length_and_alignment),
            cmocka_unit_test(test_batch_validate),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
