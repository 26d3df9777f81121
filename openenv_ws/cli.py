"""The ``openenv-ws`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

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
    )
    app = create_app(args.env, backend=args.sandbox, config=config)
    serve(app, args.host, args.port, log_level=args.log_level, ws=args.ws)
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
        choices=["inprocess", "subprocess"],
        help="where each session's env runs (default: subprocess, one child process per session)",
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
    serve.set_defaults(run=_serve)

    envs = commands.add_parser("envs", help="list the registered environments")
    envs.set_defaults(run=_envs)
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
