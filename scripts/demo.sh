#!/usr/bin/env bash
# The demo (README: `bash scripts/demo.sh`): on a fresh Debian 12 machine, as root, it
# installs what is missing, builds platter and the test guest, pushes the guest's disk as
# a KubeVirt containerDisk to a local registry, boots a VM from that image through
# libvirt with its disk served by `platter serve`, snapshots the VM's disk, clones the
# snapshot into a second VM that boots too, and cleans everything up.
# Everything lives in a temp dir under /tmp (qemu runs as libvirt-qemu and must reach the
# NBD socket there); the registry and the server are killed at exit, whatever happens.
# Exits non-zero on any failure. Idempotent: run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
T0=$(date +%s)
BOOT_DEADLINE=120 # seconds a guest may take to boot and power off (~5 s under TCG)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { printf '\n\033[1;31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }
# Shows a platter command, then runs it.
p() { printf '\033[2m$ platter %s\033[0m\n' "$*"; "$P" "$@"; }

VMS=(demo2 demo1) # in the order they can be deleted
work="" serve_pid="" registry_pid=""

# A libvirt domain left by an earlier, interrupted demo: its console log is in one of
# our temp dirs. Any other domain of that name is not ours and is left alone.
is_demo_leftover() {
  virsh -c qemu:///system dumpxml "$1" 2>/dev/null | grep -q "/tmp/platter-demo\."
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    for vm in "${VMS[@]}"; do
      [ -f "$PLATTER_STORE/vms/$vm.json" ] && "$P" vm delete "$vm" >/dev/null 2>&1
      [ "$vm" = demo2 ] && "$P" volume delete demo2-root >/dev/null 2>&1
    done
    kill -TERM "$serve_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$serve_pid" 2>/dev/null
  fi
  for vm in "${VMS[@]}"; do
    if is_demo_leftover "$vm"; then
      virsh -c qemu:///system destroy "$vm" >/dev/null 2>&1
      virsh -c qemu:///system undefine --nvram "$vm" >/dev/null 2>&1
    fi
  done
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null
    wait "$registry_pid" 2>/dev/null
  fi
  [ -n "$work" ] && rm -rf "$work"
  if [ "$rc" = 0 ]; then
    printf '\n\033[1mdemo finished in %ss\033[0m\n' "$(($(date +%s) - T0))"
  else
    printf '\ndemo failed (exit %s); cleaned up\n' "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until VM $1 has printed PLATTER-DONE and powered off, then shows its console and
# checks that it booted and read its disk.
wait_for_guest() {
  local vm=$1 deadline=$(($(date +%s) + BOOT_DEADLINE)) out
  while :; do
    out=$("$P" vm console "$vm" 2>/dev/null || true)
    case "$out" in *PLATTER-ERROR*) printf '%s\n' "$out"; die "guest $vm reported an error" ;; esac
    if [[ "$out" == *PLATTER-DONE* ]] &&
      [ "$(virsh -c qemu:///system domstate "$vm" 2>/dev/null | head -n 1)" = "shut off" ]; then
      break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { printf '%s\n' "$out"; die "guest $vm did not finish within ${BOOT_DEADLINE}s"; }
    sleep 0.5
  done
  printf '\033[2m$ platter vm console %s\033[0m\n' "$vm"
  printf '%s\n' "$out" | tr -d '\r' | sed 's/^/   | /'
  grep -q '^PLATTER-BOOTED' <<<"$(tr -d '\r' <<<"$out")" || die "guest $vm did not boot"
  grep -q '^PLATTER-READ: hello from the platter bootable disk' <<<"$(tr -d '\r' <<<"$out")" ||
    die "guest $vm did not read its disk"
}

step "1/11 install what is missing (scripts/install.sh) and start libvirtd"
bash scripts/install.sh

step "2/11 build platter (release)"
cargo build --release -p platter
P="$REPO/target/release/platter"

step "3/11 build the test guest: Debian cloud kernel, busybox initramfs, BIOS-bootable disk"
bash testdata/build-bootable.sh
GUEST="${PLATTER_TESTDATA:-$REPO/target/testdata}/boot.raw"
[ -s "$GUEST" ] || die "$GUEST was not built"
note "$GUEST: $(du -h --apparent-size "$GUEST" | cut -f1) (syslinux + kernel on FAT, ext4 root with /hello.txt)"

for vm in "${VMS[@]}"; do
  if is_demo_leftover "$vm"; then
    note "removing VM $vm left by an interrupted demo"
    virsh -c qemu:///system destroy "$vm" >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine --nvram "$vm" >/dev/null
  fi
done
work=$(mktemp -d /tmp/platter-demo.XXXXXX)
chmod 0755 "$work" # qemu (user libvirt-qemu) must reach the NBD socket in the store
export PLATTER_STORE="$work/store"
export PLATTER_LOG=error

step "4/11 start a local OCI registry (docker-registry on 127.0.0.1, random port)"
mkdir -p "$work/registry"
for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  # Taken if something accepts a connection there.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
  cat >"$work/registry/config.yml" <<EOF
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/registry/data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
EOF
  docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break 2
    kill -0 "$registry_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$registry_pid" 2>/dev/null || true
  wait "$registry_pid" 2>/dev/null || true
  registry_pid=""
done
[ -n "$registry_pid" ] || { cat "$work/registry/log" >&2; die "docker-registry did not start"; }
IMAGE="docker://127.0.0.1:$port/platter/guest:latest"
note "registry on http://127.0.0.1:$port (pid $registry_pid)"

step "5/11 import the bootable disk into a volume, then push it as a containerDisk"
p import "$GUEST" guest
p push guest "$IMAGE"
p volume delete guest
note "the local volume is gone: what boots next comes from the registry"

step "6/11 start platter serve (NBD on STORE/run/nbd.sock for libvirt, control socket)"
"$P" serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 100); do
  [ -S "$PLATTER_STORE/run/control.sock" ] && [ -S "$PLATTER_STORE/run/nbd.sock" ] && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; die "platter serve exited"; }
  sleep 0.1
done
[ -S "$PLATTER_STORE/run/nbd.sock" ] || { cat "$work/serve.log" >&2; die "platter serve did not start"; }
note "$(head -n 1 "$work/serve.log")"

step "7/11 boot VM demo1 from the containerDisk (BIOS boot, its own throw-away clone)"
t=$(date +%s)
p vm create demo1 --image "$IMAGE" --memory 256M --start
wait_for_guest demo1
note "demo1 booted, read its disk, wrote /log.txt and powered off in $(($(date +%s) - t))s"

step "8/11 snapshot demo1's disk and clone the snapshot (both O(1): no data copied)"
p volume snapshot demo1-disk@after-boot
p volume clone demo1-disk@after-boot demo2-root

step "9/11 boot VM demo2 from the clone"
p vm create demo2 --volume demo2-root --memory 256M --start
wait_for_guest demo2
# The clone carries demo1's write (its boot line in /log.txt) and adds its own.
p volume export demo2-root "$work/demo2.raw" >/dev/null
read -r start size < <(sfdisk --dump "$work/demo2.raw" |
  sed -n 's/^.*2 : start= *\([0-9]*\), size= *\([0-9]*\),.*/\1 \2/p')
dd if="$work/demo2.raw" of="$work/demo2-root.ext4" bs=512 skip="$start" count="$size" status=none
log=$(debugfs -R 'cat /log.txt' "$work/demo2-root.ext4" 2>/dev/null)
note "/log.txt on demo2's disk (demo1's boot, then demo2's):"
printf '%s\n' "$log" | sed 's/^/   | /'
[ "$(grep -c '^boot ' <<<"$log")" = 2 ] || die "demo2's disk should hold two boot lines"

step "10/11 what platter has now"
p vm list
p volume list --all # --all: the image cache too

step "11/11 clean up: delete the VMs, the clone and demo1's throw-away disk; stop serve and the registry"
p vm delete demo2
p volume delete demo2-root # the clone first: demo1's disk (and its snapshot) goes with demo1
p vm delete demo1
p volume list
