#!/usr/bin/env bash
# Builds OUT/boot.raw: a disk that boots by itself under a plain BIOS (no external kernel),
# for containerDisk demos and tests. Layout (MBR, syslinux's mbr.bin):
#   partition 1  FAT (type c, bootable): syslinux, vmlinuz, initrd.gz, syslinux.cfg
#   partition 2  ext4: /hello.txt; the guest's /init mounts it (platter.root=/dev/vda2)
# The kernel and initramfs come from build-guest.sh (run first if needed).
# Usage: testdata/build-bootable.sh [OUT]   (default $PLATTER_TESTDATA, else target/testdata)
# The kernel runs with loglevel=6 rather than quiet: its first line ("Linux version …")
# marks the moment the boot loader has handed over, which the VM benchmark times.
# Idempotent: does nothing when OUT/boot.raw exists and was built by these scripts from
# the current guest (OUT/.bootable.stamp). No root mounts: mtools, sfdisk, dd.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=testdata/lib.sh
. "$HERE/lib.sh"

OUT="$(testdata_out_dir "${1:-}")"
"$HERE/build-guest.sh" "$OUT"
STAMP="$(fingerprint "$HERE/build-bootable.sh" "$OUT/.guest.stamp")"
built() {
  [ -s "$OUT/boot.raw" ] && [ "$(cat "$OUT/.bootable.stamp" 2>/dev/null)" = "$STAMP" ]
}
if built; then
  log "bootable disk already built in $OUT"
  exit 0
fi
need_tools mkfs.vfat mcopy syslinux sfdisk mkfs.ext4 dd flock

MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR" ] || die "missing $MBR (package syslinux-common)"

exec 9>"$OUT/.build-bootable.lock"
flock 9
if built; then
  exit 0
fi

WORK="$(mktemp -d "$OUT/.bootable.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Sizes in 512-byte sectors. The partitions start on 1 MiB boundaries.
BOOT_START=2048
BOOT_SECTORS=81920      # 40 MiB FAT
ROOT_START=$((BOOT_START + BOOT_SECTORS))
ROOT_SECTORS=131072     # 64 MiB ext4
TOTAL_SECTORS=$((ROOT_START + ROOT_SECTORS))

cat >"$WORK/syslinux.cfg" <<CFG
DEFAULT platter
PROMPT 0
TIMEOUT 0
LABEL platter
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 loglevel=6 panic=-1 platter.root=/dev/vda2
CFG

# mkfs.vfat -C counts in KiB blocks.
mkfs.vfat -n PLATTERBOOT -C "$WORK/boot.img" $((BOOT_SECTORS / 2)) >/dev/null
mcopy -i "$WORK/boot.img" "$OUT/vmlinuz" "$OUT/initrd.gz" "$WORK/syslinux.cfg" ::/
syslinux --install "$WORK/boot.img"

mkdir -p "$WORK/rootfs"
echo "hello from the platter bootable disk" >"$WORK/rootfs/hello.txt"
truncate -s $((ROOT_SECTORS * 512)) "$WORK/root.img"
mkfs.ext4 -q -F -L platter -d "$WORK/rootfs" "$WORK/root.img"

truncate -s $((TOTAL_SECTORS * 512)) "$WORK/boot.raw"
sfdisk --quiet "$WORK/boot.raw" <<TABLE
label: dos
start=$BOOT_START, size=$BOOT_SECTORS, type=c, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
TABLE
# The MBR boot code is the first 440 bytes; the partition table after it stays.
dd if="$MBR" of="$WORK/boot.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.img" of="$WORK/boot.raw" bs=512 seek=$BOOT_START conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$WORK/boot.raw" bs=512 seek=$ROOT_START conv=notrunc,sparse status=none

chmod 0644 "$WORK/boot.raw"
mv -f "$WORK/boot.raw" "$OUT/boot.raw"
printf '%s\n' "$STAMP" >"$OUT/.bootable.stamp"
log "built $OUT/boot.raw"
