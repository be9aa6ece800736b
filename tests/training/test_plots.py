"""Training plots read back what the trainer logged: the scalars equal the model's state
and the returned losses, and the Figure-3 and loss PNGs are written."""

import numpy as np
from PIL import Image

from retinamask_tf import plots
from retinamask_tf.training.trainer import Trainer
from tests.conftest import tiny_config


def test_plots_read_the_logged_state(tiny_shapes, tmp_path):
    config = tiny_config(tiny_shapes, {"train.steps": 3, "train.summary_every": 1,
                                        "train.checkpoint_every": 3})
    trainer = Trainer(config, str(tmp_path))
    result = trainer.train(progress=False)
    scalars = plots.read_scalars(str(tmp_path / "train"))
    layer = trainer.model.box_loss
    for i, name in enumerate(plots.COORDS):
        steps, values = scalars[f"running_mean/{name}"]
        np.testing.assert_array_equal(steps, [1, 2, 3])
        np.testing.assert_allclose(values[-1], layer.running_mean.numpy()[i], rtol=1e-6)
        np.testing.assert_allclose(scalars[f"beta/{name}"][1][-1], result["beta"][i], rtol=1e-6)
    for tag in plots.LOSSES:
        np.testing.assert_allclose(scalars[tag][1][-1], result[tag], rtol=1e-6)
    assert len(set(scalars["total_loss"][1])) == 3  # three different steps, not one repeated
    paths = plots.write_training_plots(str(tmp_path), beta_hat=0.11)
    assert Image.open(paths["beta"]).size == (1100, 400)
    assert Image.open(paths["losses"]).size == (700, 400)
