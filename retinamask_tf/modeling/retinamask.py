"""The RetinaMask detector: one keras.Model for training and inference, built from parts.

Parts (each its own module, each serialisable): backbone, FPN, head (``modeling``);
anchor generator and target assigner (``layers``); classification and box losses
(``losses``); detection generator (``layers``); and the optional mask branch
(``modeling.mask_branch``). ``call(images)`` returns raw head outputs; ``train_step``
assigns targets and computes the losses (the self-adjusting box loss updates its state
there); ``detect`` runs the same weights through the detection generator.

XLA: ``detect``, ``all_losses`` and ``train_step_with`` take ``xla_compatible`` per call
(the XLA-compilable NMS and crops; the same values); Keras' ``fit`` passes its own
``jit_compile``. The model holds no XLA state.
"""

import keras
import tensorflow as tf

from retinamask_tf.layers.normalization import ImageNormalization
from retinamask_tf.ops import matcher, postprocess, roi_align
from retinamask_tf.ops.distribute import cross_replica_sum

_PARTS = ("backbone", "fpn", "head", "anchor_generator", "target_assigner", "class_loss",
          "box_loss", "detection_generator", "mask_branch")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@keras.saving.register_keras_serializable(package="retinamask_tf")
class RetinaMask(keras.Model):
    """ResNet-FPN RetinaNet with RetinaMask's training changes.

    Args:
      backbone: keras.Model, normalised images -> {"C3", "C4", "C5"}.
      fpn: FPN layer -> {"P3".."P7"}.
      head: RetinaNetHead -> cls_logits [B, N, K], box_deltas [B, N, 4].
      anchor_generator: ``layers.anchor_generator.AnchorGenerator``.
      target_assigner: ``layers.target_assigner.TargetAssigner``.
      class_loss: ``losses.focal.FocalLoss``.
      box_loss: a box loss of ``losses.registry`` (``SelfAdjustingSmoothL1``: RetinaMask;
        ``SmoothL1Loss``: fixed beta).
      detection_generator: ``layers.detection_generator.DetectionGenerator``.
      image_size: static (height, width) of the padded input.
      mask_branch: optional ``modeling.mask_branch.MaskBranch``; None gives RetinaNet with
        the other two changes.
      box_weight: weight of the box loss in the total.
      normalization: "imagenet" or "caffe" (see ImageNormalization).
      clip_grad_norm: optional global-norm gradient clipping.
    """

    def __init__(self, backbone, fpn, head, anchor_generator, target_assigner, class_loss,
                 box_loss, detection_generator, image_size, mask_branch=None, box_weight=1.0,
                 normalization="imagenet", clip_grad_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.anchor_generator = anchor_generator
        self.target_assigner = target_assigner
        self.class_loss = class_loss
        self.box_loss = box_loss
        self.detection_generator = detection_generator
        self.mask_branch = mask_branch
        self.image_size = tuple(int(s) for s in image_size)
        self.box_weight = float(box_weight)
        self.normalization = normalization
        self.clip_grad_norm = clip_grad_norm
        self.normalize = ImageNormalization(normalization, name="normalize")
        self.anchors, self.level_counts = anchor_generator(self.image_size)

    # ------------------------------------------------------------------ forward
    @property
    def has_masks(self):
        return self.mask_branch is not None

    def build(self, input_shape=None):
        """Creates every variable by running the network once on zeros of the smallest
        size the FPN takes (2^max_level square): no variable depends on the image size,
        and at ``image_size`` this eager pass took as much memory as a batch of
        inference (ResNet-50-FPN at 800x1344: 3.2 GB), which TF's allocator keeps and
        which scattered the variables across it (the training step's peak RSS at
        800x1333 was 4% higher)."""
        side = 2 ** self.fpn.max_level
        pyramid = self.features(tf.zeros((1, side, side, 3)))
        self.head(pyramid)
        if self.has_masks:
            self.mask_branch.logits(pyramid, tf.constant([[[0.0, 0.0, 32.0, 32.0]]]))
            self.mask_branch.built = True  # its sublayers were built by that call
        self.built = True

    def features(self, images, training=False):
        """images [B, H, W, 3] RGB 0..255 (padded to ``image_size``) -> FPN
        {"P3".."P7"}: [B, H / 2^l, W / 2^l, C]."""
        features = self.backbone(self.normalize(images), training=training)
        return self.fpn(features, training=training)

    def call(self, images, training=False):
        """images [B, H, W, 3] RGB 0..255 (padded to ``image_size``) -> raw outputs dict:
        cls_logits [B, N, K], box_deltas [B, N, 4]. The mask head is not run here:
        its inputs depend on detections (see ``detect`` and ``all_losses``)."""
        return self.head(self.features(images, training=training), training=training)

    def valid_shape(self, image_info):
        """(height, width) [B, 2] of the resized image inside the padded input."""
        image_info = tf.cast(image_info, tf.float32)
        return tf.minimum(tf.round(image_info[:, 0:2] * image_info[:, 2:4]),
                          tf.constant(self.image_size, tf.float32))

    def _detections(self, outputs, image_info, max_detections=None, xla_compatible=False):
        """Detection generator in the model-input frame."""
        return self.detection_generator(outputs["cls_logits"], outputs["box_deltas"],
                                        tf.constant(self.anchors), self.valid_shape(image_info),
                                        level_counts=self.level_counts,
                                        max_detections=max_detections,
                                        padded_nms=xla_compatible)

    def single_image_detections(self, outputs, valid_shape):
        """Detections of a batch of one (model-input frame) in ops that TFLite and OpenVINO
        convert: ``ops.postprocess.generate_detections_single``, one NonMaxSuppressionV5
        over class-offset boxes (CombinedNonMaxSuppression converts to neither).
        valid_shape: [1, 2] (height, width) of the image inside the padded input."""
        g = self.detection_generator
        return postprocess.generate_detections_single(
            outputs["cls_logits"], outputs["box_deltas"], tf.constant(self.anchors),
            self.level_counts, valid_shape, g.settings, g.coder)

    # ------------------------------------------------------------------ losses
    def compute_losses(self, outputs, labels, training=False):
        """Detection losses of one (per-replica) batch, normalised by global-batch positives.

        Args:
          outputs: dict from ``call``.
          labels: dict gt_boxes [B, G, 4] yxyx (model-input pixels), gt_classes [B, G],
            gt_valid [B, G] bool, gt_crowd [B, G] bool.
        Returns:
          dict of scalar float32: cls_loss, box_loss, total_loss, num_positives
          (global), and the box loss's ``summaries()`` (beta_dy, ..., beta_dw: its beta
          per coordinate; the self-adjusting loss's running_mean_* and running_var_*).
        """
        t = self.target_assigner(tf.constant(self.anchors), labels)
        positive = t["labels"] == matcher.POSITIVE
        num_pos = cross_replica_sum(tf.reduce_sum(tf.cast(positive, tf.float32)))
        normalizer = tf.maximum(num_pos, 1.0)
        cls_sum = self.class_loss(outputs["cls_logits"], t["cls_targets"], t["labels"])
        box_sum = self.box_loss(outputs["box_deltas"], t["box_targets"], positive,
                                training=training)
        num_images = cross_replica_sum(tf.cast(tf.shape(outputs["cls_logits"])[0], tf.float32))
        cls_loss = cls_sum / self.class_loss.divisor(num_pos, num_images)
        box_loss = self.box_weight * box_sum / (4.0 * normalizer)
        out = {"total_loss": cls_loss + box_loss, "cls_loss": cls_loss, "box_loss": box_loss,
               "num_positives": num_pos}
        out.update(self.box_loss.summaries())
        return out

    def all_losses(self, images, labels, image_info, training=False, xla_compatible=False):
        """Forward pass and every loss: ``compute_losses`` (+ the mask branch's), total_loss.

        The mask branch trains on the top ``train_detections`` detections of the current
        outputs, computed without gradient by the inference post-processing."""
        pyramid = self.features(images, training=training)
        outputs = self.head(pyramid, training=training)
        losses = self.compute_losses(outputs, labels, training=training)
        if self.has_masks:
            det = self.mask_training_detections(outputs, image_info, xla_compatible)
            losses.update(self.mask_branch.losses(pyramid, det, labels, training, xla_compatible))
            losses["total_loss"] = losses["total_loss"] + losses["mask_loss"]
        return losses

    def mask_training_detections(self, outputs, image_info, xla_compatible=False):
        """The mask branch's training detections: the top ``train_detections`` of the
        head's ``outputs`` by the inference post-processing, without gradient (boxes in
        the model-input frame); None when it trains on GT boxes only."""
        num_det = self.mask_branch.train_detections
        if num_det == 0:
            return None
        stopped = {k: tf.stop_gradient(v) for k, v in outputs.items()}
        return self._detections(stopped, image_info, num_det, xla_compatible)

    def train_step_with(self, data, xla_compatible=False):
        """One optimizer step on ``data`` = (features, labels) from ``data.pipeline``;
        returns the losses, the box loss's beta and the learning rate (scalars)."""
        features, labels = data
        if not xla_compatible:  # (XLA has no Assert kernel)
            labels = self._checked_classes(labels)
        with tf.GradientTape() as tape:
            losses = self.all_losses(features["images"], labels, features["image_info"],
                                     training=True, xla_compatible=xla_compatible)
            # Under mixed_float16 the optimizer is a LossScaleOptimizer: the loss is scaled
            # here and the gradients unscaled (and a non-finite step skipped) when applied.
            loss = self.optimizer.scale_loss(losses["total_loss"])
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        if self.clip_grad_norm:
            grads = self._clip_global_norm(grads)
        self.optimizer.apply_gradients(zip(grads, variables))
        losses["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return losses

    def _checked_classes(self, labels):
        """``labels`` once every valid ground-truth class index is below the model's class
        count; otherwise an InvalidArgumentError saying so (a config or a model built for
        fewer classes than the data has), before any op fails its own way."""
        classes = tf.where(labels["gt_valid"], labels["gt_classes"], 0)
        num_classes = self.head.num_classes
        check = tf.debugging.assert_less(
            classes, tf.cast(num_classes, classes.dtype),
            message=f"the data has a class index >= this model's {num_classes} classes: build "
                    "the model with the data's class count (model.num_classes, or null to "
                    "take it from the data)")
        with tf.control_dependencies([check]):
            return dict(labels, gt_classes=tf.identity(labels["gt_classes"]))

    def train_step(self, data):
        """Keras' ``fit`` step: ``train_step_with`` in the form ``compile(jit_compile=...)``
        asked for."""
        return self.train_step_with(data, xla_compatible=bool(self.jit_compile))

    def _clip_global_norm(self, grads):
        """Scales the gradients so that the norm of the gradient the optimizer applies (the
        sum over replicas) is at most ``clip_grad_norm``.

        That norm needs the summed gradient itself (the sum of per-replica norms is not
        it), so with several replicas the gradients are summed here, clipped, and each
        replica hands the optimizer 1/n of the result, which the optimizer sums again. This
        costs a second gradient all-reduce, only when clipping is on. Under mixed_float16
        the gradients are loss-scaled: the norm is of the unscaled gradient.
        """
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync if ctx is not None else 1
        present = [i for i, g in enumerate(grads) if g is not None]
        values = [grads[i] for i in present]
        values = cross_replica_sum(values)
        sq = tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in values])
        loss_scale = getattr(self.optimizer, "dynamic_scale", None)
        if loss_scale is not None:
            sq = sq / tf.square(tf.cast(loss_scale, tf.float32))
        scale = tf.minimum(1.0, self.clip_grad_norm / (tf.sqrt(sq) + 1e-6)) / n
        out = list(grads)
        for i, g in zip(present, values):
            out[i] = g * tf.cast(scale, g.dtype)
        return out

    def test_step(self, data):
        features, labels = data
        return self.all_losses(features["images"], labels, features["image_info"], training=False,
                               xla_compatible=bool(self.jit_compile))

    # ------------------------------------------------------------------ inference
    def detect(self, images, image_info, with_masks=None, xla_compatible=False):
        """Detections of a batch.

        Args:
          images: [B, H, W, 3] padded model input.
          image_info: [B, 4] = (original height, original width, scale_y, scale_x).
          with_masks: also predict masks (default: when the model has a mask head).
            Without, the graph is exactly RetinaNet's: no mask-head weight is read.
          xla_compatible: the XLA-compilable NMS and crops (the same detections), for a
            caller that compiles this with ``jit_compile``.
        Returns:
          dict: boxes [B, D, 4] yxyx original-image pixels, scores [B, D], classes
          [B, D] int32 (contiguous index), num_detections [B]; with masks also
          masks [B, num_masks, m, m] float32 probabilities of the top ``num_masks``
          detections' classes, in the frame of their boxes
          (``retinamask_tf.mask_paste.paste_masks`` puts them into the image).
        """
        with_masks = self.has_masks if with_masks is None else with_masks
        if with_masks and not self.has_masks:
            raise ValueError("this model has no mask head")
        pyramid = self.features(images, training=False)
        outputs = self.head(pyramid, training=False)
        det = self._detections(outputs, image_info, xla_compatible=xla_compatible)
        if with_masks:  # [B, num_masks, m, m]
            det["masks"] = self.mask_branch.predict(pyramid, det["boxes"], det["classes"],
                                                    roi_align.kernel_for(xla_compatible))
        scale = tf.cast(image_info, tf.float32)[:, 2:4]
        inv = 1.0 / tf.tile(scale, [1, 2])  # (1/sy, 1/sx, 1/sy, 1/sx)
        det["boxes"] = det["boxes"] * inv[:, None, :]
        return det

    def predict_step(self, data):
        features = data[0] if isinstance(data, (tuple, list)) else data
        return self.detect(features["images"], features["image_info"],
                           xla_compatible=bool(self.jit_compile))

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        config = {key: (keras.saving.serialize_keras_object(getattr(self, key))
                        if getattr(self, key) is not None else None) for key in _PARTS}
        config.update(image_size=list(self.image_size), box_weight=self.box_weight,
                      normalization=self.normalization, clip_grad_norm=self.clip_grad_norm,
                      name=self.name)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in _PARTS:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
