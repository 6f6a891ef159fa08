#!/usr/bin/env bash
# The deploy scripts cannot bind a NIC or reserve hugepages on a CI VM (no
# VFIO here), so their --dry-run output is what is tested: the exact
# commands, and the refusals that protect a machine.
set -uo pipefail
D=${SLUICE_SOURCE_ROOT:?}/deploy
pass=0 fail=0
check() { # name, expected exit code, expected output (grep -F, one line each), command...
	local name=$1 want_rc=$2 want=$3
	shift 3
	local out rc
	out=$("$@" 2>&1)
	rc=$?
	local ok=1
	[ "$rc" = "$want_rc" ] || ok=0
	while IFS= read -r line; do
		[ -z "$line" ] || grep -qF -- "$line" <<<"$out" || ok=0
	done <<<"$want"
	if [ $ok = 1 ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAILED $name (rc $rc, want $want_rc):"
		echo "$out"
	fi
}

check "hugepages dry run" 0 "+ echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
+ mount -t hugetlbfs -o pagesize=2M nodev /mnt/huge
+ echo vm.nr_hugepages\ =\ 1024 > /etc/sysctl.d/80-sluice-hugepages.conf" \
	bash "$D/dpdk-hugepages.sh" --dry-run --pages 1024 --mount /mnt/huge --persist
check "hugepages 1G" 0 "hugepages-1048576kB/nr_hugepages" \
	bash "$D/dpdk-hugepages.sh" --dry-run --pages 4 --size 1G
check "hugepages bad size" 2 "--size is 2M or 1G" bash "$D/dpdk-hugepages.sh" --dry-run --size 3M
check "hugepages bad count" 2 "--pages needs a number" bash "$D/dpdk-hugepages.sh" --dry-run --pages x
check "hugepages relative mount" 2 "absolute path" bash "$D/dpdk-hugepages.sh" --dry-run --mount rel

check "bind dry run" 0 "+ modprobe vfio-pci
+ dpdk-devbind.py --bind=vfio-pci 0000:03:00.0" bash "$D/dpdk-nic-bind.sh" bind 03:00.0 --dry-run
check "unbind dry run" 0 "+ dpdk-devbind.py --bind=ixgbe 0000:03:00.1" \
	bash "$D/dpdk-nic-bind.sh" unbind 0000:03:00.1 --driver ixgbe --dry-run
check "unbind needs a driver" 2 "unbind needs --driver" \
	bash "$D/dpdk-nic-bind.sh" unbind 0000:03:00.1 --dry-run
check "bind refuses a non-PCI name" 2 "is not a PCI address" \
	bash "$D/dpdk-nic-bind.sh" bind eth0 --dry-run

# The NIC with the default route is the management plane: refused even in
# a dry run, unless --force.
mgmt_if=$(ip route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1); exit}')
mgmt_pci=""
if [ -n "$mgmt_if" ] && [ -e "/sys/class/net/$mgmt_if/device" ]; then
	dev=$(readlink -f "/sys/class/net/$mgmt_if/device")
	[[ $(basename "$dev") == virtio* ]] && dev=$(dirname "$dev")
	mgmt_pci=$(basename "$dev")
fi
if [[ $mgmt_pci =~ ^[0-9a-f]{4}: ]]; then
	check "bind refuses the management NIC" 1 "carries the default route" \
		bash "$D/dpdk-nic-bind.sh" bind "$mgmt_pci" --dry-run
	check "bind --force takes it" 0 "+ ip link set $mgmt_if down" \
		bash "$D/dpdk-nic-bind.sh" bind "$mgmt_pci" --dry-run --force
else
	echo "skipped: no PCI NIC carries the default route here"
fi

check "unit file names the config check" 0 "ExecStartPre=/usr/local/sbin/sluiced --check" \
	cat "$D/sluiced.service"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
