"""The games themselves: plain Python, no environment machinery. Each takes a seeded ``random.Random``.

A game answers each textual move with a :class:`Turn`. A move that breaks the rules (not a word,
out of range, an occupied cell) is answered ``valid=False`` and changes nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar


@dataclass
class Turn:
    valid: bool
    message: str
    feedback: str = ""
    outcome: str = ""
    """``""`` while the game goes on; ``win``, ``loss`` or ``draw`` when it ended."""


@cache
def words() -> tuple[str, ...]:
    """The shipped word list (answers and allowed guesses)."""
    lines = Path(__file__).with_name("words.txt").read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


class Game:
    name: ClassVar[str]
    #: Reward for a loss (a draw scores 0, a win 1).
    loss_reward: ClassVar[float] = 0.0

    def intro(self) -> str:
        raise NotImplementedError

    def play(self, move: str) -> Turn:
        raise NotImplementedError

    def board(self) -> str:
        raise NotImplementedError

    def moves_left(self) -> int:
        raise NotImplementedError

    def legal_moves(self) -> list[str]:
        return []


def score(guess: str, answer: str) -> str:
    """Wordle feedback: ``G`` right letter in the right place, ``Y`` elsewhere in the word, ``-`` absent.

    A letter guessed more often than the answer holds it is marked ``Y`` only as many times as it is
    left over after the ``G`` marks.
    """
    marks = ["-"] * len(guess)
    left: dict[str, int] = {}
    for i, (g, a) in enumerate(zip(guess, answer, strict=True)):
        if g == a:
            marks[i] = "G"
        else:
            left[a] = left.get(a, 0) + 1
    for i, g in enumerate(guess):
        if marks[i] == "-" and left.get(g, 0) > 0:
            marks[i] = "Y"
            left[g] -= 1
    return "".join(marks)


class Wordle(Game):
    name = "wordle"

    def __init__(self, rng: random.Random, max_guesses: int = 6) -> None:
        self.answer = rng.choice(words())
        self.max_guesses = max_guesses
        self.history: list[tuple[str, str]] = []

    def intro(self) -> str:
        return (
            f"Guess the secret 5-letter English word in {self.max_guesses} tries. Send a word as your move. "
            "Feedback per letter: G = right letter, right place; Y = in the word, elsewhere; - = not in the word."
        )

    def play(self, move: str) -> Turn:
        guess = move.strip().lower()
        if len(guess) != 5 or not guess.isalpha():
            return Turn(False, f"invalid move: {move!r} is not a 5-letter word")
        if guess not in words():
            return Turn(False, f"invalid move: {guess!r} is not in the word list")
        feedback = score(guess, self.answer)
        self.history.append((guess, feedback))
        if guess == self.answer:
            return Turn(True, f"{guess} is the word: solved in {len(self.history)} guesses", feedback, "win")
        if not self.moves_left():
            return Turn(True, f"out of guesses: the word was {self.answer}", feedback, "loss")
        return Turn(True, f"{guess}: {feedback}", feedback)

    def board(self) -> str:
        return "\n".join(f"{guess.upper()} {feedback}" for guess, feedback in self.history)

    def moves_left(self) -> int:
        return self.max_guesses - len(self.history)


class NumberGuess(Game):
    name = "number"

    def __init__(self, rng: random.Random, high: int = 100, max_guesses: int | None = None) -> None:
        if high < 2:
            raise ValueError("high must be at least 2")
        self.high = high
        self.target = rng.randint(1, high)
        # Enough for a binary search, and one to spare.
        self.max_guesses = max_guesses if max_guesses is not None else math.ceil(math.log2(high)) + 1
        self.guesses: list[int] = []

    def intro(self) -> str:
        return (
            f"Guess the secret whole number between 1 and {self.high} in {self.max_guesses} tries. "
            "Send a number as your move; the feedback is higher, lower or correct."
        )

    def play(self, move: str) -> Turn:
        try:
            guess = int(move.strip())
        except ValueError:
            return Turn(False, f"invalid move: {move!r} is not a whole number")
        if not 1 <= guess <= self.high:
            return Turn(False, f"invalid move: {guess} is outside 1..{self.high}")
        self.guesses.append(guess)
        if guess == self.target:
            return Turn(True, f"{guess} is correct: found in {len(self.guesses)} guesses", "correct", "win")
        feedback = "higher" if self.target > guess else "lower"
        if not self.moves_left():
            return Turn(True, f"{guess}: {feedback}. Out of guesses: the number was {self.target}", feedback, "loss")
        return Turn(True, f"{guess}: the number is {feedback}", feedback)

    def board(self) -> str:
        return " ".join(str(g) for g in self.guesses)

    def moves_left(self) -> int:
        return self.max_guesses - len(self.guesses)


LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
CENTER, CORNERS, EDGES = (4,), (0, 2, 6, 8), (1, 3, 5, 7)


class TicTacToe(Game):
    """The agent plays X against a fixed rule-based opponent (O).

    The opponent wins when it can, else blocks the agent's win, else takes the centre, a corner, an
    edge; ties between equally good cells are broken by the seeded generator. It does not see forks,
    so it can be beaten.
    """

    name = "tictactoe"
    loss_reward = -1.0

    def __init__(self, rng: random.Random, agent_first: bool = True) -> None:
        self.rng = rng
        self.cells = [" "] * 9
        self.agent_first = agent_first
        self.opening = "" if agent_first else self._reply()

    def intro(self) -> str:
        who = "You move first." if self.agent_first else f"The opponent opened at {self.opening}."
        return (
            "Tic-tac-toe: you are X, the opponent is O. Send a cell as your move: 1-9 in reading order "
            f"(1 top left, 9 bottom right), or a column letter and a row number (a1 top left, c3 bottom right). {who}"
        )

    @staticmethod
    def parse(move: str) -> int | None:
        text = move.strip().lower()
        if len(text) == 1 and text in "123456789":
            return int(text) - 1
        if len(text) == 2 and text[0] in "abc" and text[1] in "123":
            return (int(text[1]) - 1) * 3 + "abc".index(text[0])
        return None

    def _winner(self) -> str:
        for a, b, c in LINES:
            if self.cells[a] != " " and self.cells[a] == self.cells[b] == self.cells[c]:
                return self.cells[a]
        return ""

    def _completing(self, mark: str) -> list[int]:
        """Empty cells that would complete a line of ``mark``."""
        found = set()
        for line in LINES:
            marks = [self.cells[i] for i in line]
            if marks.count(mark) == 2 and marks.count(" ") == 1:
                found.add(line[marks.index(" ")])
        return sorted(found)

    def _reply(self) -> str:
        free = [i for i in range(9) if self.cells[i] == " "]
        for tier in (self._completing("O"), self._completing("X"), CENTER, CORNERS, EDGES):
            options = [i for i in tier if i in free]
            if options:
                cell = self.rng.choice(options)
                self.cells[cell] = "O"
                return str(cell + 1)
        raise AssertionError("no free cell")

    def play(self, move: str) -> Turn:
        cell = self.parse(move)
        if cell is None:
            return Turn(False, f"invalid move: {move!r} is not a cell (1-9, or a1..c3)")
        if self.cells[cell] != " ":
            return Turn(False, f"invalid move: cell {cell + 1} is taken")
        self.cells[cell] = "X"
        if self._winner():
            return Turn(True, "three in a row: you win", "", "win")
        if not self.moves_left():
            return Turn(True, "the board is full: a draw", "", "draw")
        reply = self._reply()
        if self._winner():
            return Turn(True, f"the opponent played {reply} and wins", reply, "loss")
        if not self.moves_left():
            return Turn(True, f"the opponent played {reply}; the board is full: a draw", reply, "draw")
        return Turn(True, f"the opponent played {reply}", reply)

    def board(self) -> str:
        rows = (" " + " | ".join(self._shown(r * 3 + c) for c in range(3)) for r in range(3))
        return "\n---+---+---\n".join(rows)

    def _shown(self, cell: int) -> str:
        return self.cells[cell] if self.cells[cell] != " " else str(cell + 1)

    def moves_left(self) -> int:
        return self.cells.count(" ")

    def legal_moves(self) -> list[str]:
        return [str(i + 1) for i in range(9) if self.cells[i] == " "]


GAMES: dict[str, type[Game]] = {game.name: game for game in (Wordle, NumberGuess, TicTacToe)}
