"""Fixtures shared by every layer of the tests."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from networks.choices import AuditSource
from networks.hypervisor import client
from networks.models import Host
from networks.services import hosts as host_services
from networks.services.operations import RetryLater, operation_run
from tests.factories import UserFactory

REPO = Path(__file__).resolve().parent.parent
DEMO_URI = f"test://{REPO / 'demo' / 'fleet.xml'}"


@pytest.fixture(autouse=True)
def uri_dirs_allowed(settings, tmp_path_factory):
    """Host URIs may name the demo and files or sockets in pytest's scratch directory.

    Returns the scratch directory; a test that needs other rules overrides the settings."""
    scratch = str(tmp_path_factory.getbasetemp())
    settings.KVMWEB_TEST_DRIVER_DIRS = [str(REPO / "demo"), scratch]
    settings.KVMWEB_URI_PATHS_ALLOWED = [scratch]
    return scratch


def run_to_end(operation_id: int):
    """operation_run as the worker repeats it: again after each RetryLater, without the wait."""
    while True:
        try:
            return operation_run(operation_id)
        except RetryLater:
            continue


@pytest.fixture
def demo_uri():
    """The demo fleet, freshly loaded: the cached connection is dropped before and after."""
    client.disconnect(DEMO_URI)
    yield DEMO_URI
    client.disconnect(DEMO_URI)


@pytest.fixture
def default_uri():
    """libvirt's built-in test:///default, fresh for each test."""
    client.disconnect("test:///default")
    yield "test:///default"
    client.disconnect("test:///default")


@pytest.fixture
def admin(db):
    return UserFactory(username="alice")


@pytest.fixture
def demo_host(db, demo_uri, admin):
    """The demo fleet registered and synced, as `make run` leaves it."""
    host = host_services.host_create(name="demo", uri=demo_uri, actor=admin, source=AuditSource.WEB)
    operation_run(host.operations.get().pk)
    return Host.objects.get(pk=host.pk)


# ---------------------------------------------------------------- a real Redis and Celery worker


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory):
    """A private redis-server on the socket the test settings name, stopped by its PID afterwards."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    tmp_path = tmp_path_factory.mktemp("redis")
    socket = Path(settings.CELERY_BROKER_URL.removeprefix("redis+socket://"))
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(socket), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for(socket.exists, 10, "redis to listen")
        yield f"redis+socket://{socket}"
    finally:
        _stop(process)


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def celery_worker_process(transactional_db, redis_socket, tmp_path):
    """`celery worker` as `make run` starts it, on the test database and the private Redis."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": redis_socket,
        "KVMWEB_DATA_DIR": str(tmp_path),
        "KVMWEB_SECRET_KEY": "worker-test",
        "KVMWEB_TEST_DRIVER_DIRS": f"{REPO / 'demo'},{tmp_path}",
        "KVMWEB_URI_PATHS_ALLOWED": str(tmp_path),
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "kvmweb", "worker", "--pool", "threads", "--concurrency", "2",
         "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for(lambda: "ready" in (tmp_path / "worker.log").read_text() or process.poll() is not None, 60, "worker")
        assert process.poll() is None, (tmp_path / "worker.log").read_text()
        yield process
    finally:
        _stop(process)
        log.close()


# ---------------------------------------------------------------- fault tests: workers with their own settings


@pytest.fixture
def start_celery_worker(transactional_db, tmp_path):
    """Factory: start_celery_worker(broker_url, name="worker", queues="", **env) starts a real
    worker on the test database (or DATABASE_URL=... in env) with extra environment, consuming
    `queues` (comma-separated; default: the default queue); each stopped by its PID at the end.
    Returns (process, log path)."""
    started = []

    def start(broker_url: str, name: str = "worker", queues: str = "", **extra_env: str):
        log_path = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": broker_url,
            "KVMWEB_DATA_DIR": str(tmp_path),
            "KVMWEB_SECRET_KEY": "worker-test",
            "KVMWEB_TEST_DRIVER_DIRS": f"{REPO / 'demo'},{tmp_path}",
            "KVMWEB_URI_PATHS_ALLOWED": str(tmp_path),
            **extra_env,
        }
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "kvmweb", "worker", "--pool", "threads", "--concurrency", "2",
             "--without-mingle", "--without-gossip", "--loglevel", "INFO", "--hostname", f"{name}@%h",
             *(["--queues", queues] if queues else [])],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append((process, log))
        _wait_for(lambda: "ready" in log_path.read_text() or process.poll() is not None, 60, name)
        assert process.poll() is None, log_path.read_text()
        return process, log_path

    yield start
    for process, log in started:
        _stop(process)
        log.close()


class PrivateRedis:
    """A redis-server of one test on its own socket, without persistence: stopping it loses
    every message, as a broker that restarts without its data does."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"redis+socket://{self.socket}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
        )
        _wait_for(self.socket.exists, 10, "redis to listen")

    def stop(self) -> None:
        """Stop it by its PID; the next start() begins empty."""
        if self.process is not None:
            _stop(self.process)
            self.process = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def private_redis(tmp_path):
    """A started PrivateRedis; the test process's Celery app sends to it for the test."""
    from kvmweb.celery import app

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    directory = tmp_path / "broker"
    directory.mkdir()
    redis = PrivateRedis(directory)
    redis.start()
    previous = app.conf.broker_url
    _use_broker(app, redis.url)
    try:
        yield redis
    finally:
        _use_broker(app, previous)
        redis.stop()


def _use_broker(app, url: str) -> None:
    # Celery sends through kombu's process-wide pools, kept per broker URL: close and forget them
    # all (a closed pool left behind for the old URL would refuse the next send to it), so the
    # next send connects to `url`.
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    app.conf.broker_url = url
