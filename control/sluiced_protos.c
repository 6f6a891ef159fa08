/* The table of protocol front-ends compiled into sluiced. */
#include "sluiced_protos.h"

#include "amqp_proto.h"
#include "nats_proto.h"

extern const struct sl_proto_ops kafka_proto_ops;

void sluiced_protos_fill(const struct sl_proto_ops *protos[CTL_PROTO_COUNT])
{
        protos[CTL_PROTO_NATS] = &nats_proto_ops;
        protos[CTL_PROTO_KAFKA] = &kafka_proto_ops;
        protos[CTL_PROTO_AMQP] = &amqp_proto_ops;
}
