"""The progress line: its rate and ETA count from the first update, not from start-up."""

import io

from retinamask_tf.progress import Progress


def test_eta_leaves_out_what_came_before_the_first_update():
    now = [100.0]
    out = io.StringIO()
    bar = Progress(1001, unit="image", log_every=0.0, stream=out, clock=lambda: now[0])
    now[0] = 160.0  # a minute of start-up (worker processes, a graph trace) before item 1
    bar.update(1)
    now[0] = 161.0
    bar.update(11)  # 10 items in 1 s
    now[0] = 260.0
    bar.update(1001)
    lines = out.getvalue().splitlines()
    assert "1/1001 images  0.00 images/s  ETA   ?" in lines[0]
    assert "11/1001 images  10.00 images/s  ETA    99s" in lines[1]
    assert "1001/1001 images  10.00 images/s  ETA     0s" in lines[2]


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
