"""The evaluation's progress: which attack runs, examples done of planned, and a time estimate.

Work is counted in examples per attack (an attack on 100 examples is 100), planned before
the evaluation starts: every ensemble member on every correctly classified example (later
members then attack fewer: `finish` drops what they never had to), each sweep attack at
each budget, each check's attacks. The estimate of the time left sums, over the attacks,
the examples left times that attack's measured seconds per example; an attack not measured
yet is estimated from its `cost` (forward and backward passes per example) at the seconds
per pass the attacks measured so far. Examples taken from the cache count as done and
take no time.

On a terminal the line is redrawn in place (at most twice a second); elsewhere (a log
file) one line is printed as each attack finishes its planned examples.
"""

import sys
import time


class Progress:
    """Examples done per attack, shown as one line.

    Args:
        stream: where to write (default `sys.stdout`).
        interactive: redraw in place; None: when `stream` is a terminal.
        min_interval: seconds between redraws.
    """

    def __init__(self, stream=None, interactive=None, min_interval=0.5):
        self.stream = stream or sys.stdout
        if interactive is None:
            interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interactive = interactive
        self.min_interval = min_interval
        self.planned, self.done, self.seconds, self.measured, self.cost = {}, {}, {}, {}, {}
        self._drawn = 0.0
        self._width = 0

    def plan(self, key, examples, cost):
        """Add `examples` of work for attack `key`, which makes `cost` passes per example."""
        for table in (self.done, self.seconds, self.measured):
            table.setdefault(key, 0)
        self.planned[key] = self.planned.get(key, 0) + int(examples)
        self.cost[key] = max(float(cost), 1.0)

    def advance(self, key, examples, seconds=None):
        """`examples` of `key` done, computed in `seconds` (None: taken from the cache)."""
        self.done[key] += int(examples)
        if seconds is not None:
            self.seconds[key] += float(seconds)
            self.measured[key] += int(examples)
        finished = self.done[key] >= self.planned[key]
        if self.interactive:
            if finished or time.monotonic() - self._drawn >= self.min_interval:
                self._draw(key)
        elif finished:
            self._write_line(key)

    def finish(self, key):
        """`key` has no more work: drop what was planned and never needed."""
        if self.planned.get(key, 0) > self.done.get(key, 0):
            self.planned[key] = self.done[key]
            if not self.interactive:
                self._write_line(key)

    def close(self):
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()

    # -- the estimate --------------------------------------------------------------------
    def seconds_per_example(self, key):
        """Measured for `key`, else from its cost at the seconds per pass measured so far."""
        if self.measured.get(key):
            return self.seconds[key] / self.measured[key]
        passes = sum(self.measured[k] * self.cost[k] for k in self.measured)
        if not passes:
            return None
        return self.cost[key] * sum(self.seconds.values()) / passes

    def seconds_left(self):
        """The estimated seconds left, or None before any attack has been timed."""
        total = 0.0
        for key, planned in self.planned.items():
            left = planned - self.done[key]
            if left > 0:
                rate = self.seconds_per_example(key)
                if rate is None:
                    return None
                total += left * rate
        return total

    def line(self, key):
        """`pgd-20 at 0.15   1,200 of 4,500 examples (27%)  ETA 3:12  0.041 s/example`."""
        done, planned = sum(self.done.values()), sum(self.planned.values())
        percent = 100 * done / planned if planned else 100.0
        left = self.seconds_left()
        eta = "--:--" if left is None else _clock(left)
        rate = self.seconds_per_example(key)
        pace = f"  {rate:.3g} s/example" if rate else ""
        return (f"{key:<28} {done:,} of {planned:,} examples ({percent:3.0f}%)  "
                f"ETA {eta}{pace}")

    def _draw(self, key):
        text = self.line(key)
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)
        self._drawn = time.monotonic()

    def _write_line(self, key):
        self.stream.write(self.line(key) + "\n")
        self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"
