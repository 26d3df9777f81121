# shellcheck shell=bash
# apt-get for the set-up scripts: non-interactive, retried, its output in a log.
# Source it after timing.sh (it uses `log`); APT_LOG names the log (default /var/log/openenv-setup-apt.log).

APT_LOG=${APT_LOG:-/var/log/openenv-setup-apt.log}

apt_get() { # apt_get ARGS...: 3 attempts, output to $APT_LOG
    local i
    for i in 1 2 3; do
        if DEBIAN_FRONTEND=noninteractive apt-get -y -q \
            -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold \
            "$@" </dev/null >>"$APT_LOG" 2>&1; then
            return 0
        fi
        log "apt-get $1 failed (attempt $i/3)"
        ((i < 3)) && sleep $((i * 5))
    done
    echo "----- last 30 lines of $APT_LOG -----" >&2
    tail -n 30 "$APT_LOG" >&2 || true
    return 1
}
