"""The per-directory training lock: refused while held, named holder, gone with its process."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from retinamask_tf.training.run_lock import RunLock, RunLockedError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from retinamask_tf.training.run_lock import RunLock;"
        "lock = RunLock(sys.argv[1]); print('held', flush=True); time.sleep(120)")


def test_lock_refuses_names_the_holder_and_dies_with_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), REPO],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError,
                           match=rf"pid {proc.pid} on host {socket.gethostname()}, started 20"):
            RunLock(str(tmp_path))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(str(tmp_path)) as lock:  # the killed holder's lock went with it
        assert f'"pid": {os.getpid()}' in open(lock.path).read()
    RunLock(str(tmp_path)).release()  # released on exit


def test_main_names_a_model_dir_that_is_a_file(tmp_path):
    afile = tmp_path / "not_a_folder"
    afile.write_text("")
    res = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=train",
                          f"--model_dir={afile}", "--override=train.steps=1",
                          "--override=train.warmup_steps=0", "--override=train.lr_drop_steps=[]"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"error: [Errno 17] File exists: '{afile}'" in res.stderr
