"""The progress line: its rate and ETA are the steady pace, not the start-up's."""

import io

from retinamask_tf.progress import Progress


def test_eta_is_the_steady_pace_not_the_start_up():
    """Two minutes before step 1 (data loading, a graph trace) and 30 s for step 2 (a
    second trace), then 0.5 s a step: no ETA until the pace is measured, then exactly
    the steady one."""
    now = [0.0]
    out = io.StringIO()
    bar = Progress(1000, log_every=0.0, stream=out, clock=lambda: now[0])
    now[0] = 120.0
    bar.update(1)
    now[0] = 150.0
    bar.update(2)
    for step in range(3, 11):
        now[0] = 150.0 + 0.5 * (step - 2)
        bar.update(step)
    lines = out.getvalue().splitlines()
    assert "1/1000 steps  0.00 steps/s  ETA   ?" in lines[0]
    assert "2/1000 steps  0.00 steps/s  ETA   ?" in lines[1]
    assert "3/1000 steps  2.00 steps/s  ETA   498s" in lines[2]
    assert "10/1000 steps  2.00 steps/s  ETA   495s" in lines[-1]


def test_the_pace_follows_the_last_window():
    """After a slow phase the rate is that of the last ``window`` seconds."""
    now = [0.0]
    out = io.StringIO()
    bar = Progress(10_000, log_every=0.0, stream=out, clock=lambda: now[0], window=10.0)
    for step in range(1, 101):  # 1 step/s for 100 s
        now[0] = float(step)
        bar.update(step)
    for step in range(101, 301):  # then 10 steps/s for 20 s
        now[0] = 100.0 + (step - 100) * 0.1
        bar.update(step)
    assert abs(bar.rate() - 10.0) < 0.2


def test_log_lines_are_spaced_by_log_every():
    now = [0.0]
    out = io.StringIO()
    bar = Progress(100, log_every=20.0, stream=out, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] = step * 1.0
        bar.update(step, loss=0.5)
    # the first update, then one line each 20 s, and the last step
    assert [line.split("]")[1].split()[0] for line in out.getvalue().splitlines()] == [
        "1/100", "21/100", "41/100", "61/100", "81/100", "100/100"]
