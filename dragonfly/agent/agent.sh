#!/bin/sh
# Dragonfly discovery agent. POSIX shell for busybox ash inside the discovery initramfs: no
# Python, no jq. Dragonfly's own image carries ipmitool (for the BMC's address); other
# initrds may not, and then only the BMC's presence is reported.
#
#   agent.sh inventory   print the hardware report (JSON) on stdout
#   agent.sh run         check in, then follow the server's answers until told to reboot,
#                        power off or boot the local disk (the default); an answer `deploy`
#                        runs a deployment (docs/deployment-protocol.md): select the disk,
#                        wipe it, stream the image onto it, verify, fix the GPT, write the
#                        cloud-init seed, add a UEFI boot entry, reboot
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
STALL_SECONDS=120   # a download that brings no byte for this long is given up
STREAM_ATTEMPTS=3   # a download that broke off is tried this many times in all
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
# Where the image's coreutils copies of tee, wc, dd... are (busybox's applets are symlinks).
FAST_DIRS=${DRAGONFLY_FAST_DIRS:-/usr/bin /bin}
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
            deploy)
                deploy "$(jget workflow_id "$ANSWER")" || return 1
                # Done, failed or aborted: back to waiting (the heartbeat brings what's next).
                printf '{"action":"wait","poll_seconds":%s}\n' "$POLL_MIN" >"$ANSWER"
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

# --- deployments (docs/deployment-protocol.md) ----------------------------------------------------

# The value of KEY in the flat JSON object in FILE: strings unescaped (\uXXXX becomes ?),
# numbers and booleans as written; null and absent keys are empty.
jget() {
    awk -v key="$1" '
        { s = s $0 "\n" }
        END {
            n = length(s); i = 1; want = 0; k = ""
            while (i <= n) {
                c = substr(s, i, 1)
                if (c == "\"") {
                    v = ""; i++
                    while (i <= n) {
                        c = substr(s, i, 1)
                        if (c == "\\") {
                            i++; e = substr(s, i, 1)
                            if (e == "n") v = v "\n"
                            else if (e == "t") v = v "\t"
                            else if (e == "u") { v = v "?"; i += 4 }
                            else if (e != "r" && e != "b" && e != "f") v = v e
                        } else if (c == "\"") break
                        else v = v c
                        i++
                    }
                    i++
                } else if (c ~ /[-0-9A-Za-z.+]/) {
                    v = ""
                    while (i <= n && substr(s, i, 1) ~ /[-0-9A-Za-z.+]/) { v = v substr(s, i, 1); i++ }
                    if (v == "null") v = ""
                } else {
                    if (c == ":") want = 1
                    else if (c == "," || c == "{") want = 0
                    i++
                    continue
                }
                if (!want) k = v
                else if (k == key) { printf "%s", v; exit }
            }
        }' "$2" 2>/dev/null
}

# A JSON string literal of many lines (a log): the last 12 KiB of file $1, control and non-ASCII
# bytes dropped, tabs as spaces, newlines as \n.
jtext() {
    tail -c 12288 "$1" 2>/dev/null | tr '\t' ' ' | tr -d '\000-\011\013-\037\177-\377' \
        | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' \
        | awk 'BEGIN { printf "\"" } NR > 1 { printf "\\n" } { printf "%s", $0 } END { printf "\"" }'
}

trim() {
    printf '%s' "$1" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'
}

num() {
    case "$1" in '' | *[!0-9]*) echo 0 ;; *) echo "$1" ;; esac
}

# Bytes for people: "8 GiB", "7.5 GiB", "300 MiB".
human() {
    if [ "$1" -ge 1073741824 ]; then
        t=$(($1 * 10 / 1073741824))
        if [ $((t % 10)) = 0 ]; then echo "$((t / 10)) GiB"; else echo "$((t / 10)).$((t % 10)) GiB"; fi
    else
        echo "$(($1 / 1048576)) MiB"
    fi
}

# "disk X (8 GiB) is smaller than the image (10 GiB)", exact when rounding hides the difference.
too_small() {
    a=$(human "$2") b=$(human "$3")
    [ "$a" = "$b" ] && a="$2 bytes" b="$3 bytes"
    echo "disk $1 ($a) is smaller than the image ($b)"
}

# Hundredths of a second since boot.
uptime_cs() {
    read -r up _ </proc/uptime
    c=${up#*.}
    echo $((${up%.*} * 100 + ${c#0}))
}

# GET (no body) or POST a URL: fetch URL OUT [BODYFILE]. 0 with the answer in OUT; otherwise
# the status and FETCH_ERR, a sentence ("HTTP 404", "can't connect to remote host ...").
fetch() {
    rm -f "$2.new"
    if [ -n "${3:-}" ]; then
        err=$(timeout "$HTTP_TIMEOUT" wget -q -S -O "$2.new" \
            --header 'Content-Type: application/json' --post-file "$3" "$1" 2>&1)
        rc=$?
    else
        err=$(timeout "$HTTP_TIMEOUT" wget -q -S -O "$2.new" "$1" 2>&1)
        rc=$?
    fi
    if [ "$rc" = 0 ] && [ -e "$2.new" ]; then
        mv "$2.new" "$2"
        FETCH_ERR=""
        return 0
    fi
    rm -f "$2.new"
    FETCH_ERR=$(http_error "$err")
    [ -n "$FETCH_ERR" ] || FETCH_ERR="no answer within ${HTTP_TIMEOUT}s"
    case "$FETCH_ERR" in "HTTP 404") return 2 ;; esac
    return 1
}

# A sentence from busybox wget's stderr: "HTTP 404" for an error status, else its last
# message ("can't connect to remote host (10.0.0.1): Connection refused").
http_error() {
    code=$(printf '%s\n' "$1" | sed -n 's/.*server returned error: HTTP\/[0-9.]* \([0-9][0-9]*\).*/\1/p' \
        | head -n 1)
    if [ -n "$code" ]; then
        echo "HTTP $code"
    else
        printf '%s\n' "$1" | grep -v '^  ' | grep . | tail -n 1 | sed 's/^wget: //'
    fi
}

# An action's log: the console, and $ALOG, whose last lines go with the report.
alog() {
    log "$*"
    echo "$*" >>"$ALOG"
}

# Run a command, its output into the action's log.
logged() {
    echo "+ $*" >>"$ALOG"
    "$@" >>"$ALOG" 2>&1
}

param() {
    jget "$1" "$STEP"
}

# report STATE MESSAGE [FIELDS]: the current action's report (FIELDS: more JSON members,
# '"disk":"/dev/sda"'); final reports carry the action's log. Returns 0 when the server took
# it, 3 when it answered abort (or no longer knows the deployment), 1 when it was not delivered.
report() {
    body=${RPREFIX:-$WORK/report}.json
    {
        printf '{"state":%s,"message":%s' "$(jstr "$1")" "$(jstr "$2")"
        [ -n "${3:-}" ] && printf ',%s' "$3"
        [ "$1" != running ] && [ -s "$ALOG" ] && printf ',"log":%s' "$(jtext "$ALOG")"
        printf '}\n'
    } >"$body"
    fetch "$URL/api/agent/workflows/$WF/actions/$WF_INDEX" "$body.answer" "$body"
    case $? in
        0) ;;
        2) log "the server no longer knows deployment $WF"; return 3 ;;
        *) log "report $1 of action $WF_INDEX not delivered: $FETCH_ERR"; return 1 ;;
    esac
    if [ "$(jget abort "$body.answer")" = true ]; then
        log "the server aborted deployment $WF: $(jget reason "$body.answer")"
        return 3
    fi
    return 0
}

# A final report is retried until the server takes it (a lost `succeeded` would stall the
# deployment). Returns 0, or 3 on abort.
report_final() {
    FAILURES=0
    while :; do
        report "$@"
        case $? in
            0) FAILURES=0; return 0 ;;
            3) return 3 ;;
        esac
        backoff
    done
}

# --- disks ---

# Bytes of the block device NAME (sysfs counts 512-byte sectors whatever the sector size).
disk_bytes() {
    s=$(readf "$SYS/block/$1/size")
    case "$s" in '' | *[!0-9]*) echo 0 ;; *) echo $((s * 512)) ;; esac
}

norm_wwn() {
    lower "$(trim "$1")" | sed -e 's/^wwn-//' -e 's/^naa\.//' -e 's/^eui\.//' -e 's/^0x//'
}

# The whole disk named by a spec (/dev/sda, /dev/disk/by-id/..., sda, serial:X, wwn:0x...):
# sets DNAME, or leaves it empty.
find_disk() {
    DNAME=""
    case "$1" in
        serial:*)
            for d in "$SYS"/block/*; do
                if [ "$(trim "$(disk_serial "$d")")" = "${1#serial:}" ]; then
                    DNAME=${d##*/}
                    return 0
                fi
            done ;;
        wwn:*)
            want=$(norm_wwn "${1#wwn:}")
            for d in "$SYS"/block/*; do
                w=$(readf "$d/device/wwid")
                [ -n "$w" ] || w=$(readf "$d/wwid")
                [ -n "$w" ] || w=$(readf "$d/device/wwn")
                if [ -n "$w" ] && [ "$(norm_wwn "$w")" = "$want" ]; then
                    DNAME=${d##*/}
                    return 0
                fi
            done ;;
        *)
            p=$1
            [ -L "$p" ] && p=$(readlink -f "$p")
            p=${p#/dev/}
            [ -n "$p" ] && [ -e "$SYS/block/$p/size" ] && DNAME=$p ;;
    esac
    [ -n "$DNAME" ]
}

# The kernel's partitions of disk NAME: "number name sectors" lines.
partitions() {
    for p in "$SYS/block/$1/$1"*; do
        [ -r "$p/partition" ] || continue
        echo "$(readf "$p/partition") ${p##*/} $(readf "$p/size")"
    done
}

# The device node of a block device NAME: /dev/NAME, or one made in the work directory from
# sysfs's major:minor when /dev lacks it.
node() {
    if [ -b "/dev/$1" ]; then
        echo "/dev/$1"
        return 0
    fi
    mkdir -p "$WORK/dev"
    if [ ! -b "$WORK/dev/$1" ]; then
        for f in "$SYS/block/$1/dev" "$SYS/block/$DNAME/$1/dev"; do
            [ -r "$f" ] || continue
            mknod "$WORK/dev/$1" b $(readf "$f" | tr ':' ' ') 2>/dev/null
            break
        done
    fi
    echo "$WORK/dev/$1"
}

# The action's `disk` parameter: sets DISK (its node) and DNAME, or MSG.
disk_arg() {
    DISK=$(param disk)
    if [ -z "$DISK" ]; then
        MSG="no disk given (select-disk must come first)"
        return 1
    fi
    if ! find_disk "$DISK"; then
        MSG="disk $DISK not found"
        return 1
    fi
    DISK=$(node "$DNAME")
    if [ ! -b "$DISK" ]; then
        MSG="$DISK is not a block device"
        return 1
    fi
}

# Make the kernel see the disk's partition table as it is now: BLKRRPART, then util-linux
# partx for kernels that cannot read the table themselves or when the disk is busy.
reread() {
    sync
    blockdev --rereadpt "$1" >/dev/null 2>&1
    if command -v partx >/dev/null 2>&1; then
        partx -u "$1" >/dev/null 2>&1 || partx -d "$1" >/dev/null 2>&1
    fi
    return 0
}

# Zero the first and last MiB of a device of $2 sectors (all of it when smaller than 2 MiB).
zero_ends() {
    if [ "$2" -le 4096 ]; then
        dd if=/dev/zero of="$1" bs=512 count="$2" conv=notrunc,fsync 2>"$WORK/dd.err"
    else
        dd if=/dev/zero of="$1" bs=512 count=2048 conv=notrunc,fsync 2>"$WORK/dd.err" \
            && dd if=/dev/zero of="$1" bs=512 seek=$(($2 - 2048)) count=2048 \
                conv=notrunc,fsync 2>"$WORK/dd.err"
    fi
    rc=$?
    [ "$rc" = 0 ] || grep -v -e records -e 'bytes (' "$WORK/dd.err" >>"$ALOG"
    return "$rc"
}

# Partition facts from blkid (util-linux, -p: probe the device itself), one line per partition:
# "number|name|sectors|GPT name|type GUID (or MBR type)|filesystem label|filesystem type|node".
part_table() {
    partitions "$DNAME" | while read -r pnum pname psect; do
        dev=$(node "$pname")
        out=$(blkid -p -o export "$dev" 2>/dev/null)
        v() {
            printf '%s\n' "$out" | sed -n "s/^$1=//p" | head -n 1 | sed 's/\\\(.\)/\1/g' | tr '|' '_'
        }
        echo "$pnum|$pname|$psect|$(v PART_ENTRY_NAME)|$(lower "$(v PART_ENTRY_TYPE)")|$(v LABEL)|$(v TYPE)|$dev"
    done
}

# The root filesystem by the protocol's rules: GPT partition label, else partition type GUID,
# else filesystem label, else the largest filesystem of root_fstype. Sets ROOT_NUM, ROOT_DEV,
# ROOT_FS, or MSG.
find_root() {
    label=$(param root_label)
    ptype=$(lower "$(param root_parttype)")
    fstype=$(param root_fstype)
    if ! command -v blkid >/dev/null 2>&1; then
        MSG="blkid is not in this discovery image: cannot find the root filesystem"
        return 1
    fi
    part_table >"$WORK/parts"
    if [ ! -s "$WORK/parts" ]; then
        MSG="no partitions on $DISK"
        return 1
    fi
    cat "$WORK/parts" >>"$ALOG"
    line=""
    [ -n "$label" ] && line=$(awk -F'|' -v x="$label" '$4 == x' "$WORK/parts" | head -n 1)
    [ -z "$line" ] && [ -n "$ptype" ] && line=$(awk -F'|' -v x="$ptype" '$5 == x' "$WORK/parts" | head -n 1)
    [ -z "$line" ] && [ -n "$label" ] && line=$(awk -F'|' -v x="$label" '$6 == x' "$WORK/parts" | head -n 1)
    [ -z "$line" ] && [ -n "$fstype" ] && line=$(awk -F'|' -v x="$fstype" '$7 == x' "$WORK/parts" \
        | sort -t '|' -k 3,3 -n -r | head -n 1)
    if [ -z "$line" ]; then
        MSG="no root filesystem on $DISK (partition label '$label', type '$ptype', filesystem label '$label', type '$fstype')"
        return 1
    fi
    ROOT_NUM=$(echo "$line" | cut -d '|' -f 1)
    ROOT_FS=$(echo "$line" | cut -d '|' -f 7)
    ROOT_DEV=$(echo "$line" | cut -d '|' -f 8)
    alog "root filesystem: $ROOT_DEV (partition $ROOT_NUM, ${ROOT_FS:-no filesystem})"
}

# --- the actions: each sets MSG (a sentence) and RESULT (JSON members); 0 succeeded, 1 failed,
# 3 aborted by the server ---

act_select_disk() {
    spec=$(param disk)
    min=$(num "$(param min_bytes)")
    if [ -n "$spec" ]; then
        if ! find_disk "$spec"; then
            MSG="no disk matches $spec"
            return 1
        fi
        bytes=$(disk_bytes "$DNAME")
        if [ "$bytes" -lt "$min" ]; then
            MSG=$(too_small "/dev/$DNAME" "$bytes" "$min")
            return 1
        fi
    else
        DNAME="" bytes=0 seen=""
        for d in "$SYS"/block/*; do
            [ -e "$d" ] || continue
            name=${d##*/}
            case "$name" in
                loop* | ram* | sr* | zram* | fd* | nbd* | dm-* | md* | mmcblk*boot* | *rpmb) continue ;;
            esac
            b=$(disk_bytes "$name")
            [ "$b" -gt 0 ] || continue
            if [ "$(readf "$d/removable")" = 1 ]; then
                seen="$seen, $name ($(human "$b"), removable)"
                continue
            fi
            if [ "$(readf "$d/ro")" = 1 ]; then
                seen="$seen, $name ($(human "$b"), read-only)"
                continue
            fi
            seen="$seen, $name ($(human "$b"))"
            [ "$b" -ge "$min" ] || continue
            if [ -z "$DNAME" ] || [ "$b" -lt "$bytes" ]; then
                DNAME=$name bytes=$b
            fi
        done
        if [ -z "$DNAME" ]; then
            if [ -z "$seen" ]; then
                MSG="no disk found"
            else
                MSG="no disk of at least $(human "$min") (found: ${seen#, })"
            fi
            return 1
        fi
    fi
    RESULT="\"disk\":$(jstr "/dev/$DNAME"),\"disk_bytes\":$bytes"
    serial=$(trim "$(disk_serial "$SYS/block/$DNAME")")
    MSG="selected /dev/$DNAME ($(human "$bytes")${serial:+, serial $serial})"
}

act_wipe() {
    disk_arg || return 1
    if grep -q "^/dev/${DNAME}p\{0,1\}[0-9]* " /proc/mounts 2>/dev/null; then
        MSG="$DISK is in use: one of its filesystems is mounted"
        return 1
    fi
    wipefs=""
    command -v wipefs >/dev/null 2>&1 && wipefs=wipefs
    partitions "$DNAME" >"$WORK/parts"
    n=0
    while read -r pnum pname psect; do
        dev=$(node "$pname")
        [ -n "$wipefs" ] && logged wipefs -a -f "$dev"
        if ! zero_ends "$dev" "$psect"; then
            MSG="cannot write to $dev"
            return 1
        fi
        n=$((n + 1))
    done <"$WORK/parts"
    [ -n "$wipefs" ] && logged wipefs -a -f "$DISK"
    if ! zero_ends "$DISK" "$(readf "$SYS/block/$DNAME/size")"; then
        MSG="cannot write to $DISK"
        return 1
    fi
    reread "$DISK"
    if [ "$n" = 1 ]; then MSG="wiped $DISK (1 partition)"; else MSG="wiped $DISK ($n partitions)"; fi
}

# How far process $1 has got in file $2: the offset of its descriptor open on it, else the bytes
# it read or wrote ($3: rchar or wchar in /proc/PID/io).
# coreutils' tee, wc, head and sha256sum when the image carries them: busybox's copy 1-4 KiB
# per system call, which on a slow CPU (or under emulation) makes streaming a disk image take
# many times longer than the network does.
fast() {
    for d in $FAST_DIRS; do
        if [ -x "$d/$1" ] && [ ! -L "$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    echo "$1"
}

# The number of bytes coreutils dd says it wrote (its "N bytes (...) copied" line in $1), or
# nothing: busybox's dd counts records only.
dd_bytes() {
    sed -n 's/^\([0-9][0-9]*\) bytes.* copied.*/\1/p' "$1" 2>/dev/null | tail -n 1
}

proc_pos() {
    [ -n "$1" ] || return 0
    for fd in /proc/"$1"/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = "$2" ] || continue
        sed -n 's/^pos:[[:space:]]*//p' "/proc/$1/fdinfo/${fd##*/}" 2>/dev/null
        return 0
    done
    sed -n "s/^$3: //p" "/proc/$1/io" 2>/dev/null
}

# In the background while a long action runs: a `running` report every second with how far
# the process whose pid is in $S.worker has got in $1 ($2 bytes in all; $3 = rchar or wchar).
# On abort (the server's answer) or, when $4 > 0, after $4 seconds without progress, it marks
# $S.abort or $S.stall and kills the processes listed in $S.pids.
progress_loop() {
    RPREFIX=$S.progress
    start=$(uptime_cs) moved=$start last=0
    while [ ! -e "$S.done" ]; do
        sleep 1
        [ -e "$S.done" ] && break
        d=$(proc_pos "$(cat "$S.worker" 2>/dev/null)" "$1" "$3")
        case "$d" in '' | *[!0-9]*) d=$last ;; esac
        now=$(uptime_cs)
        [ "$d" -gt "$last" ] && moved=$now
        last=$d
        el=$((now - start))
        [ "$el" -gt 0 ] || el=1
        report running "$(human "$d") of $(human "$2")" \
            "\"bytes_done\":$d,\"bytes_total\":$2,\"rate\":$((d * 100 / el))"
        if [ $? = 3 ]; then
            : >"$S.abort"
        elif [ "$4" -gt 0 ] && [ $((now - moved)) -gt $(($4 * 100)) ]; then
            : >"$S.stall"
        else
            continue
        fi
        for p in $(cat "$S.pids" 2>/dev/null); do kill "$p" 2>/dev/null; done
        break
    done
}

zstd_reads() {
    command -v zstd >/dev/null 2>&1 && zstd -H 2>&1 | grep -q -e "--format=$1"
}

# The stages of act_stream_image's pipeline ($url, $dec, $dd, $ddflags, $DISK and $S set).
stream_fetch() {
    wget -q -S -O- "$url" 2>"$S.wget.err" &
    echo "$!" >>"$S.pids"
    wait "$!"
    echo "$?" >"$S.wget.rc"
}

stream_decode() {
    $dec 2>"$S.dec.err"
    echo "$?" >"$S.dec.rc"
}

stream_write() {
    # shellcheck disable=SC2016
    sh -c 'echo "$$" >"$1"; echo "$$" >>"$2"; exec $3 of="$4" $5' \
        sh "$S.worker" "$S.pids" "$dd" "$DISK" "$ddflags" 2>"$S.dd.err"
}

act_stream_image() {
    disk_arg || return 1
    url=$(param url)
    fmt=$(param format)
    size=$(num "$(param size)")
    raw=$(num "$(param raw_size)")
    case "$fmt" in
        raw | '') dec=cat ;;
        # zstd, where it was built with zlib and liblzma (Debian's is), decodes gzip and xz
        # with those libraries: about a third faster than busybox's own decoders.
        gz) dec="gunzip -c"; zstd_reads gzip && dec="zstd -dc" ;;
        xz) dec=xzcat; zstd_reads xz && dec="zstd -dc" ;;
        zst) dec="zstd -dc"
             if ! command -v zstd >/dev/null 2>&1; then
                 MSG="cannot decompress a zst image: zstd is not in this discovery image"
                 return 1
             fi ;;
        *) MSG="unknown image format '$fmt'"; return 1 ;;
    esac
    if [ -z "$url" ]; then
        MSG="no image URL"
        return 1
    fi
    have=$(disk_bytes "$DNAME")
    if [ "$raw" -gt "$have" ]; then
        MSG=$(too_small "$DISK" "$have" "$raw")
        return 1
    fi
    S=$WORK/stream
    rm -f "$S".*
    progress_loop "$DISK" "$raw" wchar "$STALL_SECONDS" &
    mon=$!
    # wget | decompress | dd, each stage leaving its status in a file. coreutils dd says how
    # much it wrote, so the written stream is not copied once more to count it: under a slow
    # (emulated) CPU each extra pass through a pipe costs about as much as the write itself.
    # What came is counted on the way only where it differs from what was written (a
    # compressed image); with busybox's dd, which counts records only, both are.
    dd=$(fast dd) tee=$(fast tee) wc=$(fast wc)
    ddflags="bs=1M conv=notrunc,fsync"
    counted=false how="counted on the way"
    if "$dd" --version 2>/dev/null | grep -q coreutils; then
        counted=true ddflags="$ddflags iflag=fullblock" how="counted by $dd"
    fi
    alog "streaming $url ($fmt, $size bytes, $raw bytes raw) to $DISK, $how"
    waits=""
    if [ "$dec" != cat ] || [ "$counted" = false ]; then
        mkfifo "$S.in"
        $wc -c <"$S.in" >"$S.got" &
        waits=$!
    fi
    if [ "$dec" = cat ]; then
        echo 0 >"$S.dec.rc"
        if [ "$counted" = true ]; then
            stream_fetch | stream_write
        else
            stream_fetch | $tee "$S.in" | stream_write
        fi
        wrc=$?
    elif [ "$counted" = true ]; then
        stream_fetch | $tee "$S.in" | stream_decode | stream_write
        wrc=$?
    else
        mkfifo "$S.out"
        $wc -c <"$S.out" >"$S.written" &
        waits="$waits $!"
        stream_fetch | $tee "$S.in" | stream_decode | $tee "$S.out" | stream_write
        wrc=$?
    fi
    # shellcheck disable=SC2086
    [ -z "$waits" ] || wait $waits
    if [ "$counted" = true ]; then
        dd_bytes "$S.dd.err" >"$S.written"
    elif [ "$dec" = cat ]; then
        cp "$S.got" "$S.written"
    fi
    [ -e "$S.got" ] || cp "$S.written" "$S.got"
    : >"$S.done"
    wait "$mon"
    [ -e "$S.abort" ] && return 3
    got=$(tr -d ' ' <"$S.got")
    written=$(num "$(tr -d ' ' <"$S.written")")
    werr=$(http_error "$(cat "$S.wget.err" 2>/dev/null)")
    grep -v '^  ' "$S.wget.err" 2>/dev/null | grep . >>"$ALOG"
    cat "$S.dec.err" >>"$ALOG" 2>/dev/null
    grep -v -e records -e 'bytes (' -e ' copied, ' "$S.dd.err" >>"$ALOG" 2>/dev/null
    RESULT="\"bytes_done\":$written"
    if [ -e "$S.stall" ]; then
        MSG="the download stalled: no data for ${STALL_SECONDS}s after ${got:-0} of $size bytes"
    elif [ "${werr#HTTP }" != "$werr" ]; then
        MSG="$werr fetching the image"
    elif [ "$wrc" != 0 ]; then
        MSG="writing to $DISK failed: $(grep -v -e records -e 'bytes (' -e ' copied, ' "$S.dd.err" | tail -n 1)"
    elif [ "$size" -gt 0 ] && [ -n "$got" ] && [ "$got" -lt "$size" ]; then
        MSG="short download: $got of $size bytes"
    elif [ "$(cat "$S.dec.rc" 2>/dev/null)" != 0 ]; then
        MSG="the image does not decompress ($fmt): $(tail -n 1 "$S.dec.err" 2>/dev/null)"
    elif [ "$(cat "$S.wget.rc" 2>/dev/null)" != 0 ]; then
        MSG="cannot fetch the image: ${werr:-wget failed}"
    elif [ "$size" -gt 0 ] && [ -n "$got" ] && [ "$got" -gt "$size" ]; then
        MSG="the server sent $got bytes, not the announced $size"
    elif [ "$written" -lt "$raw" ]; then
        MSG="short write: $written of $raw bytes"
    elif [ "$written" -gt "$raw" ]; then
        MSG="the image is $written bytes, not the announced $raw"
    else
        MSG="wrote $(human "$written") to $DISK"
        return 0
    fi
    return 1
}

act_verify() {
    disk_arg || return 1
    raw=$(num "$(param raw_size)")
    want=$(lower "$(param sha256)")
    blockdev --flushbufs "$DISK" >/dev/null 2>&1   # read the disk, not the page cache
    S=$WORK/verify
    rm -f "$S".*
    progress_loop "$DISK" "$raw" rchar 0 &
    mon=$!
    got=$({ sh -c 'echo "$$" >"$1"; exec $4 -c "$2" "$3"' sh "$S.worker" "$raw" "$DISK" \
            "$(fast head)" 2>"$S.err" || : >"$S.failed"; } | $(fast sha256sum) | cut -d ' ' -f 1)
    : >"$S.done"
    wait "$mon"
    [ -e "$S.abort" ] && return 3
    if [ -e "$S.failed" ]; then
        MSG="cannot read $DISK back: $(tail -n 1 "$S.err")"
        return 1
    fi
    RESULT="\"sha256\":$(jstr "$got")"
    if [ -z "$want" ]; then
        MSG="sha256 of what was written: $got (nothing to compare with)"
    elif [ "$got" != "$want" ]; then
        alog "expected sha256 $want, read back $got"
        MSG="checksum mismatch after write"
        return 1
    else
        MSG="sha256 $got matches"
    fi
}

# One field of `sgdisk -i N` output: gpt_field 'Partition unique GUID'.
gpt_field() {
    sed -n "s/^$1: *//p" "$WORK/gpt.info" | head -n 1
}

# Little-endian 32-bit value of 4 bytes at offset $2 of $1.
le32() {
    dd if="$1" bs=1 skip="$2" count=4 2>/dev/null | od -An -tu4 | tr -d ' \n'
}

act_fix_gpt() {
    disk_arg || return 1
    reread "$DISK"
    ss=$(num "$(readf "$SYS/block/$DNAME/queue/logical_block_size")")
    [ "$ss" -gt 0 ] || ss=512
    sig=$(dd if="$DISK" bs="$ss" skip=1 count=1 2>/dev/null | head -c 8)
    boot=$(dd if="$DISK" bs=1 skip=510 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
    if [ "$sig" = "EFI PART" ]; then
        fix_gpt
    elif [ "$boot" = 55aa ]; then
        grow_mbr
    else
        MSG="no partition table on $DISK"
        return 1
    fi
}

fix_gpt() {
    if ! command -v sgdisk >/dev/null 2>&1; then
        MSG="sgdisk is not in this discovery image: cannot fix the GPT"
        return 1
    fi
    if ! logged sgdisk -e "$DISK"; then
        MSG="sgdisk could not move the backup GPT header to the end of $DISK"
        return 1
    fi
    reread "$DISK"
    find_root || return 1
    sgdisk -i "$ROOT_NUM" "$DISK" >"$WORK/gpt.info" 2>&1
    cat "$WORK/gpt.info" >>"$ALOG"
    type=$(gpt_field 'Partition GUID code' | cut -d ' ' -f 1)
    guid=$(gpt_field 'Partition unique GUID')
    first=$(num "$(gpt_field 'First sector' | cut -d ' ' -f 1)")
    last=$(num "$(gpt_field 'Last sector' | cut -d ' ' -f 1)")
    attrs=$(gpt_field 'Attribute flags')
    label=$(gpt_field 'Partition name' | sed "s/^'//; s/'\$//")
    sgdisk -p "$DISK" >"$WORK/gpt.table" 2>&1
    end=$(num "$(sed -n 's/.*last usable sector is \([0-9]*\).*/\1/p' "$WORK/gpt.table")")
    # Up to the next partition, if one follows the root partition.
    for s in $(awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ { print $2 }' "$WORK/gpt.table"); do
        [ "$s" -gt "$first" ] && [ $((s - 1)) -lt "$end" ] && end=$((s - 1))
    done
    RESULT="\"root_partition\":$(jstr "$ROOT_DEV")"
    if [ -z "$guid" ] || [ "$first" = 0 ] || [ "$end" = 0 ]; then
        MSG="cannot read partition $ROOT_NUM of $DISK with sgdisk"
        return 1
    fi
    if [ "$end" -le "$last" ]; then
        MSG="backup GPT header moved to the end of $DISK; $ROOT_DEV already fills the disk"
        return 0
    fi
    set -- -a 1 -d "$ROOT_NUM" -n "$ROOT_NUM:$first:$end" -t "$ROOT_NUM:$type" \
        -u "$ROOT_NUM:$guid" -c "$ROOT_NUM:$label"
    case "$attrs" in '' | *[!0]*) [ -n "$attrs" ] && set -- "$@" -A "$ROOT_NUM:=:$attrs" ;; esac
    if ! logged sgdisk "$@" "$DISK"; then
        MSG="sgdisk could not grow partition $ROOT_NUM of $DISK"
        return 1
    fi
    sgdisk -i "$ROOT_NUM" "$DISK" >"$WORK/gpt.info" 2>&1
    if [ "$(gpt_field 'Partition unique GUID')" != "$guid" ] \
        || [ "$(gpt_field 'First sector' | cut -d ' ' -f 1)" != "$first" ] \
        || [ "$(gpt_field 'Last sector' | cut -d ' ' -f 1)" != "$end" ]; then
        cat "$WORK/gpt.info" >>"$ALOG"
        MSG="partition $ROOT_NUM of $DISK is not as expected after growing it"
        return 1
    fi
    reread "$DISK"
    MSG="backup GPT header moved to the end of $DISK; $ROOT_DEV grown from $(human $(((last - first + 1) * ss))) to $(human $(((end - first + 1) * ss)))"
}

# MBR: the root partition's entry gets the sectors up to the next partition or the disk's end
# (primary partitions only; a logical one is left as it is).
grow_mbr() {
    find_root || return 1
    RESULT="\"root_partition\":$(jstr "$ROOT_DEV")"
    if [ "$ROOT_NUM" -gt 4 ]; then
        MSG="$ROOT_DEV is a logical partition: left as it is"
        return 0
    fi
    total=$(($(disk_bytes "$DNAME") / ss))
    off=$((446 + (ROOT_NUM - 1) * 16))
    first=$(le32 "$DISK" $((off + 8)))
    old=$(le32 "$DISK" $((off + 12)))
    end=$total
    for i in 1 2 3 4; do
        s=$(le32 "$DISK" $((446 + (i - 1) * 16 + 8)))
        n=$(le32 "$DISK" $((446 + (i - 1) * 16 + 12)))
        [ "$n" -gt 0 ] && [ "$s" -gt "$first" ] && [ "$s" -lt "$end" ] && end=$s
    done
    new=$((end - first))
    [ "$new" -gt 4294967295 ] && new=4294967295
    if [ "$new" -le "$old" ]; then
        MSG="$ROOT_DEV already fills the disk"
        return 0
    fi
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((new & 255)) $((new >> 8 & 255)) \
        $((new >> 16 & 255)) $((new >> 24 & 255)))" >"$WORK/mbr.size"
    if ! dd if="$WORK/mbr.size" of="$DISK" bs=1 seek=$((off + 12)) count=4 conv=notrunc,fsync \
        2>>"$ALOG"; then
        MSG="cannot write the partition table of $DISK"
        return 1
    fi
    reread "$DISK"
    MSG="$ROOT_DEV grown from $(human $((old * ss))) to $(human $((new * ss)))"
}

act_write_seed() {
    BOOT_MNT=""
    disk_arg || return 1
    seed=$(param seed_url)
    if [ -z "$seed" ]; then
        MSG="no seed URL"
        return 1
    fi
    reread "$DISK"
    find_root || return 1
    RESULT="\"root_partition\":$(jstr "$ROOT_DEV")"
    rm -rf "$WORK/seed"
    mkdir -p "$WORK/seed"
    for f in meta-data user-data network-config; do
        if ! fetch "$seed/$f" "$WORK/seed/$f"; then
            MSG="$FETCH_ERR fetching the seed's $f"
            return 1
        fi
    done
    mnt=$WORK/mnt
    mkdir -p "$mnt"
    if ! err=$(mount -t "${ROOT_FS:-auto}" "$ROOT_DEV" "$mnt" 2>&1); then
        echo "$err" >>"$ALOG"
        MSG="cannot mount $ROOT_DEV (${ROOT_FS:-no filesystem}): $(echo "$err" | tail -n 1)"
        return 1
    fi
    dir=$mnt/var/lib/cloud/seed/nocloud
    ok=1
    { mkdir -p "$dir" && cp "$WORK/seed/meta-data" "$WORK/seed/user-data" \
        "$WORK/seed/network-config" "$dir/" && chmod 600 "$dir/user-data"; } >>"$ALOG" 2>&1 || ok=0
    args=$(param kernel_args)
    KMSG=""
    kok=0
    if [ "$ok" = 1 ] && [ -n "$args" ]; then
        kernel_args_into "$mnt" "$args" || kok=1
    fi
    sync
    [ -n "$BOOT_MNT" ] && logged umount "$BOOT_MNT"
    if ! logged umount "$mnt"; then
        MSG="cannot unmount $ROOT_DEV"
        return 1
    fi
    if [ "$ok" = 0 ]; then
        MSG="cannot write the seed to $ROOT_DEV"
        return 1
    fi
    if [ "$kok" = 1 ]; then
        MSG=$KMSG
        return 1
    fi
    RESULT="$RESULT,\"kernel_args\":$(jstr "$args")"
    MSG="cloud-init seed written to var/lib/cloud/seed/nocloud on $ROOT_DEV${KMSG:+; $KMSG}"
}

# The /boot filesystem of the root mounted at $1, when /etc/fstab puts it on a partition of
# its own (Rocky and AlmaLinux do): mounted at $1/boot, BOOT_MNT set for the unmount.
mount_boot() {
    BOOT_MNT=""
    spec=$(awk '$1 !~ /^#/ && $2 == "/boot" { print $1; exit }' "$1/etc/fstab" 2>/dev/null)
    [ -n "$spec" ] || return 0
    case "$spec" in
        UUID=*) dev=$(blkid -U "${spec#UUID=}" 2>/dev/null) ;;
        LABEL=*) dev=$(blkid -L "${spec#LABEL=}" 2>/dev/null) ;;
        /dev/*) dev=$spec ;;
        *) dev="" ;;
    esac
    if [ -z "$dev" ]; then
        KMSG="kernel arguments: /boot is on '$spec', which no partition on this machine matches"
        return 1
    fi
    if ! logged mount "$dev" "$1/boot"; then
        KMSG="kernel arguments: cannot mount /boot ($dev)"
        return 1
    fi
    BOOT_MNT=$1/boot
}

# Append kernel arguments $2 to the installed system at $1, for its first boot and for kernels
# installed later: GRUB's generated kernel lines, boot loader spec entries (Fedora-style),
# /etc/kernel/cmdline, and GRUB_CMDLINE_LINUX (a line after the others in /etc/default/grub,
# which update-grub and grub2-mkconfig source). Lines that already carry them are left as they
# are, so a repeated action changes nothing. KMSG says what changed, or why nothing could.
kernel_args_into() {
    mnt=$1 a=$2
    mount_boot "$mnt" || return 1
    edited=""
    edit() {  # FILE AWK-PATTERN: append $a to the matching lines that lack it
        [ -f "$1" ] || return 0
        awk -v a="$a" -v re="$2" '$0 ~ re && index($0, a) == 0 { sub(/[ \t]*$/, ""); $0 = $0 " " a } { print }' \
            "$1" >"$1.dfly" || return 1
        if ! cmp -s "$1" "$1.dfly"; then
            cat "$1.dfly" >"$1" || return 1
            edited="$edited ${1#"$mnt"}"
        elif grep -q -F -e "$a" "$1"; then
            edited="$edited ${1#"$mnt"}"  # done by an earlier run of this action
        fi
        rm -f "$1.dfly"
    }
    for cfg in "$mnt"/boot/grub/grub.cfg "$mnt"/boot/grub2/grub.cfg; do
        edit "$cfg" '^[ \t]*linux(16|efi)?[ \t]' || { KMSG="kernel arguments: cannot edit ${cfg#"$mnt"}"; return 1; }
    done
    for entry in "$mnt"/boot/loader/entries/*.conf; do
        edit "$entry" '^options[ \t]' || { KMSG="kernel arguments: cannot edit ${entry#"$mnt"}"; return 1; }
    done
    if [ -z "$edited" ]; then
        KMSG="kernel arguments: no GRUB configuration (boot/grub/grub.cfg, boot/grub2/grub.cfg) and no boot loader entries on $ROOT_DEV${BOOT_MNT:+ or its /boot}"
        return 1
    fi
    edit "$mnt/etc/kernel/cmdline" '.' || { KMSG="kernel arguments: cannot edit /etc/kernel/cmdline"; return 1; }
    if [ -f "$mnt/etc/default/grub" ] && ! grep -qxF "GRUB_CMDLINE_LINUX=\"\$GRUB_CMDLINE_LINUX $a\"" "$mnt/etc/default/grub"; then
        printf '# Added by Dragonfly: the template'"'"'s kernel arguments.\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX %s"\n' "$a" \
            >>"$mnt/etc/default/grub" || { KMSG="kernel arguments: cannot edit /etc/default/grub"; return 1; }
        edited="$edited /etc/default/grub"
    fi
    alog "kernel arguments '$a' added to:$edited"
    KMSG="kernel arguments added to$(echo "$edited" | sed 's/ /, /g; s/^,//')"
}

act_boot_entry() {
    disk_arg || return 1
    RESULT='"entry":""'
    if [ ! -d "$SYS/firmware/efi" ]; then
        MSG="BIOS boot: no UEFI boot entry needed"
        return 0
    fi
    loader=$(param loader)
    if [ -z "$loader" ]; then
        MSG="no loader given: the firmware's default boot path is used"
        return 0
    fi
    if ! command -v efibootmgr >/dev/null 2>&1; then
        MSG="efibootmgr is not in this discovery image: the firmware's default boot path is used"
        return 0
    fi
    if [ -z "$ROOT" ] && ! grep -q efivarfs /proc/mounts; then
        mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>>"$ALOG"
    fi
    esp=""
    if command -v blkid >/dev/null 2>&1; then
        esp=$(part_table | awk -F'|' '$5 == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" { print $1; exit }')
    fi
    if [ -z "$esp" ]; then
        MSG="no EFI system partition on $DISK: no boot entry"
        return 0
    fi
    efibootmgr >"$WORK/efi.before" 2>>"$ALOG"
    order=$(sed -n 's/^BootOrder: *//p' "$WORK/efi.before")
    # Earlier Dragonfly entries go: one entry per deployment.
    for old in $(sed -n 's/^Boot\([0-9A-Fa-f]\{4\}\)\*\{0,1\} Dragonfly\([[:space:]].*\)\{0,1\}$/\1/p' \
        "$WORK/efi.before"); do
        logged efibootmgr -q -b "$old" -B
        order=$(echo ",$order," | sed "s/,$old,/,/; s/^,//; s/,\$//")
    done
    if ! efibootmgr -c -d "$DISK" -p "$esp" -L Dragonfly -l "$loader" >"$WORK/efi.after" 2>&1; then
        cat "$WORK/efi.after" >>"$ALOG"
        MSG="efibootmgr could not add a boot entry: the firmware's default boot path is used"
        return 0
    fi
    cat "$WORK/efi.after" >>"$ALOG"
    entry=$(sed -n 's/^Boot\([0-9A-Fa-f]\{4\}\)\*\{0,1\} Dragonfly.*/\1/p' "$WORK/efi.after" | tail -n 1)
    # The new entry goes last: network boot stays first, so that the server keeps deciding
    # (its iPXE script boots the local disk). The reboot that follows goes straight to it
    # (BootNext): leaving iPXE makes the firmware try its other network entries first.
    [ -n "$order" ] && [ -n "$entry" ] && logged efibootmgr -q -o "$order,$entry"
    [ -n "$entry" ] && logged efibootmgr -q -n "$entry"
    RESULT="\"entry\":$(jstr "Boot$entry")"
    MSG="UEFI boot entry Boot$entry for $loader on partition $esp of $DISK, booted next"
}

# Run deployment $1: next action, execute, report, until `reboot` (returns 1 after rebooting)
# or `done`, a failure or an abort (returns 0: back to waiting).
# A download that broke off (the server restarted, the network blinked) is tried again from
# the start, a few times; what the image or the disk says wrong is not.
stream_with_retries() {
    tries=1
    while :; do
        act_stream_image
        rc=$?
        [ "$rc" = 1 ] || return "$rc"
        case "$MSG" in
            "short download"* | "cannot fetch the image"* | "the download stalled"*) ;;
            *) return 1 ;;
        esac
        [ "$tries" -lt "$STREAM_ATTEMPTS" ] || return 1
        alog "stream-image: $MSG; trying again ($((tries + 1)) of $STREAM_ATTEMPTS)"
        sleep $((5 * tries))
        tries=$((tries + 1))
    done
}

deploy() {
    WF=$1
    STEP=$WORK/step.json
    ALOG=$WORK/action.log
    if [ -z "$WF" ]; then
        log "a deploy answer without a workflow_id: ignored"
        return 0
    fi
    log "deployment $WF: starting"
    FAILURES=0
    while :; do
        fetch "$URL/api/agent/workflows/$WF/next?mac=$BOOT_MAC" "$STEP"
        case $? in
            0) FAILURES=0 ;;
            2) log "the server no longer knows deployment $WF"; return 0 ;;
            *) log "GET next action of $WF failed: $FETCH_ERR"; backoff; continue ;;
        esac
        ACTION=$(jget name "$STEP")
        WF_INDEX=$(jget index "$STEP")
        if [ "$(jget abort "$STEP")" = true ] || [ "$ACTION" = done ]; then
            log "deployment $WF: nothing more to do here"
            return 0
        fi
        case "$WF_INDEX" in
            '' | *[!0-9]*) log "unexpected next action: $(head -c 200 "$STEP")"; return 0 ;;
        esac
        : >"$ALOG"
        alog "deployment $WF, action $WF_INDEX: $ACTION"
        MSG="" RESULT=""
        case "$ACTION" in
            reboot)
                report_final succeeded "rebooting" || return 0
                log "rebooting into the installed system"
                sync
                eval "$ACT_REBOOT"
                return 1 ;;
            select-disk) act_select_disk ;;
            wipe) act_wipe ;;
            stream-image) stream_with_retries ;;
            verify) act_verify ;;
            fix-gpt) act_fix_gpt ;;
            write-seed) act_write_seed ;;
            boot-entry) act_boot_entry ;;
            *) MSG="this agent does not know the action '$ACTION'"; false ;;
        esac
        case $? in
            0) alog "$ACTION: $MSG"
               report_final succeeded "$MSG" "$RESULT" || return 0 ;;
            3) return 0 ;;
            *) [ -n "$MSG" ] || MSG="$ACTION failed"
               alog "$ACTION failed: $MSG"
               report_final failed "$MSG" "$RESULT"
               return 0 ;;
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
