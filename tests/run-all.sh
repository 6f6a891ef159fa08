#!/usr/bin/env bash
# Installs what the tests need, builds, and runs every test suite:
#   unit + fuzz corpus replay (optimised build), the same under ASan+UBSan,
#   the runtime's ring and wake-up tests under ThreadSanitizer, and the
#   integration suites against a real sluiced with real clients.
# Prints each suite's wall time and a final "N passed, M failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash deploy/install-deps.sh || exit 1

JOBS=${JOBS:-$(nproc)}
passed=0
failed=0
declare -a summary

setup() { # dir, meson args...
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
	else
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
	fi || { cat "$dir.setup.log"; return 1; }
	ninja -C "$dir" -j "$JOBS" >"$dir.build.log" 2>&1 || { tail -50 "$dir.build.log"; return 1; }
}

run_suite() { # name, command...
	local name=$1
	shift
	local t0=$(date +%s)
	echo "=== $name"
	if "$@"; then
		passed=$((passed + 1))
		summary+=("$(printf '%-28s %5ss  ok' "$name" $(($(date +%s) - t0)))")
	else
		failed=$((failed + 1))
		summary+=("$(printf '%-28s %5ss  FAILED' "$name" $(($(date +%s) - t0)))")
	fi
}

mtest() { # builddir, meson test args...
	local dir=$1
	shift
	meson test -C "$dir" --print-errorlogs --num-processes "$JOBS" "$@"
}

run_suite "build (debugoptimized)" setup build
run_suite "unit" mtest build --suite unit
run_suite "fuzz corpus replay" mtest build --suite fuzz
# The quick start builds a release (-O3, NDEBUG): its warnings differ.
run_suite "build (release)" setup build-release --buildtype=release
run_suite "build (asan+ubsan)" setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
run_suite "unit (asan+ubsan)" mtest build-asan --suite unit --suite fuzz
run_suite "build (tsan, core)" env CC=clang bash -c "meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null 2>&1 || meson setup --reconfigure build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null; ninja -C build-tsan tests/unit/core/test_core_ring tests/unit/core/test_core_threads >build-tsan.build.log 2>&1 || { tail -30 build-tsan.build.log; exit 1; }"
# A bound on each: a hang here once ate the whole CI budget.
run_suite "core rings+wakeups (tsan)" bash -c "TSAN_OPTIONS=halt_on_error=1 timeout 300 build-tsan/tests/unit/core/test_core_ring && TSAN_OPTIONS=halt_on_error=1 timeout 300 build-tsan/tests/unit/core/test_core_threads"
run_suite "integration" mtest build --suite integration --num-processes 1
# dpdk mode over net_tap in a namespace (about 30 s; skips without root).
run_suite "e2e (dpdk over tap)" mtest build --suite e2e --num-processes 1
# sluiced itself under ASan+UBSan, on the chaos backend that drives the
# rarest paths (splits, short sends, delayed completions). Leak checks stay
# for the unit tests: the clients are not ours.
run_suite "integration (asan, chaos)" env SLUICE_BACKENDS=chaos ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	meson test -C build-asan --print-errorlogs --suite integration --num-processes 1

echo
echo "suite times:"
for line in "${summary[@]}"; do echo "  $line"; done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
