"""Fill deploy/wheels/ for `docker compose build`: openenv-ws and every dependency, as wheels from this host.

    python scripts/compose_wheels.py                      # then: docker compose up -d --build --wait
    python scripts/compose_wheels.py gymnasium numpy      # plus the extra packages an env needs

The images docker-compose.yml builds (the server's, and the sandbox image its sessions run in)
install only from these wheels, with no network: the same recipe as ``openenv-ws build``
(openenv_ws/sandbox/docker/images.py), so it works on machines that reach only a package index, or
none once the wheels are here. Re-run it after changing the code: the images install the
project from its wheel.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import docker

from openenv_ws.sandbox.docker.images import BuildError, collect_wheels

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "deploy" / "wheels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", help="extra requirement specifiers (an env's extra_packages)")
    parser.add_argument("--arch", help="the engine's architecture (default: asked from the engine)")
    args = parser.parse_args(argv)
    arch = args.arch
    if arch is None:
        client = docker.from_env()
        try:
            arch = client.version().get("Arch", "amd64")
        finally:
            client.close()
    shutil.rmtree(WHEELS, ignore_errors=True)  # no stale project wheel next to the new one
    WHEELS.mkdir(parents=True)
    try:
        names = collect_wheels(ROOT, WHEELS, args.packages, arch)
    except BuildError as exc:
        print(f"compose_wheels: {exc}", file=sys.stderr)
        return 1
    print(f"{len(names)} wheels in {WHEELS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
