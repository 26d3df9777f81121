# shellcheck shell=bash
# Progress lines with elapsed time, and apt-get with retries, shared by the set-up scripts.
# Source it, then set LOG_TAG; `log MSG` prints "[LOG_TAG +12.3s] MSG", `die MSG` logs and exits 1.

now_us() { # sets NOW_US (microseconds since the epoch)
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        NOW_US=${EPOCHREALTIME//[!0-9]/}
    else
        NOW_US=$(($(date +%s%N) / 1000))
    fi
}
fmt_since() { # fmt_since START_US -> sets SINCE ("12.3s")
    now_us
    local ds=$(((NOW_US - $1) / 100000))
    printf -v SINCE '%d.%ds' $((ds / 10)) $((ds % 10))
}
now_us
T0=$NOW_US
log() {
    fmt_since "$T0"
    printf '[%s +%s] %s\n' "${LOG_TAG:-log}" "$SINCE" "$*"
}
die() {
    log "ERROR: $*"
    exit 1
}
apt_get() { # apt_get ARGS...: 3 attempts, output to $APT_LOG (set before calling)
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
