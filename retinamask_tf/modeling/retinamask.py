"""The RetinaMask detector: one keras.Model for training and inference.

``call(images)`` returns raw head outputs; ``train_step`` matches anchors and
computes the losses (the self-adjusting box loss updates its state there);
``predict_step`` runs the same weights through the detection generator.
"""

import keras
import tensorflow as tf

from retinamask_tf.layers.normalization import ImageNormalization
from retinamask_tf.losses import focal
from retinamask_tf.losses.smooth_l1 import SelfAdjustingSmoothL1, smooth_l1
from retinamask_tf.ops import anchors as anchor_ops
from retinamask_tf.ops import matcher, targets
from retinamask_tf.ops.distribute import cross_replica_sum


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@keras.saving.register_keras_serializable(package="retinamask_tf")
class RetinaMask(keras.Model):
    """ResNet-FPN RetinaNet with RetinaMask's training changes.

    Args:
      backbone: keras.Model, normalised images -> {"C3", "C4", "C5"}.
      fpn: FPN layer -> {"P3".."P7"}.
      head: RetinaNetHead.
      detection_generator: DetectionGenerator.
      image_size: static (height, width) of the padded input.
      anchor_params: dict(min_level, max_level, num_scales, aspect_ratios, anchor_scale).
      matcher_params: dict(positive_threshold, negative_threshold, best_match_threshold).
      coder_weights: box coder weights (dy, dx, dh, dw).
      focal_alpha, focal_gamma: focal loss parameters.
      box_loss: "self_adjusting" or "smooth_l1".
      beta, beta_momentum, beta_min: smooth L1 parameters (beta is beta_hat when
        self-adjusting).
      box_weight: weight of the box loss in the total.
      use_crowd: pass GT crowd flags to the matcher (crowd regions ignored).
      normalization: "imagenet" or "caffe" (see ImageNormalization).
      clip_grad_norm: optional global-norm gradient clipping.
    """

    def __init__(self, backbone, fpn, head, detection_generator, image_size, anchor_params,
                 matcher_params, coder_weights=(10.0, 10.0, 5.0, 5.0), focal_alpha=0.25,
                 focal_gamma=2.0, box_loss="self_adjusting", beta=0.11, beta_momentum=0.9,
                 beta_min=1e-3, box_weight=1.0, use_crowd=False, normalization="imagenet",
                 clip_grad_norm=None, **kwargs):
        super().__init__(**kwargs)
        if box_loss not in ("self_adjusting", "smooth_l1"):
            raise ValueError(f"box_loss must be 'self_adjusting' or 'smooth_l1', got {box_loss!r}")
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.detection_generator = detection_generator
        self.image_size = tuple(int(s) for s in image_size)
        self.anchor_params = dict(anchor_params)
        self.matcher_params = dict(matcher_params)
        self.coder_weights = tuple(float(w) for w in coder_weights)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.box_loss = box_loss
        self.beta = float(beta)
        self.beta_momentum = float(beta_momentum)
        self.beta_min = float(beta_min)
        self.box_weight = float(box_weight)
        self.use_crowd = bool(use_crowd)
        self.normalization = normalization
        self.clip_grad_norm = clip_grad_norm
        self.normalize = ImageNormalization(normalization, name="normalize")
        self.box_loss_layer = SelfAdjustingSmoothL1(beta, beta_momentum, beta_min,
                                                    name="self_adjusting_smooth_l1")
        anchors, self.level_counts = anchor_ops.generate_anchors(self.image_size, **self.anchor_params)
        self.anchors = anchors.numpy()

    # ------------------------------------------------------------------ forward
    def build(self, input_shape=None):
        """Creates every variable by running the network once on zeros."""
        self.call(tf.zeros((1,) + self.image_size + (3,)))
        self.built = True

    def call(self, images, training=False):
        """images [B, H, W, 3] RGB 0..255 (padded to ``image_size``) -> raw outputs dict:
        cls_logits [B, N, K], box_deltas [B, N, 4]."""
        features = self.backbone(self.normalize(images), training=training)
        return self.head(self.fpn(features, training=training), training=training)

    # ------------------------------------------------------------------ losses
    def compute_losses(self, outputs, labels, training=False):
        """Losses of one (per-replica) batch, normalised by global-batch positives.

        Args:
          outputs: dict from ``call``.
          labels: dict gt_boxes [B, G, 4] yxyx (model-input pixels), gt_classes [B, G],
            gt_valid [B, G] bool, gt_crowd [B, G] bool.
        Returns:
          dict of scalar float32: cls_loss, box_loss, total_loss, num_positives
          (global), and beta [4].
        """
        t = targets.anchor_targets(
            tf.constant(self.anchors), labels["gt_boxes"], labels["gt_classes"],
            labels["gt_valid"], labels.get("gt_crowd") if self.use_crowd else None,
            coder_weights=self.coder_weights, **self.matcher_params)
        positive = t["labels"] == matcher.POSITIVE
        num_pos = cross_replica_sum(tf.reduce_sum(tf.cast(positive, tf.float32)))
        normalizer = tf.maximum(num_pos, 1.0)
        cls_sum = focal.classification_loss(outputs["cls_logits"], t["cls_targets"], t["labels"],
                                            self.focal_alpha, self.focal_gamma)
        abs_diff = tf.abs(tf.cast(outputs["box_deltas"], tf.float32) - t["box_targets"])
        if self.box_loss == "self_adjusting":
            box_sum = self.box_loss_layer(abs_diff, positive, training=training)
            beta = self.box_loss_layer.beta
        else:
            beta = tf.fill([4], self.beta)
            box_sum = tf.reduce_sum(smooth_l1(abs_diff, beta) * tf.cast(positive, tf.float32)[..., None])
        cls_loss = cls_sum / normalizer
        box_loss = self.box_weight * box_sum / (4.0 * normalizer)
        return {"total_loss": cls_loss + box_loss, "cls_loss": cls_loss, "box_loss": box_loss,
                "num_positives": num_pos, "beta": beta}

    def train_step(self, data):
        features, labels = data
        with tf.GradientTape() as tape:
            outputs = self(features["images"], training=True)
            losses = self.compute_losses(outputs, labels, training=True)
            loss = losses["total_loss"]
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        if self.clip_grad_norm:
            # Clip on the global gradient: sum of squares across replicas first.
            sq = cross_replica_sum(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads if g is not None]))
            scale = tf.minimum(1.0, self.clip_grad_norm / (tf.sqrt(sq) + 1e-6))
            grads = [g * scale if g is not None else None for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        losses["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return losses

    def test_step(self, data):
        features, labels = data
        outputs = self(features["images"], training=False)
        return self.compute_losses(outputs, labels, training=False)

    # ------------------------------------------------------------------ inference
    def detect(self, images, image_info):
        """images [B, H, W, 3] padded model input; image_info [B, 4] = (original height,
        original width, scale_y, scale_x). Returns detections with boxes in
        original-image pixels (yxyx), classes as contiguous indices."""
        outputs = self(images, training=False)
        image_info = tf.cast(image_info, tf.float32)
        scale = image_info[:, 2:4]
        valid_shape = tf.minimum(tf.round(image_info[:, 0:2] * scale),
                                 tf.constant(self.image_size, tf.float32))
        det = self.detection_generator(outputs["cls_logits"], outputs["box_deltas"],
                                       tf.constant(self.anchors), valid_shape,
                                       level_counts=self.level_counts)
        inv = 1.0 / tf.tile(scale, [1, 2])  # (1/sy, 1/sx, 1/sy, 1/sx)
        det["boxes"] = det["boxes"] * inv[:, None, :]
        return det

    def predict_step(self, data):
        features = data[0] if isinstance(data, (tuple, list)) else data
        return self.detect(features["images"], features["image_info"])

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "fpn": keras.saving.serialize_keras_object(self.fpn),
            "head": keras.saving.serialize_keras_object(self.head),
            "detection_generator": keras.saving.serialize_keras_object(self.detection_generator),
            "image_size": list(self.image_size),
            "anchor_params": dict(self.anchor_params,
                                  aspect_ratios=list(self.anchor_params["aspect_ratios"])),
            "matcher_params": dict(self.matcher_params),
            "coder_weights": list(self.coder_weights),
            "focal_alpha": self.focal_alpha, "focal_gamma": self.focal_gamma,
            "box_loss": self.box_loss, "beta": self.beta, "beta_momentum": self.beta_momentum,
            "beta_min": self.beta_min, "box_weight": self.box_weight, "use_crowd": self.use_crowd,
            "normalization": self.normalization, "clip_grad_norm": self.clip_grad_norm,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "fpn", "head", "detection_generator"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
