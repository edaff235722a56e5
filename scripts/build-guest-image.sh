#!/usr/bin/env bash
# build-guest-image.sh OUTDIR
#
# Builds the tiny test guest used by the real-libvirtd tests (tests/realvirt):
#   OUTDIR/vmlinuz     Debian cloud kernel (direct kernel boot, console=ttyS0)
#   OUTDIR/initrd.img  busybox-static + virtio/net modules + an /init that DHCPs
#                      every NIC, prints "KVMWEB-LEASE <nic> <ip> <mac>" to the
#                      console, and serves HTTP on :80 and an echo on :7.
#                      CGI probes under /cgi-bin/ let tests look inside the
#                      guest: lookup (DNS via the server its lease named),
#                      renew, release-renew, addr, lease, peer, pinggap (the
#                      guest's own pings to its gateway, timestamped).
#   OUTDIR/MANIFEST    kernel version and module list, for debugging.
#
# Idempotent: does nothing when vmlinuz and initrd.img exist and are newer
# than this script. The kernel package is only downloaded and unpacked into a
# temp dir (apt-get download + dpkg-deb -x), never installed.
#
# Needs (Debian packages; this script installs nothing):
#   apt (apt-get, apt-cache), dpkg (dpkg-deb), busybox-static, xz-utils,
#   zstd (only if the kernel ships .ko.zst modules), gzip, coreutils, findutils
# Set KVMWEB_KERNEL_DEB=/path/to/linux-image-*.deb to skip the download
# (e.g. offline).
set -euo pipefail

die() { echo "build-guest-image: ERROR: $*" >&2; exit 1; }
# set -e exits silently; say where.
trap 'echo "build-guest-image: ERROR: command failed at line $LINENO" >&2' ERR
log() { echo "build-guest-image: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUTDIR=$1
SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")

# Modules in load order: insmod does no dependency resolution, so every
# dependency comes before its user. button/evdev let the guest see the ACPI
# power button (libvirt's shutdown/reboot); they are optional.
REQUIRED_MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
OPTIONAL_MODULES="button evdev"

is_fresh() {
    [ -s "$OUTDIR/vmlinuz" ] && [ -s "$OUTDIR/initrd.img" ] &&
        [ "$OUTDIR/vmlinuz" -nt "$SCRIPT" ] && [ "$OUTDIR/initrd.img" -nt "$SCRIPT" ]
}

if is_fresh; then
    log "up to date, skipping"
    echo "$OUTDIR"
    exit 0
fi

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (package dpkg)"
BUSYBOX=$(command -v busybox) || die "busybox not found (install busybox-static)"
# A dynamically linked busybox would need its libraries in the initramfs.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; install busybox-static"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvmweb-guest-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Resolve linux-image-cloud-amd64 (a metapackage) to the versioned kernel
# package it depends on, and download that .deb.
fetch_kernel_deb() {
    if [ -n "${KVMWEB_KERNEL_DEB:-}" ]; then
        [ -f "$KVMWEB_KERNEL_DEB" ] || die "KVMWEB_KERNEL_DEB=$KVMWEB_KERNEL_DEB does not exist"
        cp "$KVMWEB_KERNEL_DEB" "$WORK/dl/"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found; set KVMWEB_KERNEL_DEB to a kernel .deb"
    local pkg
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }') || true
    [ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 with apt-cache (run 'apt-get update' first?)"
    log "downloading $pkg"
    # apt drops privileges to _apt for downloads; let it write the temp dir.
    if id _apt >/dev/null 2>&1; then chmod 755 "$WORK" && chown _apt "$WORK/dl"; fi
    (cd "$WORK/dl" && apt-get download -q "$pkg" >&2) ||
        die "'apt-get download $pkg' failed: no network or no Debian mirror? (run 'apt-get update', or set KVMWEB_KERNEL_DEB)"
}

# Print the path of a module file for name $1 (any compression), or nothing.
find_module() {
    find "$WORK/root/lib/modules" "$WORK/root/usr/lib/modules" \
        \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" \) \
        -print -quit 2>/dev/null || true
}

# Copy module $1 (a .ko, maybe compressed) to $2 as a plain .ko: busybox's
# insmod here cannot rely on in-kernel decompression.
copy_module() {
    case "$1" in
    *.ko) cp "$1" "$2" ;;
    *.ko.xz)
        command -v xz >/dev/null || die "module $1 is xz-compressed but xz is missing (install xz-utils)"
        xz -dc "$1" >"$2" ;;
    *.ko.zst)
        command -v zstd >/dev/null || die "module $1 is zstd-compressed but zstd is missing (install zstd)"
        zstd -qdc "$1" >"$2" ;;
    *.ko.gz) gzip -dc "$1" >"$2" ;;
    esac
}

mkdir -p "$WORK/dl" "$WORK/root" "$WORK/initrd"
fetch_kernel_deb
debs=("$WORK"/dl/*.deb)
DEB=${debs[0]}
[ -f "$DEB" ] || die "no .deb was downloaded"
dpkg-deb -x "$DEB" "$WORK/root"

kernels=("$WORK"/root/boot/vmlinuz-*)
VMLINUZ=${kernels[0]}
[ -f "$VMLINUZ" ] || die "no /boot/vmlinuz-* in $DEB"
KVER=${VMLINUZ##*/vmlinuz-}
log "kernel $KVER"

# --- initramfs tree -------------------------------------------------------
R=$WORK/initrd
mkdir -p "$R"/{bin,sbin,dev,proc,sys,run,tmp,www/cgi-bin,var/log,lib/modules,etc/acpi/PWRF}
cp "$BUSYBOX" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
# The kernel needs /dev/console to give /init a stdout before devtmpfs is up.
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || log "note: could not mknod /dev/console (not root?)"

: >"$R/etc/kvmweb-modules"
for m in $REQUIRED_MODULES $OPTIONAL_MODULES; do
    src=$(find_module "$m")
    if [ -z "$src" ]; then
        case " $OPTIONAL_MODULES " in
        *" $m "*) log "optional module $m not found (built in?), skipping"; continue ;;
        esac
        # A required driver may be built into this kernel: check modules.builtin.
        if grep -q "/$m.ko\$" "$WORK"/root/lib/modules/"$KVER"/modules.builtin 2>/dev/null; then
            log "module $m is built in"; continue
        fi
        die "required module $m not found in $DEB"
    fi
    copy_module "$src" "$R/lib/modules/$m.ko"
    echo "$m" >>"$R/etc/kvmweb-modules"
done

cat >"$R/init" <<'EOF'
#!/bin/busybox sh
# PID 1 of the kvmweb test guest. Everything it reports goes to the serial
# console as KVMWEB-* lines, which the host-side tests parse.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

HN=kvmweb-guest
DEBUG=
for w in $(cat /proc/cmdline); do
    case "$w" in
    kvmweb.hostname=*) HN=${w#*=} ;;
    kvmweb.debug=1) DEBUG=1 ;;
    esac
done
hostname "$HN"

# Load the NIC drivers in dependency order (busybox insmod does not resolve).
while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "KVMWEB-WARN insmod $m failed"
done </etc/kvmweb-modules

ip link set lo up
echo "<html><body><h1>kvmweb-guest $HN</h1></body></html>" >/www/index.html
echo "$HN" >/www/hostname
httpd -p 80 -h /www
# -ll keeps listening: one "cat" per connection makes an echo service.
nc -ll -p 7 -e cat &
# Power button -> poweroff, so libvirt's domain.shutdown() works.
[ -d /dev/input ] && acpid -c /etc/acpi -l /dev/null

# One udhcpc per NIC. The pid file also records the ifindex, so a NIC that was
# unplugged and re-plugged under the same name gets a fresh client.
start_dhcp() {
    nic=$1 idx=$2
    ip link set "$nic" up
    if [ -n "$DEBUG" ]; then out=/dev/console; else out=/dev/null; fi
    udhcpc -f -i "$nic" -s /etc/udhcpc.script -x "hostname:$HN" -T 2 -A 2 >"$out" 2>&1 &
    echo "$! $idx" >"/run/udhcpc.$nic"
}

echo "KVMWEB-READY $HN"
# Poll for NICs (also catches hot-plugged ones); no mdev/udev needed.
while true; do
    for d in /sys/class/net/eth*; do
        [ -e "$d" ] || continue
        nic=${d##*/}
        idx=$(cat "$d/ifindex")
        if [ -f "/run/udhcpc.$nic" ]; then
            read -r pid oldidx <"/run/udhcpc.$nic"
            if [ "$oldidx" = "$idx" ] && kill -0 "$pid" 2>/dev/null; then continue; fi
            kill "$pid" 2>/dev/null
        fi
        start_dhcp "$nic" "$idx"
    done
    sleep 1
done
EOF

cat >"$R/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# Called by udhcpc with $1 = deconfig|bound|renew|nak|leasefail and the lease
# in environment variables ($interface, $ip, $subnet, $mask, $router, $dns,
# $domain, $lease, $serverid).
# /run/lease.NIC keeps the lease for /cgi-bin/lease, /run/resolv.NIC its DNS
# settings; /etc/resolv.conf is all of the latter, NICs in name order.
update_resolv_conf() {
    cat /run/resolv.eth* >/etc/resolv.conf 2>/dev/null || : >/etc/resolv.conf
}
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    rm -f "/run/lease.$interface" "/run/resolv.$interface"
    update_resolv_conf
    ;;
bound|renew)
    prefix=${mask:-$(ipcalc -p "$ip" "$subnet" | cut -d= -f2)}
    # Keep the address (and open connections) when a renew returns the same one.
    if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$prefix "; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$prefix" dev "$interface"
    fi
    # One default route per NIC, ordered by ifindex, so several NICs coexist.
    idx=$(cat "/sys/class/net/$interface/ifindex")
    for r in $router; do
        ip route replace default via "$r" dev "$interface" metric $((100 + idx))
        break
    done
    {
        [ -z "$domain" ] || echo "search $domain"
        for s in $dns; do echo "nameserver $s"; done
    } >"/run/resolv.$interface"
    update_resolv_conf
    {
        echo "ip $ip"
        echo "prefix $prefix"
        echo "router $router"
        echo "dns $dns"
        echo "domain $domain"
        echo "lease $lease"
        echo "serverid $serverid"
    } >"/run/lease.$interface"
    mac=$(cat "/sys/class/net/$interface/address")
    if [ "$1" = bound ]; then tag=LEASE; else tag=RENEW; fi
    echo "KVMWEB-$tag $interface $ip $mac" >/dev/console
    ;;
esac
exit 0
EOF

# --- CGI probes: busybox httpd runs /www/cgi-bin/* ---------------------------
# Plain-text answers, one "KEYWORD value..." per line, parsed by the host-side
# helpers in tests/realvirt/guests.py. Bad input gets HTTP 400.
cat >"$R/etc/cgi.sh" <<'EOF'
# Sourced by every CGI script.
PATH=/sbin:/bin
export PATH
reply() { printf 'Content-Type: text/plain\r\n\r\n'; }
fail() {
    printf 'HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nERROR %s\n' "$*"
    exit 0
}
# param NAME: the URL-decoded value of NAME=... in the query string.
param() {
    echo "$QUERY_STRING" | tr '&' '\n' | while read -r kv; do
        case "$kv" in "$1="*) httpd -d "${kv#*=}"; break ;; esac
    done
}
valid_nic() {
    case "$1" in eth[0-9] | eth[0-9][0-9]) ;; *) fail "bad nic" ;; esac
}
# Sets $nic from ?nic= (default eth0) and $pid to the udhcpc serving it.
nic_and_udhcpc() {
    nic=$(param nic)
    nic=${nic:-eth0}
    valid_nic "$nic"
    [ -f "/run/udhcpc.$nic" ] || fail "no udhcpc on $nic"
    read -r pid _ <"/run/udhcpc.$nic"
    kill -0 "$pid" 2>/dev/null || fail "udhcpc on $nic is not running"
}
# signal_later SIG...: send the signals to $pid once this reply has left (a
# release or a NAK removes the address the reply travels from), one at a time:
# the kernel delivers pending signals lowest number first, so USR2 and USR1 sent
# together would reach udhcpc as USR1 (renew), then USR2 (release), and leave it
# released for good.
signal_later() {
    (
        sleep 0.3
        for s in "$@"; do
            kill "-$s" "$pid"
            sleep 0.5
        done
    ) </dev/null >/dev/null 2>&1 &
}
EOF

cat >"$R/www/cgi-bin/lookup" <<'EOF'
#!/bin/sh
# ?NAME or ?name=NAME[&type=a|aaaa|txt|srv|mx|cname|ptr|ns|any][&nic=ethN|&server=IP]
# Asks the servers in /etc/resolv.conf (nic=: the first one that NIC's lease
# gave; server=: that one). With a search domain (the lease's domain option),
# busybox nslookup asks for a dotless NAME only as NAME.<domain>; a trailing
# dot ("NAME.") asks for NAME itself. type=ptr takes an IPv4 address too.
# Prints SERVER <ip>, one line per record (ADDRESS <ip>, TXT <text>,
# SRV <prio> <weight> <port> <target>, MX <pref> <host>, CNAME|PTR|NS <name>),
# then STATUS OK|NODATA|NXDOMAIN|SERVFAIL|REFUSED|TIMEOUT (or STATUS ERROR <what>).
. /etc/cgi.sh
case "$QUERY_STRING" in
*=*) name=$(param name) type=$(param type) nic=$(param nic) server=$(param server) ;;
*) name=$(httpd -d "$QUERY_STRING") type='' nic='' server='' ;;
esac
type=${type:-a}
case "$name" in '' | -* | *[!A-Za-z0-9._-]*) fail "bad name" ;; esac
case "$type" in a | aaaa | txt | srv | mx | cname | ptr | ns | any) ;; *) fail "bad type" ;; esac
case "$server" in *[!0-9.]*) fail "bad server" ;; esac
if [ -n "$nic" ]; then
    valid_nic "$nic"
    server=$(awk '$1 == "nameserver" { print $2; exit }' "/run/resolv.$nic" 2>/dev/null)
    [ -n "$server" ] || fail "no DNS server from a lease on $nic"
fi
# This nslookup does not reverse an IPv4 address for a PTR query itself.
if [ "$type" = ptr ]; then
    name=$(echo "$name" | awk -F. 'NF == 4 && /^[0-9.]+$/ { $0 = $4 "." $3 "." $2 "." $1 ".in-addr.arpa" } 1')
fi
reply
# shellcheck disable=SC2086 # $server: empty or one word
nslookup "-type=$type" "$name" $server 2>&1 | awk '
    /^Server:/ { print "SERVER", $2; next }
    /^Name:/ { named = 1; next }
    /^Address:/ && named { print "ADDRESS", $2; n++; next }
    /\ttext = / { sub(/^[^\t]*\ttext = "/, ""); sub(/"$/, ""); print "TXT", $0; n++; next }
    /\tservice = / { print "SRV", $(NF-3), $(NF-2), $(NF-1), $NF; n++; next }
    /\tmail exchanger = / { print "MX", $(NF-1), $NF; n++; next }
    /\tcanonical name = / { print "CNAME", $NF; n++; next }
    /\tnameserver = / { print "NS", $NF; n++; next }
    /\tname = / { print "PTR", $NF; n++; next }
    /^\*\* server can.t find/ { err = $NF; next }
    /timed out|no servers could be reached/ { err = "TIMEOUT"; next }
    END {
        if (n) print "STATUS OK"
        else if (err ~ /^(NXDOMAIN|SERVFAIL|REFUSED|TIMEOUT)$/) print "STATUS", err
        else if (err) print "STATUS ERROR", err
        else print "STATUS NODATA"
    }'
EOF

cat >"$R/www/cgi-bin/renew" <<'EOF'
#!/bin/sh
# ?nic=ethN (default eth0): udhcpc renews the lease (SIGUSR1); returns at once.
# KVMWEB-RENEW follows on the console, or, if the server NAKs, KVMWEB-LEASE
# after udhcpc's 3 s pause and a new DISCOVER.
. /etc/cgi.sh
nic_and_udhcpc
reply
echo "OK renew $nic $pid"
signal_later USR1
EOF

cat >"$R/www/cgi-bin/release-renew" <<'EOF'
#!/bin/sh
# ?nic=ethN (default eth0): udhcpc releases the lease (SIGUSR2: DHCPRELEASE,
# address removed) and starts over (SIGUSR1); returns at once. KVMWEB-LEASE
# with the (possibly new) address follows on the console.
. /etc/cgi.sh
nic_and_udhcpc
reply
echo "OK release-renew $nic $pid"
signal_later USR2 USR1
EOF

cat >"$R/www/cgi-bin/addr" <<'EOF'
#!/bin/sh
# For every ethN: NIC <nic> <mac> <operstate>, then ADDR <nic> <ip>/<prefix>
# for each of its IPv4 addresses.
. /etc/cgi.sh
reply
for d in /sys/class/net/eth*; do
    [ -e "$d" ] || continue
    n=${d##*/}
    echo "NIC $n $(cat "$d/address") $(cat "$d/operstate")"
    ip -4 -o addr show dev "$n" | awk -v n="$n" '{ print "ADDR", n, $4 }'
done
EOF

cat >"$R/www/cgi-bin/peer" <<'EOF'
#!/bin/sh
# PEER <address>: where this request came from, as the guest sees it (port
# forwarding tests: a DNATed connection keeps the client's address).
# busybox httpd listens on IPv6 and names IPv4 peers [::ffff:a.b.c.d].
. /etc/cgi.sh
reply
peer=${REMOTE_ADDR#[}
peer=${peer%]}
echo "PEER ${peer#::ffff:}"
EOF

cat >"$R/www/cgi-bin/lease" <<'EOF'
#!/bin/sh
# ?nic=ethN (default eth0): the NIC's current lease as "<key> <value>" lines
# (ip, prefix, router, dns, domain, lease, serverid); empty without a lease.
. /etc/cgi.sh
nic=$(param nic)
nic=${nic:-eth0}
valid_nic "$nic"
reply
cat "/run/lease.$nic" 2>/dev/null
EOF

cat >"$R/etc/pinggap-loop" <<'EOF'
#!/bin/sh
# pinggap-loop NIC ROUTER INTERVAL, started by /cgi-bin/pinggap under setsid:
# a session (and process group) of its own, whose leader PID it records in
# /run/pinggap.NIC.pid, so the CGI can stop all of it. Appends the guest's
# uptime (/proc/uptime, 10 ms steps) to /run/pinggap.NIC for every reply of
# busybox ping. ping exits when it cannot send (no route, NIC unplugged):
# it is started again until the group is stopped.
nic=$1 router=$2 interval=$3
echo $$ >"/run/pinggap.$nic.pid"
while true; do
    ping -I "$nic" -i "$interval" "$router" 2>/dev/null | while read -r line; do
        case "$line" in
        *" bytes from "*)
            read -r up _ </proc/uptime
            echo "$up"
            ;;
        esac
    done >>"/run/pinggap.$nic"
    sleep "$interval"
done
EOF

cat >"$R/www/cgi-bin/pinggap" <<'EOF'
#!/bin/sh
# The guest's own view of its gateway: how long it could not reach it.
# ?start[&nic=ethN][&interval=S]: ping the router of NIC's DHCP lease every S
#   seconds (default 0.05) in the background (/etc/pinggap-loop), replacing a
#   previous run on that NIC; answers at once: OK <pid>.
# ?status[&nic=ethN]: the report below; the pings go on.
# ?stop[&nic=ethN]: stop the pings (the PID's whole process group), then the
#   report: REPLIES <n>, LONGEST_GAP <seconds between consecutive replies>,
#   and, with replies, GAP_END <uptime of the reply that ended that gap>,
#   FIRST <uptime>, LAST <uptime>; then NOW <uptime> and RUNNING yes|no.
. /etc/cgi.sh
case "&$QUERY_STRING&" in
*"&start&"*) action=start ;;
*"&stop&"*) action=stop ;;
*"&status&"*) action=status ;;
*) fail "want start, stop or status" ;;
esac
nic=$(param nic)
nic=${nic:-eth0}
valid_nic "$nic"
data=/run/pinggap.$nic
pidfile=/run/pinggap.$nic.pid

# group_alive PGID: a live (not zombie) process is in that process group.
group_alive() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '$5 == g && $3 != "Z" { found = 1 } END { exit !found }'
}
recorded_pid() {
    pid=
    [ -f "$pidfile" ] && read -r pid <"$pidfile"
    case "$pid" in '' | *[!0-9]*) pid= ;; esac
}
stop_run() {
    recorded_pid
    rm -f "$pidfile"
    [ -n "$pid" ] || return 0
    kill -TERM "-$pid" 2>/dev/null
    i=0
    while group_alive "$pid" && [ $i -lt 40 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    kill -KILL "-$pid" 2>/dev/null
    return 0
}
report() {
    read -r now _ </proc/uptime
    running=no
    recorded_pid
    [ -n "$pid" ] && group_alive "$pid" && running=yes
    cat "$data" 2>/dev/null | awk -v now="$now" -v running="$running" '
        NF {
            t = $1 + 0
            if (n == 0) first = t
            else if (t - prev > gap) { gap = t - prev; end = t }
            prev = t
            n++
        }
        END {
            printf "REPLIES %d\nLONGEST_GAP %.2f\n", n, gap
            if (n) {
                if (end) printf "GAP_END %.2f\n", end
                printf "FIRST %.2f\nLAST %.2f\n", first, prev
            }
            printf "NOW %.2f\nRUNNING %s\n", now, running
        }'
}

case "$action" in
start)
    interval=$(param interval)
    interval=${interval:-0.05}
    case "$interval" in '' | . | *[!0-9.]* | *.*.*) fail "bad interval" ;; esac
    router=$(awk '$1 == "router" { print $2; exit }' "/run/lease.$nic" 2>/dev/null)
    case "$router" in '' | *[!0-9.]*) fail "no router in a lease on $nic" ;; esac
    stop_run
    : >"$data"
    setsid /etc/pinggap-loop "$nic" "$router" "$interval" </dev/null >/dev/null 2>&1 &
    i=0
    while [ ! -s "$pidfile" ] && [ $i -lt 60 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    recorded_pid
    [ -n "$pid" ] || fail "the pinger did not start"
    reply
    echo "OK $pid"
    ;;
status)
    reply
    report
    ;;
stop)
    stop_run
    reply
    report
    ;;
esac
EOF

cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "KVMWEB-POWEROFF" >/dev/console
poweroff -f
EOF
chmod 755 "$R/init" "$R/etc/udhcpc.script" "$R/etc/pinggap-loop" "$R/etc/acpi/PWRF/00000080" "$R"/www/cgi-bin/*

# --- pack -----------------------------------------------------------------
# The host has no cpio; busybox has one. Uncompressed would boot no faster
# under TCG (fw_cfg copies it either way), gzip keeps the cache small.
mkdir -p "$OUTDIR"
(cd "$R" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -9 >"$WORK/initrd.img"
cp "$VMLINUZ" "$WORK/vmlinuz"
{
    echo "kernel_package=$(basename "$DEB")"
    echo "kernel_version=$KVER"
    echo "modules=$(tr '\n' ' ' <"$R/etc/kvmweb-modules")"
    echo "busybox=$("$BUSYBOX" | sed -n 1p)"
} >"$WORK/MANIFEST"
# Copy next to the targets, then rename: an interrupted build never leaves a
# partial file that looks fresh. initrd.img goes last.
for f in MANIFEST vmlinuz initrd.img; do cp "$WORK/$f" "$OUTDIR/.$f.tmp"; done
for f in MANIFEST vmlinuz initrd.img; do mv -f "$OUTDIR/.$f.tmp" "$OUTDIR/$f"; done
log "built $(du -sh "$OUTDIR" | cut -f1) in $OUTDIR"
echo "$OUTDIR"
