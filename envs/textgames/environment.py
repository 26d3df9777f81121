from __future__ import annotations

import random
import uuid
from typing import Any, Literal

import msgspec

from openenv_ws.env import Action, Environment, Observation, State, StepResult
from openenv_ws.errors import ValidationError
from openenv_ws.protocol import ErrorCode
from openenv_ws.toolbox import tool

from .games import GAMES, Game, Turn

GameName = Literal["wordle", "number", "tictactoe"]
Outcome = Literal["", "win", "loss", "draw"]


class TextGameAction(Action):
    move: str
    """A word (wordle), a whole number (number), a cell ``1``-``9`` or ``a1``-``c3`` (tictactoe)."""


class TextGameObservation(Observation):
    game: str = ""
    board: str = ""
    """The game so far as text: wordle guesses with their feedback, the numbers tried, the grid."""
    message: str = ""
    """The rules (after reset) or what the last move did."""
    valid: bool = True
    """False when the last move broke the rules: it changed nothing and cost ``invalid_move_penalty``."""
    feedback: str = ""
    """wordle ``G``/``Y``/``-`` per letter; number ``higher``/``lower``/``correct``; tictactoe the opponent's cell."""
    moves_left: int = 0
    legal_moves: list[str] = msgspec.field(default_factory=list)
    """tictactoe: the free cells; empty for the other games."""
    outcome: Outcome = ""


class TextGameState(State):
    game: str = ""
    moves: list[str] = msgspec.field(default_factory=list)
    invalid_moves: int = 0
    outcome: Outcome = ""


def _bad_options(message: str) -> ValidationError:
    return ValidationError(message, path="$.options", code=ErrorCode.BAD_OPTIONS)


class TextGamesEnvironment(Environment):
    """Wordle, number guessing and tic-tac-toe; the ``game`` option (or reset option) picks one.

    Rewards: 1 for a win, 0 for a draw, 0 for a lost wordle or number game, -1 for a lost tic-tac-toe
    game, 0 for any other legal move. A move that breaks the rules changes nothing, costs
    ``invalid_move_penalty`` and is explained in ``message``; after ``max_invalid_moves`` of them the
    episode is truncated. The seed picks the secret word, the number, and the opponent's tie-breaks.
    The tool ``play`` makes a move, as the action does.
    """

    name = "textgames"
    action_type = TextGameAction
    observation_type = TextGameObservation
    state_type = TextGameState
    nondeterministic_fields = ("state.episode_id",)  # replays and `openenv-ws validate` skip it

    def __init__(
        self,
        game: GameName = "wordle",
        invalid_move_penalty: float = 0.1,
        max_invalid_moves: int = 5,
        **game_options: Any,
    ) -> None:
        self.default_game = game
        self.game_options = game_options
        self.invalid_move_penalty = invalid_move_penalty
        self.max_invalid_moves = max_invalid_moves
        self._new_game(game, game_options, None)  # wrong options fail at open, not at the first reset
        self._game: Game | None = None
        self._state = TextGameState()

    @staticmethod
    def _new_game(name: str, options: dict[str, Any], seed: int | None) -> Game:
        if name not in GAMES:
            raise _bad_options(f"unknown game {name!r} (known: {', '.join(GAMES)})")
        try:
            return GAMES[name](random.Random(seed), **options)
        except (TypeError, ValueError) as exc:
            raise _bad_options(f"bad options for {name}: {exc}") from None

    def _observe(self, game: Game, turn: Turn) -> TextGameObservation:
        return TextGameObservation(
            game=game.name,
            board=game.board(),
            message=turn.message,
            valid=turn.valid,
            feedback=turn.feedback,
            moves_left=game.moves_left(),
            legal_moves=game.legal_moves(),
            outcome=turn.outcome,  # type: ignore[arg-type]
        )

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        options = dict(options or {})
        name = options.pop("game", self.default_game)
        if name == self.default_game:
            options = {**self.game_options, **options}
        self._game = game = self._new_game(name, options, seed)
        self._state = TextGameState(episode_id=str(uuid.uuid4()), game=name)
        return StepResult(observation=self._observe(game, Turn(True, game.intro())))

    async def step(self, action: TextGameAction) -> StepResult:
        assert self._game is not None
        state = self._state
        state.step_count += 1
        turn = self._game.play(action.move)
        if not turn.valid:
            state.invalid_moves += 1
            return StepResult(
                observation=self._observe(self._game, turn),
                reward=-self.invalid_move_penalty,
                truncated=state.invalid_moves >= self.max_invalid_moves,
            )
        state.moves.append(action.move.strip().lower())
        state.outcome = turn.outcome  # type: ignore[assignment]
        reward = {"": 0.0, "win": 1.0, "draw": 0.0, "loss": self._game.loss_reward}[turn.outcome]
        return StepResult(observation=self._observe(self._game, turn), reward=reward, terminated=bool(turn.outcome))

    @tool
    async def play(self, move: str) -> StepResult[TextGameObservation]:
        """Make a move in the current game; the result shows the board, feedback and the outcome.

        Args:
            move: A five-letter word (wordle), a whole number (number), or a cell 1-9 or a1-c3 (tictactoe).
        """
        return await self.step(TextGameAction(move=move))

    async def state(self) -> TextGameState:
        return self._state
