"""A progress line for long loops: redrawn in place on a terminal, periodic lines in logs."""

import math
import sys
import time


class Progress:
    """``update(step, **values)`` prints step/total, rate, ETA and the values given.

    On a terminal the line is redrawn at most every 0.2 s; otherwise (CI logs,
    files) one line is printed every ``log_every`` seconds and at the end.
    """

    def __init__(self, total, initial=0, unit="step", log_every=20.0, stream=None):
        self.total = int(total)
        self.unit = unit
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self.start_step = int(initial)
        self.start = time.time()
        self.last_print = 0.0
        self.step = int(initial)

    def rate(self):
        elapsed = time.time() - self.start
        return (self.step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def update(self, step, **values):
        self.step = int(step)
        now = time.time()
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
