"""The ``openenv-ws`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import commands as tooling
from .registry import builtin_envs


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, create_app
    from .server.run import serve

    config = ServerConfig(
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        resume_grace=args.resume_grace,
        max_frame_bytes=args.max_frame_bytes,
        step_timeout=args.step_timeout,
        max_starting=args.max_starting,
        drain_timeout=args.drain_timeout,
        **tooling.serve_settings(args),  # --record, --token, --no-metrics; sets up --log-format
    )
    from .server.openenv_compat import routes as openenv_routes

    app = create_app(args.env, backend=_backend(args), config=config, extensions=[lambda _: openenv_routes()])
    serve(app, args.host, args.port, log_level=args.log_level, ws=args.ws, log_config=None)
    return 0


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as an int, a float or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key.replace("-", "_"), kind(value)
        except ValueError:
            pass
    return key.replace("-", "_"), value


def _backend(args: argparse.Namespace):
    """The sandbox backend, with the options given for it (--pool and --image are Docker's)."""
    from .sandbox import create_backend

    options = dict(args.backend_option)
    if args.pool:
        options["pool"] = args.pool
    if args.image:
        options["image"] = args.image
    try:
        return create_backend(args.sandbox, **options)
    except TypeError as exc:
        raise SystemExit(f"openenv-ws serve: bad option for the {args.sandbox} backend: {exc}") from None


def _build(args: argparse.Namespace) -> int:
    from .registry import resolve
    from .sandbox.images import BuildError, build_image

    try:
        tag = build_image(
            resolve(args.env),
            tag=args.tag,
            base_image=args.base_image,
            with_paths=args.with_path,
            project=args.project,
        )
    except BuildError as exc:
        print(f"openenv-ws build: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


def _gc(args: argparse.Namespace) -> int:
    import anyio

    from .sandbox.reaper import gc

    removed = anyio.run(lambda: gc(dead_only=args.dead, server=args.server))
    for item in removed:
        print(f"removed {item}")
    print(f"{len(removed)} sandbox containers removed")
    return 0


def _envs(args: argparse.Namespace) -> int:
    for name, target in sorted(builtin_envs().items()):
        print(f"{name:16} {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-ws", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve one or more environments over WebSocket sessions",
        description="Serve environments: each client session gets its own sandbox holding one episode.",
    )
    serve.add_argument("env", nargs="+", help="a registered env name (see 'openenv-ws envs') or module:Class")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--sandbox",
        default="subprocess",
        choices=["inprocess", "subprocess", "docker"],
        help="where each session's env runs (default: subprocess, one child process per session)",
    )
    serve.add_argument("--pool", type=int, default=0, help="docker: started containers kept warm per env")
    serve.add_argument("--image", default=None, help="docker: run every env in this image (default: each env's)")
    serve.add_argument(
        "--backend-option",
        "-B",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="an option of the sandbox backend, e.g. -B max_starting=8 for docker (see docs/docker.md); repeatable",
    )
    serve.add_argument("--max-sessions", type=int, default=1024, help="sessions held at once (default 1024)")
    serve.add_argument("--idle-timeout", type=float, default=300.0, help="close sessions idle this long (s)")
    serve.add_argument("--resume-grace", type=float, default=60.0, help="keep a dropped session resumable (s)")
    serve.add_argument("--max-frame-bytes", type=int, default=1 << 20, help="largest accepted frame (bytes)")
    serve.add_argument("--step-timeout", type=float, default=None, help="deadline of one reset/step (s)")
    serve.add_argument("--max-starting", type=int, default=16, help="sandboxes starting at once")
    serve.add_argument("--drain-timeout", type=float, default=30.0, help="on shutdown, wait for steps (s)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation (default websockets-sansio)")
    tooling.add_serve_options(serve)
    serve.set_defaults(run=_serve)

    envs = commands.add_parser("envs", help="list the registered environments")
    envs.set_defaults(run=_envs)

    build = commands.add_parser(
        "build",
        help="build an environment's Docker sandbox image",
        description="Build the sandbox image of ENV from sandboxes/Dockerfile, with wheels downloaded on this host.",
    )
    build.add_argument("env", help="a registered env name or module:Class")
    build.add_argument("--tag", help="image tag (default: the env's image, or openenv-ws/<env>:<version>)")
    build.add_argument(
        "--base-image", help="a base image with Python 3.11 (default: $OPENENV_WS_BASE_IMAGE or python:3.11-slim)"
    )
    build.add_argument(
        "--with-path",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="copy DIR into the image, on PYTHONPATH (env code outside the project); repeatable",
    )
    build.add_argument("--project", type=Path, help="the openenv-ws source tree (default: the installed one)")
    build.set_defaults(run=_build)

    gc = commands.add_parser("gc", help="remove sandbox containers (all managed ones by default)")
    gc.add_argument("--dead", action="store_true", help="only those whose server is gone")
    gc.add_argument("--server", help="only those of this server instance (see /healthz backend.instance)")
    gc.set_defaults(run=_gc)

    tooling.add_commands(commands)  # replay, sessions, validate, init, bench
    return parser


def main(argv: list[str] | None = None) -> int:
    # Like python -m: a module:Class in the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
