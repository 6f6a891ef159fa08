#!/usr/bin/env bash
# Reserves hugepages for sluiced's DPDK mode and mounts a hugetlbfs for them.
#   dpdk-hugepages.sh [--pages N] [--size 2M|1G] [--mount DIR] [--persist] [--dry-run]
#   dpdk-hugepages.sh --status
# --persist also writes /etc/sysctl.d/80-sluice-hugepages.conf (2M pages)
# and an /etc/fstab line, so the reservation survives a reboot. 1G pages are
# best reserved on the kernel command line (hugepagesz=1G hugepages=N):
# after boot, memory is too fragmented to find them.
# --dry-run prints every command instead of running it.
set -euo pipefail

pages=512 size=2M mount_dir=/dev/hugepages persist=0 dry=0 status=0
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--pages) pages=${2:?}; shift 2 ;;
	--size) size=${2:?}; shift 2 ;;
	--mount) mount_dir=${2:?}; shift 2 ;;
	--persist) persist=1; shift ;;
	--dry-run) dry=1; shift ;;
	--status) status=1; shift ;;
	-h | --help) usage 0 ;;
	*) echo "dpdk-hugepages.sh: unknown argument $1" >&2; usage ;;
	esac
done
case $size in
2M) kb=2048 ;;
1G) kb=1048576 ;;
*) echo "dpdk-hugepages.sh: --size is 2M or 1G, got $size" >&2; exit 2 ;;
esac
[[ $pages =~ ^[0-9]+$ ]] || { echo "dpdk-hugepages.sh: --pages needs a number, got $pages" >&2; exit 2; }
[[ $mount_dir == /* ]] || { echo "dpdk-hugepages.sh: --mount needs an absolute path" >&2; exit 2; }

sysfs=/sys/kernel/mm/hugepages/hugepages-${kb}kB
if [ "$status" = 1 ]; then
	grep -E '^Huge' /proc/meminfo
	grep hugetlbfs /proc/mounts || echo "no hugetlbfs mounted"
	exit 0
fi

run() { # prints in dry-run mode, runs otherwise
	if [ "$dry" = 1 ]; then
		printf '+ %s\n' "$*"
	else
		"$@"
	fi
}
write() { # file, text
	if [ "$dry" = 1 ]; then
		printf '+ echo %q > %s\n' "$2" "$1"
	else
		printf '%s\n' "$2" >"$1"
	fi
}

[ "$dry" = 1 ] || [ "$(id -u)" = 0 ] || { echo "dpdk-hugepages.sh: run as root (or --dry-run)" >&2; exit 1; }
[ "$dry" = 1 ] || [ -d "$sysfs" ] || { echo "dpdk-hugepages.sh: this kernel has no $size pages ($sysfs)" >&2; exit 1; }

write "$sysfs/nr_hugepages" "$pages"
run mkdir -p "$mount_dir"
if [ "$dry" = 1 ] || ! grep -q " $mount_dir hugetlbfs " /proc/mounts; then
	run mount -t hugetlbfs -o "pagesize=$size" nodev "$mount_dir"
fi
if [ "$persist" = 1 ]; then
	[ "$size" = 2M ] && write /etc/sysctl.d/80-sluice-hugepages.conf "vm.nr_hugepages = $pages"
	if [ "$dry" = 1 ] || ! grep -q " $mount_dir hugetlbfs" /etc/fstab; then
		if [ "$dry" = 1 ]; then
			printf '+ echo %q >> /etc/fstab\n' "nodev $mount_dir hugetlbfs pagesize=$size 0 0"
		else
			echo "nodev $mount_dir hugetlbfs pagesize=$size 0 0" >>/etc/fstab
		fi
	fi
fi
if [ "$dry" = 0 ]; then
	got=$(cat "$sysfs/nr_hugepages")
	echo "reserved $got of $pages $size pages, mounted at $mount_dir"
	[ "$got" -ge "$pages" ] || { echo "dpdk-hugepages.sh: the kernel found only $got pages" >&2; exit 1; }
fi
