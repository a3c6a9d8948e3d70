# Shared steps of scripts/run and scripts/test; sourced, not run.
# Every step is idempotent: a second run reuses what the first one made.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
VAR="$REPO/var"
PRIVATE_REDIS_PORT="${PRIVATE_REDIS_PORT:-6390}"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# The hosts run Debian 12 / Proxmox VE 8, whose Python is 3.11.
find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    die "Python 3.11 or newer is needed: apt-get install python3 (or set PYTHON=/path/to/python3.11)."
}

# ensure_venv REQUIREMENTS_FILE: create .venv if missing and install the pinned packages,
# skipping pip when the requirement files have not changed since the last install.
ensure_venv() {
    local requirements="$1" python stamp wanted
    if [ ! -x "$VENV/bin/python" ]; then
        python="$(find_python)"
        if ! "$python" -c 'import ensurepip' 2>/dev/null; then
            if is_root; then
                say "Installing python3-venv (needed to create .venv)…"
                apt_install python3-venv
            else
                die "$python cannot create a virtualenv: run 'apt-get install python3-venv' as root, then try again."
            fi
        fi
        say "Creating $VENV with $python…"
        "$python" -m venv "$VENV"
    fi
    stamp="$VENV/.installed-$(basename "$requirements")"
    wanted="$(cat requirements.txt "$requirements" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        say "Installing $requirements into .venv…"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$wanted" >"$stamp"
    fi
}

# ensure_libvirt_python: libvirt-python (requirements-libvirt.txt) in .venv, so the worker reads
# and changes libvirt domains. PyPI has only its source, which builds against this host's
# libvirt: it needs libvirt-dev and pkg-config (and a C compiler and Python's headers). As root
# on a host with libvirt, those are apt-installed first; anywhere else without them, one line
# says libvirt VMs will not be read, and nothing fails. Skipped when the pinned version is in.
ensure_libvirt_python() {
    local stamp wanted headers
    stamp="$VENV/.installed-requirements-libvirt.txt"
    wanted="$(sha256sum requirements-libvirt.txt | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && "$VENV/bin/python" -c 'import libvirt' 2>/dev/null; then
        return 0
    fi
    headers="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
    if is_root && package_installed libvirt0 &&
        { ! pkg-config --exists libvirt 2>/dev/null || ! command -v gcc >/dev/null || [ ! -e "$headers" ]; }; then
        say "Installing what libvirt-python builds with (libvirt-dev pkg-config gcc python3-dev)…"
        apt_install libvirt-dev pkg-config gcc python3-dev || say "apt-get could not install them."
    fi
    if ! pkg-config --exists libvirt 2>/dev/null; then
        say "libvirt VMs will not be read: libvirt-python builds only with libvirt-dev and pkg-config (apt-get install libvirt-dev pkg-config)."
        return 0
    fi
    say "Installing requirements-libvirt.txt into .venv (libvirt-python builds against this host's libvirt, about 10 s)…"
    if "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-libvirt.txt; then
        echo "$wanted" >"$stamp"
    else
        say "libvirt VMs will not be read: libvirt-python did not build (pip says why above)."
    fi
}

# write_private FILE TEXT: a file only its owner can read.
write_private() {
    (
        umask 077
        printf '%s\n' "$2" >"$1"
    )
}

# var/ holds what this install makes for itself: the secret key, the audit chain's key, the
# key that signs task messages (var/broker), SQLite, the private Redis. All readable only
# by the user that runs the app.
ensure_var() {
    mkdir -p "$VAR"
    chmod 700 "$VAR"
    if [ ! -s "$VAR/secret_key" ]; then
        write_private "$VAR/secret_key" "$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(50))')"
        say "Generated a secret key in var/secret_key."
    fi
    if [ ! -s "$VAR/audit_key" ]; then
        write_private "$VAR/audit_key" "$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))')"
        say "Generated the audit log's key in var/audit_key (keep it: the log cannot be verified without it)."
    fi
    if [ ! -s "$VAR/broker/signing.key" ] && [ -z "${BROKER_SIGNING_DIR:-}" ]; then
        "$VENV/bin/python" -c 'import sys; from webui.jobs.broker import generate_into; generate_into(sys.argv[1])' \
            "$VAR/broker" >&2
    fi
}

# ensure_admin: the first start creates an admin account and prints its one-time password.
ensure_admin() {
    "$VENV/bin/python" manage.py ensure_admin
}

# use_demo_tree MACHINE: lay out a real-world machine in var/demo/MACHINE (kept between runs)
# and point this run's worker at it, behind the kernel double. The demo keeps its own
# database there too (unless DATABASE_URL is set), so its host, jobs and accounts never
# mix with this host's, and its first start creates and prints its own admin.
use_demo_tree() {
    local machine="$1"
    "$VENV/bin/python" manage.py demo_tree "$machine" "$VAR/demo/$machine" || return 1
    export DATABASE_URL="${DATABASE_URL:-sqlite:///$VAR/demo/$machine/db.sqlite3}"
    export PASSTHROUGH_ROOT="$VAR/demo/$machine"
    export PASSTHROUGH_KERNEL=double
    export PASSTHROUGH_DEMO="$machine"
    export PASSTHROUGH_HOSTNAME="${PASSTHROUGH_HOSTNAME:-demo-$machine}"
    # Events of this machine's own PCI devices say nothing about the demo tree.
    export PASSTHROUGH_WATCH_UDEV=false
}

redis_answers() {
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys

import redis

try:
    sys.exit(0 if redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1, socket_timeout=2).ping() else 1)
except Exception:
    sys.exit(1)
PY
}

private_redis_url() {
    echo "redis://:$(cat "$VAR/redis_password")@127.0.0.1:$PRIVATE_REDIS_PORT/0"
}

# ensure_redis: export a REDIS_URL that answers, or say why not and return 1. An explicit
# REDIS_URL must answer as it is and carry a password (or be a unix socket), unless
# PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER=true; without one, a private redis-server is
# started (or reused) on 127.0.0.1:$PRIVATE_REDIS_PORT with a password, no persistence, its
# files in var/. A Redis that answers on 6379 without a password is never taken: any local
# process could drive the root worker through it. Sets STARTED_PRIVATE_REDIS=1 when this
# call started it.
STARTED_PRIVATE_REDIS=0
ensure_redis() {
    if [ -n "${REDIS_URL:-}" ]; then
        if ! "$VENV/bin/python" - "$REDIS_URL" "${PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER:-false}" <<'PY'; then
import sys

from webui.jobs.broker import BrokerRefused, check_broker_url

try:
    check_broker_url(sys.argv[1], sys.argv[2].strip().lower() in ("1", "true", "yes", "on"))
except BrokerRefused as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
PY
            return 1
        fi
        redis_answers "$REDIS_URL" && return
        say "REDIS_URL is set but no Redis answers there: start it, or unset REDIS_URL to use a private one."
        return 1
    fi
    if [ -s "$VAR/redis_password" ] && redis_answers "$(private_redis_url)"; then
        REDIS_URL="$(private_redis_url)"
        export REDIS_URL
        say "Reusing the private Redis on 127.0.0.1:$PRIVATE_REDIS_PORT."
        return
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        say "redis-server is not installed, and this app starts a private one with a password:"
        say "run 'apt-get install redis-server' as root (or set REDIS_URL to a Redis with a password)."
        return 1
    fi
    if [ ! -s "$VAR/redis_password" ]; then
        write_private "$VAR/redis_password" "$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
    fi
    # The password goes in a 0600 file, not on the command line where every user can read it.
    write_private "$VAR/redis.conf" "bind 127.0.0.1
port $PRIVATE_REDIS_PORT
requirepass $(cat "$VAR/redis_password")
save \"\"
appendonly no
daemonize yes
pidfile $VAR/redis.pid
logfile $VAR/redis.log
dir $VAR"
    say "Starting a private redis-server on 127.0.0.1:$PRIVATE_REDIS_PORT (log: var/redis.log)…"
    if ! redis-server "$VAR/redis.conf"; then
        say "redis-server did not start; see var/redis.log."
        return 1
    fi
    local tries=0
    until redis_answers "$(private_redis_url)"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ]; then
            say "The private redis-server does not answer on port $PRIVATE_REDIS_PORT; see var/redis.log"
            say "(is the port taken? set PRIVATE_REDIS_PORT)."
            return 1
        fi
        sleep 0.1
    done
    REDIS_URL="$(private_redis_url)"
    export REDIS_URL
    STARTED_PRIVATE_REDIS=1
}

stop_private_redis() {
    local pid
    pid="$(cat "$VAR/redis.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local tries=0
        while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 50 ]; do
            tries=$((tries + 1))
            sleep 0.1
        done
        say "Stopped the private Redis."
    fi
}

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# apt_install PACKAGE...: only what is named and what it depends on (no recommends: chromium
# alone would pull in a desktop's worth), with apt's progress lines shown (-q leaves out
# only the animated bars), so a slow download is seen to move.
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}
