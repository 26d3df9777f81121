"""Text games: Wordle, number guessing and tic-tac-toe, seeded."""

from .environment import TextGameAction, TextGameObservation, TextGamesEnvironment, TextGameState

__all__ = ["TextGameAction", "TextGameObservation", "TextGameState", "TextGamesEnvironment"]
