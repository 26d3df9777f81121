"""Connect Four's action, observation and state (stand-in: see ``connect4_env``).

The board is 6 rows of 7 cells, row 0 at the top: 0 is empty, 1 and -1 are the two players'
pieces. Player 1 moves first.
"""

from __future__ import annotations

from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

ROWS = 6
COLUMNS = 7


def empty_board() -> list[list[int]]:
    return [[0] * COLUMNS for _ in range(ROWS)]


class Connect4Action(Action):
    """Drop the mover's piece into ``column`` (0 to 6)."""

    column: int


class Connect4Observation(Observation):
    """The board after the move and the columns that still have room."""

    board: list[list[int]] = Field(default_factory=list)
    legal_actions: list[int] = Field(default_factory=list)


class Connect4State(State):
    """The board and whose move it is (1 or -1)."""

    board: list[list[int]] = Field(default_factory=empty_board)
    next_player: int = 1
