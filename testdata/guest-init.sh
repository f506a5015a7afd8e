#!/bin/busybox sh
# /init of the platter test guest (copied into initrd.gz by build-guest.sh).
#
# Console protocol, one line each, which tests wait for:
#   PLATTER-INIT                   /init has started (the first line without kernel output)
#   PLATTER-BOOTED                 the root disk is mounted (or, with platter.root=none,
#                                  the modules are loaded)
#   PLATTER-READ: <content>        the first line of /hello.txt on the disk
#   PLATTER-WROTE: <line>          the line appended to /log.txt on the disk
#   PLATTER-CDROM: <content>       the first line of /hello.txt on the CD (platter.cdrom)
#   PLATTER-TICK <n>               hold mode: one line per second, each also in /log.txt
#   PLATTER-ACPI-SHUTDOWN          the ACPI power button was pressed (virsh shutdown)
#   PLATTER-DONE                   the disk is unmounted and synced; power-off follows
#   PLATTER-ERROR: <why>           something failed; the guest powers off
#
# Kernel command line options:
#   platter.root=DEV     the ext4 root (default: /dev/vda2 if it exists, else /dev/vda);
#                        `none`: no root disk (nothing is read or written but the CD)
#   platter.cdrom=DEV    also mount the ISO 9660 CD at DEV (e.g. /dev/sr0, IDE) read-only
#   platter.write=STR    write STR into /written.txt on the disk
#   platter.hold=N       stay up N seconds (writing a tick a second) before powering off,
#                        or until the ACPI power button is pressed
#   platter.ticks=A,B    hold mode: each tick also writes `tick <n>` into the first 512
#                        bytes of the raw block devices A, B, ... in that order, with a
#                        sync after each, so A's tick is always B's or one ahead of it
/bin/busybox echo "PLATTER-INIT"
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
cdrom=""
write=""
hold=0
ticks=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    platter.root=*) root="${arg#platter.root=}" ;;
    platter.cdrom=*) cdrom="${arg#platter.cdrom=}" ;;
    platter.write=*) write="${arg#platter.write=}" ;;
    platter.hold=*) hold="${arg#platter.hold=}" ;;
    platter.ticks=*) ticks="$(echo "${arg#platter.ticks=}" | tr , ' ')" ;;
  esac
done

# Waits up to 10 s for block device $1 to appear (drivers probe asynchronously).
wait_dev() {
  i=0
  while [ ! -b "$1" ] && [ "$i" -lt 100 ]; do
    usleep 100000
    i=$((i + 1))
  done
  [ -b "$1" ]
}

if [ "$root" = none ]; then
  root=""
else
  wait_dev /dev/vda || fail "no /dev/vda"
  if [ -z "$root" ]; then
    if [ -b /dev/vda2 ]; then root=/dev/vda2; else root=/dev/vda; fi
  fi
  mount -t ext4 "$root" /mnt || fail "cannot mount $root"
fi
echo "PLATTER-BOOTED"

if [ -n "$root" ]; then
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
fi

# A CD on the IDE bus: libata + ata_piix find it, sr_mod makes it /dev/sr0. Loaded only
# when asked for, so that other boots do not probe IDE.
if [ -n "$cdrom" ]; then
  for m in scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs; do
    [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko" 2>/dev/null
  done
  wait_dev "$cdrom" || fail "no $cdrom"
  mkdir -p /cdrom
  mount -t iso9660 -o ro "$cdrom" /cdrom || fail "cannot mount $cdrom"
  if [ -f /cdrom/hello.txt ]; then
    echo "PLATTER-CDROM: $(head -n 1 /cdrom/hello.txt)"
  else
    echo "PLATTER-CDROM: <no /hello.txt>"
  fi
  umount /cdrom
fi

# The power button (virsh shutdown) ends hold mode cleanly through busybox acpid.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\ntouch /tmp/acpi-stop\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -f -c /etc/acpi -l /tmp/acpid.log -p /tmp/acpid.pid &
acpid_pid=$!
# A press before acpid has opened the button's input device would be lost: wait (up to
# 5 s) until it has, so that a stop after the first tick is always heard.
i=0
while [ "$i" -lt 100 ] && ! ls -l "/proc/$acpid_pid/fd" 2>/dev/null | grep -q /dev/input/event; do
  usleep 50000
  i=$((i + 1))
done

for dev in $ticks; do
  wait_dev "$dev" || fail "no $dev"
done

n=0
while [ "$n" -lt "$hold" ] 2>/dev/null; do
  [ -f /tmp/acpi-stop ] && break
  n=$((n + 1))
  [ -n "$root" ] && echo "tick $n" >>/mnt/log.txt
  sync
  for dev in $ticks; do
    echo "tick $n" | dd of="$dev" bs=512 count=1 conv=sync,notrunc 2>/dev/null || fail "cannot write $dev"
    sync
  done
  echo "PLATTER-TICK $n"
  sleep 1
done
[ -f /tmp/acpi-stop ] && echo "PLATTER-ACPI-SHUTDOWN"

[ -n "$root" ] && { umount /mnt || sync; }
sync
echo "PLATTER-DONE"
poweroff -f
