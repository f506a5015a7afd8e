#!/bin/busybox sh
# /init of the platter test guest (copied into initrd.gz by build-guest.sh).
#
# Console protocol, one line each, which tests wait for:
#   PLATTER-BOOTED                 the root disk is mounted
#   PLATTER-READ: <content>        the first line of /hello.txt on the disk
#   PLATTER-WROTE: <line>          the line appended to /log.txt on the disk
#   PLATTER-TICK <n>               hold mode: one line per second, each also in /log.txt
#   PLATTER-ACPI-SHUTDOWN          the ACPI power button was pressed (virsh shutdown)
#   PLATTER-DONE                   the disk is unmounted and synced; power-off follows
#   PLATTER-ERROR: <why>           something failed; the guest powers off
#
# Kernel command line options:
#   platter.root=DEV     the ext4 root (default: /dev/vda2 if it exists, else /dev/vda)
#   platter.write=STR    write STR into /written.txt on the disk
#   platter.hold=N       stay up N seconds (writing a tick a second) before powering off,
#                        or until the ACPI power button is pressed
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /mnt /tmp

fail() {
  echo "PLATTER-ERROR: $*"
  sync
  poweroff -f
}

# The cloud kernel builds virtio as modules; this order satisfies their dependencies.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
  button evdev; do
  [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko" 2>/dev/null
done

root=""
write=""
hold=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    platter.root=*) root="${arg#platter.root=}" ;;
    platter.write=*) write="${arg#platter.write=}" ;;
    platter.hold=*) hold="${arg#platter.hold=}" ;;
  esac
done

# virtio_blk probes asynchronously: give the disk a few seconds to appear.
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do
  usleep 100000
  i=$((i + 1))
done
[ -b /dev/vda ] || fail "no /dev/vda"
if [ -z "$root" ]; then
  if [ -b /dev/vda2 ]; then root=/dev/vda2; else root=/dev/vda; fi
fi
mount -t ext4 "$root" /mnt || fail "cannot mount $root"
echo "PLATTER-BOOTED"

if [ -f /mnt/hello.txt ]; then
  echo "PLATTER-READ: $(head -n 1 /mnt/hello.txt)"
else
  echo "PLATTER-READ: <no /hello.txt>"
fi

line="boot $(cat /proc/sys/kernel/random/boot_id)"
echo "$line" >>/mnt/log.txt || fail "cannot write /log.txt"
sync
echo "PLATTER-WROTE: $line"

if [ -n "$write" ]; then
  echo "$write" >/mnt/written.txt || fail "cannot write /written.txt"
  sync
fi

# The power button (virsh shutdown) ends hold mode cleanly through busybox acpid.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\ntouch /tmp/acpi-stop\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -f -c /etc/acpi -l /tmp/acpid.log -p /tmp/acpid.pid &

n=0
while [ "$n" -lt "$hold" ] 2>/dev/null; do
  [ -f /tmp/acpi-stop ] && break
  n=$((n + 1))
  echo "tick $n" >>/mnt/log.txt
  sync
  echo "PLATTER-TICK $n"
  sleep 1
done
[ -f /tmp/acpi-stop ] && echo "PLATTER-ACPI-SHUTDOWN"

umount /mnt || sync
sync
echo "PLATTER-DONE"
poweroff -f
