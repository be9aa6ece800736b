"""The RetinaMask detector: one keras.Model for training and inference.

``call(images)`` returns raw head outputs; ``train_step`` matches anchors and
computes the losses (the self-adjusting box loss updates its state there);
``predict_step`` runs the same weights through the detection generator.
"""

import keras
import tensorflow as tf

from retinamask_tf.layers.normalization import ImageNormalization
from retinamask_tf.losses import focal
from retinamask_tf.losses.mask import mask_loss_sum
from retinamask_tf.losses.smooth_l1 import SelfAdjustingSmoothL1, smooth_l1
from retinamask_tf.ops import anchors as anchor_ops
from retinamask_tf.ops import masks as mask_ops
from retinamask_tf.ops import matcher, proposals, targets
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
      mask_head: optional MaskHead; None gives RetinaNet + the other two changes.
      roi_aligner: RoIAligner feeding the mask head (required with ``mask_head``).
      mask_params: dict(proposal_iou, train_detections, num_masks, mask_weight,
        max_train_rois): training RoIs are the top ``train_detections`` detections +
        GT, positive at IoU >= proposal_iou; with ``max_train_rois`` the mask head
        runs on that many RoIs per image, positives first (lossless while no image
        has more positives; see ``proposals.positives_first``); inference predicts
        masks for the top ``num_masks``.
    """

    def __init__(self, backbone, fpn, head, detection_generator, image_size, anchor_params,
                 matcher_params, coder_weights=(10.0, 10.0, 5.0, 5.0), focal_alpha=0.25,
                 focal_gamma=2.0, box_loss="self_adjusting", beta=0.11, beta_momentum=0.9,
                 beta_min=1e-3, box_weight=1.0, use_crowd=False, normalization="imagenet",
                 clip_grad_norm=None, mask_head=None, roi_aligner=None, mask_params=None, **kwargs):
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
        if (mask_head is None) != (roi_aligner is None):
            raise ValueError("mask_head and roi_aligner go together")
        self.mask_head = mask_head
        self.roi_aligner = roi_aligner
        self.mask_params = {"proposal_iou": 0.5, "train_detections": 100, "num_masks": 50,
                            "mask_weight": 1.0, "max_train_rois": None, **(mask_params or {})}
        self.normalize = ImageNormalization(normalization, name="normalize")
        self.box_loss_layer = SelfAdjustingSmoothL1(beta, beta_momentum, beta_min,
                                                    name="self_adjusting_smooth_l1")
        anchors, self.level_counts = anchor_ops.generate_anchors(self.image_size, **self.anchor_params)
        self.anchors = anchors.numpy()
        # Set (before tracing) for functions compiled with jit_compile: the detection
        # post-processing then uses the XLA-compilable NMS. Not part of the config.
        self.xla_compatible = False

    # ------------------------------------------------------------------ forward
    @property
    def has_masks(self):
        return self.mask_head is not None

    def build(self, input_shape=None):
        """Creates every variable by running the network once on zeros."""
        pyramid = self.features(tf.zeros((1,) + self.image_size + (3,)))
        self.head(pyramid)
        if self.has_masks:
            self.mask_logits(pyramid, tf.constant([[[0.0, 0.0, 32.0, 32.0]]]))
        self.built = True

    def features(self, images, training=False):
        """images [B, H, W, 3] RGB 0..255 (padded to ``image_size``) -> FPN
        {"P3".."P7"}: [B, H / 2^l, W / 2^l, C]."""
        features = self.backbone(self.normalize(images), training=training)
        return self.fpn(features, training=training)

    def call(self, images, training=False):
        """images [B, H, W, 3] RGB 0..255 (padded to ``image_size``) -> raw outputs dict:
        cls_logits [B, N, K], box_deltas [B, N, 4]. The mask head is not run here:
        its inputs depend on detections (see ``detect`` and ``mask_losses``)."""
        return self.head(self.features(images, training=training), training=training)

    def mask_logits(self, pyramid, boxes, training=False):
        """Mask head on boxes [B, R, 4] (model-input pixels) -> [B, R, m, m, K] logits."""
        # Training crops through ops.crop.crop_and_resize_exact_grad: TF's CPU
        # CropAndResizeGradImage races between threads (see there).
        rois = self.roi_aligner(pyramid, boxes, xla_compatible=self.xla_compatible,
                                training=training)
        shape = tf.shape(rois)
        flat = tf.reshape(rois, tf.concat([[-1], shape[2:]], 0))
        logits = self.mask_head(flat, training=training)
        out_shape = tf.shape(logits)
        return tf.reshape(logits, tf.concat([shape[:2], out_shape[1:]], 0))

    def _valid_shape(self, image_info):
        """(height, width) [B, 2] of the resized image inside the padded input."""
        image_info = tf.cast(image_info, tf.float32)
        return tf.minimum(tf.round(image_info[:, 0:2] * image_info[:, 2:4]),
                          tf.constant(self.image_size, tf.float32))

    def _detections(self, outputs, image_info, max_detections=None):
        """Detection generator in the model-input frame."""
        return self.detection_generator(outputs["cls_logits"], outputs["box_deltas"],
                                        tf.constant(self.anchors), self._valid_shape(image_info),
                                        level_counts=self.level_counts,
                                        max_detections=max_detections,
                                        padded_nms=self.xla_compatible)

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

    def mask_losses(self, pyramid, outputs, labels, image_info, training=False):
        """Mask loss of one (per-replica) batch on "detections + GT" RoIs.

        The detections come from the current outputs without gradient (the same
        post-processing as inference, top ``train_detections``); the loss flows
        into the FPN and backbone through RoIAlign.

        Args:
          pyramid: FPN features; outputs: dict from the head.
          labels: as ``compute_losses`` plus gt_masks [B, M, S, S] (box frame) and
            gt_mask_valid [B, M].
          image_info: [B, 4] (see ``detect``).
        Returns:
          dict: mask_loss (mean BCE over global positive RoIs x m x m; 0 without
          positives), num_mask_rois (global positive count trained on),
          mask_rois_dropped (global positives beyond ``max_train_rois``).
        """
        num_det = int(self.mask_params["train_detections"])
        if num_det > 0:
            outputs = {k: tf.stop_gradient(v) for k, v in outputs.items()}
            det = self._detections(outputs, image_info, num_det)
        else:  # GT boxes only
            batch = tf.shape(labels["gt_boxes"])[0]
            det = {"boxes": tf.zeros([batch, 0, 4]), "num_detections": tf.zeros([batch], tf.int32)}
        gt_valid = labels["gt_valid"] & ~labels["gt_crowd"]
        rois, positive, matched = proposals.training_rois(
            det["boxes"], det["num_detections"], labels["gt_boxes"], gt_valid,
            labels["gt_mask_valid"], self.mask_params["proposal_iou"])
        dropped = tf.zeros([], tf.float32)
        if self.mask_params.get("max_train_rois"):
            rois, positive, matched, lost = proposals.positives_first(
                rois, positive, matched, self.mask_params["max_train_rois"])
            dropped = cross_replica_sum(tf.reduce_sum(tf.cast(lost, tf.float32)))
        logits = self.mask_logits(pyramid, rois, training=training)  # [B, R, m, m, K]
        size = logits.shape[2]
        target = mask_ops.mask_targets(labels["gt_masks"], labels["gt_boxes"], rois, matched, size,
                                       self.xla_compatible)
        classes = tf.gather(labels["gt_classes"], matched, batch_dims=1)

        def flat(t):  # [B, R, ...] -> [B * R, ...]
            return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))

        loss_sum = mask_loss_sum(flat(logits), tf.reshape(classes, [-1]), flat(target),
                                 tf.reshape(positive, [-1]))
        num = cross_replica_sum(tf.reduce_sum(tf.cast(positive, tf.float32)))
        mask_loss = self.mask_params["mask_weight"] * loss_sum / tf.maximum(num * size * size, 1.0)
        return {"mask_loss": mask_loss, "num_mask_rois": num, "mask_rois_dropped": dropped}

    def all_losses(self, images, labels, image_info, training=False):
        """Forward pass and every loss: compute_losses (+ mask_losses), total_loss."""
        pyramid = self.features(images, training=training)
        outputs = self.head(pyramid, training=training)
        losses = self.compute_losses(outputs, labels, training=training)
        if self.has_masks:
            losses.update(self.mask_losses(pyramid, outputs, labels, image_info, training))
            losses["total_loss"] = losses["total_loss"] + losses["mask_loss"]
        return losses

    def train_step(self, data):
        features, labels = data
        with tf.GradientTape() as tape:
            losses = self.all_losses(features["images"], labels, features["image_info"],
                                     training=True)
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
        return self.all_losses(features["images"], labels, features["image_info"], training=False)

    # ------------------------------------------------------------------ inference
    def detect(self, images, image_info, with_masks=None):
        """Detections of a batch.

        Args:
          images: [B, H, W, 3] padded model input.
          image_info: [B, 4] = (original height, original width, scale_y, scale_x).
          with_masks: also predict masks (default: when the model has a mask head).
            Without, the graph is exactly RetinaNet's: no mask-head weight is read.
        Returns:
          dict: boxes [B, D, 4] yxyx original-image pixels, scores [B, D], classes
          [B, D] int32 (contiguous index), num_detections [B]; with masks also
          masks [B, num_masks, m, m] float32 probabilities of the top ``num_masks``
          detections' classes, in the frame of their boxes (``ops.masks.paste_masks``
          puts them into the image).
        """
        with_masks = self.has_masks if with_masks is None else with_masks
        if with_masks and not self.has_masks:
            raise ValueError("this model has no mask head")
        pyramid = self.features(images, training=False)
        outputs = self.head(pyramid, training=False)
        det = self._detections(outputs, image_info)
        if with_masks:
            num = min(self.mask_params["num_masks"], self.detection_generator.max_detections)
            logits = self.mask_logits(pyramid, det["boxes"][:, :num], training=False)
            classes = det["classes"][:, :num]
            det["masks"] = tf.sigmoid(mask_ops.select_class(logits, classes))  # [B, num, m, m]
        scale = tf.cast(image_info, tf.float32)[:, 2:4]
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
            "mask_head": (keras.saving.serialize_keras_object(self.mask_head)
                          if self.has_masks else None),
            "roi_aligner": (keras.saving.serialize_keras_object(self.roi_aligner)
                            if self.has_masks else None),
            "mask_params": dict(self.mask_params),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "fpn", "head", "detection_generator", "mask_head", "roi_aligner"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
