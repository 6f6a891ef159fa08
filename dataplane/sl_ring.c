/* Construction of sl_ring; the hot operations are inline in sl_ring.h. */
#include "sl_ring.h"

#include <errno.h>
#include <stdlib.h>

struct sl_ring *sl_ring_create(uint32_t slots, uint32_t slot_bytes)
{
        if (slots < 2 || (slots & (slots - 1)) || slot_bytes == 0)
                return NULL;
        struct sl_ring *r = aligned_alloc(SL_CACHELINE, sizeof(*r));
        if (!r)
                return NULL;
        memset(r, 0, sizeof(*r));
        size_t bytes = SL_ALIGN_UP((size_t)slots * slot_bytes, (size_t)SL_CACHELINE);
        r->data = aligned_alloc(SL_CACHELINE, bytes);
        if (!r->data) {
                free(r);
                return NULL;
        }
        memset(r->data, 0, bytes);
        r->slots = slots;
        r->slot_bytes = slot_bytes;
        return r;
}

void sl_ring_destroy(struct sl_ring *r)
{
        if (!r)
                return;
        free(r->data);
        free(r);
}
