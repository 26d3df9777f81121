# shellcheck shell=bash
# Progress lines with elapsed time, shared by the set-up scripts.
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
