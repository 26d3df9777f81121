"""Shell: a persistent bash per episode, with optional tasks checked by a script."""

from .environment import ShellAction, ShellEnvironment, ShellObservation, ShellState

__all__ = ["ShellAction", "ShellEnvironment", "ShellObservation", "ShellState"]
