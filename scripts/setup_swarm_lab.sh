#!/usr/bin/env bash
# What the swarm lab needs beyond the Docker engine (scripts/setup_docker.sh): `ip` (namespaces,
# veths, the bridge), `nsenter`/`unshare`/`mountpoint`/`setsid` (each node's mount and UTS
# namespaces), `sysctl` (the switch netns's bridge settings; procps is not in a minimal Debian)
# and `nft` (the lab compares the host's firewall rules at `up` and `down`: without nft, a first
# `up` fails). The lab itself is scripts/swarm-lab.sh; tests/test_swarm.py and
# scripts/bench_swarm.py use it. Idempotent; as root; ~10 ms when everything is present.
#
#   APT_LOG   apt-get output (default /var/log/openenv-setup-apt.log)
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
APT_LOG=${APT_LOG:-/var/log/openenv-setup-apt.log}
LOG_TAG=setup_swarm_lab
# shellcheck source=scripts/timing.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/timing.sh"

declare -A PACKAGE_OF=(
    [ip]=iproute2 [nsenter]=util-linux [unshare]=util-linux [mountpoint]=util-linux [setsid]=util-linux
    [sysctl]=procps [nft]=nftables
)
missing=()
for cmd in "${!PACKAGE_OF[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$cmd]}")
done
if ((${#missing[@]} == 0)); then
    log "ip, nsenter, unshare, mountpoint, setsid, sysctl and nft present"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || die "must run as root to install ${missing[*]}"
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
log "apt: installing ${packages[*]} (output: $APT_LOG)"
apt_get update || die "apt-get update failed"
apt_get install --no-install-recommends "${packages[@]}" || die "apt-get install ${packages[*]} failed"
for cmd in "${!PACKAGE_OF[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing"
done
log "installed ${packages[*]}"
