#!/bin/busybox sh
# shellcheck shell=dash
# /init of the bochs tier's initramfs: mount what the guest script reads, run it, power
# off (ACPI soft-off ends Bochs). The case name comes from vmxprobe.case= on the command
# line, which the case floppy's GRUB snippet sets.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
case_name=$(sed -n 's/.*vmxprobe\.case=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "@@ init: $(uname -r), case ${case_name:-?}, $(grep -c ^processor /proc/cpuinfo) CPU(s) online"
# From here on only the guest script writes to the console: late kernel messages would
# cut into its output (they are read from /dev/kmsg instead).
dmesg -n 1
PYTHONPATH=/opt/vmxprobe PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -S /opt/guest.py "$case_name"
echo "@@ init: guest script exit $?"
sleep 1
poweroff -f
