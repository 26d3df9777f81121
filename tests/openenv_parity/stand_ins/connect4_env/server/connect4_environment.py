"""Connect Four, both players moving through ``step`` in turn (stand-in: see ``connect4_env``).

The rules as OpenEnv's example plays them: a piece falls to the lowest empty cell of its column;
four in a row (across, down or diagonal) through it wins the mover a reward of 1.0 and ends the
game; a full board ends it at 0.0; a move into a full or missing column ends it with -1 and leaves
the board as it was. Each step passes the turn to the other player, and the observation's
``metadata["next_player"]`` says whose it is.
"""

from __future__ import annotations

import uuid

from openenv.core.env_server.interfaces import Environment

from ..models import COLUMNS, ROWS, Connect4Action, Connect4Observation, Connect4State

LINES = ((0, 1), (1, 0), (1, 1), (1, -1))  # across, down, and the two diagonals


class Connect4Environment(Environment):
    ROWS = ROWS
    COLUMNS = COLUMNS

    def __init__(self, opponent: object = None) -> None:
        super().__init__()
        self._opponent = opponent  # taken as OpenEnv's is; neither plays it
        self.reset()

    def reset(self) -> Connect4Observation:
        self.board = [[0] * COLUMNS for _ in range(ROWS)]
        self.next_player = 1
        self.invalid_move_played = False
        self._state = Connect4State(
            episode_id=str(uuid.uuid4()), step_count=0, board=self._copy(), next_player=self.next_player
        )
        return self._observe()

    def step(self, action: Connect4Action) -> Connect4Observation:  # type: ignore[override]
        column = action.column
        if not 0 <= column < COLUMNS or self.board[0][column] != 0:
            self.invalid_move_played = True
            reward, done = -1, True
        else:
            row = max(r for r in range(ROWS) if self.board[r][column] == 0)
            self.board[row][column] = self.next_player
            reward, done = self._outcome(row, column)
        self.next_player = -self.next_player
        self._state = Connect4State(
            episode_id=self._state.episode_id,
            step_count=self._state.step_count + 1,
            board=self._copy(),
            next_player=self.next_player,
        )
        return self._observe(reward, done)

    @property
    def state(self) -> Connect4State:
        return self._state

    def _outcome(self, row: int, column: int) -> tuple[float, bool]:
        """(reward, done) after the piece at (row, column) was placed."""
        player = self.board[row][column]
        for dr, dc in LINES:
            run = 1 + self._count(row, column, dr, dc, player) + self._count(row, column, -dr, -dc, player)
            if run >= 4:
                return 1.0, True
        if all(cell != 0 for cell in self.board[0]):  # pieces fall: a full top row is a full board
            return 0.0, True
        return 0.0, False

    def _count(self, row: int, column: int, dr: int, dc: int, player: int) -> int:
        """How many of ``player``'s pieces follow (row, column) in the direction (dr, dc)."""
        count = 0
        r, c = row + dr, column + dc
        while 0 <= r < ROWS and 0 <= c < COLUMNS and self.board[r][c] == player:
            count += 1
            r, c = r + dr, c + dc
        return count

    def _copy(self) -> list[list[int]]:
        return [list(row) for row in self.board]

    def _observe(self, reward: float = 0.0, done: bool = False) -> Connect4Observation:
        return Connect4Observation(
            board=self._copy(),
            legal_actions=[c for c in range(COLUMNS) if self.board[0][c] == 0],
            reward=reward,
            done=done,
            metadata={"next_player": self.next_player},
        )
