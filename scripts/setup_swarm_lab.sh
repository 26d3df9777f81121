#!/usr/bin/env bash
# What the swarm lab needs beyond the Docker engine (scripts/setup_docker.sh): `ip` (namespaces,
# veths, the bridge), `nsenter`/`unshare` (each node's mount and UTS namespaces) and `nft` (the
# lab compares the host's firewall rules at `up` and `down`: without nft, a first `up` fails).
# The lab itself is ../shared/swarm-lab/swarm-lab.sh; tests/test_swarm.py and scripts/bench_swarm.py
# use it. Idempotent; as root; ~10 ms when everything is present.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
declare -A PACKAGE_OF=([ip]=iproute2 [nsenter]=util-linux [unshare]=util-linux [nft]=nftables)
missing=()
for cmd in ip nsenter unshare nft; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$cmd]}")
done
if ((${#missing[@]} == 0)); then
    echo "setup_swarm_lab: ip, nsenter, unshare and nft present"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "setup_swarm_lab: must run as root to install ${missing[*]}" >&2; exit 1; }
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "setup_swarm_lab: installing ${packages[*]}"
apt() { DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 "$@" </dev/null; }
apt update >/dev/null
apt install --no-install-recommends "${packages[@]}" >/dev/null
for cmd in ip nsenter unshare nft; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "setup_swarm_lab: $cmd still missing" >&2; exit 1; }
done
echo "setup_swarm_lab: installed ${packages[*]}"
