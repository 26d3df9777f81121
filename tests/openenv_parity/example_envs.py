"""Where the tests' ``echo_env`` and ``connect4_env`` come from: OpenEnv's own or our stand-ins.

OpenEnv's example environments are top-level packages in its repository's ``envs/`` folder and
are not on PyPI. With ``OPENENV_SRC`` naming a copy of that repository (the folder that holds
``envs/``), its packages are used; without it, the stand-ins in ``stand_ins/``, written for this
project with the same public API, so that these tests run in CI. The test process and the server
(which imports them through ``openenv_examples``) take the same choice, as the server inherits
``OPENENV_SRC``; a subprocess sandbox's worker gets the server's ``sys.path`` but not its other
variables, and keeps the folder it finds there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STAND_INS = Path(__file__).resolve().parent / "stand_ins"
NAMES = ("echo_env", "connect4_env")


def _holds_examples(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in NAMES)


def example_envs_dir() -> Path:
    """The folder that holds ``echo_env`` and ``connect4_env``."""
    src = os.environ.get("OPENENV_SRC")
    if not src:
        return STAND_INS
    envs = Path(src) / "envs"
    if not _holds_examples(envs):
        raise RuntimeError(
            f"OPENENV_SRC={src} holds no envs/echo_env and envs/connect4_env; unset it to use the stand-ins"
        )
    return envs


def put_example_envs_on_path() -> Path:
    """Make ``echo_env`` and ``connect4_env`` importable (first on ``sys.path``); returns their folder."""
    if not os.environ.get("OPENENV_SRC"):
        for entry in sys.path:
            if entry and _holds_examples(Path(entry)):
                return Path(entry)  # a worker: the server's choice, from the PYTHONPATH it was given
    found = example_envs_dir()
    if str(found) not in sys.path:
        sys.path.insert(0, str(found))
    return found
