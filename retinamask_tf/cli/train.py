"""--mode=train (and the training half of train_and_eval)."""

from retinamask_tf.training import distribute, run_lock
from retinamask_tf.training.trainer import Trainer

_HELD = []  # run locks this process keeps until it exits


def run(config, model_dir, strategy="default", tpu=None):
    """Trains ``config`` in ``model_dir`` (resuming from its last checkpoint); returns the
    ``Trainer``. The run directory stays locked until the process ends (evaluation and
    export included); each worker of a multi-worker run locks the folder it writes."""
    strategy = distribute.build_strategy(strategy, tpu=tpu)
    _HELD.append(run_lock.RunLock(distribute.worker_dir(model_dir, strategy)))
    trainer = Trainer(config, model_dir, strategy=strategy)
    say = print if trainer.is_chief else (lambda *a, **k: None)
    say(f"Data: {trainer.train_data.summary()}\n      {trainer.val_data.summary()}", flush=True)
    truncated = trainer.skips.truncation_summary(config.data.max_instances)
    if truncated:
        say(f"      {truncated}", flush=True)
    c, replicas = trainer.config, strategy.num_replicas_in_sync
    split = f" ({replicas} replicas x {c.train.batch_size // replicas})" if replicas > 1 else ""
    say(f"Training {c.train.steps} steps, batch {c.train.batch_size}{split}, "
        f"{trainer.model.count_params():,} parameters, {trainer.train_data.num_classes} classes; "
        f"model_dir={model_dir}", flush=True)
    result = trainer.train()
    dropped = trainer.skips.summary()
    if dropped:
        say(f"Data: {dropped}", flush=True)
    if result["steps_run"]:
        say(f"Training done at step {trainer.step}: loss {result['total_loss']:.4f}, "
            f"{result['steps_per_sec']:.2f} steps/s", flush=True)
    else:
        say(f"Training had already finished: the checkpoint is at step {trainer.step} "
            f"(train.steps={c.train.steps}); nothing to train", flush=True)
    return trainer
