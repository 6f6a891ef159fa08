/* The NATS front-end as the runtime sees it. */
#ifndef NATS_PROTO_H
#define NATS_PROTO_H

#include "sl_conn.h"

extern const struct sl_proto_ops nats_proto_ops;

#endif
