"""Sandbox images: which one an environment runs in, and ``openenv-ws build`` that makes it.

An image is ``sandboxes/Dockerfile`` built over a base with Python 3.11, holding the project
(and so the built-in ``openenv_ws_envs`` library), its dependencies, and the environment's
``extra_packages``. Every Python package comes in as a wheel downloaded on the host, so the
build itself needs no network (it runs with ``--network none``) and works on machines whose
only registry access is the package index, or none at all once the wheels are at hand. An env's
``system_packages`` (Debian packages, e.g. a browser) are installed first, into an intermediate
base image (``debs.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import docker
import docker.errors

from ...registry import EnvSpec, builtin_envs
from ...version import __version__
from .debs import PackageError, system_base

DEFAULT_BASE_IMAGE = "python:3.11-slim"
BASE_IMAGE_VAR = "OPENENV_WS_BASE_IMAGE"
"""Environment variable naming the base image (e.g. ``openenv-ws/python-base:3.11`` without a registry)."""
PYTHON_VERSION = "3.11"
EXTRA_DIR = "/opt/openenv-ws/extra"
_IGNORE = shutil.ignore_patterns(
    ".*", "__pycache__", "*.pyc", "*.log", "*.egg-info", "build", "dist", "wheels", "tests", "node_modules"
)
_IGNORE_EXTRA = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*.log")
_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


class BuildError(RuntimeError):
    pass


def default_tag(env_name: str) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", env_name.lower()).strip("-._") or "env"
    return f"openenv-ws/{slug}:{__version__}"


def image_for(spec: EnvSpec, override: str | None = None) -> str:
    """The image a session of ``spec`` runs in: the server's override, the env's choice, or the built default."""
    return override or spec.cls.sandbox.image or default_tag(spec.name)


def build_command(spec: EnvSpec) -> str:
    """What to tell a user whose image is missing."""
    registered = builtin_envs().get(spec.name) == spec.target
    return f"openenv-ws build {spec.name if registered else spec.target}"


def project_root() -> Path | None:
    """The source tree this package was installed from (editable installs and checkouts)."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "sandboxes" / "Dockerfile").is_file():
        return root
    return None


def _run(cmd: list[str], what: str) -> None:
    # A fixed SOURCE_DATE_EPOCH makes the project wheel byte-identical for identical sources,
    # so the engine's layer cache holds and a rebuild of unchanged code takes seconds.
    env = dict(os.environ, SOURCE_DATE_EPOCH="315532800")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")


def collect_wheels(project: Path, wheels: Path, packages: Iterable[str], arch: str) -> list[str]:
    """The project's wheel plus every dependency as a Linux wheel for the image's CPython."""
    with tempfile.TemporaryDirectory(prefix="openenv-ws-src-") as src:
        # Build from a copy: an in-tree build would leave build/ in the user's checkout.
        copy = Path(src) / "project"
        shutil.copytree(project, copy, ignore=_IGNORE)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(copy)], "building the project wheel")
    own = sorted(wheels.glob("*.whl"))
    platform = f"manylinux2014_{_ARCH.get(arch, arch)}"
    _run(
        [
            *pip,
            "download",
            "-q",
            "--only-binary=:all:",
            "--platform",
            platform,
            "--python-version",
            PYTHON_VERSION,
            "--implementation",
            "cp",
            "-d",
            str(wheels),
            *map(str, own),
            *packages,
        ],
        f"downloading wheels for {platform}",
    )
    return sorted(p.name for p in wheels.glob("*.whl"))


def _dockerfile(project: Path, extra: bool) -> str:
    text = (project / "sandboxes" / "Dockerfile").read_text()
    if not extra:
        return text
    return text + (
        "\n# openenv-ws build --with-path: extra source, on PYTHONPATH, precompiled (the root fs is read-only)\n"
        "USER 0:0\n"
        f"COPY extra {EXTRA_DIR}\n"
        f"RUN python -m compileall -q {EXTRA_DIR}\n"
        f"ENV PYTHONPATH={EXTRA_DIR}\n"
        "RUN python -m openenv_ws.sandbox.docker.private ${ENV_TARGET}\n"
        "USER 65534:65534\n"
    )


def build_image(
    spec: EnvSpec,
    *,
    tag: str | None = None,
    base_image: str | None = None,
    with_paths: Iterable[Path] = (),
    project: Path | None = None,
    out: Callable[[str], None] = print,
) -> str:
    """Build the sandbox image of ``spec`` and check the env imports inside it; returns the tag."""
    project = project or project_root()
    if project is None:
        raise BuildError("openenv-ws build needs the openenv-ws source tree (sandboxes/Dockerfile): pass --project")
    tag = tag or image_for(spec)
    base_image = base_image or os.environ.get(BASE_IMAGE_VAR) or DEFAULT_BASE_IMAGE
    settings = spec.cls.sandbox
    client = docker.from_env(timeout=600)
    try:
        arch = client.version().get("Arch", "amd64")
        if settings.system_packages:
            out(f"system packages: {', '.join(settings.system_packages)}")
            try:
                base_image = system_base(client, base_image, settings.system_packages, out)
            except (PackageError, docker.errors.DockerException) as exc:
                raise BuildError(f"installing the system packages failed: {exc}") from None
        with tempfile.TemporaryDirectory(prefix="openenv-ws-build-") as ctx_dir:
            ctx = Path(ctx_dir)
            out(f"collecting wheels (openenv-ws, its dependencies, {len(settings.extra_packages)} extra packages)")
            names = collect_wheels(project, ctx / "wheels", settings.extra_packages, arch)
            out(f"  {len(names)} wheels")
            paths = [Path(p).resolve() for p in with_paths]
            for path in paths:
                if not path.is_dir():
                    raise BuildError(f"--with-path {path}: not a directory")
                shutil.copytree(path, ctx / "extra" / path.name, ignore=_IGNORE_EXTRA)
            (ctx / "Dockerfile").write_text(_dockerfile(project, bool(paths)))
            out(f"building {tag} from {base_image}")
            previous = _image_id(client, tag)
            _docker_build(client, ctx, tag, base_image, settings.extra_packages, spec, out)
        out(f"checking that {spec.target} imports inside {tag}")
        _check_import(client, tag, spec.target)
        if previous and previous != _image_id(client, tag):
            _remove_replaced(client, previous, out)
    finally:
        client.close()
    return tag


def _image_id(client: docker.DockerClient, tag: str) -> str | None:
    try:
        return client.api.inspect_image(tag)["Id"]
    except docker.errors.ImageNotFound:
        return None


def _remove_replaced(client: docker.DockerClient, image_id: str, out: Callable[[str], None]) -> None:
    """Drop the image the tag named before this build: rebuilt sources would otherwise leave one
    untagged image per build behind. One still used (a container, another tag) stays."""
    try:
        client.api.remove_image(image_id)
    except docker.errors.APIError:
        return
    out(f"removed the replaced image {image_id.removeprefix('sha256:')[:12]}")


def _docker_build(
    client: docker.DockerClient,
    ctx: Path,
    tag: str,
    base_image: str,
    extra_packages: Iterable[str],
    spec: EnvSpec,
    out: Callable[[str], None],
) -> None:
    # The SDK talks to the engine's legacy builder: no BuildKit (and so no buildx) is needed.
    log = client.api.build(
        path=str(ctx),
        tag=tag,
        buildargs={"BASE_IMAGE": base_image, "EXTRA_PACKAGES": " ".join(extra_packages), "ENV_TARGET": spec.target},
        labels={"openenv-ws.env": spec.name, "openenv-ws.target": spec.target, "openenv-ws.version": __version__},
        forcerm=True,
        rm=True,
        pull=False,
        network_mode="none",
        use_config_proxy=False,
        decode=True,
    )
    recent: deque[str] = deque(maxlen=30)  # what the failing step printed, for the error
    for chunk in log:
        if "error" in chunk:
            output = "\n".join(recent)
            raise BuildError(f"docker build failed: {chunk['error'].strip()}\n{output}")
        line = chunk.get("stream", "").rstrip()
        if line.startswith("Step "):
            recent.clear()
        if line:
            recent.append(line)
        if line.startswith("Step ") or line.startswith("Successfully"):
            out("  " + line)


def _check_import(client: docker.DockerClient, tag: str, target: str) -> None:
    code = f"from openenv_ws.registry import load_target; load_target({target!r})"
    try:
        client.containers.run(
            tag,
            entrypoint=["python", "-c", code],
            network_mode="none",
            read_only=True,
            remove=True,
            stdout=True,
            stderr=True,
            labels={"openenv-ws.build-check": "1"},
        )
    except docker.errors.ContainerError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
        raise BuildError(
            f"{target} does not import inside {tag} (env code outside the project? add --with-path DIR):\n{stderr}"
        ) from None
