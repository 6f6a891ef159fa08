/* Carving of buffer pools at startup. */
#include "sl_buf.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

int sl_buf_pool_init(struct sl_buf_pool *p, uint16_t owner, const uint32_t counts[SL_BUF_CLASSES],
                     const uint32_t bytes[SL_BUF_CLASSES])
{
        memset(p, 0, sizeof(*p));
        p->owner = owner;
        size_t total = 0;
        for (int c = 0; c < SL_BUF_CLASSES; c++) {
                p->count[c] = counts[c];
                p->bytes[c] = bytes[c];
                total += (size_t)counts[c] * SL_ALIGN_UP(sizeof(struct sl_buf) + bytes[c], 64);
        }
        if (total == 0)
                return 0;
        /* MAP_NORESERVE: large classes are sized for the worst case and mostly
         * never touched; untouched pages cost nothing. */
        p->mem = mmap(NULL, total, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p->mem == MAP_FAILED) {
                p->mem = NULL;
                return -ENOMEM;
        }
        p->mem_bytes = total;
        uint8_t *at = p->mem;
        for (int c = 0; c < SL_BUF_CLASSES; c++) {
                p->stride[c] = SL_ALIGN_UP(sizeof(struct sl_buf) + bytes[c], 64);
                p->base[c] = at;
                at += (size_t)counts[c] * p->stride[c];
        }

        return 0;
}

void sl_buf_pool_fini(struct sl_buf_pool *p)
{
        if (p->mem)
                munmap(p->mem, p->mem_bytes);
        memset(p, 0, sizeof(*p));
}
