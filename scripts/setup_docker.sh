#!/usr/bin/env bash
# Install (if needed) and start a local Docker engine, then build the local
# sandbox base image openenv-ws/python-base:3.11 (if missing).
#
# Idempotent; run as root; non-interactive (safe in CI with no stdin).
# ~0.2-0.5 s when everything is already in place.
#
# Environment:
#   OPENENV_BASE_IMAGE      base image tag     (default openenv-ws/python-base:3.11)
#   SKIP_BASE_IMAGE=1       do not build the base image
#   FORCE=1                 rebuild the base image even if it exists
#   DOCKERD_ARGS            extra dockerd arguments (word-split)
#   DOCKERD_LOG             dockerd log file   (default /var/log/dockerd.log)
#   APT_LOG                 apt-get output     (default /var/log/openenv-setup-apt.log)
#   OPENENV_CGROUP_VERSION  1|2: hierarchy to mount when /sys/fs/cgroup is not mounted at all (default 1)
#   DOCKER_DAEMON_JSON      the engine's configuration file (default /etc/docker/daemon.json): the extra
#                           OCI runtimes (runsc, gVisor; crun) are registered there, and a running dockerd is told (SIGHUP)
#   OPENENV_HYBRID_CGROUPS  move|keep: on a hybrid cgroup host (v1 plus a cgroup2 at /sys/fs/cgroup/unified),
#                           move the controllers nothing uses off cgroup2 so that crun can start containers
#                           (default move; keep leaves the host's layout alone and the backend uses runc)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
BASE_IMAGE=${OPENENV_BASE_IMAGE:-openenv-ws/python-base:3.11}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
APT_LOG=${APT_LOG:-/var/log/openenv-setup-apt.log}
DOCKER_PIDFILE=/var/run/docker.pid
DAEMON_JSON=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid
READY_BUDGET_S=60
LAUNCH_ATTEMPTS=3
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# ---------------------------------------------------------------- helpers
LOG_TAG=setup_docker
# shellcheck source=scripts/timing.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/timing.sh"

# is_live PID [NAME]: PID exists, is not a zombie and (if NAME is given) its comm is NAME
is_live() {
    local pid=$1 name=${2:-} stat state comm
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ $state != Z && $state != X && $state != x ]] || return 1
    if [[ -n $name ]]; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
        [[ $comm == "$name" ]] || return 1
    fi
    return 0
}

# pidfile_names_live FILE NAME: FILE holds the pid of a live, non-zombie NAME process
pidfile_names_live() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(tr -dc '0-9' <"$1" 2>/dev/null) || return 1
    is_live "$pid" "$2"
}

docker_ok() { timeout 5 docker version >/dev/null 2>&1 </dev/null; }

# wait_for_docker BUDGET_S [PID]: poll every 0.1 s. 0 = ready, 1 = timeout, 2 = PID died
wait_for_docker() {
    local budget_us=$(($1 * 1000000)) pid=${2:-} start
    now_us
    start=$NOW_US
    while :; do
        docker_ok && return 0
        if [[ -n $pid ]] && ! is_live "$pid"; then
            # a launch via setsid may have forked; trust the pid file then
            pidfile_names_live "$DOCKER_PIDFILE" dockerd || return 2
        fi
        now_us
        ((NOW_US - start < budget_us)) || return 1
        sleep 0.1
    done
}

dump_log() {
    echo "----- last 30 lines of $DOCKERD_LOG -----" >&2
    tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || echo "(no log)" >&2
    echo "-----------------------------------------" >&2
}


# ---------------------------------------------------------------- 0. checks
[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo bash $0)"

# ---------------------------------------------------------------- 1. packages
step_start() { now_us; STEP_T=$NOW_US; }
step_start
declare -A PKG_FOR_CMD=([dockerd]=docker.io [containerd]=containerd [iptables]=iptables [debootstrap]=debootstrap [runsc]=runsc [crun]=crun)
missing=()
for cmd in dockerd containerd iptables debootstrap runsc crun; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR_CMD[$cmd]}")
done
if ((${#missing[@]})); then
    log "apt: installing ${missing[*]} (output: $APT_LOG)"
    apt_get update || die "apt-get update failed"
    apt_get install --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
    for cmd in dockerd containerd iptables debootstrap runsc crun; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing ${missing[*]}"
    done
    fmt_since "$STEP_T"
    log "apt: done in $SINCE"
else
    log "packages: docker.io containerd iptables debootstrap runsc crun already present"
fi
command -v docker >/dev/null 2>&1 || die "no docker CLI in PATH"

# register_runtime NAME PATH [ARG...]: an OCI runtime in $DAEMON_JSON (other keys kept); status 0 if it changed
register_runtime() {
    mkdir -p "$(dirname -- "$DAEMON_JSON")"
    python3 - "$DAEMON_JSON" "$@" <<'PY'
import json, sys
from pathlib import Path
path, name, binary, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
config = json.loads(path.read_text() or "{}") if path.exists() else {}
entry = {"path": binary, **({"runtimeArgs": args} if args else {})}
if config.get("runtimes", {}).get(name) == entry:
    sys.exit(1)
config.setdefault("runtimes", {})[name] = entry
path.write_text(json.dumps(config, indent=2) + "\n")
PY
}
RUNTIMES=(runsc crun)
runtimes_changed=0
# gVisor (-B runtime=runsc): its ptrace platform (the others need /dev/kvm or a newer kernel interface), no
# network stack of its own (its netstack does not start here; sandboxes have --network none anyway), and
# leave to connect to a host Unix socket (the worker's /ipc/sock).
if register_runtime runsc "$(command -v runsc)" --platform=ptrace --network=none --host-uds=open; then
    runtimes_changed=1
    log "runtimes: runsc registered in $DAEMON_JSON"
fi
# crun: starts containers faster than runc (docs/benchmarks.md); -B runtime=auto picks it
if register_runtime crun "$(command -v crun)"; then
    runtimes_changed=1
    log "runtimes: crun registered in $DAEMON_JSON"
fi

# ---------------------------------------------------------------- 2. engine
mount_cgroups() {
    local fstype name _hier _num enabled mounted mnt
    if ! mountpoint -q /sys/fs/cgroup; then
        if [[ ${OPENENV_CGROUP_VERSION:-1} == 2 ]]; then
            mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
            log "cgroups: mounted cgroup2 on /sys/fs/cgroup"
            return 0
        fi
        mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
        log "cgroups: mounted tmpfs on /sys/fs/cgroup"
    fi
    fstype=$(stat -fc %T /sys/fs/cgroup)
    if [[ $fstype == cgroup2fs ]]; then
        return 0 # unified cgroup v2: nothing to mount
    fi
    # cgroup v1: mount each controller docker/runc use that is enabled but not mounted anywhere
    mounted=" $(awk '$3 == "cgroup" { print $4 }' /proc/mounts | tr ',\n' '  ') "
    while read -r name _hier _num enabled; do
        [[ $name == \#* || $enabled != 1 ]] && continue
        case $name in
        cpu | cpuacct | cpuset | memory | devices | freezer | blkio | pids) ;;
        *) continue ;; # optional controllers (net_cls, hugetlb, ...) are left alone
        esac
        [[ $mounted == *" $name "* ]] && continue
        mnt=/sys/fs/cgroup/$name
        mkdir -p "$mnt"
        if mount -t cgroup -o "$name" cgroup "$mnt"; then
            log "cgroups: mounted v1 controller $name"
        else
            log "cgroups: WARNING could not mount $name (bound to another hierarchy?)"
        fi
    done </proc/cgroups
}

remove_stale_pidfile() { # FILE NAME
    local pid
    [[ -e $1 ]] || return 0
    pidfile_names_live "$1" "$2" && return 0
    pid=$(tr -dc '0-9' <"$1" 2>/dev/null || true)
    rm -f "$1"
    log "removed stale $1 (pid '${pid}' is not a live $2)"
}

stop_pid() { # stop a dockerd we started and that never answered
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        is_live "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# runtimes_missing: status 0 if the running dockerd lacks one of $RUNTIMES
runtimes_missing() {
    local known name
    known=$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)
    for name in "${RUNTIMES[@]}"; do
        [[ $known == *"\"$name\""* ]] || return 0
    done
    return 1
}

# free_hybrid_controllers: on a cgroup v1 host with cgroup2 also mounted (hybrid), crun refuses to
# start containers while any controller sits on the v2 side ("cgroups in hybrid mode not supported");
# move each unused one (nothing enabled it in cgroup.subtree_control) to a v1 hierarchy of its own.
# Conditional (OPENENV_HYBRID_CGROUPS=keep skips it) and never fatal: it changes the host's cgroup
# layout, so it acts only where crun is registered with the engine, the host is hybrid and the
# cgroup2 root has no controller enabled (the kernel refuses to move one that is in use anyway);
# where a step fails (a read-only /sys/fs/cgroup, a kernel without that v1 controller) it warns and
# goes on: runtime=auto then gives way to runc, as on any host where crun cannot start containers.
free_hybrid_controllers() {
    local unified=/sys/fs/cgroup/unified name controllers enabled
    if [[ ${OPENENV_HYBRID_CGROUPS:-move} == keep ]]; then
        log "cgroups: layout kept (OPENENV_HYBRID_CGROUPS=keep)"
        return 0
    fi
    [[ -r $unified/cgroup.controllers ]] || return 0 # not hybrid: nothing to do
    [[ $(docker info --format '{{json .Runtimes}}' 2>/dev/null || true) == *'"crun"'* ]] || return 0
    controllers=$(cat "$unified/cgroup.controllers" 2>/dev/null || true)
    enabled=$(cat "$unified/cgroup.subtree_control" 2>/dev/null || echo '?')
    [[ -n $controllers ]] || return 0
    if [[ -n $enabled ]]; then
        log "cgroups: controllers '$enabled' are in use on cgroup2: left there (crun will give way to runc)"
        return 0
    fi
    for name in $controllers; do
        if mountpoint -q "/sys/fs/cgroup/$name" 2>/dev/null; then
            log "cgroups: WARNING /sys/fs/cgroup/$name is already a mount point: $name left on cgroup2"
        elif mkdir -p "/sys/fs/cgroup/$name" 2>/dev/null && mount -t cgroup -o "$name" cgroup "/sys/fs/cgroup/$name" 2>/dev/null; then
            log "cgroups: moved controller $name from cgroup2 to v1 (crun needs no controller on cgroup2 in hybrid mode)"
        else
            rmdir "/sys/fs/cgroup/$name" 2>/dev/null || true
            log "cgroups: WARNING could not move $name off cgroup2: crun will give way to runc here"
        fi
    done
}

# reload_runtimes: a running dockerd rereads its runtimes on SIGHUP; wait until it lists them all
reload_runtimes() {
    local pid i
    pid=$(tr -dc '0-9' <"$DOCKER_PIDFILE" 2>/dev/null || true)
    is_live "$pid" dockerd || die "dockerd answers but $DOCKER_PIDFILE names no live dockerd: restart it to load $DAEMON_JSON"
    kill -HUP "$pid"
    for ((i = 0; i < 100; i++)); do
        runtimes_missing || return 0
        sleep 0.1
    done
    die "dockerd (pid $pid) did not load the runtimes of $DAEMON_JSON after SIGHUP"
}

step_start
if docker_ok; then
    log "engine: dockerd already answering"
    if ((runtimes_changed)) || runtimes_missing; then
        reload_runtimes
        log "engine: runtimes reloaded (SIGHUP): ${RUNTIMES[*]}"
    fi
elif pidfile_names_live "$DOCKER_PIDFILE" dockerd; then
    pid=$(tr -dc '0-9' <"$DOCKER_PIDFILE")
    log "engine: dockerd (pid $pid) is starting; waiting up to ${READY_BUDGET_S}s"
    if ! wait_for_docker "$READY_BUDGET_S"; then
        dump_log
        die "dockerd (pid $pid) did not answer within ${READY_BUDGET_S}s"
    fi
    fmt_since "$STEP_T"
    log "engine: dockerd answering after $SINCE"
else
    mount_cgroups
    read -r -a dockerd_args <<<"${DOCKERD_ARGS:-}"
    mkdir -p "$(dirname -- "$DOCKERD_LOG")"
    ready=0
    for ((attempt = 1; attempt <= LAUNCH_ATTEMPTS; attempt++)); do
        remove_stale_pidfile "$DOCKER_PIDFILE" dockerd
        remove_stale_pidfile "$CONTAINERD_PIDFILE" containerd
        now_us
        launch_t=$NOW_US
        log "engine: starting dockerd${dockerd_args[*]:+ ${dockerd_args[*]}} (attempt $attempt/$LAUNCH_ATTEMPTS, log $DOCKERD_LOG)"
        printf '=== %s setup_docker.sh: starting dockerd %s (attempt %d) ===\n' \
            "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${dockerd_args[*]:-(no args)}" "$attempt" >>"$DOCKERD_LOG"
        # every fd redirected + own session: the daemon must not hold the caller's pipes
        setsid nohup dockerd "${dockerd_args[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 &
        pid=$!
        rc=0
        wait_for_docker "$READY_BUDGET_S" "$pid" || rc=$?
        if ((rc == 0)); then
            ready=1
            fmt_since "$launch_t"
            log "engine: dockerd (pid $(tr -dc '0-9' <"$DOCKER_PIDFILE" 2>/dev/null || echo "$pid")) answering after $SINCE"
            break
        elif ((rc == 2)); then
            log "engine: dockerd exited during start-up"
        else
            log "engine: dockerd not answering after ${READY_BUDGET_S}s; stopping it"
            stop_pid "$pid"
        fi
        sleep 1
    done
    if ((!ready)); then
        dump_log
        die "could not start dockerd after $LAUNCH_ATTEMPTS attempts"
    fi
fi
free_hybrid_controllers
versions=$(docker version --format 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?')
log "engine: $versions"

# ---------------------------------------------------------------- 3. base image
if [[ ${SKIP_BASE_IMAGE:-0} == 1 ]]; then
    log "base image: skipped (SKIP_BASE_IMAGE=1)"
elif [[ ${FORCE:-0} != 1 ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image: $BASE_IMAGE present"
else
    step_start
    log "base image: building $BASE_IMAGE (sandboxes/build_base_image.sh)"
    OPENENV_BASE_IMAGE=$BASE_IMAGE bash "$REPO_ROOT/sandboxes/build_base_image.sh" </dev/null
    fmt_since "$STEP_T"
    log "base image: built in $SINCE"
fi
log "done"
