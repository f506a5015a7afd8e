#!/usr/bin/env bash
# Builds the platter test guest from Debian packages, without root mounts:
#   OUT/vmlinuz     the Debian cloud kernel
#   OUT/initrd.gz   a busybox initramfs whose /init is testdata/guest-init.sh
#   OUT/disk.raw    a 64M ext4 data disk holding /hello.txt
# Usage: testdata/build-guest.sh [OUT]   (default $PLATTER_TESTDATA, else target/testdata)
#   OUT/.guest.stamp  the fingerprint of the scripts that built them
# Idempotent: does nothing when all three exist and were built by these very scripts
# (a changed guest-init.sh or module list rebuilds). Tests must copy disk.raw before
# booting it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=testdata/lib.sh
. "$HERE/lib.sh"

OUT="$(testdata_out_dir "${1:-}")"
STAMP="$(fingerprint "$HERE/build-guest.sh" "$HERE/guest-init.sh" "$HERE/lib.sh")"
built() {
  [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.gz" ] && [ -s "$OUT/disk.raw" ] &&
    [ "$(cat "$OUT/.guest.stamp" 2>/dev/null)" = "$STAMP" ]
}
if built; then
  log "guest already built in $OUT"
  exit 0
fi
need_tools apt-get apt-cache dpkg cpio gzip mkfs.ext4 flock sha256sum

# Tests build the guest concurrently: one builder at a time, the others find it done.
exec 9>"$OUT/.build-guest.lock"
flock 9
if built; then
  exit 0
fi

WORK="$(mktemp -d "$OUT/.guest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

KPKG="$(cloud_kernel_package)"
log "kernel package $KPKG"
fetch_deb "$OUT" "$KPKG" "$WORK/kernel"
fetch_deb "$OUT" busybox-static "$WORK/busybox"

vmlinuz="$(find "$WORK/kernel/boot" -name 'vmlinuz-*' | head -n 1)"
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $KPKG"

root="$WORK/initramfs"
mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" "$root/dev" "$root/mnt" "$root/tmp" "$root/etc"
cp "$WORK/busybox/bin/busybox" "$root/bin/busybox"
install -m 0755 "$HERE/guest-init.sh" "$root/init"

# The cloud kernel has ext4 built in but virtio, the ACPI button and evdev are modules,
# possibly compressed (.ko.xz/.ko.zst): the busybox insmod wants them plain. The IDE CD-ROM
# stack (libata, ata_piix, sr_mod, isofs) is loaded only for platter.cdrom=.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
  button evdev scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs; do
  ko="$(find "$WORK/kernel/lib/modules" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \
    -o -name "$m.ko.gz" \) | head -n 1)"
  if [ -z "$ko" ]; then
    # Built into this kernel: nothing to load.
    log "module $m not found as a file; assuming built in"
    continue
  fi
  case "$ko" in
    *.xz) xz -dc "$ko" >"$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$ko" >"$root/lib/modules/$m.ko" ;;
    *.gz) gzip -dc "$ko" >"$root/lib/modules/$m.ko" ;;
    *) cp "$ko" "$root/lib/modules/$m.ko" ;;
  esac
done
[ -f "$root/lib/modules/virtio_blk.ko" ] || log "warning: virtio_blk is not a module in $KPKG"
[ -f "$root/lib/modules/sr_mod.ko" ] || log "warning: sr_mod is not a module in $KPKG"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) >"$WORK/initrd.gz"

mkdir -p "$WORK/diskroot"
echo "hello from platter" >"$WORK/diskroot/hello.txt"
truncate -s 64M "$WORK/disk.raw"
mkfs.ext4 -q -F -L platter -d "$WORK/diskroot" "$WORK/disk.raw"

# Make the results visible only once complete, so a killed build is never mistaken for done.
cp "$vmlinuz" "$WORK/vmlinuz"
for f in vmlinuz initrd.gz disk.raw; do
  chmod 0644 "$WORK/$f"
  mv -f "$WORK/$f" "$OUT/$f"
done
printf '%s\n' "$STAMP" >"$OUT/.guest.stamp"
log "built $OUT/vmlinuz, $OUT/initrd.gz, $OUT/disk.raw"
