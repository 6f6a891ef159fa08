/* The AMQP 0-9-1 front-end as the runtime sees it: the connection callbacks
 * implemented in amqp_server.c. */
#ifndef AMQP_PROTO_H
#define AMQP_PROTO_H

#include "sl_conn.h"

extern const struct sl_proto_ops amqp_proto_ops;

#endif
