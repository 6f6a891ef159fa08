/* Unit tests of the configuration subsystem: defaults, every key, every
 * error message an operator may meet, cross-key validation, the printed
 * config reading back the same, and what SIGHUP may and may not change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_config.h"
#include "sl_build.h"

#define ERR_LEN 512

static char err[ERR_LEN];

/* Loads text over the defaults; the file is called t.conf in messages. */
static int load(struct ctl_config *cfg, const char *text)
{
        ctl_config_defaults(cfg);
        err[0] = '\0';
        return ctl_config_load_string(cfg, text, "t.conf", err, sizeof(err));
}

/* Loads text that must fail and checks the exact one-line message. */
static void load_fails_with(const char *text, const char *message)
{
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, text), -EINVAL);
        assert_string_equal(err, message);
}

/* Loads text that must fail; the message must start with prefix. */
static void load_fails_starting(const char *text, const char *prefix)
{
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, text), -EINVAL);
        if (strncmp(err, prefix, strlen(prefix)) != 0)
                fail_msg("message \"%s\" does not start with \"%s\"", err, prefix);
}

static void assert_contains(const char *haystack, const char *needle)
{
        assert_non_null(haystack);
        assert_non_null(needle);
        if (!strstr(haystack, needle))
                fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static void assert_config_equal(const struct ctl_config *a, const struct ctl_config *b)
{
        struct ctl_config x = *a, y = *b;
        memset(x.path, 0, sizeof(x.path));
        memset(y.path, 0, sizeof(y.path));
        assert_memory_equal(&x, &y, sizeof(x));
}

/* The first CPU this process may run on: tests pin to it so they pass
 * whatever the machine's CPU numbering. */
static int first_cpu(void)
{
        cpu_set_t set;
        assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
                if (CPU_ISSET(cpu, &set))
                        return cpu;
        fail_msg("no usable CPU");
        return -1;
}

static char *print_to_string(const struct ctl_config *cfg)
{
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        ctl_config_print(cfg, f);
        assert_int_equal(fclose(f), 0);
        return text;
}

/* Runs validate; returns its result, the warnings go to *warnings. */
static int validate(const struct ctl_config *cfg, char **warnings)
{
        size_t len = 0;
        FILE *f = open_memstream(warnings, &len);
        assert_non_null(f);
        err[0] = '\0';
        int rc = ctl_config_validate(cfg, err, sizeof(err), f);
        assert_int_equal(fclose(f), 0);
        return rc;
}

/* ------------------------------------------------------------------ */

static void test_defaults(void **state)
{
        (void)state;
        struct ctl_config cfg;
        ctl_config_defaults(&cfg);

        assert_string_equal(cfg.path, "");
        assert_int_equal(cfg.mode, CTL_MODE_KERNEL);
        assert_string_equal(cfg.data_dir, "/var/lib/sluice");
        assert_string_equal(cfg.name, "sluice");
        assert_int_equal(cfg.log_level, CTL_LOG_INFO);
        assert_int_equal(cfg.recycle_segments, 2);

        /* one worker per usable CPU, each pinned to its own, in order */
        cpu_set_t set;
        assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
        int expect = CPU_COUNT(&set) < CTL_WORKERS_MAX ? CPU_COUNT(&set) : CTL_WORKERS_MAX;
        assert_int_equal(cfg.worker_count, expect);
        assert_int_equal(cfg.worker_cores[0], first_cpu());
        for (uint32_t i = 1; i < cfg.worker_count; i++)
                assert_true(cfg.worker_cores[i] > cfg.worker_cores[i - 1]);
        for (uint32_t i = cfg.worker_count; i < CTL_WORKERS_MAX; i++)
                assert_int_equal(cfg.worker_cores[i], -1);
        assert_int_equal(cfg.control_core, -1);
        assert_int_equal(cfg.idle, CTL_IDLE_ADAPTIVE);
        assert_int_equal(cfg.idle_spin_us, 50);

        assert_int_equal(cfg.net_backend, CTL_NET_AUTO);
        assert_int_equal(cfg.recv_buffers, 512);
        assert_int_equal(cfg.recv_buffer_bytes, 65536);
        assert_int_equal(cfg.ring_slots, 4096);

        const struct ctl_listener *nats = &cfg.listeners[CTL_PROTO_NATS];
        assert_true(nats->enabled);
        assert_string_equal(nats->host, "127.0.0.1");
        assert_int_equal(nats->port, 4222);
        assert_string_equal(nats->advertised_host, "");
        assert_int_equal(nats->advertised_port, 0);
        assert_true(cfg.listeners[CTL_PROTO_KAFKA].enabled);
        assert_int_equal(cfg.listeners[CTL_PROTO_KAFKA].port, 9092);
        assert_true(cfg.listeners[CTL_PROTO_AMQP].enabled);
        assert_int_equal(cfg.listeners[CTL_PROTO_AMQP].port, 5672);
        assert_false(cfg.listeners[CTL_PROTO_TEST].enabled);

        assert_true(cfg.admin_enabled);
        assert_string_equal(cfg.admin_host, "127.0.0.1");
        assert_int_equal(cfg.admin_port, 8080);

        const struct ctl_limits *l = &cfg.limits;
        assert_int_equal(l->connections_max, 65536);
        assert_int_equal(l->connections_per_ip_max, 0);
        assert_int_equal(l->frame_bytes_max, 1048576);
        assert_int_equal(l->control_line_bytes_max, 4096);
        assert_int_equal(l->inflight_requests_max, 64);
        assert_int_equal(l->pending_response_bytes_max, 64ull << 20);
        assert_int_equal(l->pinned_bytes_per_conn_max, 8ull << 20);
        assert_int_equal(l->pinned_bytes_per_worker_max, 512ull << 20);
        assert_int_equal(l->partial_frame_timeout_ms, 10000);
        assert_int_equal(l->idle_timeout_ms, 0);
        assert_int_equal(l->write_deadline_ms, 10000);
        assert_int_equal(l->subscriptions_max, 0);

        assert_int_equal(cfg.nats_ping_interval_ms, 120000);
        assert_int_equal(cfg.nats_ping_max_outstanding, 2);
        assert_int_equal(cfg.nats_auth_timeout_ms, 2000);
        assert_string_equal(cfg.nats_token, "");
        assert_int_equal(cfg.nats_user_count, 0);

        char *warnings = NULL;
        assert_int_equal(validate(&cfg, &warnings), 0);
        assert_string_equal(warnings, "");
        free(warnings);
}

/* SIGHUP reloads on the control thread after it pinned itself to one core:
 * the default worker set must not shrink to that core, or every reload of
 * a file without [cores] workers would be refused. */
static void test_defaults_survive_thread_pinning(void **state)
{
        (void)state;
        cpu_set_t saved, one;
        struct ctl_config before, after;
        assert_int_equal(sched_getaffinity(0, sizeof(saved), &saved), 0);
        ctl_config_defaults(&before);
        CPU_ZERO(&one);
        CPU_SET(first_cpu(), &one);
        assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
        ctl_config_defaults(&after);
        assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
        assert_config_equal(&before, &after);
        assert_int_equal(after.worker_count, before.worker_count);
}

/* Every key, each set away from its default. */
static const char every_key[] = "; every key of the file, none at its default\n"
                                "[server]\n"
                                "mode = dpdk\n"
                                "data_dir = /srv/sluice\n"
                                "name = broker-7\n"
                                "log_level = debug\n"
                                "recycle_segments = 0\n"
                                "[cores]\n"
                                "workers = 2,3,5-7\n"
                                "control = 1\n"
                                "idle = poll\n"
                                "idle_spin_us = 7\n"
                                "[net]\n"
                                "backend = chaos\n"
                                "chaos_seed = 42\n"
                                "recv_buffers = 256\n"
                                "recv_buffer_bytes = 64k\n"
                                "ring_slots = 512\n"
                                "[listeners]\n"
                                "nats = 0.0.0.0:14222\n"
                                "nats_advertised = broker.example.com:24222\n"
                                "kafka = [::1]:19092\n"
                                "kafka_advertised = [2001:db8::1]:0\n"
                                "amqp = 10.0.0.1:0\n"
                                "amqp_advertised = 192.0.2.7:5672\n"
                                "test = 127.0.0.1:0\n"
                                "test_advertised = localhost:1\n"
                                "[admin]\n"
                                "listen = [::]:9090\n"
                                "[limits]\n"
                                "connections_max = 1000\n"
                                "connections_per_ip_max = 10\n"
                                "frame_bytes_max = 2M\n"
                                "control_line_bytes_max = 1k\n"
                                "inflight_requests_max = 8\n"
                                "pending_response_bytes_max = 1g\n"
                                "pinned_bytes_per_conn_max = 3m\n"
                                "pinned_bytes_per_worker_max = 5G\n"
                                "partial_frame_timeout_ms = 500\n"
                                "idle_timeout_ms = 60000\n"
                                "write_deadline_ms = 2500\n"
                                "subscriptions_max = 100\n"
                                "[nats]\n"
                                "ping_interval_ms = 1000\n"
                                "ping_max_outstanding = 5\n"
                                "auth_timeout_ms = 300\n"
                                "token = s3cr3t-t0ken\n"
                                "user.alice = pw-a\n"
                                "user.bob@example = pw-b\n";

static void test_every_key_parsed(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, every_key), 0);
        assert_string_equal(err, "");
        assert_string_equal(cfg.path, "t.conf");

        assert_int_equal(cfg.mode, CTL_MODE_DPDK);
        assert_string_equal(cfg.data_dir, "/srv/sluice");
        assert_string_equal(cfg.name, "broker-7");
        assert_int_equal(cfg.log_level, CTL_LOG_DEBUG);
        assert_int_equal(cfg.recycle_segments, 0);

        assert_int_equal(cfg.worker_count, 5);
        const int cores[] = {2, 3, 5, 6, 7};
        for (int i = 0; i < 5; i++)
                assert_int_equal(cfg.worker_cores[i], cores[i]);
        assert_int_equal(cfg.worker_cores[5], -1);
        assert_int_equal(cfg.control_core, 1);
        assert_int_equal(cfg.idle, CTL_IDLE_POLL);
        assert_int_equal(cfg.idle_spin_us, 7);

        assert_int_equal(cfg.net_backend, CTL_NET_CHAOS);
        assert_int_equal(cfg.chaos_seed, 42);
        assert_int_equal(cfg.recv_buffers, 256);
        assert_int_equal(cfg.recv_buffer_bytes, 65536);
        assert_int_equal(cfg.ring_slots, 512);

        const struct ctl_listener *ls = cfg.listeners;
        assert_true(ls[CTL_PROTO_NATS].enabled);
        assert_string_equal(ls[CTL_PROTO_NATS].host, "0.0.0.0");
        assert_int_equal(ls[CTL_PROTO_NATS].port, 14222);
        assert_string_equal(ls[CTL_PROTO_NATS].advertised_host, "broker.example.com");
        assert_int_equal(ls[CTL_PROTO_NATS].advertised_port, 24222);
        assert_true(ls[CTL_PROTO_KAFKA].enabled);
        assert_string_equal(ls[CTL_PROTO_KAFKA].host, "::1");
        assert_int_equal(ls[CTL_PROTO_KAFKA].port, 19092);
        assert_string_equal(ls[CTL_PROTO_KAFKA].advertised_host, "2001:db8::1");
        assert_int_equal(ls[CTL_PROTO_KAFKA].advertised_port, 0);
        assert_true(ls[CTL_PROTO_AMQP].enabled);
        assert_string_equal(ls[CTL_PROTO_AMQP].host, "10.0.0.1");
        assert_int_equal(ls[CTL_PROTO_AMQP].port, 0);
        assert_string_equal(ls[CTL_PROTO_AMQP].advertised_host, "192.0.2.7");
        assert_int_equal(ls[CTL_PROTO_AMQP].advertised_port, 5672);
        assert_true(ls[CTL_PROTO_TEST].enabled);
        assert_int_equal(ls[CTL_PROTO_TEST].port, 0);
        assert_string_equal(ls[CTL_PROTO_TEST].advertised_host, "localhost");
        assert_int_equal(ls[CTL_PROTO_TEST].advertised_port, 1);

        assert_true(cfg.admin_enabled);
        assert_string_equal(cfg.admin_host, "::");
        assert_int_equal(cfg.admin_port, 9090);

        const struct ctl_limits *l = &cfg.limits;
        assert_int_equal(l->connections_max, 1000);
        assert_int_equal(l->connections_per_ip_max, 10);
        assert_int_equal(l->frame_bytes_max, 2 << 20);
        assert_int_equal(l->control_line_bytes_max, 1024);
        assert_int_equal(l->inflight_requests_max, 8);
        assert_int_equal(l->pending_response_bytes_max, 1ull << 30);
        assert_int_equal(l->pinned_bytes_per_conn_max, 3ull << 20);
        assert_int_equal(l->pinned_bytes_per_worker_max, 5ull << 30);
        assert_int_equal(l->partial_frame_timeout_ms, 500);
        assert_int_equal(l->idle_timeout_ms, 60000);
        assert_int_equal(l->write_deadline_ms, 2500);
        assert_int_equal(l->subscriptions_max, 100);

        assert_int_equal(cfg.nats_ping_interval_ms, 1000);
        assert_int_equal(cfg.nats_ping_max_outstanding, 5);
        assert_int_equal(cfg.nats_auth_timeout_ms, 300);
        assert_string_equal(cfg.nats_token, "s3cr3t-t0ken");
        assert_int_equal(cfg.nats_user_count, 2);
        assert_string_equal(cfg.nats_users[0].name, "alice");
        assert_string_equal(cfg.nats_users[0].password, "pw-a");
        assert_string_equal(cfg.nats_users[1].name, "bob@example");
        assert_string_equal(cfg.nats_users[1].password, "pw-b");
}

static void test_listener_off_and_admin_off(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, "[listeners]\nnats = off\n[admin]\nlisten = off\n"), 0);
        assert_false(cfg.listeners[CTL_PROTO_NATS].enabled);
        assert_false(cfg.admin_enabled);
        /* kafka is on by default; off turns it off */
        assert_int_equal(load(&cfg, "[listeners]\nkafka = off\n"), 0);
        assert_false(cfg.listeners[CTL_PROTO_KAFKA].enabled);
}

static void test_worker_count_unpinned(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, "[cores]\nworker_count = 3\ncontrol = none\n"), 0);
        assert_int_equal(cfg.worker_count, 3);
        for (int i = 0; i < CTL_WORKERS_MAX; i++)
                assert_int_equal(cfg.worker_cores[i], -1);
        assert_int_equal(cfg.control_core, -1);
        /* the last of workers/worker_count wins */
        assert_int_equal(load(&cfg, "[cores]\nworker_count = 3\nworkers = 0\n"), 0);
        assert_int_equal(cfg.worker_count, 1);
        assert_int_equal(cfg.worker_cores[0], 0);
}

static void test_duplicate_key_last_wins(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, "[limits]\nconnections_max = 5\nconnections_max = 6\n"), 0);
        assert_int_equal(cfg.limits.connections_max, 6);
        /* the same user twice keeps one entry with the last password */
        assert_int_equal(load(&cfg, "[nats]\nuser.a = one\nuser.b = two\nuser.a = three\n"), 0);
        assert_int_equal(cfg.nats_user_count, 2);
        assert_string_equal(cfg.nats_users[0].password, "three");
}

static void test_comments_and_indentation(void **state)
{
        (void)state;
        struct ctl_config cfg;
        const char *text = "# hash comment\n"
                           "; semicolon comment\n"
                           "[limits]\n"
                           "    connections_max = 77 ; inline comment\n"
                           "\tframe_bytes_max = 4k\n";
        assert_int_equal(load(&cfg, text), 0);
        /* an indented key is a key, not a continuation of the previous value */
        assert_int_equal(cfg.limits.connections_max, 77);
        assert_int_equal(cfg.limits.frame_bytes_max, 4096);
}

static void test_bytes_parse(void **state)
{
        (void)state;
        uint64_t v = 0;
        assert_int_equal(ctl_bytes_parse("0", UINT64_MAX, &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(ctl_bytes_parse("4096", UINT64_MAX, &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(ctl_bytes_parse("4k", UINT64_MAX, &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(ctl_bytes_parse("4K", UINT64_MAX, &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(ctl_bytes_parse("3m", UINT64_MAX, &v), 0);
        assert_int_equal(v, 3ull << 20);
        assert_int_equal(ctl_bytes_parse("2G", UINT64_MAX, &v), 0);
        assert_int_equal(v, 2ull << 30);
        assert_int_equal(ctl_bytes_parse("1g", 1ull << 30, &v), 0);
        assert_int_equal(ctl_bytes_parse("1025m", 1ull << 30, &v), -ERANGE);
        assert_int_equal(ctl_bytes_parse("99999999999999999999", UINT64_MAX, &v), -ERANGE);
        assert_int_equal(ctl_bytes_parse("17179869184g", UINT64_MAX, &v), -ERANGE);
        const char *bad[] = {"", "k", "-1", "+1", " 1", "1 ", "1kb", "1kk", "1t", "0x10", "1.5m"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(ctl_bytes_parse(bad[i], UINT64_MAX, &v), -EINVAL);
}

static void test_error_unknown_section(void **state)
{
        (void)state;
        load_fails_starting("[limits]\nconnections_max = 5\n[bogus]\nx = 1\n",
                            "t.conf:3: [bogus]: unknown section");
        /* an empty unknown section is caught too: inih never reports it */
        load_fails_starting("[server]\n[serverr]\n", "t.conf:2: [serverr]: unknown section");
}

static void test_error_unknown_key(void **state)
{
        (void)state;
        load_fails_with("[limits]\n\nconnection_max = 5\n", "t.conf:3: [limits] connection_max: "
                                                            "unknown key");
        load_fails_with("[nats]\nping_interval = 5\n",
                        "t.conf:2: [nats] ping_interval: unknown key");
}

static void test_error_key_outside_section(void **state)
{
        (void)state;
        load_fails_with("mode = kernel\n", "t.conf:1: mode: key outside any section");
}

static void test_error_syntax(void **state)
{
        (void)state;
        load_fails_with("[server]\nmode = kernel\nthis is not a key\n",
                        "t.conf:3: syntax error: expected [section], key = value or a comment");
}

static void test_error_bad_int(void **state)
{
        (void)state;
        /* the message of the brief, word for word */
        load_fails_with("[server]\nname = x\n\n\n\n\n\n\n\n\n\n[limits]\nconnections_max = abc\n",
                        "t.conf:13: [limits] connections_max: expected an integer in 1..1000000, "
                        "got \"abc\"");
        load_fails_with("[limits]\nconnections_max = -1\n",
                        "t.conf:2: [limits] connections_max: expected an integer in 1..1000000, "
                        "got \"-1\"");
        load_fails_with("[limits]\nconnections_max = 10k\n",
                        "t.conf:2: [limits] connections_max: expected an integer in 1..1000000, "
                        "got \"10k\"");
}

static void test_error_out_of_range(void **state)
{
        (void)state;
        struct ctl_config cfg;
        /* one under the bound passes, one over fails */
        assert_int_equal(load(&cfg, "[limits]\nconnections_max = 1000000\n"), 0);
        load_fails_with("[limits]\nconnections_max = 1000001\n",
                        "t.conf:2: [limits] connections_max: expected an integer in 1..1000000, "
                        "got \"1000001\"");
        load_fails_with("[limits]\nconnections_max = 0\n",
                        "t.conf:2: [limits] connections_max: expected an integer in 1..1000000, "
                        "got \"0\"");
        assert_int_equal(load(&cfg, "[net]\nrecv_buffer_bytes = 1m\n"), 0);
        load_fails_with("[net]\nrecv_buffer_bytes = 2m\n",
                        "t.conf:2: [net] recv_buffer_bytes: expected a power of two in 4K..1M "
                        "(suffix k, m or g: powers of 1024), got \"2m\"");
        load_fails_with("[net]\nrecv_buffer_bytes = 5000\n",
                        "t.conf:2: [net] recv_buffer_bytes: expected a power of two in 4K..1M "
                        "(suffix k, m or g: powers of 1024), got \"5000\"");
        load_fails_with("[limits]\nframe_bytes_max = 2g\n",
                        "t.conf:2: [limits] frame_bytes_max: expected a size in 1K..1G (suffix k, "
                        "m or g: powers of 1024), got \"2g\"");
        load_fails_starting("[net]\nring_slots = 100\n",
                            "t.conf:2: [net] ring_slots: expected a power of two in 16..1048576");
        load_fails_starting("[cores]\nworker_count = 65\n",
                            "t.conf:2: [cores] worker_count: expected an integer in 1..64");
        load_fails_starting("[cores]\ncontrol = 99999\n", "t.conf:2: [cores] control: expected a "
                                                          "CPU id");
}

static void test_error_bad_enum_and_string(void **state)
{
        (void)state;
        load_fails_with("[server]\nmode = xdp\n",
                        "t.conf:2: [server] mode: expected kernel|dpdk, got \"xdp\"");
        load_fails_with("[server]\nlog_level = verbose\n",
                        "t.conf:2: [server] log_level: expected error|warn|info|debug, got "
                        "\"verbose\"");
        load_fails_with("[cores]\nidle = spin\n",
                        "t.conf:2: [cores] idle: expected poll|adaptive|sleep, got \"spin\"");
        load_fails_with("[net]\nbackend = dpdk\n",
                        "t.conf:2: [net] backend: expected auto|uring|epoll|chaos, got \"dpdk\"");
        load_fails_starting("[server]\ndata_dir = relative/dir\n",
                            "t.conf:2: [server] data_dir: expected an absolute path");
        load_fails_starting("[server]\nname = has space\n", "t.conf:2: [server] name: expected a "
                                                            "name");
        load_fails_starting("[nats]\nuser. = pw\n", "t.conf:2: [nats] user.: a user name is");
        load_fails_starting("[nats]\nuser.x =\n", "t.conf:2: [nats] user.x: expected a password");
}

static void test_error_bad_listener(void **state)
{
        (void)state;
        struct {
                const char *value, *why;
        } bad[] = {
            {"127.0.0.1", "expected HOST:PORT"},
            {"localhost:4222",
             "expected a numeric IPv4 address or [IPv6] (host names are not resolved)"},
            {"::1:4222", "an IPv6 address goes in brackets, e.g. [::1]:4222"},
            {"[::1]4222", "expected [IPV6]:PORT"},
            {"[127.0.0.1]:4222", "expected an IPv6 address in the brackets"},
            {"127.0.0.1:65536", "the port must be an integer in 0..65535"},
            {"127.0.0.1:", "the port must be an integer in 0..65535"},
            {"127.0.0.1:-1", "the port must be an integer in 0..65535"},
            {":4222", "expected HOST:PORT, the host is empty"},
            {"on", "expected HOST:PORT"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char text[128], message[256];
                snprintf(text, sizeof(text), "[listeners]\nnats = %s\n", bad[i].value);
                snprintf(message, sizeof(message), "t.conf:2: [listeners] nats: %s, got \"%s\"",
                         bad[i].why, bad[i].value);
                load_fails_with(text, message);
        }
        load_fails_starting("[admin]\nlisten = 8080\n", "t.conf:2: [admin] listen: expected "
                                                        "HOST:PORT");

        /* IPv6 in brackets, stored in canonical form; port 0 is allowed */
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, "[listeners]\nnats = [0:0::1]:0\n"), 0);
        assert_string_equal(cfg.listeners[CTL_PROTO_NATS].host, "::1");
        assert_int_equal(cfg.listeners[CTL_PROTO_NATS].port, 0);
}

static void test_error_unspecified_advertised(void **state)
{
        (void)state;
        const char *why = "clients cannot connect to an unspecified address; advertise a host "
                          "they can reach";
        char message[256];
        snprintf(message, sizeof(message),
                 "t.conf:2: [listeners] nats_advertised: %s, got \"0.0.0.0:4222\"", why);
        load_fails_with("[listeners]\nnats_advertised = 0.0.0.0:4222\n", message);
        snprintf(message, sizeof(message),
                 "t.conf:2: [listeners] kafka_advertised: %s, got \"[::]:9092\"", why);
        load_fails_with("[listeners]\nkafka_advertised = [::]:9092\n", message);
        load_fails_starting(
            "[listeners]\nnats_advertised = bad_host:1\n",
            "t.conf:2: [listeners] nats_advertised: expected an IP address or a DNS "
            "host name");

        /* an empty value clears a previously set advertised address */
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, "[listeners]\nnats_advertised = a.example:1\n"
                                    "nats_advertised =\n"),
                         0);
        assert_string_equal(cfg.listeners[CTL_PROTO_NATS].advertised_host, "");
        assert_int_equal(cfg.listeners[CTL_PROTO_NATS].advertised_port, 0);
}

static void test_error_bad_core_list(void **state)
{
        (void)state;
        const char *pfx = "t.conf:2: [cores] workers: ";
        struct {
                const char *value, *why;
        } bad[] = {
            {"", "expected a CPU list such as 0-1 or 2,3,5-7"},
            {"a", "expected a CPU list such as 0-1 or 2,3,5-7"},
            {"1-0", "expected a CPU list such as 0-1 or 2,3,5-7"},
            {"0,,1", "expected a CPU list such as 0-1 or 2,3,5-7"},
            {"0-", "expected a CPU list such as 0-1 or 2,3,5-7"},
            {"5000", "CPU ids go from 0 to 1023"},
            {"0-64", "more than 64 workers"},
            {"0,0", "a CPU is listed twice: each worker needs its own core"},
            {"0-3,2", "a CPU is listed twice: each worker needs its own core"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char text[128], message[256];
                snprintf(text, sizeof(text), "[cores]\nworkers = %s\n", bad[i].value);
                snprintf(message, sizeof(message), "%s%s, got \"%s\"", pfx, bad[i].why,
                         bad[i].value);
                load_fails_with(text, message);
        }
        /* 64 workers is the limit, not over it */
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, "[cores]\nworkers = 0-63\n"), 0);
        assert_int_equal(cfg.worker_count, 64);
        assert_int_equal(load(&cfg, "[cores]\nworkers = 3, 1\n"), 0);
        assert_int_equal(cfg.worker_cores[0], 3);
        assert_int_equal(cfg.worker_cores[1], 1);
}

static void test_error_line_too_long(void **state)
{
        (void)state;
        char text[512];
        snprintf(text, sizeof(text), "[server]\ndata_dir = /%0300d\n", 0);
        load_fails_with(text, "t.conf:2: line longer than 197 characters");
        /* 197 characters is still a line */
        snprintf(text, sizeof(text), "[server]\ndata_dir = /%0185d\r\n", 0);
        assert_int_equal(strlen(strchr(text, '/')) + strlen("data_dir = ") - 2, 197);
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, text), 0);
        assert_int_equal(strlen(cfg.data_dir), 186);
}

static void test_error_too_many_users(void **state)
{
        (void)state;
        char text[CTL_USERS_MAX * 32 + 64];
        size_t pos = (size_t)snprintf(text, sizeof(text), "[nats]\n");
        for (int i = 0; i <= CTL_USERS_MAX; i++)
                pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "user.u%d = p\n", i);
        char message[128];
        snprintf(message, sizeof(message), "t.conf:%d: [nats] user.u%d: more than %d users",
                 CTL_USERS_MAX + 2, CTL_USERS_MAX, CTL_USERS_MAX);
        load_fails_with(text, message);
}

static void test_failed_load_changes_nothing(void **state)
{
        (void)state;
        struct ctl_config cfg, before;
        ctl_config_defaults(&cfg);
        before = cfg;
        const char *text = "[limits]\nconnections_max = 5\nframe_bytes_max = huge\n";
        assert_int_equal(ctl_config_load_string(&cfg, text, "t.conf", err, sizeof(err)), -EINVAL);
        assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void test_load_file(void **state)
{
        (void)state;
        char path[] = "/tmp/sluice-config-test-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        const char *text = "[server]\nname = from-file\n[limits]\nidle_timeout_ms = x\n";
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);

        struct ctl_config cfg;
        ctl_config_defaults(&cfg);
        assert_int_equal(ctl_config_load(&cfg, path, err, sizeof(err)), -EINVAL);
        char message[256];
        snprintf(message, sizeof(message),
                 "%s:4: [limits] idle_timeout_ms: expected an integer in 0..86400000, got \"x\"",
                 path);
        assert_string_equal(err, message);
        assert_string_equal(cfg.name, "sluice");

        fd = open(path, O_WRONLY | O_TRUNC);
        assert_true(fd >= 0);
        text = "[server]\nname = from-file\n";
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        assert_int_equal(ctl_config_load(&cfg, path, err, sizeof(err)), 0);
        assert_string_equal(cfg.name, "from-file");
        assert_string_equal(cfg.path, path);
        unlink(path);

        assert_int_equal(ctl_config_load(&cfg, path, err, sizeof(err)), -ENOENT);
        assert_contains(err, "cannot open");
        assert_contains(err, path);
}

/* ------------------------------------------------------------------ */
/* Validation                                                          */

static void test_validate_duplicate_worker_core(void **state)
{
        (void)state;
        struct ctl_config cfg;
        ctl_config_defaults(&cfg);
        int cpu = first_cpu();
        cfg.worker_count = 2;
        cfg.worker_cores[0] = cpu;
        cfg.worker_cores[1] = cpu;
        char *warnings = NULL;
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        char message[256];
        snprintf(message, sizeof(message),
                 "[cores] workers: core %d is given to worker 0 and worker 1; each worker needs "
                 "its own core",
                 cpu);
        assert_string_equal(err, message);
        free(warnings);
}

static void test_validate_offline_core(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char *warnings = NULL;
        assert_int_equal(load(&cfg, "[cores]\nworkers = 1000\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "t.conf: [cores] workers: core 1000 (worker 0) is not online");
        free(warnings);

        assert_int_equal(load(&cfg, "[cores]\ncontrol = 1000\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "t.conf: [cores] control: core 1000 is not online");
        free(warnings);
}

static void test_validate_mixed_pinning(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char *warnings = NULL;
        ctl_config_defaults(&cfg);
        cfg.worker_count = 2;
        cfg.worker_cores[0] = first_cpu();
        cfg.worker_cores[1] = -1;
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "pin all workers or none");
        free(warnings);
}

static void test_validate_listener_clash(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char *warnings = NULL;

        assert_int_equal(load(&cfg, "[listeners]\ntest = 127.0.0.1:4222\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_string_equal(err, "t.conf: [listeners] nats and test both bind port 4222 "
                                 "(127.0.0.1, 127.0.0.1); use distinct ports or port 0");
        free(warnings);

        /* a wildcard address takes the port on every address */
        assert_int_equal(load(&cfg, "[listeners]\ntest = 0.0.0.0:4222\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "nats and test both bind port 4222");
        free(warnings);

        assert_int_equal(load(&cfg, "[admin]\nlisten = 127.0.0.1:4222\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "nats and admin listen both bind port 4222");
        free(warnings);

        /* port 0 never clashes; distinct addresses on one port do not either */
        assert_int_equal(load(&cfg, "[listeners]\nnats = 127.0.0.1:0\ntest = 127.0.0.1:0\n"
                                    "kafka = 127.0.0.2:9092\namqp = 127.0.0.1:9092\n"),
                         0);
        assert_int_equal(validate(&cfg, &warnings), 0);
        free(warnings);
}

static void test_validate_advertised_unspecified(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char *warnings = NULL;
        ctl_config_defaults(&cfg);
        /* set by code, not the parser: validate catches it too */
        strcpy(cfg.listeners[CTL_PROTO_NATS].advertised_host, "0.0.0.0");
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_string_equal(err, "[listeners] nats_advertised: 0.0.0.0 is not an address clients "
                                 "can connect to");
        free(warnings);
}

static void test_validate_limits_and_auth(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char *warnings = NULL;
        assert_int_equal(load(&cfg, "[limits]\npinned_bytes_per_conn_max = 1g\n"
                                    "pinned_bytes_per_worker_max = 512m\n"),
                         0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "pinned_bytes_per_conn_max (1073741824) is above "
                             "pinned_bytes_per_worker_max (536870912)");
        free(warnings);

        assert_int_equal(load(&cfg, "[net]\nrecv_buffer_bytes = 64k\n"
                                    "[limits]\npinned_bytes_per_conn_max = 32k\n"),
                         0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "could not hold one receive buffer");
        free(warnings);

        assert_int_equal(load(&cfg, "[nats]\ntoken = t\nuser.a = b\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, "[nats] token and user.* keys exclude each other");
        free(warnings);
}

static void test_validate_warns_control_shares_worker_core(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char text[128], expect[128];
        char *warnings = NULL;
        int cpu = first_cpu();
        snprintf(text, sizeof(text), "[cores]\nworkers = %d\ncontrol = %d\n", cpu, cpu);
        assert_int_equal(load(&cfg, text), 0);
        /* sharing is allowed (CI has two vCPUs), only warned about */
        assert_int_equal(validate(&cfg, &warnings), 0);
        snprintf(expect, sizeof(expect),
                 "warning: the control thread shares core %d with worker 0\n", cpu);
        assert_string_equal(warnings, expect);
        free(warnings);

        /* and polling on a shared core gets its own warning */
        snprintf(text, sizeof(text), "[cores]\nworkers = %d\ncontrol = %d\nidle = poll\n", cpu,
                 cpu);
        assert_int_equal(load(&cfg, text), 0);
        assert_int_equal(validate(&cfg, &warnings), 0);
        assert_contains(warnings, "warning: idle = poll on shared cores");
        free(warnings);
}

static void test_validate_warns_more_workers_than_cpus(void **state)
{
        (void)state;
        cpu_set_t set;
        assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
        if (CPU_COUNT(&set) >= CTL_WORKERS_MAX)
                skip();
        struct ctl_config cfg;
        char *warnings = NULL;
        assert_int_equal(load(&cfg, "[cores]\nworker_count = 64\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), 0);
        char expect[128];
        snprintf(expect, sizeof(expect),
                 "warning: 64 workers on %d usable CPUs: workers share cores\n", CPU_COUNT(&set));
        assert_string_equal(warnings, expect);
        free(warnings);
}

/* ------------------------------------------------------------------ */
/* Printing                                                            */

static void assert_round_trip(const struct ctl_config *cfg)
{
        char *first = print_to_string(cfg);
        struct ctl_config again;
        ctl_config_defaults(&again);
        err[0] = '\0';
        if (ctl_config_load_string(&again, first, "printed", err, sizeof(err)) != 0)
                fail_msg("printed config does not parse: %s\n%s", err, first);
        assert_config_equal(cfg, &again);
        char *second = print_to_string(&again);
        /* identical apart from the "from <path>" line */
        assert_string_equal(strchr(first, '\n'), strchr(second, '\n'));
        free(first);
        free(second);
}

static void test_kafka_keys(void **state)
{
        (void)state;
        struct ctl_config cfg;
        ctl_config_defaults(&cfg);
        assert_int_equal(cfg.kafka_auto_create, 1);
        assert_int_equal(cfg.kafka_default_partitions, 1);
        assert_int_equal(cfg.kafka_idle_ms, 600000);
        assert_int_equal(
            load(&cfg, "[kafka]\nauto_create_topics = false\ndefault_partitions = 1024\n"), 0);
        assert_int_equal(cfg.kafka_auto_create, 0);
        assert_int_equal(cfg.kafka_default_partitions, 1024);
        assert_int_not_equal(load(&cfg, "[kafka]\ndefault_partitions = 1025\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\ndefault_partitions = 0\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nauto_create_topics = maybe\n"), 0);
        /* producer.id.expiration.ms: Kafka's one-day default, 0 = no expiry */
        assert_int_equal(cfg.kafka_producer_id_expiration_ms, 86400000);
        assert_int_equal(load(&cfg, "[kafka]\nproducer_id_expiration_ms = 0\n"), 0);
        assert_int_equal(cfg.kafka_producer_id_expiration_ms, 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nproducer_id_expiration_ms = -1\n"), 0);
        /* recent-data cache: "auto" by default (resolved by the workers), 0 = off */
        assert_true(cfg.kafka_cache_bytes == CTL_KAFKA_CACHE_AUTO);
        assert_int_equal(load(&cfg, "[kafka]\ncache_bytes = 0\n"), 0);
        assert_true(cfg.kafka_cache_bytes == 0);
        assert_int_equal(load(&cfg, "[kafka]\ncache_bytes = 64m\n"), 0);
        assert_true(cfg.kafka_cache_bytes == 64ull << 20);
        assert_round_trip(&cfg);
        assert_int_equal(load(&cfg, "[kafka]\ncache_bytes = auto\n"), 0);
        assert_true(cfg.kafka_cache_bytes == CTL_KAFKA_CACHE_AUTO);
        assert_round_trip(&cfg);
        assert_int_not_equal(load(&cfg, "[kafka]\ncache_bytes = 65g\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\ncache_bytes = lots\n"), 0);
}

/* Topic retention defaults: Kafka's spelling (-1 = unlimited), Kafka 4.0's
 * segment.bytes minimum of 1 MiB, and -1 printed back as -1. */
static void test_kafka_retention_keys(void **state)
{
        (void)state;
        struct ctl_config cfg;
        ctl_config_defaults(&cfg);
        assert_true(cfg.kafka_retention_ms == 604800000ull);
        assert_true(cfg.kafka_retention_bytes == CTL_KAFKA_UNLIMITED);
        assert_true(cfg.kafka_segment_bytes == 256ull << 20);
        assert_int_equal(cfg.kafka_retention_check_interval_ms, 10000);
        assert_true(cfg.kafka_segment_ms == 604800000ull);
        assert_int_not_equal(load(&cfg, "[kafka]\nsegment_ms = 0\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nsegment_ms = -1\n"), 0);
        assert_int_equal(load(&cfg, "[kafka]\nretention_ms = -1\nretention_bytes = 10m\n"
                                    "segment_bytes = 1m\nretention_check_interval_ms = 100\n"
                                    "segment_ms = 1000\n"),
                         0);
        assert_true(cfg.kafka_retention_ms == CTL_KAFKA_UNLIMITED);
        assert_true(cfg.kafka_retention_bytes == 10ull << 20);
        assert_true(cfg.kafka_segment_bytes == 1ull << 20);
        assert_int_equal(cfg.kafka_retention_check_interval_ms, 100);
        assert_true(cfg.kafka_segment_ms == 1000);
        assert_round_trip(&cfg);
        char *out = print_to_string(&cfg);
        assert_contains(out, "\nretention_ms = -1\n");
        free(out);
        assert_int_equal(load(&cfg, "[kafka]\nretention_ms = 0\nretention_bytes = -1\n"), 0);
        assert_true(cfg.kafka_retention_ms == 0);
        assert_true(cfg.kafka_retention_bytes == CTL_KAFKA_UNLIMITED);
        assert_round_trip(&cfg);
        assert_int_not_equal(load(&cfg, "[kafka]\nretention_ms = -2\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nretention_bytes = -5\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nsegment_bytes = 1048575\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nsegment_bytes = 3g\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nsegment_bytes = -1\n"), 0);
        assert_int_not_equal(load(&cfg, "[kafka]\nretention_check_interval_ms = 0\n"), 0);
}

static void test_print_round_trip(void **state)
{
        (void)state;
        struct ctl_config cfg;
        ctl_config_defaults(&cfg);
        assert_round_trip(&cfg);

        assert_int_equal(load(&cfg, every_key), 0);
        assert_round_trip(&cfg);

        assert_int_equal(load(&cfg, "[cores]\nworker_count = 3\n[listeners]\nnats = off\n"
                                    "[admin]\nlisten = off\n[limits]\nframe_bytes_max = 1500\n"),
                         0);
        assert_round_trip(&cfg);
}

static void test_print_content_and_core_plan(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char text[128], line[64];
        int cpu = first_cpu();
        snprintf(text, sizeof(text),
                 "[cores]\nworkers = %d\ncontrol = %d\n[limits]\npending_response_bytes_max = "
                 "3g\n",
                 cpu, cpu);
        assert_int_equal(load(&cfg, text), 0);
        char *out = print_to_string(&cfg);
        assert_contains(out, "# sluice effective configuration, from t.conf\n[server]\n");
        assert_contains(out, "\n[listeners]\nnats = 127.0.0.1:4222\nnats_advertised =\n");
        assert_contains(out, "\nkafka = 127.0.0.1:9092\n");
        assert_contains(out, "\npending_response_bytes_max = 3G\n");
        assert_contains(out, "\n# core plan (");
        snprintf(line, sizeof(line), "#   control thread: core %d\n", cpu);
        assert_contains(out, line);
        snprintf(line, sizeof(line), "#   worker 0: core %d\n", cpu);
        assert_contains(out, line);
        snprintf(line, sizeof(line), "# warning: the control thread shares core %d with worker 0",
                 cpu);
        assert_contains(out, line);
        free(out);

        assert_int_equal(load(&cfg, "[cores]\nworker_count = 2\n"), 0);
        out = print_to_string(&cfg);
        assert_contains(out, "\n[cores]\nworker_count = 2\ncontrol = none\n");
        assert_contains(out, "#   control thread: unpinned");
        assert_contains(out, "#   worker 1: unpinned\n");
        assert_null(strstr(out, "workers ="));
        free(out);
}

/* ------------------------------------------------------------------ */
/* Reload                                                              */

static void test_reload_allowed(void **state)
{
        (void)state;
        struct ctl_config cur, next;
        assert_int_equal(load(&cur, "[nats]\nuser.a = old\n"), 0);
        assert_int_equal(load(&next, "[server]\nlog_level = debug\n"
                                     "[limits]\nconnections_max = 10\nwrite_deadline_ms = 5\n"
                                     "[nats]\nping_interval_ms = 500\nping_max_outstanding = 9\n"
                                     "auth_timeout_ms = 100\nuser.a = new\nuser.b = other\n"),
                         0);
        err[0] = '\0';
        assert_int_equal(ctl_config_reload(&cur, &next, err, sizeof(err)), 0);
        assert_string_equal(err, "");
        assert_int_equal(cur.log_level, CTL_LOG_DEBUG);
        assert_int_equal(cur.limits.connections_max, 10);
        assert_int_equal(cur.limits.write_deadline_ms, 5);
        assert_int_equal(cur.nats_ping_interval_ms, 500);
        assert_int_equal(cur.nats_ping_max_outstanding, 9);
        assert_int_equal(cur.nats_auth_timeout_ms, 100);
        assert_int_equal(cur.nats_user_count, 2);
        assert_string_equal(cur.nats_users[0].password, "new");
        assert_string_equal(cur.nats_users[1].name, "b");
        assert_config_equal(&cur, &next);
}

static void test_reload_refused(void **state)
{
        (void)state;
        struct ctl_config cur, next, before;
        int cpu = first_cpu();
        char text[256];
        assert_int_equal(load(&cur, "[cores]\nworker_count = 2\n"), 0);
        before = cur;
        snprintf(text, sizeof(text),
                 "[server]\nlog_level = debug\n[cores]\nworkers = %d\n"
                 "[listeners]\nnats = 127.0.0.1:4333\n[limits]\nconnections_max = 10\n",
                 cpu);
        assert_int_equal(load(&next, text), 0);
        assert_int_equal(ctl_config_reload(&cur, &next, err, sizeof(err)), -EPERM);
        assert_string_equal(err, "cannot change at run time: [cores] workers, [listeners] nats");
        /* nothing applied, not even the reloadable keys */
        assert_memory_equal(&cur, &before, sizeof(cur));

        assert_int_equal(load(&next, "[cores]\nworker_count = 3\n[server]\ndata_dir = /x\n"
                                     "[net]\nring_slots = 64\n[admin]\nlisten = off\n"
                                     "[listeners]\nkafka_advertised = k.example:1\n"),
                         0);
        assert_int_equal(ctl_config_reload(&cur, &next, err, sizeof(err)), -EPERM);
        assert_string_equal(err, "cannot change at run time: [server] data_dir, [cores] "
                                 "worker_count, [net] ring_slots, [listeners] kafka_advertised, "
                                 "[admin] listen");
}

/* ------------------------------------------------------------------ */
/* The shipped example files                                           */

static const char *deploy_path(const char *file, char *buf, size_t len)
{
        const char *root = getenv("SLUICE_SOURCE_ROOT");
        if (!root)
                return NULL;
        snprintf(buf, len, "%s/deploy/%s", root, file);
        return buf;
}

static void test_deploy_sluice_conf_is_the_defaults(void **state)
{
        (void)state;
        char path[1024];
        if (!deploy_path("sluice.conf", path, sizeof(path)))
                skip();
        struct ctl_config cfg, defaults;
        ctl_config_defaults(&defaults);
        ctl_config_defaults(&cfg);
        if (ctl_config_load(&cfg, path, err, sizeof(err)) != 0)
                fail_msg("%s", err);
        /* the quick-start file lists every default: it must not drift */
        assert_config_equal(&cfg, &defaults);
}

static void test_deploy_sluice_test_conf(void **state)
{
        (void)state;
        char path[1024];
        if (!deploy_path("sluice-test.conf", path, sizeof(path)))
                skip();
        struct ctl_config cfg;
        ctl_config_defaults(&cfg);
        if (ctl_config_load(&cfg, path, err, sizeof(err)) != 0)
                fail_msg("%s", err);
        assert_int_equal(cfg.worker_count, 2);
        assert_int_equal(cfg.listeners[CTL_PROTO_NATS].port, 0);
        assert_true(cfg.listeners[CTL_PROTO_TEST].enabled);
        assert_int_equal(cfg.listeners[CTL_PROTO_TEST].port, 0);
        assert_int_equal(cfg.admin_port, 0);

        /* it is written for a box with CPUs 0 and 1 */
        cpu_set_t set;
        assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
        if (!CPU_ISSET(0, &set) || !CPU_ISSET(1, &set))
                skip();
        char *warnings = NULL;
        if (validate(&cfg, &warnings) != 0)
                fail_msg("%s", err);
        assert_contains(warnings, "the control thread shares core 0 with worker 0");
        free(warnings);
}

/* ---- [dpdk] and [net] mode ---------------------------------------- */

/* mode = dpdk validates only in a build with DPDK; elsewhere it must fail
 * with that reason, whatever else is right or wrong. */
#define DPDK_MODE_MESSAGE(with_dpdk) (SL_HAVE_DPDK ? (with_dpdk) : "this build has no DPDK support")
#define DPDK_MODE_RC                 (SL_HAVE_DPDK ? 0 : -EINVAL)

static const char dpdk_tap[] = "[net]\n"
                               "mode = dpdk\n"
                               "[cores]\n"
                               "worker_count = 2\n"
                               "[dpdk]\n"
                               "eal_args = --no-shconf --no-telemetry --log-level=lib.eal:warning\n"
                               "file_prefix = sl-test\n"
                               "hugepages = false\n"
                               "memory_mb = 256\n"
                               "ports = net_tap0,iface=sl0 0000:03:00.1\n"
                               "addresses = 10.9.0.2/24 192.0.2.10/30\n"
                               "gateway = 10.9.0.1\n"
                               "rx_descriptors = 512\n"
                               "tx_descriptors = 2048\n"
                               "mbufs = 4095\n"
                               "syn_backlog = 64\n"
                               "tcp_buffer_bytes = 128k\n"
                               "mtu = 9000\n"
                               "tcp_keepalive_idle_ms = 5000\n"
                               "tcp_keepalive_interval_ms = 1000\n"
                               "tcp_keepalive_probes = 3\n"
                               "test_delay_us = 20000\n"
                               "test_jitter_us = 2000\n";

static void test_dpdk_keys_parsed(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, dpdk_tap), 0);
        assert_int_equal(cfg.mode, CTL_MODE_DPDK);
        assert_string_equal(cfg.dpdk_file_prefix, "sl-test");
        assert_int_equal(cfg.dpdk_hugepages, 0);
        assert_int_equal(cfg.dpdk_memory_mb, 256);
        assert_int_equal(cfg.dpdk_rx_descriptors, 512);
        assert_int_equal(cfg.dpdk_tx_descriptors, 2048);
        assert_int_equal(cfg.dpdk_mbufs, 4095);
        assert_int_equal(cfg.dpdk_syn_backlog, 64);
        assert_int_equal(cfg.dpdk_tcp_buffer_bytes, 128 * 1024);
        assert_int_equal(cfg.dpdk_mtu, 9000);
        assert_int_equal(cfg.dpdk_keepalive_idle_ms, 5000);
        assert_int_equal(cfg.dpdk_keepalive_interval_ms, 1000);
        assert_int_equal(cfg.dpdk_keepalive_probes, 3);
        assert_int_equal(cfg.dpdk_delay_us, 20000);
        assert_int_equal(cfg.dpdk_jitter_us, 2000);

        struct ctl_dpdk_port ports[CTL_DPDK_PORTS_MAX];
        assert_int_equal(ctl_dpdk_ports_parse(&cfg, ports, err, sizeof(err)), 2);
        assert_true(ports[0].is_vdev);
        assert_string_equal(ports[0].dev, "net_tap0,iface=sl0");
        assert_int_equal(ports[0].ip, 0x0a090002);
        assert_int_equal(ports[0].prefix_len, 24);
        assert_false(ports[1].is_vdev);
        assert_string_equal(ports[1].dev, "0000:03:00.1");
        assert_int_equal(ports[1].prefix_len, 30);
        assert_int_equal(ports[0].gateway, 0x0a090001); /* one word: the first port's */
        assert_int_equal(ports[1].gateway, 0);
        assert_round_trip(&cfg);

        /* per port, "-" for none */
        assert_int_equal(load(&cfg, "[dpdk]\nports = net_tap0 net_tap1\n"
                                    "addresses = 10.0.0.2/24 10.1.0.2/16\n"
                                    "gateway = - 10.1.200.1\n"),
                         0);
        assert_int_equal(ctl_dpdk_ports_parse(&cfg, ports, err, sizeof(err)), 2);
        assert_int_equal(ports[0].gateway, 0);
        assert_int_equal(ports[1].gateway, 0x0a01c801);

        /* [server] mode, the older spelling, still works */
        assert_int_equal(load(&cfg, "[server]\nmode = dpdk\n"), 0);
        assert_int_equal(cfg.mode, CTL_MODE_DPDK);
        load_fails_with("[net]\nmode = xdp\n",
                        "t.conf:2: [net] mode: expected kernel|dpdk, got \"xdp\"");
}

static void test_dpdk_eal_argv(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, dpdk_tap), 0);
        cfg.worker_cores[0] = 0;
        cfg.worker_cores[1] = 1;
        struct ctl_dpdk_port ports[CTL_DPDK_PORTS_MAX];
        int n = ctl_dpdk_ports_parse(&cfg, ports, err, sizeof(err));
        char buf[1024], line[1024] = "";
        char *argv[32];
        int argc = ctl_dpdk_eal_argv(&cfg, ports, n, buf, sizeof(buf), argv, 32);
        assert_true(argc > 0);
        assert_null(argv[argc]);
        for (int i = 0; i < argc; i++) {
                strcat(line, argv[i]);
                strcat(line, i + 1 < argc ? " " : "");
        }
        assert_string_equal(line, "sluiced --lcores=0@0 --file-prefix=sl-test --no-huge -m 256 "
                                  "--vdev=net_tap0,iface=sl0 --allow=0000:03:00.1 --no-shconf "
                                  "--no-telemetry --log-level=lib.eal:warning");

        /* only vdevs: the EAL must not probe the machine's PCI NICs */
        assert_int_equal(load(&cfg, "[dpdk]\nports = net_tap0\naddresses = 10.0.0.1/8\n"), 0);
        n = ctl_dpdk_ports_parse(&cfg, ports, err, sizeof(err));
        assert_int_equal(n, 1);
        argc = ctl_dpdk_eal_argv(&cfg, ports, n, buf, sizeof(buf), argv, 32);
        assert_true(argc > 0);
        assert_string_equal(argv[argc - 1], "--no-pci");
        assert_int_equal(ctl_dpdk_eal_argv(&cfg, ports, n, buf, 16, argv, 32), -E2BIG);
        assert_int_equal(ctl_dpdk_eal_argv(&cfg, ports, n, buf, sizeof(buf), argv, 3), -E2BIG);
}

static void test_dpdk_validate_errors(void **state)
{
        (void)state;
        struct ctl_config cfg;
        char *warnings = NULL;

        /* dpdk without ports is an error, never a silent kernel fallback */
        assert_int_equal(load(&cfg, "[net]\nmode = dpdk\n"), 0);
        assert_int_equal(validate(&cfg, &warnings), -EINVAL);
        assert_contains(err, DPDK_MODE_MESSAGE("mode = dpdk needs [dpdk] ports"));
        free(warnings);

        const struct {
                const char *text, *message;
        } bad[] = {
            {"[dpdk]\nports = eth0\naddresses = 10.0.0.1/24\n", "\"eth0\" is neither a PCI"},
            {"[dpdk]\nports = 03:00.9\naddresses = 10.0.0.1/24\n", "\"03:00.9\" is neither"},
            {"[dpdk]\nports = net_\naddresses = 10.0.0.1/24\n", "\"net_\" is neither"},
            {"[dpdk]\nports = net_tap0 net_tap1\naddresses = 10.0.0.1/24\n",
             "1 address(es) for 2 port(s)"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.1/24 10.0.0.2/24\n",
             "more addresses than ports"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.1\n", "expected IPv4/prefix"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.1/33\n", "expected IPv4/prefix"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.1/24\ngateway = nope\n",
             "[dpdk] gateway: expected an IPv4 address"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.2/24\ngateway = 10.0.1.1\n",
             "[dpdk] gateway: 10.0.1.1 is not a neighbour on port 0's subnet (10.0.0.2/24)"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.2/24\ngateway = 10.0.0.2\n",
             "[dpdk] gateway: 10.0.0.2 is not a neighbour"},
            {"[dpdk]\nports = net_tap0\naddresses = 10.0.0.2/24\ngateway = 10.0.0.1 10.0.0.3\n",
             "more gateways than ports"},
            {"[dpdk]\nports = net_a net_b net_c net_d net_e\n", "more than 4 ports"},
            {"[net]\nmode = dpdk\n[listeners]\nnats = 127.0.0.1:0\n[dpdk]\nports = net_tap0\n"
             "addresses = 10.0.0.1/24\n",
             DPDK_MODE_MESSAGE("[listeners] nats: mode = dpdk needs a fixed port")},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(load(&cfg, bad[i].text), 0);
                assert_int_equal(validate(&cfg, &warnings), -EINVAL);
                assert_contains(err, bad[i].message);
                free(warnings);
        }
        /* the working tap setup validates */
        assert_int_equal(load(&cfg, dpdk_tap), 0);
        assert_int_equal(validate(&cfg, &warnings), DPDK_MODE_RC);
        free(warnings);

        /* limits at their boundaries */
        assert_int_equal(load(&cfg, "[dpdk]\nrx_descriptors = 64\nmbufs = 1024\n"), 0);
        load_fails_starting("[dpdk]\nrx_descriptors = 32\n", "t.conf:2: [dpdk] rx_descriptors");
        load_fails_starting("[dpdk]\nrx_descriptors = 1000\n", "t.conf:2: [dpdk] rx_descriptors");
        load_fails_starting("[dpdk]\nmbufs = 1023\n", "t.conf:2: [dpdk] mbufs");
        load_fails_starting("[dpdk]\nhugepages = maybe\n", "t.conf:2: [dpdk] hugepages");
        /* inih would cut a value at " ;": refuse it rather than start with
         * half the EAL arguments */
        load_fails_starting("[dpdk]\neal_args = --a;b\n", "t.conf:2: [dpdk] eal_args");
}

static void test_dpdk_check_plan(void **state)
{
        (void)state;
        struct ctl_config cfg;
        assert_int_equal(load(&cfg, dpdk_tap), 0);
        char *text = print_to_string(&cfg);
        assert_contains(text, "# dpdk plan (mode = dpdk");
        assert_contains(text, "#   memory: --no-huge, 256 MiB");
        assert_contains(text, "#   port 0: vdev net_tap0,iface=sl0, 10.9.0.2/24, gateway 10.9.0.1");
        assert_contains(text, "192.0.2.10/30, no gateway (on-link peers only), ");
        assert_contains(text, "#   port 1: PCI 0000:03:00.1, 192.0.2.10/30, ");
        assert_contains(text, "#   worker 0: ");
        /* two ports: each worker polls its queue pair of both */
        assert_contains(text, "#   worker 1: ");
        assert_contains(text, "polls rx/tx queue 1 of ports 0..1");
        assert_true(strstr(text, "only port 0") == NULL);
        assert_contains(text, "#   eal: --lcores=");
        free(text);

        /* hugepage mode reports what the kernel has free */
        assert_int_equal(load(&cfg, "[net]\nmode = dpdk\n[dpdk]\nports = net_tap0\n"
                                    "addresses = 10.0.0.2/24\n"),
                         0);
        text = print_to_string(&cfg);
        assert_true(strstr(text, "#   hugepages: ") != NULL);
        free(text);

        /* kernel mode without ports prints no dpdk plan */
        ctl_config_defaults(&cfg);
        text = print_to_string(&cfg);
        assert_null(strstr(text, "dpdk plan"));
        free(text);
}

/* The dpdk examples in deploy/ parse, and the tap one validates here. */
static void test_deploy_dpdk_examples(void **state)
{
        (void)state;
        char path[1024];
        if (!deploy_path("sluice-dpdk-tap.conf", path, sizeof(path)))
                skip();
        struct ctl_config cfg;
        struct ctl_dpdk_port ports[CTL_DPDK_PORTS_MAX];
        char *warnings = NULL;
        ctl_config_defaults(&cfg);
        if (ctl_config_load(&cfg, path, err, sizeof(err)) != 0)
                fail_msg("%s", err);
        assert_int_equal(cfg.mode, CTL_MODE_DPDK);
        assert_int_equal(validate(&cfg, &warnings), DPDK_MODE_RC);
        free(warnings);
        assert_int_equal(ctl_dpdk_ports_parse(&cfg, ports, err, sizeof(err)), 1);
        assert_true(ports[0].is_vdev);

        deploy_path("sluice-dpdk-2port.conf", path, sizeof(path));
        ctl_config_defaults(&cfg);
        if (ctl_config_load(&cfg, path, err, sizeof(err)) != 0)
                fail_msg("%s", err);
        assert_int_equal(ctl_dpdk_ports_parse(&cfg, ports, err, sizeof(err)), 2);
        assert_false(ports[1].is_vdev);
        assert_int_equal(cfg.dpdk_hugepages, 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_defaults),
            cmocka_unit_test(test_defaults_survive_thread_pinning),
            cmocka_unit_test(test_every_key_parsed),
            cmocka_unit_test(test_listener_off_and_admin_off),
            cmocka_unit_test(test_worker_count_unpinned),
            cmocka_unit_test(test_duplicate_key_last_wins),
            cmocka_unit_test(test_comments_and_indentation),
            cmocka_unit_test(test_bytes_parse),
            cmocka_unit_test(test_error_unknown_section),
            cmocka_unit_test(test_error_unknown_key),
            cmocka_unit_test(test_error_key_outside_section),
            cmocka_unit_test(test_error_syntax),
            cmocka_unit_test(test_error_bad_int),
            cmocka_unit_test(test_error_out_of_range),
            cmocka_unit_test(test_error_bad_enum_and_string),
            cmocka_unit_test(test_error_bad_listener),
            cmocka_unit_test(test_error_unspecified_advertised),
            cmocka_unit_test(test_error_bad_core_list),
            cmocka_unit_test(test_error_line_too_long),
            cmocka_unit_test(test_error_too_many_users),
            cmocka_unit_test(test_failed_load_changes_nothing),
            cmocka_unit_test(test_load_file),
            cmocka_unit_test(test_validate_duplicate_worker_core),
            cmocka_unit_test(test_validate_offline_core),
            cmocka_unit_test(test_validate_mixed_pinning),
            cmocka_unit_test(test_validate_listener_clash),
            cmocka_unit_test(test_validate_advertised_unspecified),
            cmocka_unit_test(test_validate_limits_and_auth),
            cmocka_unit_test(test_validate_warns_control_shares_worker_core),
            cmocka_unit_test(test_validate_warns_more_workers_than_cpus),
            cmocka_unit_test(test_kafka_keys),
            cmocka_unit_test(test_kafka_retention_keys),
            cmocka_unit_test(test_print_round_trip),
            cmocka_unit_test(test_print_content_and_core_plan),
            cmocka_unit_test(test_reload_allowed),
            cmocka_unit_test(test_reload_refused),
            cmocka_unit_test(test_deploy_sluice_conf_is_the_defaults),
            cmocka_unit_test(test_deploy_sluice_test_conf),
            cmocka_unit_test(test_dpdk_keys_parsed),
            cmocka_unit_test(test_dpdk_eal_argv),
            cmocka_unit_test(test_dpdk_validate_errors),
            cmocka_unit_test(test_dpdk_check_plan),
            cmocka_unit_test(test_deploy_dpdk_examples),
        };
        return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
