"""A progress line for long loops: redrawn in place on a terminal, periodic lines in logs."""

import collections
import math
import sys
import time


class Progress:
    """``update(step, **values)`` prints step/total, rate, ETA and the values given.

    The rate (and so the ETA) is the steady pace: measured over the updates of the last
    ``window`` seconds, leaving out the first ``settle`` updates (what comes before and
    around them, starting worker processes, tracing and compiling a graph, says nothing
    about the pace of the rest). Until then the line shows no ETA. On a terminal the line
    is redrawn at most every 0.2 s; otherwise (CI logs, files) one line is printed every
    ``log_every`` seconds and at the end.
    """

    def __init__(self, total, initial=0, unit="step", log_every=20.0, stream=None,
                 clock=time.monotonic, settle=2, window=60.0):
        self.total = int(total)
        self.unit = unit
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self.clock = clock
        self.settle = int(settle)
        self.window = float(window)
        self.updates = 0
        self.recent = collections.deque()  # (time, step) of the steady updates in the window
        self.last_print = -math.inf
        self.step = int(initial)

    def rate(self):
        """Steps per second over the recent steady updates (0 until two of them)."""
        if len(self.recent) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self.recent[0], self.recent[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, step, **values):
        self.step = int(step)
        now = self.clock()
        self.updates += 1
        if self.updates >= self.settle:  # the settle-th update starts the steady pace
            self.recent.append((now, self.step))
            while len(self.recent) > 2 and now - self.recent[1][0] >= self.window:
                self.recent.popleft()
        done = self.step >= self.total
        if not done and now - self.last_print < (0.2 if self.tty else self.log_every):
            return
        self.last_print = now
        rate = self.rate()
        eta = (self.total - self.step) / rate if rate > 0 else math.inf
        eta_text = f"{eta:5.0f}s" if math.isfinite(eta) else "  ?"
        width = 24
        filled = int(width * self.step / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        fields = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        line = (f"[{bar}] {self.step}/{self.total} {self.unit}s  {rate:.2f} {self.unit}s/s  "
                f"ETA {eta_text}  {fields}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
