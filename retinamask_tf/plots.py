"""Training plots from a run's TensorBoard logs (matplotlib, the ``plots`` extra).

  beta.png    the Self-Adjusting Smooth L1 state over training, per box coordinate
              (dy, dx, dh, dw): the running mean of |x| and the beta it gives (the
              paper's Figure 3);
  losses.png  each loss component (total, class, box, mask) over training.
"""

import logging
import os

import numpy as np
import tensorflow as tf

COORDS = ("dy", "dx", "dh", "dw")
LOSSES = ("total_loss", "cls_loss", "box_loss", "mask_loss")


def read_scalars(log_dir):
    """Every scalar in the event files under ``log_dir`` (tf.summary writes them as
    tensors): {tag: (steps [n] int64, values [n] float64)}, sorted by step; a step written
    twice (a resumed run) keeps its last value."""
    series = {}
    files = sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*")))
    for path in files:
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                series.setdefault(value.tag, {})[int(event.step)] = number
    out = {}
    for tag, by_step in series.items():
        steps = np.array(sorted(by_step), np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], np.float64))
    return out


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the plots need matplotlib: pip install 'retinamask-tf[plots]'") from e
    matplotlib.use("Agg")
    # Its first use on a machine builds a font cache and logs every missing fallback font.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt
    return plt


def plot_beta(scalars, path, beta_hat=None):
    """Figure 3: running mean of |x| (left) and beta (right) per coordinate over steps."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in COORDS:
        for ax, tag in zip(axes, (f"running_mean/{name}", f"beta/{name}")):
            if tag in scalars:
                ax.plot(*scalars[tag], label=name)
    axes[0].set_title("running mean of |x| (box regression error)")
    axes[1].set_title("beta (self-adjusting smooth L1)")
    if beta_hat is not None:
        axes[1].axhline(beta_hat, color="gray", linestyle="--", linewidth=1,
                        label=f"beta_hat {beta_hat:g}")
    return _save(plt, fig, axes, path)


def _save(plt, fig, axes, path):
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_losses(scalars, path):
    """Each loss component that was logged, one line each, over steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for tag in LOSSES:
        if tag in scalars:
            ax.plot(*scalars[tag], label=tag)
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    return _save(plt, fig, [ax], path)


def write_training_plots(model_dir, beta_hat=None):
    """beta.png and losses.png of the run in ``model_dir`` (logs in ``model_dir/train``)
    under ``model_dir/plots``; returns their paths. FileNotFoundError when the run has
    no logs."""
    scalars = read_scalars(os.path.join(model_dir, "train"))
    if not scalars:
        raise FileNotFoundError(f"no TensorBoard scalars under {model_dir}/train")
    out = os.path.join(model_dir, "plots")
    os.makedirs(out, exist_ok=True)
    return {"beta": plot_beta(scalars, os.path.join(out, "beta.png"), beta_hat),
            "losses": plot_losses(scalars, os.path.join(out, "losses.png"))}
