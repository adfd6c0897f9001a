#!/bin/sh
# Dragonfly discovery init: PID 1 of the discovery initramfs (appended by the server over the
# stock initrd, so this /init replaces the stock one). It mounts the kernel filesystems, loads
# the NIC and disk drivers, brings up the boot NIC with DHCP and runs the agent. PID 1 must
# never exit (the kernel panics), so every failure is logged to the console and retried after
# a growing, jittered delay.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
[ -x /bin/busybox ] && /bin/busybox --install -s >/dev/null 2>&1

mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# A failed redirection on exec would end this shell, and PID 1 must not end: check first.
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1

CONSOLES=$(cat /sys/class/tty/console/active 2>/dev/null)

log() {
    line="dragonfly-init: $*"
    if [ -n "$CONSOLES" ]; then
        for tty in $CONSOLES; do
            echo "$line" >"/dev/$tty" 2>/dev/null
        done
    else
        echo "$line"
    fi
}

# Modules the lab's virtual hardware needs, in dependency order, for initrds without our list.
DEFAULT_MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
failover net_failover virtio_net virtio_blk"

load_modules() {
    if [ -s /etc/dragonfly/modules ]; then
        list=$(cat /etc/dragonfly/modules)
    else
        list=""
        for m in $DEFAULT_MODULES; do
            p=$(find /lib/modules -name "$m.ko*" 2>/dev/null | head -n 1)
            list="$list
${p:-$m}"
        done
    fi
    # One module per line, with optional parameters: "/lib/modules/.../x.ko param=value".
    # Names and compressed modules (a distro's initrd) go to modprobe instead.
    echo "$list" | while read -r p args; do
        [ -n "$p" ] || continue
        if [ -f "$p" ] && insmod "$p" $args 2>/dev/null; then
            echo ok
            continue
        fi
        case "$p" in
            *.ko) ;;   # a plain module that refused to load (no such hardware): done
            *) name=${p##*/}
               modprobe "${name%%.ko*}" $args 2>/dev/null && echo ok ;;
        esac
    done >/tmp/modules-loaded
    loaded=$(grep -c ok /tmp/modules-loaded)
    log "loaded $loaded kernel modules"
}

BOOT_MAC=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        dragonfly.mac=*) BOOT_MAC=$(echo "${word#dragonfly.mac=}" | tr 'A-Z-' 'a-z:') ;;
        BOOTIF=01-*) [ -n "$BOOT_MAC" ] || BOOT_MAC=$(echo "${word#BOOTIF=01-}" | tr 'A-Z-' 'a-z:') ;;
    esac
done

# Ethernet interfaces, the boot NIC (dragonfly.mac) first when it is present.
candidates() {
    first=""
    rest=""
    for n in /sys/class/net/*; do
        name=${n##*/}
        [ "$name" = lo ] && continue
        [ "$(cat "$n/type" 2>/dev/null)" = 1 ] || continue
        if [ -n "$BOOT_MAC" ] && [ "$(cat "$n/address" 2>/dev/null)" = "$BOOT_MAC" ]; then
            first=$name
        else
            rest="$rest $name"
        fi
    done
    echo "$first $rest"
}

rand() {
    r=$(od -An -N2 -tu2 /dev/urandom 2>/dev/null | tr -d ' ')
    [ -n "$r" ] || r=$$
    echo $((r % ($1 + 1)))
}

DELAY=0
pause() {
    if [ "$DELAY" -lt 2 ]; then DELAY=2; else DELAY=$((DELAY * 2)); fi
    [ "$DELAY" -gt 60 ] && DELAY=60
    wait_s=$((DELAY / 2 + $(rand $((DELAY / 2)))))
    log "$* (retrying in ${wait_s}s)"
    sleep "$wait_s"
}

network_up() {
    # Drivers register their interfaces asynchronously; give the boot NIC a moment to appear.
    i=0
    while [ "$i" -lt 10 ]; do
        set -- $(candidates)
        if [ -n "$BOOT_MAC" ]; then
            [ "$(cat "/sys/class/net/$1/address" 2>/dev/null)" = "$BOOT_MAC" ] && break
        elif [ "$#" -gt 0 ]; then
            break
        fi
        sleep 1
        i=$((i + 1))
    done
    set -- $(candidates)
    [ "$#" -gt 0 ] || return 1
    for ifc in "$@"; do
        ip link set dev "$ifc" up 2>/dev/null
        log "DHCP on $ifc ($(cat "/sys/class/net/$ifc/address" 2>/dev/null))"
        if udhcpc -i "$ifc" -f -q -n -t 5 -T 2 -V dragonfly-discovery \
            -s /dragonfly/udhcpc.script >/dev/null 2>&1; then
            [ -s /run/dragonfly-net ] && return 0
        fi
    done
    return 1
}

log "Dragonfly discovery environment starting (kernel $(uname -r))"
load_modules

while :; do
    if [ ! -s /run/dragonfly-net ] && ! network_up; then
        pause "no DHCP lease on any network interface"
        continue
    fi
    log "network up: $(cat /run/dragonfly-net)"
    if [ ! -r /dragonfly/agent.sh ]; then
        pause "the agent is missing from this initramfs"
        continue
    fi
    /bin/sh /dragonfly/agent.sh run
    pause "the agent stopped with status $?"
    rm -f /run/dragonfly-net   # renew the lease next time round
done
