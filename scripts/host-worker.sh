#!/usr/bin/env bash
# Start the host worker of HOSTNAME, on that hypervisor, as root: a Celery worker consuming
# exactly that host's queue (Host.queue), which installs port forwards and libvirt hooks.
# Honours DATABASE_URL, CELERY_BROKER_URL and KVMWEB_DATA_DIR (the same as the central
# kvmweb's), and KVMWEB_HOST_WORKER_CONCURRENCY (default 2). The worker replaces this shell
# (exec), so a service manager sees and stops the worker itself.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 HOSTNAME" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
export KVMWEB_DATA_DIR="${KVMWEB_DATA_DIR:-$PWD/var}"
PY="${KVMWEB_PYTHON:-.venv/bin/python}"

queue="$("$PY" manage.py hostqueue "$1")"
# Run functions compare it with their operation's host; the heartbeat names this host.
export KVMWEB_HOST_WORKER="$1"
exec "$PY" -m celery -A kvmweb worker --pool threads --concurrency "${KVMWEB_HOST_WORKER_CONCURRENCY:-2}" \
    --queues "$queue" --hostname "host-$1@%h" --without-mingle --without-gossip --loglevel INFO
