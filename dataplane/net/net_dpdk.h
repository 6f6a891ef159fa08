/* The DPDK backend's process-wide side, called by sluiced's control thread:
 * EAL and ports up before the workers start, down after they stopped.
 * Declared whether or not the build has DPDK; defined only when it has. */
#ifndef NET_DPDK_H
#define NET_DPDK_H

#include <stddef.h>
#include <stdint.h>

#include "ctl_config.h"
#include "sl_conn.h"

struct sl_net_ops;

/* Initialises the EAL from [dpdk] and configures and starts every port
 * (one queue pair each). 0, or -errno with a message naming the port or
 * key at fault: sluiced then refuses to start. */
int net_dpdk_setup(const struct ctl_config *cfg, char *err, size_t err_len);
void net_dpdk_teardown(void);

extern const struct sl_net_ops net_dpdk_ops;

struct sl_worker;
struct sl_msg;

/* The worker that owns a TCP flow: a pure function of the 4-tuple, so any
 * worker can tell where a segment must go. It is the queue RSS picks on a
 * port with sluiced's key and a table of reta_size entries (i -> queue
 * i % nworkers); reta_size 0 for a port without RSS. Host byte order. */
uint16_t net_dpdk_flow_owner(uint32_t peer_ip, uint32_t local_ip, uint16_t peer_port,
                             uint16_t local_port, uint16_t reta_size, uint16_t nworkers);
/* SL_MSG_NET_FRAME: a frame another worker received for one of ours
 * (a.ptr[0] = the mbuf, consumed; u16 = the index of the port it came in
 * on, whose stack takes it). */
void net_dpdk_frame_msg(struct sl_worker *w, const struct sl_msg *msg);

/* A DPDK connection's handle (its sl_conn fd; a receive view's token adds
 * an 8-bit generation above bit 24): the index of the port in [dpdk] ports
 * and the connection's index in that port's stack, so handles are unique
 * per worker across ports and decode with a shift. */
#define NET_DPDK_HANDLE_CONN_BITS 16
#define NET_DPDK_HANDLE_CONNS_MAX (1u << NET_DPDK_HANDLE_CONN_BITS)
_Static_assert(CTL_DPDK_PORTS_MAX <= 1 << (24 - NET_DPDK_HANDLE_CONN_BITS),
               "a handle fits below a view token's generation byte");

static inline uint32_t net_dpdk_handle(uint16_t port, uint32_t conn)
{
        return (uint32_t)port << NET_DPDK_HANDLE_CONN_BITS | conn;
}
static inline uint16_t net_dpdk_handle_port(uint32_t handle)
{
        return (uint16_t)(handle >> NET_DPDK_HANDLE_CONN_BITS);
}
static inline uint32_t net_dpdk_handle_conn(uint32_t handle)
{
        return handle & (NET_DPDK_HANDLE_CONNS_MAX - 1);
}

/* Control thread: worker w's stack counters for /metrics (published by
 * the worker about every 100 ms). */
void net_dpdk_metrics(struct sl_worker *w, sl_metric_emit_fn emit, void *ctx);

#endif
