#!/bin/sh
# Dragonfly discovery agent. POSIX shell for busybox ash inside the discovery initramfs: no
# Python, no jq. Dragonfly's own image carries ipmitool (for the BMC's address); other
# initrds may not, and then only the BMC's presence is reported.
#
#   agent.sh inventory   print the hardware report (JSON) on stdout
#   agent.sh run         check in, then follow the server's answers until told to reboot,
#                        power off or boot the local disk (the default)
#
# Settings come from /proc/cmdline (dragonfly.url=, dragonfly.mac= or BOOTIF=) and from the
# overlay's config file. DRAGONFLY_URL, DRAGONFLY_SYSROOT, DRAGONFLY_REBOOT_CMD,
# DRAGONFLY_POWEROFF_CMD and DRAGONFLY_IPMITOOL override them; tests use these to run the agent
# on a host.

AGENT_VERSION=1
POLL_MIN=2
POLL_MAX=300
BACKOFF_MAX=60
HTTP_TIMEOUT=20
IPMI_TIMEOUT=10
CONFIG=${DRAGONFLY_CONFIG:-/dragonfly/config}
# shellcheck disable=SC1090
[ -r "$CONFIG" ] && . "$CONFIG"

ROOT=${DRAGONFLY_SYSROOT:-}
PROC=$ROOT/proc
SYS=$ROOT/sys
WORK=${DRAGONFLY_WORKDIR:-/tmp/dragonfly}
REPORT=$WORK/report.json
ANSWER=$WORK/answer.json
BEAT=$WORK/heartbeat.json
ACT_REBOOT=${DRAGONFLY_REBOOT_CMD:-reboot -f}
ACT_POWEROFF=${DRAGONFLY_POWEROFF_CMD:-poweroff -f}
IPMITOOL=${DRAGONFLY_IPMITOOL:-ipmitool}
STARTED=$(date +%s 2>/dev/null || echo 0)

# --- logging: one line to every active kernel console (serial and screen alike) -------------

CONSOLES=""
if [ -z "$ROOT" ] && [ -r /sys/class/tty/console/active ] && [ -w /dev/console ]; then
    CONSOLES=$(cat /sys/class/tty/console/active 2>/dev/null)
fi

log() {
    line="dragonfly-agent: $*"
    if [ -n "$CONSOLES" ]; then
        for tty in $CONSOLES; do
            echo "$line" >"/dev/$tty" 2>/dev/null
        done
    else
        echo "$line" >&2
    fi
}

# --- small helpers ------------------------------------------------------------------------------

# First line of a file, NUL bytes dropped; empty when unreadable (sysfs answers EINVAL for the
# speed of a NIC without link, for instance).
readf() {
    [ -r "$1" ] || return 0
    tr -d '\000' <"$1" 2>/dev/null | head -n 1
}

# A JSON string literal from raw text: first line, control and non-ASCII bytes dropped (DMI
# strings can carry any byte; invalid UTF-8 would make the whole report unreadable), spaces
# trimmed, at most 200 bytes, backslashes and quotes escaped.
jstr() {
    printf '"%s"' "$(printf '%s' "$1" | head -n 1 | tr -d '\000-\037\177-\377' \
        | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' | cut -c1-200 \
        | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# A JSON number from text, or null when it is not a non-negative integer.
jnum() {
    case "$1" in
        '' | *[!0-9]*) printf 'null' ;;
        *) printf '%s' "$1" ;;
    esac
}

jbool() {
    case "$1" in
        1) printf 'true' ;;
        0) printf 'false' ;;
        *) printf 'null' ;;
    esac
}

lower() {
    printf '%s' "$1" | tr 'A-Z' 'a-z'
}

# A random integer in [0, $1].
rand() {
    r=$(od -An -N2 -tu2 /dev/urandom 2>/dev/null | tr -d ' ')
    [ -n "$r" ] || r=$$
    echo $((r % ($1 + 1)))
}

is_mac() {
    case "$1" in
        [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) return 0 ;;
    esac
    return 1
}

# --- the kernel command line ---------------------------------------------------------------------

URL=""
BOOT_MAC=""
for word in $(cat "$PROC/cmdline" 2>/dev/null); do
    case "$word" in
        dragonfly.url=*) URL=${word#dragonfly.url=} ;;
        dragonfly.mac=*) BOOT_MAC=$(lower "${word#dragonfly.mac=}") ;;
        BOOTIF=01-*) [ -n "$BOOT_MAC" ] || BOOT_MAC=$(lower "${word#BOOTIF=01-}" | tr '-' ':') ;;
    esac
done
URL=${DRAGONFLY_URL:-$URL}
URL=${URL%/}
is_mac "$BOOT_MAC" || BOOT_MAC=""

# --- inventory ----------------------------------------------------------------------------------

cpu_json() {
    model=$(grep -m 1 -i '^model name' "$PROC/cpuinfo" 2>/dev/null | sed 's/^[^:]*:[[:space:]]*//')
    [ -n "$model" ] || model=$(grep -m 1 -i -E '^(cpu model|processor[[:space:]]*:[[:space:]]*[^0-9]|hardware)' \
        "$PROC/cpuinfo" 2>/dev/null | sed 's/^[^:]*:[[:space:]]*//')
    threads=$(grep -c '^processor' "$PROC/cpuinfo" 2>/dev/null)
    # Sockets and physical cores from the topology: distinct packages, distinct
    # (package, core) pairs. Absent topology (some VMs) leaves them null.
    pairs=""
    for topo in "$SYS"/devices/system/cpu/cpu[0-9]*/topology; do
        [ -r "$topo/physical_package_id" ] || continue
        pairs="$pairs$(readf "$topo/physical_package_id") $(readf "$topo/core_id")
"
    done
    sockets="" cores=""
    if [ -n "$pairs" ]; then
        sockets=$(printf '%s' "$pairs" | cut -d ' ' -f 1 | sort -u | grep -c .)
        cores=$(printf '%s' "$pairs" | sort -u | grep -c .)
    fi
    arch=$(uname -m 2>/dev/null)
    mhz=$(grep -m 1 -i '^cpu MHz' "$PROC/cpuinfo" 2>/dev/null | sed 's/^[^:]*:[[:space:]]*//; s/\..*//')
    printf '{"model":%s,"arch":%s,"sockets":%s,"cores":%s,"threads":%s,"mhz":%s}' \
        "$(jstr "$model")" "$(jstr "$arch")" "$(jnum "$sockets")" "$(jnum "$cores")" \
        "$(jnum "$threads")" "$(jnum "$mhz")"
}

memory_bytes() {
    kb=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' "$PROC/meminfo" 2>/dev/null)
    case "$kb" in
        '' | *[!0-9]*) printf 'null' ;;
        *) printf '%s' $((kb * 1024)) ;;
    esac
}

disk_serial() {
    d=$1
    s=$(readf "$d/device/serial")
    [ -n "$s" ] || s=$(readf "$d/serial")
    if [ -z "$s" ] && [ -r "$d/device/vpd_pg80" ]; then
        # SCSI VPD page 0x80: a 4-byte header, then the unit serial number.
        s=$(dd if="$d/device/vpd_pg80" bs=1 skip=4 2>/dev/null | tr -d '\000')
    fi
    printf '%s' "$s"
}

disks_json() {
    sep=""
    printf '['
    for d in "$SYS"/block/*; do
        [ -e "$d" ] || continue
        name=${d##*/}
        case "$name" in
            loop* | ram* | sr* | zram* | fd* | nbd* | dm-* | md*) continue ;;
        esac
        sectors=$(readf "$d/size")
        case "$sectors" in '' | *[!0-9]*) continue ;; esac
        model=$(readf "$d/device/model")
        [ -n "$model" ] || model=$(readf "$d/device/name")
        vendor=$(readf "$d/device/vendor")
        case "$vendor" in 0x*) vendor="" ;; esac   # a PCI id (virtio), not a name
        printf '%s{"name":%s,"size_bytes":%s,"model":%s,"vendor":%s,"serial":%s,"wwn":%s,"rotational":%s,"removable":%s}' \
            "$sep" "$(jstr "$name")" $((sectors * 512)) "$(jstr "$model")" \
            "$(jstr "$vendor")" "$(jstr "$(disk_serial "$d")")" \
            "$(jstr "$(readf "$d/device/wwid")")" "$(jbool "$(readf "$d/queue/rotational")")" \
            "$(jbool "$(readf "$d/removable")")"
        sep=","
    done
    printf ']'
}

nic_ip() {
    [ -z "$ROOT" ] || return 0
    ip -4 -o addr show dev "$1" 2>/dev/null | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | head -n 1
}

nics_json() {
    sep=""
    printf '['
    for n in "$SYS"/class/net/*; do
        [ -e "$n" ] || continue
        name=${n##*/}
        [ "$name" = lo ] && continue
        [ "$(readf "$n/type")" = 1 ] || continue   # Ethernet only (no InfiniBand, tunnels)
        [ -e "$n/device" ] || continue            # physical devices only (no bridges, veths)
        mac=$(lower "$(readf "$n/address")")
        is_mac "$mac" || continue
        driver=""
        if [ -L "$n/device/driver" ]; then
            driver=$(readlink "$n/device/driver")
            driver=${driver##*/}
        fi
        speed=$(readf "$n/speed")
        printf '%s{"name":%s,"mac":"%s","speed_mbps":%s,"link":%s,"driver":%s,"ip":%s}' \
            "$sep" "$(jstr "$name")" "$mac" "$(jnum "$speed")" \
            "$(jbool "$(readf "$n/carrier")")" "$(jstr "$driver")" "$(jstr "$(nic_ip "$name")")"
        sep=","
    done
    printf ']'
}

dmi() {
    readf "$SYS/class/dmi/id/$1"
}

# The IPMI drivers, when the firmware announces a BMC but they are not loaded (an initrd without
# Dragonfly's module list): ipmitool talks to the BMC through /dev/ipmi0. Order matters.
bmc_modules() {
    [ -z "$ROOT" ] || return 0
    [ -e /dev/ipmi0 ] && return 0
    for m in ipmi_msghandler ipmi_devintf ipmi_si; do
        grep -q "^$m " /proc/modules 2>/dev/null && continue
        p=$(find /lib/modules -name "$m.ko*" 2>/dev/null | head -n 1)
        if [ -z "$p" ] || ! insmod "$p" 2>/dev/null; then
            modprobe "$m" 2>/dev/null
        fi
    done
    # ipmi_si probes the interface in the background: give /dev/ipmi0 a moment to appear.
    i=0
    while [ ! -e /dev/ipmi0 ] && [ "$i" -lt 5 ]; do
        sleep 1
        i=$((i + 1))
    done
}

# ipmitool, never for longer than IPMI_TIMEOUT seconds (a wedged BMC must not stall discovery).
ipmi() {
    if command -v timeout >/dev/null 2>&1; then
        timeout "$IPMI_TIMEOUT" "$IPMITOOL" "$@"
    else
        "$IPMITOOL" "$@"
    fi
}

# One field of `ipmitool lan print` output (on stdin): lan_field 'IP Address'.
lan_field() {
    sed -n "s/^$1[[:space:]]*:[[:space:]]*//p" | head -n 1 | sed 's/[[:space:]]*$//'
}

# Sets LAN_IP, LAN_MAC and LAN_SOURCE (static, dhcp, bios, other or empty) from the output of
# `ipmitool lan print` in $1; unset and all-zero addresses become empty.
parse_lan_print() {
    LAN_IP=$(printf '%s\n' "$1" | lan_field 'IP Address')
    printf '%s' "$LAN_IP" | grep -q -E '^[0-9]{1,3}(\.[0-9]{1,3}){3}$' || LAN_IP=""
    [ "$LAN_IP" = 0.0.0.0 ] && LAN_IP=""
    LAN_MAC=$(lower "$(printf '%s\n' "$1" | lan_field 'MAC Address')")
    is_mac "$LAN_MAC" || LAN_MAC=""
    [ "$LAN_MAC" = 00:00:00:00:00:00 ] && LAN_MAC=""
    case "$(lower "$(printf '%s\n' "$1" | lan_field 'IP Address Source')")" in
        static*) LAN_SOURCE=static ;;
        dhcp*) LAN_SOURCE=dhcp ;;
        bios*) LAN_SOURCE=bios ;;
        '') LAN_SOURCE="" ;;
        *) LAN_SOURCE=other ;;
    esac
}

# The BMC's LAN settings: `ipmitool lan print` picks the first LAN channel itself; if that
# shows no address, channels 1 to 3 are asked in turn. Stops at the first timeout.
bmc_lan() {
    BMC_IP="" BMC_MAC="" BMC_SOURCE=""
    for ch in "" 1 2 3; do
        # shellcheck disable=SC2086
        out=$(ipmi lan print $ch 2>/dev/null)
        rc=$?
        parse_lan_print "$out"
        [ -n "$BMC_MAC" ] || BMC_MAC=$LAN_MAC
        [ -n "$BMC_SOURCE" ] || BMC_SOURCE=$LAN_SOURCE
        if [ -n "$LAN_IP" ]; then
            BMC_IP=$LAN_IP BMC_MAC=$LAN_MAC BMC_SOURCE=$LAN_SOURCE
            return 0
        fi
        if [ "$rc" -ge 124 ]; then
            log "ipmitool lan print $ch did not answer within ${IPMI_TIMEOUT}s"
            return 1
        fi
    done
    return 1
}

bmc_json() {
    present=false
    iface=""
    BMC_IP="" BMC_MAC="" BMC_SOURCE=""
    # SMBIOS type 38 (IPMI device information) announces a BMC even without the driver.
    for e in "$SYS"/firmware/dmi/entries/38-* "$SYS"/class/ipmi/ipmi*; do
        [ -e "$e" ] && present=true
    done
    if [ "$present" = true ] && { [ -z "$ROOT" ] || [ -n "${DRAGONFLY_IPMITOOL:-}" ]; } \
        && command -v "$IPMITOOL" >/dev/null 2>&1; then
        bmc_modules
        bmc_lan
    fi
    for i in "$SYS"/class/ipmi/ipmi*; do
        [ -e "$i" ] || continue
        iface=${i##*/}
        break
    done
    printf '{"present":%s,"interface":%s,"ip":%s,"mac":%s,"ip_source":%s}' "$present" \
        "$(jstr "$iface")" "$(jstr "$BMC_IP")" "$(jstr "$BMC_MAC")" "$(jstr "$BMC_SOURCE")"
}

virtualization() {
    v=""
    if [ -z "$ROOT" ]; then
        v=$(dmesg 2>/dev/null | sed -n 's/.*Hypervisor detected:[[:space:]]*//p' | head -n 1)
    fi
    [ -z "$v" ] && [ -r "$SYS/hypervisor/type" ] && v=$(readf "$SYS/hypervisor/type")
    if [ -z "$v" ]; then
        case "$(lower "$(dmi sys_vendor) $(dmi product_name)")" in
            *qemu* | *bochs*) v=qemu ;;
            *vmware*) v=vmware ;;
            *microsoft*virtual*) v=hyperv ;;
            *xen*) v=xen ;;
            *innotek* | *virtualbox*) v=virtualbox ;;
            *parallels*) v=parallels ;;
            *amazon\ ec2*) v=amazon ;;
            *google*compute*) v=google ;;
        esac
    fi
    if [ -z "$v" ]; then
        if grep -q -w hypervisor "$PROC/cpuinfo" 2>/dev/null; then v=unknown; else v=none; fi
    fi
    lower "$v"
}

boot_ip() {
    if [ -r /run/dragonfly-net ] && [ -z "$ROOT" ]; then
        cut -d ' ' -f 2 /run/dragonfly-net
    fi
}

inventory() {
    printf '{"agent_version":%s,"boot_mac":%s,"ip":%s,"cpu":%s,"memory_bytes":%s,"disks":%s,"nics":%s,' \
        "$(jstr "$AGENT_VERSION")" "$(jstr "$BOOT_MAC")" "$(jstr "$(boot_ip)")" "$(cpu_json)" \
        "$(memory_bytes)" "$(disks_json)" "$(nics_json)"
    printf '"dmi":{"vendor":%s,"product":%s,"serial":%s,"uuid":%s},"bmc":%s,"virtualization":%s}\n' \
        "$(jstr "$(dmi sys_vendor)")" "$(jstr "$(dmi product_name)")" \
        "$(jstr "$(dmi product_serial)")" "$(jstr "$(lower "$(dmi product_uuid)")")" \
        "$(bmc_json)" "$(jstr "$(virtualization)")"
}

# --- talking to the server ----------------------------------------------------------------------

# post PATH BODYFILE: the answer lands in $ANSWER. Returns 0 on success, 2 when the server
# answered 404 (it does not know us: check in again), 1 on any other failure.
post() {
    rm -f "$ANSWER.new"
    # timeout(1) rather than wget -T, which crashes Debian's busybox-static 1.35 wget.
    err=$(timeout "$HTTP_TIMEOUT" wget -q -S -O "$ANSWER.new" \
        --header 'Content-Type: application/json' --post-file "$2" "$URL$1" 2>&1)
    rc=$?
    if [ "$rc" = 0 ] && [ -s "$ANSWER.new" ]; then
        mv "$ANSWER.new" "$ANSWER"
        return 0
    fi
    case "$err" in
        *"HTTP/1."?" 404"*) return 2 ;;
    esac
    log "POST $URL$1 failed: $(printf '%s' "$err" | grep -v '^  ' | tail -n 2 | tr '\n' ' ')"
    return 1
}

# The value of a top-level key in the server's (flat, compact) JSON answer.
answer_get() {
    sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\{0,1\}\([A-Za-z0-9_.:-]*\).*/\1/p' "$ANSWER" | head -n 1
}

FAILURES=0

# Exponential backoff with jitter after a failure: 2, 4, 8 ... capped at BACKOFF_MAX seconds,
# each wait between half and all of it so that a rack of machines does not retry in step.
backoff() {
    FAILURES=$((FAILURES + 1))
    base=2
    i=1
    while [ "$i" -lt "$FAILURES" ] && [ "$base" -lt "$BACKOFF_MAX" ]; do
        base=$((base * 2))
        i=$((i + 1))
    done
    [ "$base" -gt "$BACKOFF_MAX" ] && base=$BACKOFF_MAX
    delay=$((base / 2 + $(rand $((base / 2)))))
    log "retrying in ${delay}s"
    sleep "$delay"
}

# Wait as the server asked, within [POLL_MIN, POLL_MAX], give or take 10%.
poll_wait() {
    p=$1
    case "$p" in '' | *[!0-9]*) p=30 ;; esac
    [ "$p" -lt "$POLL_MIN" ] && p=$POLL_MIN
    [ "$p" -gt "$POLL_MAX" ] && p=$POLL_MAX
    spread=$((p / 10))
    sleep $((p - spread + $(rand $((spread * 2)))))
}

checkin() {
    while :; do
        if post /api/agent/checkin "$REPORT"; then
            FAILURES=0
            MACHINE_ID=$(answer_get machine_id)
            log "checked in as $(answer_get name) (id $MACHINE_ID, state $(answer_get state))"
            return 0
        fi
        backoff
    done
}

heartbeat() {
    now=$(date +%s 2>/dev/null || echo 0)
    printf '{"machine_id":%s,"mac":%s,"uptime_seconds":%s,"status":"waiting"}\n' \
        "$(jstr "$MACHINE_ID")" "$(jstr "$BOOT_MAC")" "$(jnum $((now - STARTED)))" >"$BEAT"
    post /api/agent/heartbeat "$BEAT"
}

follow() {
    while :; do
        action=$(answer_get action)
        case "$action" in
            wait)
                poll_wait "$(answer_get poll_seconds)"
                heartbeat
                case $? in
                    0) FAILURES=0 ;;
                    2) log "the server no longer knows this machine; checking in again"
                       checkin ;;
                    *) backoff
                       printf '{"action":"wait","poll_seconds":%s}\n' "$POLL_MIN" >"$ANSWER" ;;
                esac
                ;;
            reboot | localboot)
                log "server says $action: rebooting"
                sync
                eval "$ACT_REBOOT"
                return 1
                ;;
            poweroff)
                log "server says poweroff: powering off"
                sync
                eval "$ACT_POWEROFF"
                return 1
                ;;
            *)
                log "unexpected answer from the server: $(head -c 200 "$ANSWER" 2>/dev/null)"
                backoff
                checkin
                ;;
        esac
    done
}

run() {
    if [ -z "$URL" ]; then
        log "no server URL: boot with dragonfly.url=http://SERVER:PORT on the kernel command line"
        return 1
    fi
    mkdir -p "$WORK"
    if [ -z "$BOOT_MAC" ] && [ -r /run/dragonfly-net ] && [ -z "$ROOT" ]; then
        iface=$(cut -d ' ' -f 1 /run/dragonfly-net)
        BOOT_MAC=$(lower "$(readf "$SYS/class/net/$iface/address")")
    fi
    inventory >"$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"
    log "inventory of $(wc -c <"$REPORT") bytes collected; checking in at $URL"
    checkin
    follow
}

case "${1:-run}" in
    inventory) inventory ;;
    run) run ;;
    *) echo "usage: $0 [run|inventory]" >&2; exit 2 ;;
esac
