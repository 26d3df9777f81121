"""The package list, the one thing pyproject.toml cannot say.

The environment library lives in the folder ``envs/`` but installs as ``openenv_ws_envs``
(``package-dir`` in pyproject.toml), so that installing the project adds no top-level package
with a generic name. ``packages.find`` names packages after their folders, so the list is
computed here instead: new subpackages of either tree are picked up without editing it.
Everything else is configured in pyproject.toml.
"""

from setuptools import find_packages, setup

LIBRARY, FOLDER = "openenv_ws_envs", "envs"

setup(
    packages=[
        *find_packages(include=["openenv_ws", "openenv_ws.*"]),
        *(LIBRARY + name.removeprefix(FOLDER) for name in find_packages(include=[FOLDER, f"{FOLDER}.*"])),
    ]
)
