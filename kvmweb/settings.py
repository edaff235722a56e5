"""kvmweb settings: everything comes from the environment and bad values fail loudly.

See .env.example for every variable.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DATA_DIR = Path(env_str("KVMWEB_DATA_DIR", str(BASE_DIR / "var"))).resolve()


def _secret_key() -> str:
    """Use KVMWEB_SECRET_KEY, else a key generated once and kept in the data directory."""
    configured = os.environ.get("KVMWEB_SECRET_KEY")
    if configured:
        return configured
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("KVMWEB_DEBUG", False)
ALLOWED_HOSTS = env_list("KVMWEB_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("KVMWEB_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "django_tables2",
    "django_htmx",
    "axes",
    "networks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "networks.middleware.RequestContextMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "networks.middleware.RefusalAuditMiddleware",
    "networks.middleware.RejectNulMiddleware",
    "networks.middleware.PagesLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so it turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kvmweb.urls"
# A refused CSRF check is audited and answered with a page that says what to do.
CSRF_FAILURE_VIEW = "networks.views.errors.csrf_failure"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "networks.context_processors.fleet_permissions",
            ],
        },
    },
]

WSGI_APPLICATION = "kvmweb.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'kvmweb.sqlite3'}"),
        conn_max_age=env_int("KVMWEB_DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one file: wait for locks instead of failing,
    # and let readers work while the worker writes (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "networks:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): 10 failed logins for one username, or from one client
# address, within 15 minutes refuse further logins for it until 15 minutes pass without a
# failure. Only password logins (pages, Django admin) are counted and refused: API tokens
# and existing sessions never go through it. `manage.py axes_reset` lifts every lockout.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("KVMWEB_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("KVMWEB_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one alone locks out
AXES_LOCKOUT_CALLABLE = "networks.views.accounts.lockout_response"
AXES_CLIENT_IP_CALLABLE = "networks.views.accounts.login_client_address"
AXES_VERBOSE = False  # no banner on every manage.py command

# HTTP security. Always: no MIME sniffing, no referrer to other sites, no framing, session
# cookie out of scripts' reach, and a Content-Security-Policy the pages satisfy (no inline
# script or style: htmx's own indicator style is switched off in base.html).
KVMWEB_HTTPS = env_bool("KVMWEB_HTTPS", False)
KVMWEB_BEHIND_PROXY = env_bool("KVMWEB_BEHIND_PROXY", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = KVMWEB_HTTPS
SECURE_SSL_REDIRECT = KVMWEB_HTTPS
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if KVMWEB_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = KVMWEB_HTTPS
if KVMWEB_BEHIND_PROXY:
    # Only behind a proxy that sets this header itself (and drops the client's own).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "object-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("KVMWEB_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "networks.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "networks.api.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "kvmweb API",
    "DESCRIPTION": "libvirt/KVM networking across a fleet of hypervisor hosts.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "ENUM_NAME_OVERRIDES": {
        "OperationKindEnum": "networks.choices.OperationKind",
        "OperationStatusEnum": "networks.choices.OperationStatus",
        "DnsRecordKindEnum": "networks.choices.DnsRecordKind",
        "ForwardInterfaceKindEnum": "networks.choices.ForwardInterfaceKind",
    },
}

# Celery: the broker carries task ids only; the Operation row is the source of truth.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "kvmweb"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("KVMWEB_TASKS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True

KVMWEB_SYNC_INTERVAL = env_int("KVMWEB_SYNC_INTERVAL", 300, minimum=10)
CELERY_BEAT_SCHEDULE = {
    "sync-all-hosts": {
        "task": "networks.tasks.sync_all_hosts",
        "schedule": float(KVMWEB_SYNC_INTERVAL),
    },
}
# Operation liveness: a running operation's worker marks it alive every HEARTBEAT seconds; one
# silent for STALE seconds is recovered (its worker died). A queued one whose message is older
# than REDISPATCH seconds is sent again (the broker may have lost it). RECOVERY_INTERVAL: how
# often beat looks.
KVMWEB_HEARTBEAT_SECONDS = env_int("KVMWEB_HEARTBEAT_SECONDS", 10, minimum=1)
KVMWEB_OPERATION_STALE_SECONDS = env_int("KVMWEB_OPERATION_STALE_SECONDS", 60, minimum=2)
KVMWEB_REDISPATCH_SECONDS = env_int("KVMWEB_REDISPATCH_SECONDS", 120, minimum=5)
KVMWEB_RECOVERY_INTERVAL = env_int("KVMWEB_RECOVERY_INTERVAL", 30, minimum=1)
if KVMWEB_OPERATION_STALE_SECONDS <= 2 * KVMWEB_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("KVMWEB_OPERATION_STALE_SECONDS must exceed twice KVMWEB_HEARTBEAT_SECONDS")
CELERY_BEAT_SCHEDULE["recover-operations"] = {
    "task": "networks.tasks.recover_operations",
    "schedule": float(KVMWEB_RECOVERY_INTERVAL),
}
# An Operation that waits this long for a busy network is retried this many times.
KVMWEB_LOCK_RETRY_SECONDS = env_int("KVMWEB_LOCK_RETRY_SECONDS", 2, minimum=1)
KVMWEB_LOCK_RETRY_MAX = env_int("KVMWEB_LOCK_RETRY_MAX", 300, minimum=1)
# Seconds a host may stay silent: opening a connection waits this long at most, and libvirt
# keepalive drops an open connection whose host stops answering for about as long.
KVMWEB_HOST_CALL_TIMEOUT = env_int("KVMWEB_HOST_CALL_TIMEOUT", 30, minimum=4)

# Port forwards, applied by the host worker on its hypervisor (networks/forwarding/engine.py).
# (an empty value means the default, as .env.example leaves some empty)
KVMWEB_LIBVIRT_HOOKS_DIR = env_str("KVMWEB_LIBVIRT_HOOKS_DIR", "") or "/etc/libvirt/hooks"
# comma-separated: the modular daemons are two (/run/virtqemud.pid,/run/virtnetworkd.pid)
KVMWEB_LIBVIRTD_PIDFILE = env_str("KVMWEB_LIBVIRTD_PIDFILE", "") or "/run/libvirtd.pid"
KVMWEB_LIBVIRT_QEMU_STATE_DIR = env_str("KVMWEB_LIBVIRT_QEMU_STATE_DIR", "") or "/run/libvirt/qemu"
KVMWEB_FORWARD_RULES_FILE = env_str("KVMWEB_FORWARD_RULES_FILE", "") or str(DATA_DIR / "forwards" / "rules.json")
# Where the network hook leaves a marker per net-update for the host worker's event watcher
# (empty: `network-updates` next to the rules file).
KVMWEB_NETWORK_UPDATES_DIR = env_str("KVMWEB_NETWORK_UPDATES_DIR", "")
# The host worker writes Host.worker_seen_at this often; the UI calls a host worker absent
# after three missed beats.
KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS = env_int("KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS", 30, minimum=1)
# Set by scripts/host-worker.sh: the name of the host this worker runs on (empty elsewhere).
KVMWEB_HOST_WORKER = env_str("KVMWEB_HOST_WORKER", "")
# How the host worker reaches the libvirt of the hypervisor it runs on (not the host's stored
# URI, which is how central workers reach it from afar); checked like any host URI.
KVMWEB_HOST_WORKER_URI = env_str("KVMWEB_HOST_WORKER_URI", "") or "qemu:///system"
# How often the host worker checks its host's forward rules (and re-applies them when a
# guest's address or network changed since they were applied).
KVMWEB_FORWARD_CHECK_SECONDS = env_int("KVMWEB_FORWARD_CHECK_SECONDS", 60, minimum=1)
# Event watchers (networks/services/watch.py, `manage.py watchhosts`, and inside each host
# worker): net-update changes emit no libvirt event, so every XML_DIGEST seconds a watcher
# compares each network's live XML with the mirror; a lost host is retried after 1, 2, 4 …
# seconds, at most WATCH_RETRY_MAX apart.
KVMWEB_XML_DIGEST_SECONDS = env_int("KVMWEB_XML_DIGEST_SECONDS", 15, minimum=1)
KVMWEB_WATCH_RETRY_MAX_SECONDS = env_int("KVMWEB_WATCH_RETRY_MAX_SECONDS", 30, minimum=1)


def env_dirs(name: str, default: str) -> list[str]:
    """A comma-separated list of absolute directories."""
    dirs = env_list(name, default)
    relative = [d for d in dirs if not os.path.isabs(d)]
    if relative:
        raise ImproperlyConfigured(f"{name} must list absolute directories, got {', '.join(relative)}")
    return dirs


# Host URIs: a test-driver file must lie under one of these directories (test:///default is
# always allowed), and a file or socket named by socket=, keyfile=, pkipath= or known_hosts=
# under one of the others. Symlinks are resolved before the check.
KVMWEB_TEST_DRIVER_DIRS = env_dirs("KVMWEB_TEST_DRIVER_DIRS", str(BASE_DIR / "demo"))
KVMWEB_URI_PATHS_ALLOWED = env_dirs("KVMWEB_URI_PATHS_ALLOWED", "/run/libvirt,/var/run/libvirt,/etc/kvmweb")


def env_option_names(name: str) -> list[str]:
    """A comma-separated list of dnsmasq option names (a leading -- is dropped)."""
    names = [item.lower().removeprefix("--") for item in env_list(name, "")]
    bad = [item for item in names if not item.replace("-", "").isalnum() or not item.isascii()]
    if bad:
        raise ImproperlyConfigured(f"{name} lists dnsmasq option names such as log-queries, got {', '.join(bad)}")
    return names


# dnsmasq options a network's XML may carry (<dnsmasq:options>), by name: libvirt hands them
# to the network's dnsmasq, which runs as root. Options that run a program or name a file
# stay refused even when listed (networks/services/xmlcheck.py).
KVMWEB_DNSMASQ_OPTIONS_ALLOWED = env_option_names("KVMWEB_DNSMASQ_OPTIONS_ALLOWED")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("KVMWEB_LOG_LEVEL", "INFO")},
}
