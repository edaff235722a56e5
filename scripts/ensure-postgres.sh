#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432, installing and starting one if
# needed, and print a DATABASE_URL for a superuser on it.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

answers() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null || ! answers; then
    if ! command -v pg_ctlcluster >/dev/null; then
        "$(dirname "$0")/system-packages.sh" postgres >&2
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    for _ in $(seq 60); do answers && break; sleep 0.5; done
    answers || { echo "PostgreSQL did not start" >&2; exit 1; }
    # A fresh Debian cluster asks for a password on TCP: give the postgres role one.
    $SUDO su postgres -c "psql -q -c \"ALTER ROLE postgres PASSWORD 'kvmweb-ci'\"" >&2
fi
echo "postgres://postgres:kvmweb-ci@127.0.0.1:5432/postgres"
