#!/usr/bin/env bash
# The main job: install the project, start a server, run a few real episodes, stop it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m pip install --quiet --root-user-action=ignore -e .
exec python3 scripts/demo.py "$@"
