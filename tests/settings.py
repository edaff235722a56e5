"""Test settings: the real settings module, with fast hashing and a file-based SQLite test DB.

The SQLite test database is a file (not in-memory) so a real Celery worker process in
the end-to-end tests can share it. Set DATABASE_URL to run the suite on PostgreSQL.
"""

import atexit
import os
import shutil
import tempfile

if not os.environ.get("KVMWEB_DATA_DIR"):
    _scratch = tempfile.mkdtemp(prefix="kvmweb-tests-")
    atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    os.environ["KVMWEB_DATA_DIR"] = _scratch
os.environ.setdefault("KVMWEB_SECRET_KEY", "tests-only-secret-key")
# No test may write the machine's libvirt hooks or signal its daemons: the host-side paths point
# into the scratch directory, whatever the environment says (set in the environment, so worker
# processes the tests start agree). A real-daemon test names its private libvirtd's paths itself.
os.environ["KVMWEB_LIBVIRT_HOOKS_DIR"] = os.path.join(os.environ["KVMWEB_DATA_DIR"], "libvirt-hooks")
os.environ["KVMWEB_LIBVIRTD_PIDFILE"] = os.path.join(os.environ["KVMWEB_DATA_DIR"], "libvirtd.pid")
os.environ["KVMWEB_LIBVIRT_QEMU_STATE_DIR"] = os.path.join(os.environ["KVMWEB_DATA_DIR"], "qemu-state")

from kvmweb.settings import *  # noqa: F403
from kvmweb.settings import DATA_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
(DATA_DIR / "static").mkdir(parents=True, exist_ok=True)
# The worker tests start a private Redis on this socket (tests/tasks/conftest.py).
CELERY_BROKER_URL = f"redis+socket://{DATA_DIR / 'redis.sock'}"
# Login throttling (django-axes) stays on, as in production: log users in with force_login() or
# by posting the login page; Client.login() passes no request, which axes refuses.
