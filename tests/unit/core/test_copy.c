/* sl_copy_stream (sl_common.h): the non-temporal copy the Kafka cache fills
 * its blocks with. Every length around its thresholds (the 256-byte
 * cut-over, the 16-byte head alignment, the 64-byte loop and its tail) at
 * every destination and source misalignment lands exactly the bytes asked
 * for and touches nothing around them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "sl_common.h"

#define GUARD 64

static void test_copy_stream_exact(void **state)
{
        (void)state;
        static uint8_t src[4096 + 64], dst[4096 + 64 + 2 * GUARD];
        for (size_t i = 0; i < sizeof(src); i++)
                src[i] = (uint8_t)(i * 131 + 7);
        const size_t lens[] = {0,   1,   15,  16,  17,  63,  64,   65,
                               255, 256, 257, 319, 320, 321, 1000, 4096};
        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++)
                for (size_t doff = 0; doff < 16; doff++)
                        for (size_t soff = 0; soff < 16; soff += 5) {
                                size_t n = lens[li];
                                memset(dst, 0xA5, sizeof(dst));
                                sl_copy_stream(dst + GUARD + doff, src + soff, n);
                                assert_memory_equal(dst + GUARD + doff, src + soff, n);
                                for (size_t k = 0; k < GUARD + doff; k++)
                                        assert_int_equal(dst[k], 0xA5);
                                for (size_t k = GUARD + doff + n; k < sizeof(dst); k++)
                                        assert_int_equal(dst[k], 0xA5);
                        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_copy_stream_exact),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
