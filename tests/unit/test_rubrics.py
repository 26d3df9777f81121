"""Rubrics without a server: the combinators, per-step and end-of-episode scoring, judges, components in info."""

from __future__ import annotations

import pytest

from openenv_ws.env import StepResult
from openenv_ws.rubrics import (
    AtEnd,
    Gate,
    Judge,
    Rubric,
    Scoring,
    Sequence,
    Trajectory,
    Turn,
    WeightedSum,
    check,
    episode_check,
)


def traj(*observations: dict, done: bool = False) -> Trajectory:
    turns = [Turn(action={}, observation=o) for o in observations]
    if done:
        last = turns[-1]
        turns[-1] = Turn(last.action, last.observation, terminated=True)
    return Trajectory(start={"task": "t"}, turns=turns)


score = check(lambda turn: turn.observation["score"], name="score")
passes = check(lambda turn: turn.observation["ok"], name="passes")


async def test_a_weighted_sum_reports_every_part():
    rubric = WeightedSum([(0.7, score), (0.3, passes)], name="reward")
    value, parts = await rubric.evaluate(traj({"score": 0.5, "ok": True}))
    assert value == pytest.approx(0.65) and parts == {"score": 0.5, "passes": 1.0}


async def test_a_gate_needs_every_part_to_pass_and_reports_them_all():
    gate = Gate(score, passes, threshold=0.5)
    assert await gate.evaluate(traj({"score": 0.5, "ok": True})) == (1.0, {"score": 0.5, "passes": 1.0})
    assert await gate.evaluate(traj({"score": 0.4, "ok": True})) == (0.0, {"score": 0.4, "passes": 1.0})


async def test_a_sequence_stops_at_the_first_failing_check():
    seen = []

    @check
    def costly(turn: Turn) -> float:
        seen.append(turn)
        return 0.8

    rubric = Sequence(passes, costly)
    assert await rubric.evaluate(traj({"ok": False})) == (0.0, {"passes": 0.0})
    assert seen == []  # never scored after the failure
    assert await rubric.evaluate(traj({"ok": True})) == (0.8, {"passes": 1.0, "costly": 0.8})


async def test_nested_components_are_named_by_their_path():
    rubric = Sequence(Gate(passes, name="checks"), WeightedSum([(2.0, score)], name="graded"))
    value, parts = await rubric.evaluate(traj({"ok": True, "score": 0.25}))
    assert value == 0.5
    assert parts == {"checks": 1.0, "checks.passes": 1.0, "graded": 0.5, "graded.score": 0.25}


async def test_an_end_of_episode_rubric_scores_only_the_last_step_and_sees_the_episode():
    @episode_check
    def moves(trajectory: Trajectory) -> float:
        return len(trajectory.turns) / 10

    rubric = AtEnd(moves, otherwise=-0.01)
    assert rubric.episodic
    assert await rubric.evaluate(traj({}, {})) == (-0.01, {})
    assert await rubric.evaluate(traj({}, {}, {}, done=True)) == (0.3, {"moves": 0.3})


async def test_scoring_sets_the_reward_and_reports_components_in_info():
    scoring = Scoring(WeightedSum([(0.5, score), (0.5, passes)], name="reward"))
    scoring.start({"task": 1})
    result = await scoring.score({"a": 1}, StepResult(observation={"score": 1.0, "ok": False}, info={"own": 1}))
    assert result.reward == 0.5 and result.info == {"own": 1, "scores": {"score": 1.0, "passes": 0.0}}
    assert len(scoring.trajectory.turns) == 1 and scoring.trajectory.start == {"task": 1}
    await scoring.score({"a": 2}, StepResult(observation={"score": 0.0, "ok": True}))
    assert len(scoring.trajectory.turns) == 1  # a per-step rubric keeps only the step it scores

    leaf = Scoring(score)
    result = await leaf.score({}, StepResult(observation={"score": 0.25}))
    assert result.reward == 0.25 and result.info == {"scores": {"score": 0.25}}

    untouched = await Scoring(None).score({}, StepResult(observation={}, reward=3.0))
    assert untouched.reward == 3.0 and untouched.info == {}


async def test_an_episode_rubric_keeps_the_episode_until_the_next_reset():
    scoring = Scoring(AtEnd(episode_check(lambda t: float(len(t.turns)), name="length")))
    scoring.start({})
    for _ in range(3):
        r = await scoring.score({}, StepResult(observation={}))
    assert r.reward == 0.0 and "scores" not in r.info
    r = await scoring.score({}, StepResult(observation={}, truncated=True))
    assert r.reward == 4.0 and r.info == {"scores": {"length": 4.0}}
    scoring.start({})
    assert scoring.trajectory.turns == []


async def test_a_judge_asks_the_callable_it_was_given_and_reads_a_number():
    asked: list[str] = []
    answers = iter(["I'd say 0.7 out of 1", "no idea", 3, "-2"])

    async def ask(prompt: str) -> float | str:
        asked.append(prompt)
        return next(answers)

    judge = Judge(ask, default=0.1)
    t = traj({"text": "hello"})
    assert await judge.evaluate(t) == (0.7, {})
    assert 'Observation: {"text":"hello"}' in asked[0] and 'Task: {"task":"t"}' in asked[0]
    assert (await judge.evaluate(t))[0] == 0.1  # no number: the default
    assert (await judge.evaluate(t))[0] == 1.0  # clamped to [low, high]
    assert (await judge.evaluate(t))[0] == 0.0

    custom = Judge(ask, prompt=lambda trajectory: f"{len(trajectory.turns)} turns", name="j")
    answers = iter(["0.5"])
    assert await custom.evaluate(t) == (0.5, {}) and asked[-1] == "1 turns"


async def test_mistakes_are_typed():
    with pytest.raises(ValueError, match="share a name"):
        WeightedSum([(1, score), (1, score)])
    with pytest.raises(TypeError, match="a score is a number"):
        await check(lambda turn: "high", name="words").evaluate(traj({}))

    class Unfinished(Rubric):
        pass

    with pytest.raises(NotImplementedError):
        await Unfinished().evaluate(traj({}))
