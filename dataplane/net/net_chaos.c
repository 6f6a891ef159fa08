/* The chaos test layer: on top of a real kernel backend, it splits received
 * data at random points down to single bytes, shortens sends, holds send
 * completions back for a few loop iterations and pretends buffer pools are
 * empty now and then. Decisions come from a seeded xorshift PRNG so a
 * failing run can be replayed with the same [net] chaos_seed. */
#include <stdlib.h>

#include "net.h"

struct sl_chaos {
        uint64_t state;
        uint16_t worker;
};

static uint64_t chaos_next(struct sl_chaos *ch)
{
        uint64_t x = ch->state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ch->state = x;
        return x;
}

struct sl_chaos *net_chaos_create(uint32_t seed, uint16_t worker)
{
        struct sl_chaos *ch = calloc(1, sizeof(*ch));
        if (!ch)
                return NULL;
        ch->state = ((uint64_t)seed << 32 | 0x9e3779b9u) ^ 0x2545f4914f6cdd1dull;
        ch->worker = worker;
        return ch;
}

void net_chaos_destroy(struct sl_chaos *ch)
{
        free(ch);
}

uint32_t net_chaos_rx_split(struct sl_chaos *ch, uint32_t n)
{
        if (n <= 1)
                return n;
        uint64_t r = chaos_next(ch);
        switch (r & 3) {
        case 0:
                return 1; /* a single byte */
        case 1:
                return n; /* everything */
        default:
                return 1 + (uint32_t)((r >> 8) % n);
        }
}

size_t net_chaos_tx_cap(struct sl_chaos *ch, size_t n)
{
        if (n <= 1)
                return n;
        uint64_t r = chaos_next(ch);
        if ((r & 3) == 0)
                return n;
        return 1 + (size_t)((r >> 8) % n);
}

uint32_t net_chaos_tx_delay(struct sl_chaos *ch)
{
        uint64_t r = chaos_next(ch);
        return (r & 7) == 0 ? 1 + (uint32_t)((r >> 8) % 4) : 0;
}

bool net_chaos_exhaust(struct sl_chaos *ch)
{
        return (chaos_next(ch) & 63) == 0;
}
