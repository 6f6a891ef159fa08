/* The table of protocol front-ends compiled into sluiced. */
#include "sluiced_protos.h"

void sluiced_protos_fill(const struct sl_proto_ops *protos[CTL_PROTO_COUNT])
{
        (void)protos;
}
