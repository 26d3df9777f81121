#!/usr/bin/env bash
# The whole test suite on a fresh machine: install the project and its test tools,
# install and start the Docker engine and build the local base image (Docker tests
# are never skipped), install Debian's Chromium for the browser tests and what the swarm
# lab needs, then run every test (lint included).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m pip install --quiet --root-user-action=ignore -e ".[test]"
bash scripts/setup_docker.sh
bash scripts/setup_chromium.sh
bash scripts/setup_swarm_lab.sh
exec python3 -m pytest -q "$@"
