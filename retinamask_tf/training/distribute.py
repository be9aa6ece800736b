"""``tf.distribute`` strategies by name, and who writes what in a multi-worker run.

``--strategy``:
  default                 one device (the first GPU, else the CPU).
  mirrored                all local GPUs (or the listed devices), one process.
  multi_worker_mirrored   one process per machine, described by ``TF_CONFIG``; all workers
                          run the same command. Without ``TF_CONFIG`` it is one worker.
  tpu                     ``TPUStrategy`` on the TPU named by ``--tpu`` (constructed as TF
                          documents it; not tested here: no TPU).

The config's ``train.batch_size`` is the global batch; each replica gets
``batch_size / num_replicas`` images (the input pipeline batches globally and
``experimental_distribute_dataset`` splits each batch). Loss normalisers and the
self-adjusting smooth L1 statistics are summed over replicas (``ops.distribute``), so the
loss, gradients and beta state do not depend on how the batch is split.

Multi-worker files: the chief writes ``config.yaml``, the label map, checkpoints and
TensorBoard logs into ``model_dir``; the other workers must still take part in each
checkpoint save (it is a collective), so they save into ``model_dir/workers/<task>/`` and
keep one; every worker restores from the chief's checkpoints (``model_dir`` must be on a
file system all workers see).
"""

import json
import os

import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # no public getter

from retinamask_tf import config as config_lib

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


def build_strategy(name="default", devices=None, tpu=None):
    """A ``tf.distribute.Strategy`` by name (see the module doc).

    Args:
      devices: for ``mirrored``, the devices to mirror over (default: all GPUs, else CPU).
      tpu: for ``tpu``, the TPU name or address ('' = the local TPU VM).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise config_lib.ConfigError(f"--strategy '{name}': must be one of {', '.join(STRATEGIES)}")


def check_global_batch(batch_size, strategy):
    """Raises ConfigError unless ``train.batch_size`` splits evenly over the replicas."""
    n = strategy.num_replicas_in_sync
    if batch_size % n:
        low, high = max(n, batch_size // n * n), (batch_size // n + 1) * n
        raise config_lib.ConfigError(
            f"config key 'train.batch_size': {batch_size} is the global batch and must be a "
            f"multiple of the strategy's {n} replicas (e.g. {low} or {high})")
    return batch_size // n


def check_jit_compile(jit_compile, strategy):
    """Raises ConfigError for ``train.jit_compile`` with more than one replica in sync, or
    with TF's op determinism on (XLA then refuses the MaxPool gradient).

    An XLA cluster runs on exactly one device and cannot touch another device's variables
    (TF's XLA known issues), and the train step's cross-replica sums (the global positive
    count, the self-adjusting L1 statistics, the optimizer's gradient all-reduce) sit inside
    the step, so the step cannot be compiled per replica either.
    """
    if jit_compile and tf_config.is_op_determinism_enabled():
        raise config_lib.ConfigError(
            "config key 'train.jit_compile': op determinism is enabled "
            "(tf.config.experimental.enable_op_determinism), and XLA has no deterministic "
            "MaxPool gradient; turn one of them off")
    n = strategy.num_replicas_in_sync
    if jit_compile and n > 1:
        raise config_lib.ConfigError(
            f"config key 'train.jit_compile' needs one replica, but the strategy has {n}: an "
            "XLA cluster runs on a single device and the train step sums over replicas inside "
            "it. Set train.jit_compile=false to train on several devices or workers")


def check_data_iterator_checkpoint(checkpoint_data_iterator, strategy):
    """Raises ConfigError for ``train.checkpoint_data_iterator`` with a strategy whose
    distributed iterator TensorFlow cannot checkpoint (``MirroredStrategy`` in TF 2.21: its
    ``DistributedIterator`` is not ``Trackable``), before any data is read."""
    if not checkpoint_data_iterator:
        return
    probe = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.range(1).batch(
        strategy.num_replicas_in_sync)))
    if not isinstance(probe, tf.__internal__.tracking.Trackable):
        raise config_lib.ConfigError(
            f"config key 'train.checkpoint_data_iterator' is true, but TensorFlow cannot "
            f"checkpoint the input position under {type(strategy).__name__} "
            f"({type(probe).__name__} is not trackable). Set it to false: a resumed run then "
            "keeps its step, weights, optimizer and beta state and starts a fresh input order")


def task():
    """(task type, task id) of this process from ``TF_CONFIG``; (None, None) without."""
    spec = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("task", {})
    return spec.get("type"), spec.get("index")


def is_chief(strategy=None):
    """Whether this process writes the run's files: the ``chief`` task, or worker 0 when
    the cluster has no chief; any single-process run."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = task()
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_dir(model_dir, strategy=None):
    """Where this process saves checkpoints: ``model_dir`` for the chief, else a folder of
    its own under ``model_dir/workers``."""
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task()
    return os.path.join(model_dir, "workers", f"{task_type}_{task_id}")
