"""The text games, on their own and through the environment (no server)."""

from __future__ import annotations

import random

import pytest

from openenv_ws.errors import ValidationError
from openenv_ws.toolbox import call_tool
from openenv_ws_envs.textgames import TextGameAction, TextGamesEnvironment
from openenv_ws_envs.textgames.games import NumberGuess, TicTacToe, Wordle, score, words


def test_the_word_list_is_shipped_clean():
    assert len(words()) >= 300
    assert all(len(w) == 5 and w.isalpha() and w.islower() for w in words())
    assert len(set(words())) == len(words())


@pytest.mark.parametrize(
    ("guess", "answer", "marks"),
    [
        ("crane", "crane", "GGGGG"),
        ("crane", "trace", "YGG-G"),
        ("speed", "abide", "--Y-Y"),  # one E in the answer: only the first extra E is marked
        ("geese", "eerie", "-GY-G"),  # two Es green, one left over for a Y
        ("lever", "hello", "YG---"),
    ],
)
def test_wordle_feedback_counts_repeated_letters(guess, answer, marks):
    assert score(guess, answer) == marks


async def play(env: TextGamesEnvironment, *moves: str):
    return [await env.step(TextGameAction(move=m)) for m in moves]


async def test_wordle_is_won_with_the_seeds_word_and_lost_after_six_guesses():
    answer = Wordle(random.Random(3)).answer
    env = TextGamesEnvironment()
    first = (await env.reset(seed=3)).observation
    assert first.game == "wordle" and first.moves_left == 6 and "5-letter" in first.message
    wrong = next(w for w in words() if w != answer)
    (r1, r2) = await play(env, wrong, answer.upper())
    assert r1.reward == 0.0 and not r1.done and r1.observation.feedback == score(wrong, answer)
    assert r2.reward == 1.0 and r2.terminated and r2.observation.outcome == "win"
    assert r2.observation.board.splitlines() == [f"{wrong.upper()} {score(wrong, answer)}", f"{answer.upper()} GGGGG"]

    await env.reset(seed=3)
    results = await play(env, *[w for w in words() if w != answer][:6])
    assert [r.terminated for r in results] == [False] * 5 + [True]
    assert results[-1].reward == 0.0 and results[-1].observation.outcome == "loss"
    assert answer in results[-1].observation.message


async def test_invalid_moves_cost_a_penalty_change_nothing_and_end_the_episode_when_repeated():
    env = TextGamesEnvironment(max_invalid_moves=3)
    await env.reset(seed=1)
    results = await play(env, "zzzzz", "toolong", "crane", "12345")
    assert [r.observation.valid for r in results] == [False, False, True, False]
    assert results[0].reward == pytest.approx(-0.1) and "not in the word list" in results[0].observation.message
    assert results[1].observation.moves_left == 6 and results[2].observation.moves_left == 5
    assert results[3].truncated and not results[3].terminated
    state = await env.state()
    assert state.invalid_moves == 3 and state.moves == ["crane"]


async def test_number_guessing_by_bisection_wins_in_the_allowed_guesses():
    target = NumberGuess(random.Random(9), high=1000).target
    env = TextGamesEnvironment(game="number", high=1000)
    first = (await env.reset(seed=9)).observation
    assert first.moves_left == 11
    low, high, r = 1, 1000, None
    for _ in range(11):
        guess = (low + high) // 2
        r = await env.step(TextGameAction(move=str(guess)))
        if r.observation.feedback == "higher":
            low = guess + 1
        elif r.observation.feedback == "lower":
            high = guess - 1
        else:
            break
    assert r.terminated and r.reward == 1.0 and r.observation.outcome == "win" and guess == target
    smaller = await env.reset(seed=9, options={"high": 50})  # reset options override the constructor's
    assert smaller.observation.moves_left == 7
    (r,) = await play(env, "51")
    assert not r.observation.valid and "outside 1..50" in r.observation.message


async def test_tictactoe_opponent_takes_the_centre_blocks_and_can_be_forked():
    env = TextGamesEnvironment(game="tictactoe")
    for seed in range(6):
        await env.reset(seed=seed)
        (r,) = await play(env, "1")
        assert r.observation.feedback == "5"  # the centre first
        (r,) = await play(env, "9")
        corner = r.observation.feedback
        assert corner in ("3", "7")  # then a corner, chosen by the seed
        (r,) = await play(env, "7" if corner == "3" else "3")  # block O's diagonal: two threats
        threats = {"3": {"4", "8"}, "7": {"2", "6"}}[corner]
        assert r.observation.feedback in threats  # O blocks one of them
        (r,) = await play(env, (threats - {r.observation.feedback}).pop())
        assert r.terminated and r.reward == 1.0 and r.observation.outcome == "win"


async def test_tictactoe_opponent_wins_against_a_naive_player_and_rejects_taken_cells():
    env = TextGamesEnvironment(game="tictactoe")
    await env.reset(seed=0)
    results = await play(env, "1", "2", "4")  # O: centre, blocks 3, then completes 3-5-7
    assert [r.observation.feedback for r in results] == ["5", "3", "7"]
    assert results[-1].terminated and results[-1].reward == -1.0 and results[-1].observation.outcome == "loss"
    await env.reset(seed=0)
    (_, r) = await play(env, "c3", "9")
    assert not r.observation.valid and "taken" in r.observation.message and r.observation.moves_left == 7


async def test_the_seed_reproduces_the_game():
    def transcript(seed: int) -> list[str]:
        game = TicTacToe(random.Random(seed), agent_first=False)
        return [game.opening] + [game.play(m).feedback for m in game.legal_moves()[:2]]

    assert transcript(4) == transcript(4)
    assert Wordle(random.Random(8)).answer == Wordle(random.Random(8)).answer
    env = TextGamesEnvironment(game="tictactoe", agent_first=False)
    first = (await env.reset(seed=4)).observation
    assert first.moves_left == 8 and "opened at" in first.message


def test_bad_options_fail_at_construction():
    with pytest.raises(ValidationError, match="unknown game"):
        TextGamesEnvironment(game="chess")
    with pytest.raises(ValidationError, match="bad options for wordle"):
        TextGamesEnvironment(high=5)


async def test_the_play_tool_is_a_move():
    by_action, by_tool = TextGamesEnvironment(game="number"), TextGamesEnvironment(game="number")
    for env in (by_action, by_tool):
        await env.reset(seed=7)
    for move in ("50", "x", "25"):
        expected = await by_action.step(TextGameAction(move=move))
        assert await call_tool(by_tool, "play", {"move": move}) == expected
