#!/usr/bin/env bash
# Install Debian's Chromium, its driver and its headless shell on this machine, for the browser tests
# (envs/web on the subprocess backend, which prefers the lighter chromium-headless-shell, and anything
# else that drives a headless browser on the host).
#
# Idempotent; run as root; non-interactive (safe in CI with no stdin). Does nothing (in ~10 ms)
# when /usr/bin/chromium and /usr/bin/chromium-headless-shell are already there.
#
# Environment:
#   APT_LOG   apt-get output (default /var/log/openenv-setup-apt.log)
set -euo pipefail

PACKAGES=(chromium chromium-driver chromium-headless-shell)
BINARIES=(/usr/bin/chromium /usr/bin/chromium-headless-shell)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

LOG_TAG=setup_chromium
# shellcheck source=scripts/timing.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/timing.sh"
# shellcheck source=scripts/apt.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/apt.sh"

present() {
    local binary
    for binary in "${BINARIES[@]}"; do
        [[ -x $binary ]] || return 1
    done
}
if present; then
    log "chromium already present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || die "chromium is missing and installing it needs root (try: sudo bash $0)"
command -v apt-get >/dev/null 2>&1 || die "chromium is missing and this is no Debian-like system: install it by hand"

log "apt: installing ${PACKAGES[*]} (output: $APT_LOG)"
apt_get update || die "apt-get update failed"
apt_get install --no-install-recommends "${PACKAGES[@]}" || die "apt-get install ${PACKAGES[*]} failed"
present || die "${BINARIES[*]} still missing after installing ${PACKAGES[*]}"
log "installed $(/usr/bin/chromium --version 2>/dev/null)"
