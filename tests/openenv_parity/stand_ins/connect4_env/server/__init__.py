"""Connect Four as a server runs it (stand-in: see ``connect4_env``)."""

from .connect4_environment import Connect4Environment

__all__ = ["Connect4Environment"]
