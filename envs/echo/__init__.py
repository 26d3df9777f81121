"""Echo: repeats the message it is sent. The smallest real environment, used by the
quickstart, the tests and the benchmarks (``delay_s`` mimics a slow environment)."""

from .environment import EchoAction, EchoEnvironment, EchoObservation, EchoState

__all__ = ["EchoAction", "EchoEnvironment", "EchoObservation", "EchoState"]
