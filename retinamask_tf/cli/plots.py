"""--mode=plots (and after training): the paper's Figure 3 (beta) and the loss curves."""

from retinamask_tf import plots, run_dir


def run(model_dir):
    """beta.png and losses.png from the run's TensorBoard logs; prints where they went, or
    why there are none (returns 2)."""
    try:
        beta_hat = run_dir.read_config(model_dir).loss.beta
        paths = plots.write_training_plots(model_dir, beta_hat)
    except (ImportError, FileNotFoundError) as e:
        print(f"  plots        none: {e}")
        return 2
    print(f"  plots        {paths['beta']} (running mean of |x| and beta per coordinate), "
          f"{paths['losses']}")
    return 0
