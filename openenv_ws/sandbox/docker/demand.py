"""How many sandboxes a wave of sessions needs: the peak of opens that came together, recently.

RL training opens sessions in waves: a batch of episodes starts at once, runs, ends, and the
next batch comes after the model update. A pool sized to the largest recent wave has the next
one's containers ready before it arrives. Opens are counted in one-second buckets; the demand
is the largest number of opens within any ``span`` seconds of the last ``window`` seconds, so a
wave spread over a few seconds counts as one, and a wave older than the window is forgotten
(the pool shrinks when demand falls). Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import deque


class DemandWindow:
    def __init__(self, window: float, span: float) -> None:
        if window < 1 or span < 1 or span > window:
            raise ValueError("need 1 <= span <= window (seconds)")
        self.window = int(window)
        self.span = int(span)
        self._buckets: deque[tuple[int, int]] = deque()  # (second, opens in that second), oldest first

    def record(self, now: float, opens: int = 1) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + opens)
        else:
            self._buckets.append((second, opens))
        self._forget(second)

    def peak(self, now: float) -> int:
        """The most opens within any ``span`` seconds of the window ending at ``now``."""
        self._forget(int(now))
        best = total = 0
        start = 0
        buckets = list(self._buckets)
        for second, opens in buckets:
            total += opens
            while buckets[start][0] <= second - self.span:
                total -= buckets[start][1]
                start += 1
            best = max(best, total)
        return best

    def _forget(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window:
            self._buckets.popleft()
