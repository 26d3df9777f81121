"""What counting a step costs: the server's plain counters against prometheus_client's own metric objects.

The step path calls ``Metrics.applied(frame, reply, seconds)`` once per request. This times, in
one process, per call:

- ``plain``: the server's :class:`openenv_ws.server.metrics.Metrics` (a dict increment, an int,
  a bisect into the latency buckets);
- ``prometheus_client``: the same counts kept in prometheus_client's ``Counter`` and ``Histogram``
  (children bound to their labels once, as a careful caller would), on a registry of its own;

and the cost of one scrape (the body of ``GET /metrics``, which the web console polls). The
figures, and what follows from them, are in docs/benchmarks.md.

    python scripts/bench_metrics.py --calls 1000000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from openenv_ws.protocol import Result, Step, pack
from openenv_ws.server.metrics import STEP_BUCKETS, Metrics, ServerSnapshot


class LibraryCounts:
    """The step path's counts as prometheus_client metric objects."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        requests = Counter("openenv_ws_requests", "Requests applied.", ["kind"], registry=self.registry)
        self.step_requests = requests.labels("step")
        self.steps = Counter("openenv_ws_steps", "Steps that returned a result.", registry=self.registry)
        self.step_seconds = Histogram(
            "openenv_ws_step_seconds", "Time to apply one step.", buckets=STEP_BUCKETS, registry=self.registry
        )

    def applied(self, frame: object, reply: object, seconds: float) -> None:
        self.step_requests.inc()
        self.step_seconds.observe(seconds)
        if type(reply) is Result:
            self.steps.inc()


def per_call_ns(call: Callable[[], None], calls: int, repeat: int) -> float:
    """The median over ``repeat`` runs of ``calls`` calls, in ns per call, the loop's own cost taken out."""

    def run(fn: Callable[[], None]) -> float:
        started = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - started) / calls

    def nothing() -> None:
        pass

    runs = [run(call) - run(nothing) for _ in range(repeat)]
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls per run (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the median is shown (default 5)")
    parser.add_argument("--scrapes", type=int, default=2_000, help="scrapes timed (default 2,000)")
    args = parser.parse_args(argv)

    frame = Step(seq=1, action=pack({"message": "hi"}))
    reply = Result(seq=1, observation=pack({}), reward=0.5)
    plain, library = Metrics(), LibraryCounts()
    plain_ns = per_call_ns(lambda: plain.applied(frame, reply, 0.0003), args.calls, args.repeat)
    library_ns = per_call_ns(lambda: library.applied(frame, reply, 0.0003), args.calls, args.repeat)
    print(f"step path, per request ({args.calls:,} calls x {args.repeat}, median):")
    print(f"  plain counters (Metrics.applied)        {plain_ns / 1000:6.3f} us")
    print(f"  prometheus_client Counter + Histogram   {library_ns / 1000:6.3f} us")
    print(f"  difference                              {(library_ns - plain_ns) / 1000:+6.3f} us")

    snapshot = ServerSnapshot(backend={"name": "inprocess"}, max_sessions=1024, sessions={"active": 100})
    scrape_plain = per_call_ns(lambda: plain.render(snapshot), args.scrapes, args.repeat)
    print(
        f"one scrape, the whole /metrics body ({args.scrapes:,} x {args.repeat}, median): {scrape_plain / 1e3:.1f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
