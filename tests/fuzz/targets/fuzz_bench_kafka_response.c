/* sluice-bench's Kafka response parsers (tools/sluice-bench/bench_kafka.c):
 * the first input byte picks the API (Produce, Fetch with record walking,
 * Metadata), the rest is one response frame after its size. They read what
 * a broker sends, so a broken broker must never make them read out of
 * bounds. */
#include <stddef.h>
#include <stdint.h>

#include "bench_kafka.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const int16_t apis[] = {0, 1, 3};
        if (size < 1)
                return 0;
        bench_kafka_parse(apis[data[0] % 3], data + 1, size - 1);
        return 0;
}
