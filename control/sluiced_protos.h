/* Which protocol front-ends this build links: each one fills its slot. */
#ifndef SLUICED_PROTOS_H
#define SLUICED_PROTOS_H

#include "ctl_config.h"
#include "sl_conn.h"

void sluiced_protos_fill(const struct sl_proto_ops *protos[CTL_PROTO_COUNT]);

#endif
