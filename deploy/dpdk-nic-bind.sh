#!/usr/bin/env bash
# Hands a NIC to DPDK (vfio-pci) for sluiced's data plane, and back.
#   dpdk-nic-bind.sh bind PCI [--force] [--dry-run]
#   dpdk-nic-bind.sh unbind PCI --driver KERNEL_DRIVER [--dry-run]
#   dpdk-nic-bind.sh status
# PCI is the address as lspci -D prints it (0000:03:00.0). bind refuses the
# NIC that carries the default route (the management plane: admin HTTP and
# ssh stay on it) unless --force. --dry-run prints the commands.
set -euo pipefail

devbind=${DPDK_DEVBIND:-dpdk-devbind.py}
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] || usage
action=$1
shift
pci="" driver="" force=0 dry=0
while [ $# -gt 0 ]; do
	case $1 in
	--driver) driver=${2:?}; shift 2 ;;
	--force) force=1; shift ;;
	--dry-run) dry=1; shift ;;
	-h | --help) usage 0 ;;
	-*) echo "dpdk-nic-bind.sh: unknown option $1" >&2; usage ;;
	*) pci=$1; shift ;;
	esac
done

run() {
	if [ "$dry" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}
pci_check() {
	[[ $pci =~ ^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]] ||
		{ echo "dpdk-nic-bind.sh: \"$pci\" is not a PCI address such as 0000:03:00.0" >&2; exit 2; }
	[[ $pci == ????:* ]] || pci=0000:$pci
}
# The kernel interface of a PCI device, if it has one (virtio NICs hang it
# one level lower, under virtioN/).
iface_of() {
	local d
	for d in "/sys/bus/pci/devices/$1"/net/* "/sys/bus/pci/devices/$1"/virtio*/net/*; do
		[ -e "$d" ] && { basename "$d"; return; }
	done
	true
}

case $action in
status)
	exec "$devbind" --status-dev net
	;;
bind)
	pci_check
	iface=$(iface_of "$pci")
	if [ -n "$iface" ] && [ "$force" = 0 ] &&
		ip route show default 2>/dev/null | grep -qw "dev $iface"; then
		echo "dpdk-nic-bind.sh: $pci ($iface) carries the default route: it is the management NIC; use another port or --force" >&2
		exit 1
	fi
	[ "$dry" = 1 ] || [ -e "/sys/bus/pci/devices/$pci" ] || { echo "dpdk-nic-bind.sh: no PCI device $pci" >&2; exit 1; }
	[ "$dry" = 1 ] || [ -e /dev/vfio/vfio ] || [ -d /sys/module/vfio_pci ] || run modprobe vfio-pci
	[ "$dry" = 0 ] || run modprobe vfio-pci
	if [ -n "$iface" ]; then run ip link set "$iface" down; fi
	run "$devbind" --bind=vfio-pci "$pci"
	;;
unbind)
	pci_check
	[ -n "$driver" ] || { echo "dpdk-nic-bind.sh: unbind needs --driver (the kernel driver to return $pci to, e.g. ixgbe)" >&2; exit 2; }
	run "$devbind" --bind="$driver" "$pci"
	;;
*)
	usage
	;;
esac
