#!/usr/bin/env bash
# Shared set-up for the quick-start commands: a virtualenv with the project, and the local
# services (Redis, and PostgreSQL for the tests) started if they are not already answering.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # also when sourced: $0 is then the shell

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

apt_install() {
    command -v apt-get >/dev/null || { log "no apt-get: install $* yourself"; return 1; }
    if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq >/dev/null || true; _APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

setup_python() {
    local py=${PYTHON:-python3}
    "$py" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
        || { log "Python >= 3.11 is required"; exit 2; }
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        "$py" -m venv .venv
        .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    fi
    local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$1
    if [ ! -f "$stamp" ]; then
        log "installing motcua-relay${1:+[$1]} into .venv"
        .venv/bin/pip install -q -e ".${1:+[$1]}" 2>&1 | grep -vE "^(WARNING: Location|\s*$)" >&2 || true
        .venv/bin/python -c "import celery, sqlalchemy, fastapi" && touch "$stamp"
    fi
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c5 <&3 | grep -q PONG) 2>/dev/null; }

ensure_redis() {
    redis_up && return 0
    command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server || return 1; }
    log "starting redis-server on 127.0.0.1:6379 (no persistence)"
    mkdir -p var
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --maxmemory-policy noeviction --dir "$PWD/var" --logfile "$PWD/var/redis.log"
    for _ in $(seq 50); do redis_up && return 0; sleep 0.1; done
    log "redis-server did not answer"; return 1
}

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

ensure_postgres() {
    pg_up && return 0
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        log "installing postgresql"; apt_install postgresql || return 1
        local conf; conf=$(ls -d /etc/postgresql/*/main | head -1)
        printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
            | as_root tee "$conf/pg_hba.conf" >/dev/null
    fi
    log "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 100); do pg_up && return 0; sleep 0.1; done
    log "PostgreSQL did not answer on 127.0.0.1:5432"; return 1
}

chromium_up() { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }

ensure_chromium() {
    # Debian's Chromium for the console's browser tests (Playwright drives it by its executable path)
    chromium_up && return 0
    log "installing chromium (Debian's package) for the browser tests"
    apt_install chromium || { log "could not install chromium: the browser tests will fail"; return 1; }
}

ensure_promtool() {
    # promtool checks the Prometheus configuration and alert rules (tests/test_deploy.py): taken from Debian's
    # package prometheus, unpacked into .venv/bin, not installed (installing it would start a Prometheus server)
    command -v promtool >/dev/null || [ -x .venv/bin/promtool ] && return 0
    command -v apt-get >/dev/null || return 1
    if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq >/dev/null || true; _APT_UPDATED=1; fi
    log "unpacking promtool (Debian's package prometheus) into .venv/bin"
    local tmp; tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb root); then
        cp "$tmp/root/usr/bin/promtool" .venv/bin/
    else
        log "could not unpack promtool: its test is skipped"
    fi
    rm -rf "$tmp"
}
