#!/usr/bin/env bash
# Installs everything platter needs on Debian 12 as root. Idempotent: a second run only
# checks. Usage: scripts/install.sh [--no-services]
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { printf '[install] %s\n' "$*"; }

need_apt=0
PKGS=(qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev
  libnbd-bin nbdkit nbd-client fio fuse3 libfuse3-dev pkg-config
  docker-registry apache2-utils skopeo umoci curl ca-certificates openssl
  cpio busybox-static e2fsprogs mtools dosfstools fdisk syslinux syslinux-common genisoimage
  xz-utils zstd bzip2 gzip liblzma-dev libzstd-dev libbz2-dev time procps
  util-linux man-db groff-base bash)
for p in "${PKGS[@]}" qemu-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_apt=1
done
# qemu-system-x86 removes the preinstalled qemu-utils 10; Debian's 7.2 must come back.
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || need_apt=1

if [ "$need_apt" = 1 ]; then
  log "installing Debian packages"
  apt-get update -qq
  apt-get install -y -qq qemu-system-x86 >/dev/null
  apt-get install -y -qq qemu-utils >/dev/null
  apt-get install -y -qq "${PKGS[@]}" >/dev/null
else
  log "Debian packages already installed"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: platter needs a Rust toolchain (rustup) on PATH" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [ "${1:-}" != "--no-services" ]; then
  # No systemd here: start the libvirt daemons ourselves, each only if it is not running.
  if ! pgrep -x virtlogd >/dev/null; then log "starting virtlogd"; virtlogd -d; fi
  if ! pgrep -x libvirtd >/dev/null; then log "starting libvirtd"; libvirtd -d; fi
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
log "done"
