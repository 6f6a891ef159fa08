# Sourced by the Kafka bench scripts (kafka.sh, kafka_idle.sh,
# kafka_cache_cost.sh): one sluiced set-up, so every script measures the
# broker kafka.sh measures (2 workers, 2 partitions per topic, fsync
# durability, Kafka only). The caller owns $tmp; these set $pid, $kport and
# $aport. Only the sluiced started here is ever stopped.

# kafka_sluiced_start SLUICED [CACHE_BYTES]   ([kafka] cache_bytes, default auto;
#   KAFKA_EXTRA_CONF: more lines for the [kafka] section)
kafka_sluiced_start() {
	local sluiced=$1 cache=${2:-auto}
	cat >"$tmp/sluiced.conf" <<CONF
[server]
data_dir = $tmp/data
[cores]
worker_count = 2
[listeners]
kafka = 127.0.0.1:0
nats = off
amqp = off
test = off
[admin]
listen = 127.0.0.1:0
[kafka]
default_partitions = 2
cache_bytes = $cache
${KAFKA_EXTRA_CONF:-}
CONF
	"$sluiced" --config "$tmp/sluiced.conf" >>"$tmp/log" 2>&1 &
	pid=$!
	for _ in $(seq 200); do
		[ -s "$tmp/data/ports.json" ] && break
		sleep 0.05
	done
	if [ ! -s "$tmp/data/ports.json" ]; then
		echo "sluiced did not publish its ports; see $tmp/log" >&2
		return 1
	fi
	kport=$(jq .kafka "$tmp/data/ports.json")
	aport=$(jq .admin "$tmp/data/ports.json")
}

# kafka_steady_conf SEGMENT_BYTES (e.g. 64m): the [kafka] lines of a topic in
# its steady state under retention (segment_bytes, retention_bytes 4 times
# that, retention checked every 100 ms) into KAFKA_EXTRA_CONF; sets $seg to
# the segment size in bytes.
kafka_steady_conf() {
	seg=$(numfmt --from=iec "$(echo "$1" | tr a-z A-Z)")
	KAFKA_EXTRA_CONF="segment_bytes = $seg
retention_bytes = $((4 * seg))
retention_check_interval_ms = 100"
	export KAFKA_EXTRA_CONF
}

# Stops that sluiced (waiting for it, so its files are closed) and removes
# its data dir.
kafka_sluiced_stop() {
	if [ -n "${pid:-}" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=""
	fi
	rm -rf "$tmp/data"
}
