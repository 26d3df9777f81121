"""Debian packages in a sandbox image (``SandboxSettings.system_packages``), installed without network.

The ``.deb`` files of the packages, and of every dependency the base image lacks, are fetched
before the build, by one of two routes:

- **the host's apt**, when the host runs the same Debian release and architecture as the base
  image: its package lists and mirror, resolved against the base image's own package database
  (``Dir::State::status``), so exactly what the base image lacks is fetched;
- otherwise **a throwaway container of the base image** that may reach the network runs
  ``apt-get --download-only`` (any Debian-based base, e.g. ``python:3.11-slim``, from any host).

They are then installed with ``dpkg -i`` into a container of the base image that has no network,
and that container is committed as an intermediate image, ``openenv-ws/system:<key>``, on which
``sandboxes/Dockerfile`` builds the env's image as usual. The ``.deb`` files never become a layer
of the image, and the key (the base image's id and the exact ``.deb`` files) lets a rebuild with
nothing new skip the install; on the host route it skips the download too.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import docker
import docker.errors

SYSTEM_REPO = "openenv-ws/system"
LABEL = "openenv-ws.system-packages"
"""Set on the intermediate images and the containers that make them."""
_DEB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~:%_-]*\.deb$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?$")


class PackageError(RuntimeError):
    """The packages could not be fetched or installed; the message says what apt or dpkg said."""


def _release(os_release: str) -> tuple[str, str]:
    fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', os_release, flags=re.MULTILINE))
    return fields.get("ID", ""), fields.get("VERSION_CODENAME", "")


def _run_in(client: docker.DockerClient, image: str, script: str, **kwargs: object) -> str:
    """Run ``sh -c script`` as root in a throwaway container of ``image``; its output, or PackageError."""
    container = client.containers.create(
        image, ["sh", "-c", script], entrypoint=[], user="0", labels={LABEL: "1"}, **kwargs
    )
    try:
        container.start()
        code = container.wait(timeout=1800).get("StatusCode", 1)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        if code != 0:
            raise PackageError(f"`{script[:200]}` failed in {image} (exit {code}):\n{output[-4000:]}")
        return output
    finally:
        container.remove(force=True)


def _base_facts(client: docker.DockerClient, base_image: str) -> tuple[tuple[str, str], str, str]:
    """The base image's (distribution, release), its dpkg architecture, and its dpkg status file."""
    script = "cat /etc/os-release; echo @@; dpkg --print-architecture; echo @@; cat /var/lib/dpkg/status"
    os_release, arch, status = _run_in(client, base_image, script, network_disabled=True).split("@@\n", 2)
    return _release(os_release), arch.strip(), status


def _host_matches(release: tuple[str, str], arch: str) -> bool:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return False
    try:
        host = _release(Path("/etc/os-release").read_text())
        host_arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return False
    return host == release and all(release) and host_arch == arch


def _apt(status: Path, archives: Path, *args: str) -> str:
    cmd = [
        "apt-get",
        "-q",
        "-y",
        "--no-install-recommends",
        f"-o=Dir::State::status={status}",
        f"-o=Dir::Cache::archives={archives}/",
        "-o=Debug::NoLocking=1",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        said = f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        hint = "the host's package lists may be missing or stale: run `apt-get update`"
        raise PackageError(f"host apt-get {' '.join(args)} failed ({hint}):\n{said}")
    return result.stdout


def _host_plan(status: Path, archives: Path, packages: list[str]) -> list[str]:
    """The .deb files the host's apt would fetch for ``packages`` on top of the base image."""
    out = _apt(status, archives, "install", "--print-uris", *packages)
    return sorted(m[1] for m in re.finditer(r"^'[^']+' (\S+\.deb) \d+", out, flags=re.MULTILINE))


def _container_fetch(client: docker.DockerClient, base_image: str, archives: Path, packages: list[str]) -> None:
    uid_gid = f"{Path(archives).stat().st_uid}:{Path(archives).stat().st_gid}"
    words = " ".join(shlex.quote(p) for p in packages)
    script = (
        "export DEBIAN_FRONTEND=noninteractive; apt-get -q update >/dev/null && "
        f"apt-get -q -y --no-install-recommends -o Dir::Cache::archives=/debs/ install --download-only {words} "
        f"&& chown -R {uid_gid} /debs"
    )
    _run_in(client, base_image, script, volumes={str(archives): {"bind": "/debs", "mode": "rw"}})


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _install(client: docker.DockerClient, base_image: str, archives: Path, tag: str) -> None:
    """``dpkg -i`` every .deb into a container of the base image (no network), committed as ``tag``."""
    script = (
        "export DEBIAN_FRONTEND=noninteractive; dpkg -i /debs/*.deb >/tmp/dpkg.log 2>&1 "
        "|| { tail -n 60 /tmp/dpkg.log; exit 1; }; rm -f /tmp/dpkg.log /var/cache/debconf/*-old /var/lib/dpkg/*-old"
    )
    config = client.api.inspect_image(base_image)["Config"]
    container = client.containers.create(
        base_image,
        ["sh", "-c", script],
        entrypoint=[],
        user="0",
        network_disabled=True,
        labels={LABEL: "1"},
        volumes={str(archives): {"bind": "/debs", "mode": "ro"}},
    )
    try:
        container.start()
        code = container.wait(timeout=1800).get("StatusCode", 1)
        if code != 0:
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            raise PackageError(f"installing the packages into {base_image} failed (exit {code}):\n{output[-4000:]}")
        # The committed image keeps the base image's command and user, not the install's.
        changes = [f"CMD {json.dumps(config.get('Cmd') or [])}", f"USER {config.get('User') or '0'}"]
        changes.append(f"LABEL {LABEL}=1")
        repository, _, name = tag.partition(":")
        container.commit(repository=repository, tag=name, changes=changes)
    finally:
        container.remove(force=True)


def system_base(
    client: docker.DockerClient, base_image: str, packages: Iterable[str], out: Callable[[str], None] = print
) -> str:
    """An image: ``base_image`` with ``packages`` installed (made once, then reused); ``base_image``
    itself when it has them all already."""
    packages = sorted(set(packages))
    for package in packages:
        if not _PACKAGE.match(package):
            raise PackageError(f"not a Debian package name: {package!r}")
    base_id = client.api.inspect_image(base_image)["Id"]
    release, arch, status_text = _base_facts(client, base_image)
    with tempfile.TemporaryDirectory(prefix="openenv-ws-debs-") as tmp:
        archives = Path(tmp) / "debs"
        (archives / "partial").mkdir(parents=True)
        status = Path(tmp) / "status"
        status.write_text(status_text)
        host = _host_matches(release, arch)
        if host:
            try:
                names = _host_plan(status, archives, packages)
            except PackageError as exc:
                out(f"the host's apt cannot resolve them, so a container will: {str(exc).splitlines()[0]}")
                host = False
        if not host:
            out(f"fetching {', '.join(packages)} in a container of {base_image} (the host is not {release[1]}/{arch})")
            _container_fetch(client, base_image, archives, packages)
            names = sorted(p.name for p in archives.glob("*.deb"))
        if not names:
            return base_image  # the base image has them all
        if not all(_DEB_NAME.match(name) for name in names):
            raise PackageError(f"unexpected file names from apt: {names[:5]}")
        key = hashlib.sha256("\n".join([base_id, *names]).encode()).hexdigest()[:16]
        tag = f"{SYSTEM_REPO}:{key}"
        if _image_exists(client, tag):
            out(f"system packages: {tag} already holds {len(names)} packages for {', '.join(packages)}")
            return tag
        if host:
            out(f"fetching {len(names)} .deb files for {', '.join(packages)} with the host's apt ({release[1]}/{arch})")
            _apt(status, archives, "install", "--download-only", *packages)
        out(f"installing {len(names)} .deb files into {base_image} (no network) -> {tag}")
        _install(client, base_image, archives, tag)
    return tag
