"""``openenv-ws validate``: does an environment keep the contract its clients rely on?

Against a server (``--url``) or one started here for ``ENV``, each check passes or fails with
its reason:

1. **schemas**: the server publishes JSON Schemas of the action, observation and state;
2. **reset**: ``reset(seed)`` answers with an observation;
3. **step**: valid actions (``--action``, or one built from the action schema) answer with results;
4. **state**: ``state()`` answers;
5. **bad action**: an action that cannot match the schema gets a ``validation`` error that
   names the field, and the session goes on;
6. **no step before reset**: a step before any reset gets ``no_episode``;
7. **determinism**: two fresh episodes with the same seed and actions give the same answers,
   apart from the fields the environment declares in ``nondeterministic_fields``;
8. **tools** (an environment that has tools): each takes an object of arguments, and a call of a
   tool that does not exist gets a ``validation`` error at ``$.tool``.

The default action of an environment whose actions are all tool calls calls its first tool.

Exit status: 0 when every check passes, 1 when one fails, 2 when the checks cannot run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..client.session import EnvSession, connect
from ..errors import EpisodeStateError, OpenEnvWSError, ValidationError
from ..fields import FieldFilter, compare, plain
from ..registry import resolve
from .inspector import get_json

BAD_ACTION = "openenv-ws validate: not an action"
"""A string: no action model (a Struct, an object) accepts it."""
NO_TOOL = "openenv-ws-validate-no-such-tool"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    env: str
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def text(self) -> str:
        lines = [f"validate {self.env} at {self.url}"]
        lines += [f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<22} {c.detail}" for c in self.checks]
        failed, total = sum(not c.ok for c in self.checks), len(self.checks)
        lines.append(f"all {total} checks passed" if not failed else f"{failed} of {total} checks failed")
        return "\n".join(lines)


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(plain(value), separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- an action from a schema


_PREFERENCE = {"integer": 0, "string": 1, "number": 2, "object": 3, "array": 4, "boolean": 5, "null": 7}
"""Among alternatives, the kind of value most likely valid for the environment (a Discrete space: 0)."""


def example(schema: dict[str, Any], defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """The smallest value a JSON Schema accepts, as far as its common keywords go."""
    defs = {**(defs or {}), **schema.get("$defs", {})}
    if depth > 20:
        return None
    if "$ref" in schema:
        return example(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = sorted(schema[key], key=lambda o: _PREFERENCE.get(o.get("type"), len(_PREFERENCE)))
            return example(options[0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: example(properties.get(name, {}), defs, depth + 1) for name in schema.get("required", [])}
    if kind == "array":
        item = example(schema.get("items", {}), defs, depth + 1)
        return [item] * int(schema.get("minItems", 0))
    if kind == "string":
        return "a" * max(1, int(schema.get("minLength", 1)))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(low, 0) + (1 if "exclusiveMinimum" in schema else 0)
        high = schema.get("maximum")
        value = min(value, high) if high is not None else value
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


# ---------------------------------------------------------------- the checks


async def _episode(session: EnvSession, seed: int, actions: list[Any], steps: int) -> list[dict[str, Any]]:
    """reset, up to ``steps`` steps (cycling through ``actions``) until the episode ends, state."""
    answers = []
    result = await session.reset(seed=seed)
    answers.append({"observation": plain(result.observation), "reward": result.reward, "info": plain(result.info)})
    for index in range(steps):
        events: list[Any] = []
        result = await session.step(actions[index % len(actions)], on_event=events.append)
        answers.append(
            {
                "observation": plain(result.observation),
                "reward": result.reward,
                "terminated": result.terminated,
                "truncated": result.truncated,
                "info": plain(result.info),
                **({"events": plain(events)} if events else {}),
            }
        )
        if result.done:
            break
    answers.append({"state": plain(await session.state())})
    return answers


class _Checks:
    def __init__(self, report: Report) -> None:
        self.report = report

    async def run(self, name: str, check: Callable[[], Any]) -> Any:
        """Run one check; its return value is the detail on success."""
        try:
            detail = await check()
        except (OpenEnvWSError, AssertionError, KeyError, TypeError, ValueError) as exc:
            self.report.checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
            return None
        self.report.checks.append(Check(name, True, detail))
        return detail


async def validate_url(
    url: str,
    env: str | None = None,
    *,
    seed: int = 0,
    actions: list[Any] | None = None,
    steps: int = 3,
    ignore: tuple[str, ...] = (),
    declared: tuple[str, ...] | None = None,
    token: str | None = None,
) -> Report:
    """Check the environment ``env`` (default: the server's first) served at ``url``.

    ``declared``: the env's nondeterministic fields (default: from its class, if it loads here).
    """
    listing = (await anyio.to_thread.run_sync(get_json, url, "/v1/envs", token))["envs"]
    served = {e["name"]: e for e in listing}
    name = env or (listing[0]["name"] if listing else "")
    report = Report(name, url)
    checks = _Checks(report)
    entry = served.get(name)

    async def schemas() -> str:
        assert entry is not None, f"the server does not serve {name!r} (it serves {', '.join(served) or 'nothing'})"
        missing = [k for k in ("action", "observation", "state") if not entry.get("schemas", {}).get(k)]
        assert not missing, f"no JSON Schema for {', '.join(missing)}"
        return "action, observation and state schemas published"

    if await checks.run("schemas", schemas) is None:
        return report
    chosen = actions or [_default_action(entry)]
    options = {"token": token, "request_timeout": 60.0}

    async with connect(url, name, **options) as session:

        async def no_step_before_reset() -> str:
            try:
                await session.step(chosen[0])
            except EpisodeStateError as exc:
                return f"{exc.code}: {exc.message}"
            raise AssertionError("a step before reset was applied")

        async def reset() -> str:
            result = await session.reset(seed=seed)
            return f"observation {_short(result.observation)}"

        async def step() -> str:
            rewards = []
            for index in range(steps):
                result = await session.step(chosen[index % len(chosen)])
                rewards.append(result.reward)
                if result.done:
                    break
            return f"{len(rewards)} steps with {_short(chosen[0], 60)}: rewards {rewards}"

        async def state() -> str:
            return _short(await session.state())

        await checks.run("no step before reset", no_step_before_reset)
        await checks.run("reset", reset)
        await checks.run("step", step)
        await checks.run("state", state)

    async def bad_action() -> str:
        async with connect(url, name, **options) as session:
            await session.reset(seed=seed)
            try:
                await session.step(BAD_ACTION)
            except ValidationError as exc:
                await session.state()  # the session goes on
                return f"validation error at {exc.path or '$'}: {exc.message}"
            raise AssertionError(f"the action {BAD_ACTION!r} was accepted")

    async def determinism() -> str:
        runs = []
        for _ in range(2):
            async with connect(url, name, **options) as session:
                runs.append(await _episode(session, seed, chosen, steps))
        skip = list(dict.fromkeys([*(_declared(name) if declared is None else declared), *ignore]))
        fields = FieldFilter(skip)
        assert len(runs[0]) == len(runs[1]), f"the episodes ended after {len(runs[0])} and {len(runs[1])} answers"
        for number, (first, second) in enumerate(zip(*runs, strict=True), 1):
            differences = compare(first, second, fields)
            assert not differences, (
                f"same seed and actions, answer {number} differs: {'; '.join(map(str, differences[:5]))}"
                " (declare legitimately varying fields in nondeterministic_fields)"
            )
        skipped = f", ignoring {', '.join(skip)}" if skip else ""
        return f"2 episodes of seed {seed}: {len(runs[0])} answers identical{skipped}"

    async def tools() -> str:
        listed = entry.get("tools") or []
        flat = [t["name"] for t in listed if t.get("input_schema", {}).get("type") != "object"]
        assert not flat, f"the arguments of {', '.join(flat)} are not described as an object"
        async with connect(url, name, **options) as session:
            await session.reset(seed=seed)
            try:
                await session.call_tool(NO_TOOL)
            except ValidationError as exc:
                assert exc.path == "$.tool", f"an unknown tool was refused at {exc.path}, not $.tool"
            else:
                raise AssertionError(f"a call of the unknown tool {NO_TOOL!r} was applied")
        return f"{', '.join(t['name'] for t in listed)}; an unknown tool is refused at $.tool"

    await checks.run("bad action", bad_action)
    await checks.run("determinism", determinism)
    if entry.get("tools"):
        await checks.run("tools", tools)
    return report


def _default_action(entry: dict[str, Any]) -> Any:
    """An action built from the schema; for an environment of tool calls only, a call of its first tool."""
    schema = entry["schemas"]["action"]
    tools = entry.get("tools") or []
    if tools and schema.get("$ref") == "#/$defs/ToolCall":
        return {"tool": tools[0]["name"], "arguments": example(tools[0]["input_schema"])}
    return example(schema)


def _declared(name: str) -> tuple[str, ...]:
    """The env's declared nondeterministic fields, when its class can be loaded here."""
    try:
        return tuple(resolve(name).cls.nondeterministic_fields)
    except OpenEnvWSError:
        return ()


async def validate_env(env: str, *, sandbox: str = "inprocess", **options: Any) -> Report:
    """Start a server for ``env`` (a registered name or ``module:Class``) here and check it."""
    from ..server.local import local_config, local_server

    spec = resolve(env)
    async with local_server([spec], backend=sandbox, config=local_config()) as url:
        return await validate_url(url, spec.name, declared=spec.cls.nondeterministic_fields, **options)


def check_environment(env: str, **options: Any) -> Report:
    """Blocking :func:`validate_env`, for tests: ``assert check_environment("pkg.env:MyEnv").ok``."""
    return anyio.run(lambda: validate_env(env, **options))
