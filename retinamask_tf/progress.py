"""A progress line for long loops: redrawn in place on a terminal, periodic lines in logs."""

import math
import sys
import time


class Progress:
    """``update(step, **values)`` prints step/total, rate, ETA and the values given.

    The rate (and so the ETA) counts from the first update on: what comes before it
    (starting worker processes, tracing a graph) says nothing about the pace of the rest,
    and is left out; the first line has no ETA yet. On a terminal the line is redrawn at
    most every 0.2 s; otherwise (CI logs, files) one line is printed every ``log_every``
    seconds and at the end.
    """

    def __init__(self, total, initial=0, unit="step", log_every=20.0, stream=None,
                 clock=time.monotonic):
        self.total = int(total)
        self.unit = unit
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self.clock = clock
        self.first = None  # (time, step) of the first update
        self.last_print = -math.inf
        self.step = int(initial)

    def rate(self):
        """Steps per second since the first update (0 before a second one)."""
        if self.first is None:
            return 0.0
        elapsed = self.clock() - self.first[0]
        return (self.step - self.first[1]) / elapsed if elapsed > 0 else 0.0

    def update(self, step, **values):
        self.step = int(step)
        now = self.clock()
        if self.first is None:
            self.first = (now, self.step)
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
