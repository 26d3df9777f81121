"""Rubrics: a reward composed of named checks, with each check's score reported beside it.

A rubric scores the step just taken from the episode so far (a :class:`Trajectory`: the reset
observation and every step, the newest last). The leaves are plain functions, :func:`check`
for one step and :func:`episode_check` for the whole episode, and :class:`Judge`, which asks a
caller-supplied async callable (a model, a person, a service). They combine:

- :class:`WeightedSum`: the sum of weight x score of its parts.
- :class:`Gate`: 1 when every part passes (scores at least ``threshold``), else 0. Every part is
  scored and reported.
- :class:`Sequence`: the parts in order, stopping at the first that fails (scores at most
  ``fail_at``) with 0; otherwise the last part's score.
- :class:`AtEnd`: an end-of-episode rubric. It scores only the step that ends the episode
  (terminated or truncated); the other steps get ``otherwise``. Without it a rubric is per-step.

An environment applies its rubric with :class:`Scoring`, inside ``step()`` and its tools. The
reward is the rubric's score, and ``info["scores"]`` holds each component's score by name
(``{"tests": 0.4, "checks.compiles": 1.0}``), so a trainer can see why a reward is what it is.
Pure environment API: no I/O of its own; a judge does what its callable does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from .env import StepResult

SCORES = "scores"
"""The ``info`` key of the components' scores."""


class Turn(msgspec.Struct, frozen=True):
    """One step as a rubric sees it."""

    action: Any
    observation: Any
    terminated: bool = False
    truncated: bool = False
    info: Mapping[str, Any] = msgspec.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class Trajectory(msgspec.Struct):
    """The episode so far: the observation ``reset()`` gave, and the steps, the one being scored last."""

    start: Any = None
    turns: list[Turn] = msgspec.field(default_factory=list)

    @property
    def last(self) -> Turn:
        return self.turns[-1]

    @property
    def done(self) -> bool:
        return bool(self.turns) and self.turns[-1].done


def _number(value: Any, who: str) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    raise TypeError(f"rubric {who!r} scored {value!r}: a score is a number or a bool")


class Rubric:
    """Scores a step. Subclass and implement :meth:`score` (sync or async), or use :func:`check`."""

    leaf = True
    """A leaf reports its own score; a combinator reports its parts'."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()

    @property
    def episodic(self) -> bool:
        """Whether it reads earlier steps (then :class:`Scoring` keeps the episode's steps)."""
        return False

    def score(self, trajectory: Trajectory) -> float | Awaitable[float]:
        raise NotImplementedError

    async def evaluate(self, trajectory: Trajectory) -> tuple[float, dict[str, float]]:
        """This rubric's score and its components' (names relative to it; a leaf has none)."""
        value = self.score(trajectory)
        if inspect.isawaitable(value):
            value = await value
        return _number(value, self.name), {}


class Check(Rubric):
    """A leaf made of a function of one step (``fn(turn)``) or, ``episodic``, of the episode (``fn(trajectory)``)."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None, *, episodic: bool = False) -> None:
        super().__init__(name or getattr(fn, "__name__", "check"))
        self.fn = fn
        self._episodic = episodic

    @property
    def episodic(self) -> bool:
        return self._episodic

    def score(self, trajectory: Trajectory) -> Any:
        return self.fn(trajectory if self._episodic else trajectory.last)


def check(fn: Callable[[Turn], Any] | None = None, *, name: str | None = None) -> Any:
    """A per-step rubric from a function of the step: ``@check`` or ``check(fn, name="solved")``."""
    return Check(fn, name) if fn is not None else lambda f: Check(f, name)


def episode_check(fn: Callable[[Trajectory], Any] | None = None, *, name: str | None = None) -> Any:
    """A rubric from a function of the whole episode so far (usually wrapped in :class:`AtEnd`)."""
    return Check(fn, name, episodic=True) if fn is not None else lambda f: Check(f, name, episodic=True)


class _Combinator(Rubric):
    leaf = False

    def __init__(self, parts: list[Rubric], name: str | None) -> None:
        super().__init__(name)
        names = [part.name for part in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: two parts share a name ({', '.join(names)}): name them")
        self.parts = parts

    @property
    def episodic(self) -> bool:
        return any(part.episodic for part in self.parts)

    @staticmethod
    def _report(into: dict[str, float], part: Rubric, value: float, below: dict[str, float]) -> None:
        into[part.name] = value
        for key, score in below.items():
            into[f"{part.name}.{key}"] = score


class WeightedSum(_Combinator):
    """The sum of ``weight x score`` over ``(weight, rubric)`` pairs."""

    def __init__(self, parts: list[tuple[float, Rubric]], *, name: str = "weighted_sum") -> None:
        super().__init__([rubric for _, rubric in parts], name)
        self.weights = [float(weight) for weight, _ in parts]

    async def evaluate(self, trajectory: Trajectory) -> tuple[float, dict[str, float]]:
        total, components = 0.0, {}
        for weight, part in zip(self.weights, self.parts, strict=True):
            value, below = await part.evaluate(trajectory)
            total += weight * value
            self._report(components, part, value, below)
        return total, components


class Gate(_Combinator):
    """1 when every part scores at least ``threshold``, else 0 (all parts are scored and reported)."""

    def __init__(self, *parts: Rubric, threshold: float = 1.0, name: str = "gate") -> None:
        super().__init__(list(parts), name)
        self.threshold = threshold

    async def evaluate(self, trajectory: Trajectory) -> tuple[float, dict[str, float]]:
        passed, components = True, {}
        for part in self.parts:
            value, below = await part.evaluate(trajectory)
            passed = passed and value >= self.threshold
            self._report(components, part, value, below)
        return float(passed), components


class Sequence(_Combinator):
    """The parts in order; the first that scores at most ``fail_at`` stops it with 0, else the last part's score."""

    def __init__(self, *parts: Rubric, fail_at: float = 0.0, name: str = "sequence") -> None:
        if not parts:
            raise ValueError("a Sequence needs at least one part")
        super().__init__(list(parts), name)
        self.fail_at = fail_at

    async def evaluate(self, trajectory: Trajectory) -> tuple[float, dict[str, float]]:
        value, components = 0.0, {}
        for part in self.parts:
            value, below = await part.evaluate(trajectory)
            self._report(components, part, value, below)
            if value <= self.fail_at:
                return 0.0, components
        return value, components


class AtEnd(_Combinator):
    """An end-of-episode rubric: ``rubric`` scores the step that ends the episode; other steps get ``otherwise``."""

    def __init__(self, rubric: Rubric, *, otherwise: float = 0.0, name: str = "at_end") -> None:
        super().__init__([rubric], name)
        self.otherwise = otherwise

    @property
    def episodic(self) -> bool:
        return True

    async def evaluate(self, trajectory: Trajectory) -> tuple[float, dict[str, float]]:
        if not trajectory.done:
            return self.otherwise, {}
        part = self.parts[0]
        value, below = await part.evaluate(trajectory)
        components: dict[str, float] = {}
        self._report(components, part, value, below)
        return value, components


JUDGE_PROMPT = (
    "Score the agent's last step from 0 to 1.\nTask: {start}\nAction: {action}\nObservation: {observation}\nScore:"
)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_json = msgspec.json.Encoder()


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else _json.encode(value).decode()


class Judge(Rubric):
    """A score from a judge the caller supplies: ``ask(prompt)`` returns a number or a text holding one.

    The prompt is ``prompt`` formatted with ``{start}``, ``{action}`` and ``{observation}`` (JSON text
    of the reset observation and the last step), or ``prompt(trajectory)`` when it is a function. The
    first number in a text answer is the score (``default`` when there is none), clamped to
    ``[low, high]``. Nothing here calls a model: ``ask`` does whatever the caller wants it to.
    """

    def __init__(
        self,
        ask: Callable[[str], Awaitable[float | str]],
        prompt: str | Callable[[Trajectory], str] = JUDGE_PROMPT,
        *,
        name: str = "judge",
        low: float = 0.0,
        high: float = 1.0,
        default: float = 0.0,
        episodic: bool = False,
    ) -> None:
        super().__init__(name)
        self.ask = ask
        self.prompt = prompt
        self.low, self.high, self.default = low, high, default
        self._episodic = episodic

    @property
    def episodic(self) -> bool:
        return self._episodic

    def render(self, trajectory: Trajectory) -> str:
        if callable(self.prompt):
            return self.prompt(trajectory)
        last = trajectory.last
        shown = {"start": trajectory.start, "action": last.action, "observation": last.observation}
        return self.prompt.format(**{key: _shown(msgspec.to_builtins(value)) for key, value in shown.items()})

    async def score(self, trajectory: Trajectory) -> float:
        answer = await self.ask(self.render(trajectory))
        if isinstance(answer, str):
            found = _NUMBER.search(answer)
            value = float(found.group()) if found else self.default
        else:
            value = _number(answer, self.name)
        return min(self.high, max(self.low, value))


class Scoring:
    """A rubric applied along one episode: keeps what the rubric reads, sets rewards, reports components.

    Call :meth:`start` from ``reset()`` and :meth:`score` on each step's result. Only a rubric that
    reads earlier steps (``episodic``) keeps them, for the length of the episode.
    """

    def __init__(self, rubric: Rubric | None) -> None:
        self.rubric = rubric
        self.trajectory = Trajectory()
        self._keep = rubric is not None and rubric.episodic

    def start(self, observation: Any) -> None:
        self.trajectory = Trajectory(start=observation)

    async def score(self, action: Any, result: StepResult) -> StepResult:
        """``result`` with the rubric's reward and ``info["scores"]`` (unchanged without a rubric)."""
        turn = Turn(action, result.observation, result.terminated, result.truncated, result.info)
        if not self._keep:
            self.trajectory.turns.clear()
        self.trajectory.turns.append(turn)
        if self.rubric is None:
            return result
        value, components = await self.rubric.evaluate(self.trajectory)
        if self.rubric.leaf:
            components = {self.rubric.name: value}
        result.reward = value
        if components:
            result.info = {**result.info, SCORES: components}
        return result
