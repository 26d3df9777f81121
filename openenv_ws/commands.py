"""The operator commands of ``openenv-ws`` (replay, sessions, validate, init, bench) and serve's tooling options.

``cli.py`` registers them with :func:`add_commands` and :func:`add_serve_options`. Each
command's module is imported only when the command runs, so ``openenv-ws --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .client.transport import TOKEN_ENV
from .sandbox import BACKENDS

TOKEN_HELP = f"bearer token of a server run with --token (default: ${TOKEN_ENV})"


def _doc(module_doc: str | None) -> str:
    """A module's docstring as a command's description (reST literals as plain text)."""
    return (module_doc or "").strip().replace("``", "").replace("**", "")


def _parser(commands: Any, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


# ---------------------------------------------------------------- serve --record/--token/--log-format


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("operator tooling")
    group.add_argument(
        "--record", metavar="DIR", help="record every episode into DIR, one JSON-lines file each (docs/recording.md)"
    )
    group.add_argument(
        "--token",
        help=f"require 'Authorization: Bearer TOKEN' on every route but /healthz (default: ${TOKEN_ENV}; "
        "prefer the variable: other users can read a command line)",
    )
    group.add_argument(
        "--no-metrics", dest="metrics", action="store_false", help="do not count requests for GET /metrics"
    )
    group.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="json: one JSON object per log line"
    )


def serve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ServerConfig fields of the tooling options; sets up logging (the token is redacted from it)."""
    from .server.logs import configure

    token = args.token or os.environ.get(TOKEN_ENV) or None
    configure(args.log_level, args.log_format, [token] if token else [])
    if args.record:
        path = Path(args.record)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SystemExit(f"openenv-ws serve: --record {path}: {exc.strerror}") from None
        if not os.access(path, os.W_OK):
            raise SystemExit(f"openenv-ws serve: --record {path}: not writable")
    return {"record_dir": str(args.record) if args.record else None, "token": token, "metrics": args.metrics}


# ---------------------------------------------------------------- the commands


def _quiet() -> None:
    """The server a tool starts for itself logs only warnings (its sessions are the tool's own)."""
    logging.getLogger().setLevel(logging.WARNING)


def _replay(args: argparse.Namespace) -> int:
    import anyio

    from .replay import replay_files

    _quiet()
    return anyio.run(
        lambda: replay_files(
            args.files,
            url=args.url,
            sandbox=args.sandbox,
            ignore=args.ignore,
            keep_going=args.keep_going,
            token=args.token,
        )
    )


def _sessions(args: argparse.Namespace) -> int:
    from .inspector import run

    return run(args)


def _validate(args: argparse.Namespace) -> int:
    import anyio

    from .errors import OpenEnvWSError
    from .inspector import InspectorError
    from .validate import validate_env, validate_url

    if not args.env and not args.url:
        print("openenv-ws validate: name an ENV, or a server with --url", file=sys.stderr)
        return 2
    try:
        actions = [json.loads(a) for a in args.action]
    except json.JSONDecodeError as exc:
        print(f"openenv-ws validate: --action is not JSON: {exc}", file=sys.stderr)
        return 2
    _quiet()
    options = {"seed": args.seed, "actions": actions or None, "steps": args.steps, "ignore": tuple(args.ignore)}
    try:
        if args.url:
            report = anyio.run(lambda: validate_url(args.url, args.env, token=args.token, **options))
        else:
            report = anyio.run(lambda: validate_env(args.env, sandbox=args.sandbox, **options))
    except (OpenEnvWSError, InspectorError) as exc:
        print(f"openenv-ws validate: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    return 0 if report.ok else 1


def _init(args: argparse.Namespace) -> int:
    from .scaffold import ScaffoldError, scaffold

    try:
        root = scaffold(args.name, args.dir, force=args.force)
    except ScaffoldError as exc:
        print(f"openenv-ws init: {exc}", file=sys.stderr)
        return 2
    target = f"{root.name}.environment:{''.join(p.capitalize() for p in root.name.split('_') if p)}Environment"
    print(f"created {root}/ (models.py, environment.py, test_{root.name}.py, Dockerfile, README.md)")
    print(f"next, from {root.parent}:")
    print(f"  python -m pytest {root.name}")
    print(f"  openenv-ws serve {target}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    return run(args)


def add_commands(commands: Any) -> None:
    from . import bench, inspector, replay, scaffold, validate

    p = _parser(commands, "replay", "re-run recorded episodes and compare every answer", _doc(replay.__doc__))
    p.add_argument("files", nargs="+", metavar="FILE", help="recordings (serve --record, connect(record=...))")
    p.add_argument("--url", help="replay on this server (default: start one here, serving the recorded envs)")
    p.add_argument("--sandbox", default="inprocess", choices=list(BACKENDS), help="backend of the server started here")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="FIELD",
        help="do not compare FIELD either (e.g. observation.elapsed_s, info.*); repeatable",
    )
    p.add_argument("--keep-going", action="store_true", help="replay every episode, even after a divergence")
    p.add_argument("--token", help=TOKEN_HELP)
    p.set_defaults(run=_replay)

    p = _parser(commands, "sessions", "show a server's sessions live, or follow one", _doc(inspector.__doc__))
    inspector.add_arguments(p)
    p.set_defaults(run=_sessions)

    p = _parser(commands, "validate", "check an environment's conformance", _doc(validate.__doc__))
    p.add_argument("env", nargs="?", help="a registered env name or module:Class (with --url: default its first)")
    p.add_argument("--url", help="check the env on this running server instead of starting one")
    p.add_argument("--sandbox", default="inprocess", choices=list(BACKENDS), help="backend of the server started here")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes (default 0)")
    p.add_argument("--steps", type=int, default=3, help="steps per episode (default 3)")
    p.add_argument(
        "--action",
        action="append",
        default=[],
        metavar="JSON",
        help="a valid action to step with (default: one built from the action schema); repeatable, used in turn",
    )
    p.add_argument("--ignore", action="append", default=[], metavar="FIELD", help="also ignore FIELD in determinism")
    p.add_argument("--token", help=TOKEN_HELP)
    p.set_defaults(run=_validate)

    p = _parser(commands, "init", "scaffold a new environment package", _doc(scaffold.__doc__))
    p.add_argument("name", help="the environment's name (a package name: letters, digits, '_', '-')")
    p.add_argument("--dir", default=".", help="where to create the package (default: here)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty directory")
    p.set_defaults(run=_init)

    p = _parser(commands, "bench", "load benchmark: step latency and concurrent sessions", _doc(bench.__doc__))
    bench.add_arguments(p)
    p.set_defaults(run=_bench)
