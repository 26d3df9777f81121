"""The Docker backend: one hardened container per session (``serve --sandbox docker``).

:mod:`.backend` is the backend itself; around it, one concept a module: how a container is
created, confined and reached (:mod:`.containers`), the warm pools and the cap on starts
(:mod:`.pool`), seeing containers exit (:mod:`.exits`), leaving no orphans (:mod:`.reaper`),
and the images sessions run in, with ``openenv-ws build`` (:mod:`.images`).
"""

from .backend import DockerBackend, DockerSandbox
from .images import BuildError, build_image, image_for
from .reaper import gc

__all__ = ["BuildError", "DockerBackend", "DockerSandbox", "build_image", "gc", "image_for"]
