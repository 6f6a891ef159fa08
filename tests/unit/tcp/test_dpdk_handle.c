/* The DPDK backend's connection handles (net/net_dpdk.h): a worker serves
 * one TCP stack per port, and an sl_conn's fd, a receive view's token and
 * the ready queue name a connection by (port, stack index). These must stay
 * unique per worker across ports and survive the token's generation byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/net_dpdk.h"

static const uint32_t conn_samples[] = {0, 1, 255, 256, 65534, NET_DPDK_HANDLE_CONNS_MAX - 1};
#define NSAMPLES (sizeof(conn_samples) / sizeof(conn_samples[0]))

static void test_handle_round_trips_every_port_and_index(void **state)
{
        (void)state;
        for (uint16_t port = 0; port < CTL_DPDK_PORTS_MAX; port++)
                for (size_t i = 0; i < NSAMPLES; i++) {
                        uint32_t h = net_dpdk_handle(port, conn_samples[i]);
                        assert_int_equal(net_dpdk_handle_port(h), port);
                        assert_int_equal(net_dpdk_handle_conn(h), conn_samples[i]);
                }
}

static void test_same_index_on_two_ports_is_two_handles(void **state)
{
        (void)state;
        /* every (port, index) pair distinct: a map keyed by handle (sl_conn
         * fds, the ready queue) never confuses port 1's connection 7 with
         * port 0's */
        uint32_t seen[CTL_DPDK_PORTS_MAX * NSAMPLES];
        size_t n = 0;
        for (uint16_t port = 0; port < CTL_DPDK_PORTS_MAX; port++)
                for (size_t i = 0; i < NSAMPLES; i++) {
                        uint32_t h = net_dpdk_handle(port, conn_samples[i]);
                        for (size_t k = 0; k < n; k++)
                                assert_int_not_equal(seen[k], h);
                        seen[n++] = h;
                }
}

static void test_handle_leaves_the_token_generation_byte_alone(void **state)
{
        (void)state;
        /* a view token is handle | generation << 24; the largest handle must
         * decode unchanged whatever the generation */
        uint32_t h = net_dpdk_handle(CTL_DPDK_PORTS_MAX - 1, NET_DPDK_HANDLE_CONNS_MAX - 1);
        assert_true(h < 1u << 24);
        for (uint32_t gen = 0; gen < 256; gen += 85) {
                uint32_t token = h | gen << 24;
                assert_int_equal(token & 0xffffff, h);
                assert_int_equal(token >> 24, gen);
                assert_int_equal(net_dpdk_handle_port(token & 0xffffff), CTL_DPDK_PORTS_MAX - 1);
        }
}

static void test_handle_fits_an_int_fd(void **state)
{
        (void)state;
        /* sl_conn.fd is an int and -1 means "none": a handle is never negative */
        int fd = (int)net_dpdk_handle(CTL_DPDK_PORTS_MAX - 1, NET_DPDK_HANDLE_CONNS_MAX - 1);
        assert_true(fd > 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_handle_round_trips_every_port_and_index),
            cmocka_unit_test(test_same_index_on_two_ports_is_two_handles),
            cmocka_unit_test(test_handle_leaves_the_token_generation_byte_alone),
            cmocka_unit_test(test_handle_fits_an_int_fd),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
