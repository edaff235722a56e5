#!/usr/bin/env bash
# Start kvmweb for one machine: a private Redis, a Celery worker and beat, the event watchers
# (manage.py watchhosts) and the web server.
# Honours PORT (8000), KVMWEB_DATA_DIR (./var), KVMWEB_BIND (127.0.0.1) and, to use your own
# services, DATABASE_URL and CELERY_BROKER_URL. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-8000}"
BIND="${KVMWEB_BIND:-127.0.0.1}"
export KVMWEB_DATA_DIR="${KVMWEB_DATA_DIR:-$PWD/var}"
mkdir -p "$KVMWEB_DATA_DIR"
PY=.venv/bin/python
pids=()

stop_all() {
    trap - EXIT INT TERM
    echo "Stopping kvmweb..."
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if [ -z "${CELERY_BROKER_URL:-}" ]; then
    # A private Redis on a socket in the data directory: no port to clash, nothing kept on disk.
    socket="$KVMWEB_DATA_DIR/redis.sock"
    redis-server --port 0 --unixsocket "$socket" --unixsocketperm 700 --save "" --appendonly no \
        --dir "$KVMWEB_DATA_DIR" --logfile "$KVMWEB_DATA_DIR/redis.log" &
    pids+=($!)
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
    export CELERY_BROKER_URL="redis+socket://$socket"
fi

$PY manage.py migrate --noinput -v0
$PY manage.py collectstatic --noinput -v0
$PY manage.py bootstrap

# One worker process with threads: the demo host's test driver keeps its state per
# process, so all of its operations must run in this one long-lived process.
.venv/bin/celery -A kvmweb worker --pool threads --concurrency 4 --loglevel INFO \
    --hostname "kvmweb@%h" >"$KVMWEB_DATA_DIR/worker.log" 2>&1 &
pids+=($!)
.venv/bin/celery -A kvmweb beat --loglevel INFO --schedule "$KVMWEB_DATA_DIR/celerybeat-schedule" \
    >"$KVMWEB_DATA_DIR/beat.log" 2>&1 &
pids+=($!)
# Event watchers: the mirror follows each host's libvirt events within seconds (hosts with a
# host worker of their own are watched there; test-driver hosts such as the demo are left out:
# their state lives in the worker process).
$PY manage.py watchhosts >"$KVMWEB_DATA_DIR/watchhosts.log" 2>&1 &
pids+=($!)
.venv/bin/gunicorn kvmweb.wsgi --bind "$BIND:$PORT" --workers 2 --access-logfile - \
    >"$KVMWEB_DATA_DIR/web.log" 2>&1 &
pids+=($!)

echo
echo "kvmweb is running at http://$BIND:$PORT/  (logs in $KVMWEB_DATA_DIR, Ctrl-C stops it)"
wait -n "${pids[@]}"
echo "A kvmweb process exited; see the logs in $KVMWEB_DATA_DIR." >&2
exit 1
