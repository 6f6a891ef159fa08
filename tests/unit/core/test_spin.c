/* The adaptive idle policy's spin (sl_spin_*, sl_worker.h): it stops after
 * spins that keep ending asleep, still probes now and then, and comes back
 * on the first spin that finds work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sl_worker.h"

/* One idle period: returns whether it spun; it ends asleep or by work. */
static bool idle_period(struct sl_spin *s, bool slept)
{
        bool spun = sl_spin_begin(s);
        sl_spin_end(s, slept);
        return spun;
}

static void test_spins_while_spins_find_work(void **state)
{
        (void)state;
        struct sl_spin s = {0};
        for (int i = 0; i < 1000; i++)
                assert_true(idle_period(&s, false));
        /* Misses below the limit, each followed by a hit, never stop it. */
        for (int i = 0; i < 100; i++) {
                for (unsigned m = 0; m + 1 < SL_SPIN_MISSES_MAX; m++)
                        assert_true(idle_period(&s, true));
                assert_true(idle_period(&s, false));
        }
}

static void test_stops_after_misses_and_probes(void **state)
{
        (void)state;
        struct sl_spin s = {0};
        for (unsigned m = 0; m < SL_SPIN_MISSES_MAX; m++)
                assert_true(idle_period(&s, true));
        /* From now on only one idle period in SL_SPIN_PROBE_EVERY spins. */
        unsigned spun = 0;
        for (unsigned i = 0; i < 10 * SL_SPIN_PROBE_EVERY; i++)
                spun += idle_period(&s, true);
        assert_int_equal(spun, 10);
}

static void test_probe_that_finds_work_turns_spin_back_on(void **state)
{
        (void)state;
        struct sl_spin s = {0};
        for (unsigned m = 0; m < SL_SPIN_MISSES_MAX; m++)
                idle_period(&s, true);
        /* Idle periods without a spin end by work too: that is no evidence
         * either way and must not turn the spin back on. */
        unsigned i = 0;
        while (!sl_spin_begin(&s)) {
                sl_spin_end(&s, false);
                assert_true(++i < SL_SPIN_PROBE_EVERY);
        }
        sl_spin_end(&s, false); /* the probe found work */
        for (unsigned k = 0; k < 3 * SL_SPIN_PROBE_EVERY; k++)
                assert_true(idle_period(&s, false));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_spins_while_spins_find_work),
            cmocka_unit_test(test_stops_after_misses_and_probes),
            cmocka_unit_test(test_probe_that_finds_work_turns_spin_back_on),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
