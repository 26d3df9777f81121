"""The echo environment as a server runs it (stand-in: see ``echo_env``)."""

from .echo_environment import EchoEnvironment

__all__ = ["EchoEnvironment"]
