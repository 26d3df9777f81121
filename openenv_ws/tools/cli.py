"""The ``openenv-ws`` command.

All of its argparse wiring is here: every subcommand's options (serve's included) and the
handler that turns them into a call. A handler imports the server, Docker or a tool's
module when its command runs; the tools' modules are imported to build the parser only
for their docstrings, which are the commands' descriptions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..client.transport import TOKEN_ENV
from ..registry import builtin_envs
from ..sandbox import BACKENDS
from ..units import parse_size

TOKEN_HELP = f"bearer token of a server run with --token (default: ${TOKEN_ENV})"
TOKEN_FILE_ENV = "OPENENV_WS_TOKEN_FILE"


# ---------------------------------------------------------------- serve, envs, build, gc


def _serve(args: argparse.Namespace) -> int:
    from ..server import ServerConfig, create_app
    from ..server.run import serve

    settings = _serve_settings(args)  # --record, --token(-file), --no-metrics; sets up --log-format
    from ..openenv.server import openenv_routes

    extensions = [openenv_routes]
    node = args.node
    if args.cluster:
        from ..server.cluster import ClusterSettings, cluster_routes
        from ..server.node import identify

        identity = identify(args.host, args.port, node=args.node, advertise=args.advertise)
        node = identity.name
        cluster = ClusterSettings(args.cluster, identity.url, port=args.port, refresh=args.cluster_refresh)
        extensions.append(cluster_routes(cluster))
    config = ServerConfig(
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        openenv_ws_idle_timeout=args.openenv_ws_idle_timeout,
        resume_grace=args.resume_grace,
        max_frame_bytes=args.max_frame_bytes,
        step_timeout=args.step_timeout,
        max_starting=args.max_starting,
        drain_timeout=args.drain_timeout,
        handoff=args.handoff,
        adopt_grace=args.adopt_grace,
        **{name: getattr(args, name) for name in _BOUNDS},
        node=node,
        **settings,
    )
    app = create_app(args.env, backend=_backend(args), config=config, extensions=extensions)
    serve(app, args.host, args.port, log_level=args.log_level, ws=args.ws, log_config=None)
    return 0


def _size(text: str) -> int:
    """Bytes: ``1048576``, or with a binary unit, ``512K``, ``1M``, ``10G`` (also ``10GiB``)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_BOUNDS = {
    name: (name, kind, what)
    for name, kind, what in [
        ("reply_cache_bytes", int, "bytes of replies one session keeps for repeats"),
        ("max_events_per_request", int, "events one request may stream"),
        ("max_event_bytes_per_request", int, "bytes of events one request may stream"),
        ("max_sandbox_frame_bytes", int, "largest frame a sandbox may send"),
        ("max_mux_buffer_bytes", int, "bytes queued for a multiplexed connection that does not read"),
        ("max_sessions_per_connection", int, "sessions one multiplexed connection may hold"),
        ("max_history_bytes", int, "bytes of an episode kept so it can be forked or checkpointed by replay"),
        ("max_forks", int, "children one fork may ask for"),
        ("max_checkpoint_bytes", int, "largest checkpoint file"),
        ("checkpoint_ttl", float, "seconds a checkpoint is kept"),
        ("ws_ping_interval", float, "seconds between keepalive pings (0: none)"),
        ("ws_ping_timeout", float, "seconds a pong may take"),
        ("max_body_bytes", _size, "largest HTTP request body on any route, e.g. 1M; larger ones get 413"),
        ("max_sessions_per_client", int, "sessions one client (a token's name, or an IP) holds; None: no cap"),
        ("max_watchers", int, "live watchers of one session"),
        ("record_max_bytes", _size, "disk the recordings of --record may use, e.g. 10G (0: no bound)"),
        ("drain_sessions", float, "on shutdown, seconds open sessions may go on and end, new ones refused"),
    ]
}
"""ServerConfig fields that ``serve`` takes as ``--kebab-case`` options with the config's defaults."""


def _serve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ServerConfig fields of the tooling options; sets up logging (the tokens are redacted from it)."""
    from ..server.browser_auth import secret_forms
    from ..server.identity import TokenFileError, TokenGrant, TokenTable, read_token_file
    from ..server.logs import configure

    tokens = args.token or [token for token in [os.environ.get(TOKEN_ENV)] if token]
    token_file = args.token_file or os.environ.get(TOKEN_FILE_ENV)
    try:
        grants = [TokenGrant(token) for token in tokens] + (read_token_file(token_file) if token_file else [])
        TokenTable(grants)  # duplicates and clashing names: said now, not at the first request
    except TokenFileError as exc:
        raise SystemExit(f"openenv-ws serve: {exc}") from None
    configure(args.log_level, args.log_format, [form for grant in grants for form in secret_forms(grant.token)])
    for option, value in (
        ("--record", args.record),
        ("--checkpoint-dir", args.checkpoint_dir),
        ("--state-dir", args.state_dir),
    ):
        if value:
            _writable_dir(option, Path(value))
    if args.handoff and not args.state_dir:
        raise SystemExit("openenv-ws serve: --handoff needs --state-dir (where the sessions are handed over)")
    return {
        "state_dir": str(args.state_dir) if args.state_dir else None,
        "record_dir": str(args.record) if args.record else None,
        "checkpoint_dir": str(args.checkpoint_dir) if args.checkpoint_dir else None,
        "tokens": tuple(grants),
        "metrics": args.metrics,
    }


def _writable_dir(option: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"openenv-ws serve: {option} {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise SystemExit(f"openenv-ws serve: {option} {path}: not writable")


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
    from ..sandbox import create_backend

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
    from ..registry import resolve
    from ..sandbox.docker import BuildError, build_image

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

    from ..sandbox.docker import gc

    removed = anyio.run(lambda: gc(dead_only=args.dead, server=args.server))
    for item in removed:
        print(f"removed {item}")
    print(f"{len(removed)} sandbox containers removed")
    return 0


def _envs(args: argparse.Namespace) -> int:
    for name, target in sorted(builtin_envs().items()):
        print(f"{name:16} {target}")
    return 0


# ---------------------------------------------------------------- replay, sessions, validate, init, bench


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

    from ..errors import OpenEnvWSError
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


# ---------------------------------------------------------------- the parser


def _doc(module_doc: str | None) -> str:
    """A module's docstring as a command's description (reST literals as plain text)."""
    return (module_doc or "").strip().replace("``", "").replace("**", "")


def _tool_parser(commands: Any, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-ws", description=__doc__.partition("\n")[0])
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
    serve.add_argument(
        "--pool", type=int, default=0, help="docker: the floor of each env's warm pool, which grows with demand"
    )
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
    serve.add_argument(
        "--openenv-ws-idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="OpenEnv compatibility: idle timeout of OpenEnv's /ws sessions; 0: none, as in OpenEnv"
        " (default: --idle-timeout, and the client's next request is told its episode is gone)",
    )
    serve.add_argument("--resume-grace", type=float, default=60.0, help="keep a dropped session resumable (s)")
    serve.add_argument("--max-frame-bytes", type=int, default=1 << 20, help="largest accepted frame (bytes)")
    serve.add_argument("--step-timeout", type=float, default=None, help="deadline of one reset/step (s)")
    serve.add_argument("--max-starting", type=int, default=16, help="sandboxes starting at once")
    serve.add_argument("--drain-timeout", type=float, default=30.0, help="on shutdown, wait for steps (s)")
    restarts = serve.add_argument_group("restarts (docs/operations.md, 'Restarts')")
    restarts.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the sessions' resume state here; a server started again on DIR takes them back",
    )
    restarts.add_argument(
        "--handoff",
        action="store_true",
        help="on SIGTERM, leave sessions and sandboxes to the next server on --state-dir instead of closing them",
    )
    restarts.add_argument(
        "--adopt-grace",
        type=float,
        default=300.0,
        help="with --state-dir: how long a Docker sandbox waits for the next server after this one is gone (s)",
    )
    from ..server.config import ServerConfig

    defaults = ServerConfig()
    bounds = serve.add_argument_group("bounds (defaults and meaning: docs/operations.md, ServerConfig)")
    for name, kind, what in _BOUNDS.values():
        default = getattr(defaults, name)
        bounds.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=f"{what} ({default})")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation (default websockets-sansio)")
    tooling = serve.add_argument_group("operator tooling")
    tooling.add_argument(
        "--record", metavar="DIR", help="record every episode into DIR, one JSON-lines file each (docs/recording.md)"
    )
    tooling.add_argument(
        "--checkpoint-dir", metavar="DIR", help="keep episode checkpoints here (off without it; docs/recording.md)"
    )
    tooling.add_argument(
        "--token",
        action="append",
        help=f"require 'Authorization: Bearer TOKEN' on every route but /healthz, an operator's token; repeatable "
        f"(default: ${TOKEN_ENV}; prefer the variable or --token-file: other users can read a command line)",
    )
    tooling.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"tokens with scopes, one 'TOKEN SCOPE [NAME]' a line; scopes: operator, trainer, observer "
        f"(default: ${TOKEN_FILE_ENV}; see docs/operations.md)",
    )
    tooling.add_argument(
        "--no-metrics", dest="metrics", action="store_false", help="do not count requests for GET /metrics"
    )
    tooling.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="json: one JSON object per log line"
    )
    cluster = serve.add_argument_group("cluster (docs/swarm.md)")
    cluster.add_argument(
        "--cluster",
        metavar="PEERS",
        help="serve as a node of a cluster whose servers PEERS names: a DNS name resolving to every one of them "
        "(Swarm: tasks.<service>) or host[:port],... ; answers GET /v1/cluster",
    )
    cluster.add_argument(
        "--node", help="this node's name, carried by session ids (default: $OPENENV_WS_NODE, else the engine's)"
    )
    cluster.add_argument(
        "--advertise",
        metavar="URL",
        help="ws://host:port clients reach this server at (default: $OPENENV_WS_ADVERTISE, else asked from the engine)",
    )
    cluster.add_argument(
        "--cluster-refresh", type=float, default=2.0, help="seconds between two rounds of asking the peers"
    )
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

    from . import bench, inspector, replay, scaffold, validate

    p = _tool_parser(commands, "replay", "re-run recorded episodes and compare every answer", _doc(replay.__doc__))
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

    p = _tool_parser(commands, "sessions", "show a server's sessions live, or follow one", _doc(inspector.__doc__))
    inspector.add_arguments(p)
    p.set_defaults(run=_sessions)

    p = _tool_parser(commands, "validate", "check an environment's conformance", _doc(validate.__doc__))
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

    p = _tool_parser(commands, "init", "scaffold a new environment package", _doc(scaffold.__doc__))
    p.add_argument("name", help="the environment's name (a package name: letters, digits, '_', '-')")
    p.add_argument("--dir", default=".", help="where to create the package (default: here)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty directory")
    p.set_defaults(run=_init)

    p = _tool_parser(commands, "bench", "load benchmark: step latency and concurrent sessions", _doc(bench.__doc__))
    bench.add_arguments(p)
    p.set_defaults(run=_bench)
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
