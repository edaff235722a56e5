#!/usr/bin/env bash
# Install the Debian packages kvmweb needs, skipping those already present.
#   scripts/system-packages.sh run    what `make run` needs
#   scripts/system-packages.sh test   plus a real libvirtd, QEMU, dnsmasq, chromium and PostgreSQL server binaries for the tests
#   scripts/system-packages.sh postgres   a PostgreSQL server (CI runs the database layers on it too)
set -euo pipefail

RUN_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-clients redis-server)
TEST_PACKAGES=(
    libvirt-daemon-system qemu-system-x86 dnsmasq-base iptables nftables iproute2 busybox-static xz-utils
    chromium postgresql
)

wanted=("${RUN_PACKAGES[@]}")
case "${1:-run}" in
    test) wanted+=("${TEST_PACKAGES[@]}") ;;
    postgres) wanted=(postgresql postgresql-client) ;;
esac

missing=()
for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# Package scripts must not start services on the host: the tests run their own libvirtd
# in a private network namespace, and `make run` starts its own Redis.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
trap '[ -n "$created_policy" ] && $SUDO rm -f "$policy"' EXIT
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
