"""tf.distribute: the loss does not depend on how the global batch is split over replicas;
strategies by name; the global batch must split evenly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from retinamask_tf import config as C
from retinamask_tf.training import distribute

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_one_replica_equals_two_replicas(tmp_path):
    """1 replica x batch 8 and 2 replicas (logical CPUs) x batch 4, same weights and data,
    3 steps with the mask head and global-norm clipping: the same losses, number of
    positives, beta statistics and weights, to float round-off. (With per-replica
    normalisers the two-replica loss would differ: positives are uneven across halves. It
    caught clipping by the sum of per-replica gradient norms, which is not the norm of the
    summed gradient: the losses drifted 1.4% apart by step 3.)"""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, os.path.join(HERE, "replica_check.py"),
                          str(tmp_path), "3"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = json.loads(res.stdout)
    one, two = runs["one"], runs["two"]
    assert one["replicas"] == 1 and two["replicas"] == 2
    for a, b in zip(one["losses"], two["losses"], strict=True):
        for key in ("total_loss", "cls_loss", "box_loss", "mask_loss", "num_positives"):
            np.testing.assert_allclose(b[key], a[key], rtol=2e-4, err_msg=key)
        np.testing.assert_allclose(b["beta"], a["beta"], rtol=2e-4)
    np.testing.assert_allclose(two["running_mean"], one["running_mean"], rtol=2e-4)
    np.testing.assert_allclose(two["running_var"], one["running_var"], rtol=2e-4)
    assert one["weights"].keys() == two["weights"].keys()
    for path, w in one["weights"].items():
        np.testing.assert_allclose(two["weights"][path], w, rtol=1e-3, atol=1e-5, err_msg=path)
    # The runs moved the weights (the comparison is not of two untouched initialisations).
    assert one["losses"][0]["total_loss"] != one["losses"][-1]["total_loss"]


def test_strategies_by_name_and_batch_split():
    assert distribute.build_strategy("default").num_replicas_in_sync == 1
    mirrored = distribute.build_strategy("mirrored", devices=["/cpu:0"])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert distribute.check_global_batch(16, mirrored) == 16
    with pytest.raises(C.ConfigError, match="--strategy 'nope'"):
        distribute.build_strategy("nope")

    class Four:
        num_replicas_in_sync = 4
    assert distribute.check_global_batch(16, Four()) == 4
    with pytest.raises(C.ConfigError, match=r"train\.batch_size.*4 replicas \(e\.g\. 8 or 12\)"):
        distribute.check_global_batch(10, Four())
    # XLA: one replica only (a cluster runs on one device; the step sums over replicas).
    distribute.check_jit_compile(True, mirrored)
    distribute.check_jit_compile(False, Four())
    with pytest.raises(C.ConfigError, match=r"train\.jit_compile.*has 4"):
        distribute.check_jit_compile(True, Four())
    # The input position can be checkpointed with the default strategy only (TF 2.21's
    # MirroredStrategy iterator is not trackable): said by key before any data is read.
    distribute.check_data_iterator_checkpoint(True, distribute.build_strategy("default"))
    distribute.check_data_iterator_checkpoint(False, mirrored)
    with pytest.raises(C.ConfigError, match=r"train\.checkpoint_data_iterator.*Mirrored"):
        distribute.check_data_iterator_checkpoint(True, mirrored)
    tf.config.experimental.enable_op_determinism()
    try:
        with pytest.raises(C.ConfigError, match=r"train\.jit_compile.*op determinism"):
            distribute.check_jit_compile(True, mirrored)
    finally:
        tf_config.disable_op_determinism()


def test_chief_and_worker_dirs(monkeypatch, tmp_path):
    mwms = tf.distribute.MultiWorkerMirroredStrategy.__new__(tf.distribute.MultiWorkerMirroredStrategy)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief(mwms) and distribute.worker_dir("d", mwms) == "d"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert not distribute.is_chief(mwms)
    assert distribute.worker_dir("d", mwms) == os.path.join("d", "workers", "worker_1")
    with_chief = dict(cluster, chief=["127.0.0.1:3"])
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": with_chief,
                                                "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief(mwms)
    assert distribute.is_chief(tf.distribute.get_strategy())  # single process: always


def _free_ports(n):
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(shapes_root, model_dir, out_dir, steps, checkpoint_every):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        log = open(os.path.join(out_dir, f"worker_{index}.log"), "w")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "multi_worker_check.py"), shapes_root,
             model_dir, out_dir, str(steps), str(checkpoint_every)],
            env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _wait(procs, out_dir, timeout=420):
    for index, proc in enumerate(procs):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        log = open(os.path.join(out_dir, f"worker_{index}.log")).read()
        assert proc.returncode == 0, log[-3000:]
    return [json.load(open(os.path.join(out_dir, f"result_worker_{i}.json"))) for i in range(2)]


def test_multi_worker_two_processes_train_and_resume(tiny_shapes, tmp_path):
    """Two worker processes on 127.0.0.1 (TF_CONFIG): both end with identical weights; only
    the chief's files are in model_dir (the other worker's checkpoint lives under
    workers/); a second launch resumes both from the chief's last checkpoint."""
    model_dir, out = str(tmp_path / "run"), str(tmp_path)
    results = _wait(_start_workers(tiny_shapes["root"], model_dir, out, 3, 3), out)
    assert [r["chief"] for r in results] == [True, False]
    assert [r["step"] for r in results] == [3, 3] and [r["start"] for r in results] == [0, 0]
    assert results[0]["weights"] == results[1]["weights"]
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints")))[0].startswith("checkpoint")
    assert os.path.exists(os.path.join(model_dir, "config.yaml"))
    assert os.listdir(os.path.join(model_dir, "workers")) == ["worker_1"]
    results = _wait(_start_workers(tiny_shapes["root"], model_dir, out, 5, 5), out)
    assert [r["start"] for r in results] == [3, 3] and [r["step"] for r in results] == [5, 5]
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["loss"] == results[1]["loss"]


@pytest.mark.slow
def test_multi_worker_killed_worker_resumes_from_last_checkpoint(tiny_shapes, tmp_path):
    """A worker killed (-9) mid-run: the cluster is restarted with the same command and
    resumes from the chief's last checkpoint, losing at most the steps since it."""
    import time

    model_dir, out = str(tmp_path / "run"), str(tmp_path)
    ckpts = os.path.join(model_dir, "checkpoints")

    def saved():
        if not os.path.isdir(ckpts):
            return []
        return sorted(int(n[5:-6]) for n in os.listdir(ckpts)
                      if n.startswith("ckpt-") and n.endswith(".index"))

    procs = _start_workers(tiny_shapes["root"], model_dir, out, 60, 5)
    deadline = time.time() + 300
    while not saved() or saved()[-1] < 10:
        assert time.time() < deadline and procs[0].poll() is None, "no checkpoint 10"
        time.sleep(0.2)
    procs[1].kill()
    last_at_kill = saved()[-1]
    try:  # the chief's next collective fails; a cluster manager would stop it anyway
        procs[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait()
    assert procs[0].returncode != 0 and procs[1].wait() != 0
    last = saved()[-1]
    assert last >= last_at_kill and last < 60
    results = _wait(_start_workers(tiny_shapes["root"], model_dir, out, 60, 5), out)
    assert [r["start"] for r in results] == [last, last]
    assert [r["step"] for r in results] == [60, 60]
    assert results[0]["weights"] == results[1]["weights"]
