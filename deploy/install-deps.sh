#!/usr/bin/env bash
# Installs every Debian package sluice needs to build, test and benchmark.
# Idempotent: safe to run on every `quickstart`/`test` invocation.
set -euo pipefail

PKGS=(
  # build
  build-essential meson ninja-build pkg-config clang clang-format
  libfuzzer-14-dev libclang-rt-14-dev
  # libraries
  liburing-dev libcmocka-dev libinih-dev libmicrohttpd-dev
  libzstd-dev liblz4-dev libsnappy-dev zlib1g-dev libxxhash-dev
  # optional dataplane
  libdpdk-dev dpdk
  # real clients for integration tests
  libnats-dev golang-go golang-github-nats-io-go-nats-dev golang-github-rabbitmq-amqp091-go-dev
  kcat librdkafka-dev python3-confluent-kafka python3-kafka
  python3 python3-pytest python3-pytest-timeout curl iproute2 procps python3-pika amqp-tools
  # peers for benchmarks (and jq, which tests/bench/amqp.sh reads meson-info with)
  nats-server rabbitmq-server jq
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
