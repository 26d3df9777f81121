"""A step of every sandbox image's build: make each environment's private files readable by root only.

``sandboxes/Dockerfile`` runs ``python -m openenv_ws.sandbox.docker.private [TARGET...]`` as root once
the project is installed (and again after ``--with-path`` code is copied in). For every registered
environment and every ``module:Class`` given, the files its ``SandboxSettings.private_files`` names
(hidden tests, checkers) become ``root:root`` and lose every bit for the group and the others: the
agent's uid can neither read them nor find them by grepping the filesystem. An environment that does
not import in this image (its extra packages are elsewhere) cannot run here and is skipped; the
worker refuses an env whose private files it finds readable by the agent anyway.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from ...confine import private_paths
from ...errors import OpenEnvWSError
from ...registry import builtin_envs, load_target


def _hide(path: Path) -> None:
    os.chown(path, 0, 0, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(path.lstat().st_mode) & 0o700)


def hide_private_files(targets: list[str]) -> list[Path]:
    """Hide the private files of every registered env and of ``targets``; the paths hidden."""
    hidden: list[Path] = []
    for target in dict.fromkeys([*builtin_envs().values(), *targets]):
        try:
            env_cls = load_target(target)
        except OpenEnvWSError as exc:
            print(f"private files: skipped {target} (it does not import here: {exc.message})")
            continue
        for path in private_paths(env_cls):
            if not path.exists():
                continue
            for member in [path, *path.rglob("*")] if path.is_dir() else [path]:
                _hide(member)
            hidden.append(path)
    return hidden


def main(argv: list[str] | None = None) -> None:
    for path in hide_private_files(sys.argv[1:] if argv is None else argv):
        print(f"private files: {path} is readable by root only")


if __name__ == "__main__":
    main()
