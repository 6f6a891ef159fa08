/* The runtime's own test protocol: newline-terminated lines, served on the
 * `test` listener only when a config enables it. It lets integration tests
 * exercise the worker loop, backpressure and timeouts without depending on
 * any real front-end. */
#ifndef SL_TESTPROTO_H
#define SL_TESTPROTO_H

#include "sl_conn.h"

/* Commands (one per line):
 *   WORKER      -> "<worker id>\n"
 *   BIG <n>     -> n bytes of 'x' then "\n" (generated as the client reads)
 *   QUIT        -> "BYE\n", then the server closes
 *   anything    -> echoed back with "\n"
 * A line longer than the frame limit gets "ERR line too long\n" and a close;
 * an unfinished line is subject to the partial-frame timeout. */
extern const struct sl_proto_ops sl_testproto_ops;

#endif
