"""RetinaMask's mask branch: RoIAlign + mask head, its training RoIs, targets and loss.

Training (paper section 3.3): the RoIs of each image are the detector's own top
``train_detections`` detections (the inference post-processing, without gradient) plus
every ground-truth box; an RoI is positive at IoU >= ``proposal_iou`` with a ground-truth
box that has a mask, and its target is that box's mask cropped to the RoI. The loss is the
per-pixel binary cross-entropy of the matched class's logits, averaged over the positive
RoIs of the global batch; it flows into the FPN and backbone through RoIAlign.

Inference: masks of the top ``num_masks`` detections, for their classes. Detection-only
models are built without this branch (their graph is RetinaNet's).
"""

import keras
import tensorflow as tf

from retinamask_tf.losses.mask import mask_loss_sum
from retinamask_tf.ops import masks as mask_ops
from retinamask_tf.ops import proposals, roi_align
from retinamask_tf.ops.distribute import cross_replica_sum


@keras.saving.register_keras_serializable(package="retinamask_tf")
class MaskBranch(keras.layers.Layer):
    """The mask branch part of the detector.

    Args:
      roi_aligner: ``layers.roi_aligner.RoIAligner`` (FPN levels -> [R, s, s, C]).
      mask_head: ``modeling.mask_head.MaskHead`` ([R, s, s, C] -> [R, 2s, 2s, K] logits).
      proposal_iou: IoU at which a training RoI is positive.
      train_detections: detections per image used as training RoIs (0: ground truth only).
      num_masks: masks predicted at inference (the top detections).
      loss_weight: weight of the mask loss in the total.
      max_train_rois: at most this many RoIs per image in training, positives first
        (``proposals.positives_first``); None: no cap. Without XLA the head runs only on
        as many slots as the batch's largest positive count anyway.
    """

    def __init__(self, roi_aligner, mask_head, proposal_iou=0.5, train_detections=100,
                 num_masks=50, loss_weight=1.0, max_train_rois=None, **kwargs):
        super().__init__(**kwargs)
        self.roi_aligner = roi_aligner
        self.mask_head = mask_head
        self.proposal_iou = float(proposal_iou)
        self.train_detections = int(train_detections)
        self.num_masks = int(num_masks)
        self.loss_weight = float(loss_weight)
        self.max_train_rois = None if max_train_rois is None else int(max_train_rois)

    def logits(self, pyramid, boxes, training=False, roi_kernel="crop_and_resize"):
        """Mask head on boxes [B, R, 4] (yxyx model-input pixels) -> [B, R, m, m, K] logits.

        ``roi_kernel``: how RoIAlign reads its samples (``ops.roi_align.ROI_ALIGN_KERNELS``,
        the same values): ``gather`` under XLA, ``matmul`` in TFLite files. Training with
        ``crop_and_resize`` crops through ``ops.crop.crop_and_resize_exact_grad`` (TF's CPU
        CropAndResizeGradImage races between threads)."""
        rois = self.roi_aligner(pyramid, boxes, kernel=roi_kernel, training=training)
        shape = tf.shape(rois)
        flat = tf.reshape(rois, tf.concat([[-1], shape[2:]], 0))
        logits = self.mask_head(flat, training=training)
        out_shape = tf.shape(logits)
        return tf.reshape(logits, tf.concat([shape[:2], out_shape[1:]], 0))

    def losses(self, pyramid, detections, labels, training=False, xla_compatible=False):
        """Mask loss of one (per-replica) batch on "detections + GT" RoIs.

        Args:
          pyramid: FPN features.
          detections: the top ``train_detections`` detections of the batch (computed
            without gradient): boxes [B, D, 4] yxyx model-input pixels, num_detections [B];
            None when ``train_detections`` is 0.
          labels: gt_boxes [B, G, 4] (model-input pixels), gt_classes [B, G], gt_valid,
            gt_crowd [B, G] bool, gt_masks [B, G, S, S] (box frame), gt_mask_valid [B, G].
        Returns:
          dict: mask_loss (mean BCE over global positive RoIs x m x m; 0 without
          positives), num_mask_rois (global positive count trained on),
          mask_rois_dropped (global positives beyond ``max_train_rois``),
          mask_rois_computed (global RoIs the head ran on: without XLA, each image's slots
          are cut to the batch's largest positive count, ``proposals.trim_to_positives``;
          with XLA, ``max_train_rois`` or all "detections + GT" slots).
        """
        if detections is None:  # GT boxes only
            batch = tf.shape(labels["gt_boxes"])[0]
            detections = {"boxes": tf.zeros([batch, 0, 4]),
                          "num_detections": tf.zeros([batch], tf.int32)}
        gt_valid = labels["gt_valid"] & ~labels["gt_crowd"]
        rois, positive, matched = proposals.training_rois(
            detections["boxes"], detections["num_detections"], labels["gt_boxes"], gt_valid,
            labels["gt_mask_valid"], self.proposal_iou)
        dropped = tf.zeros([], tf.float32)
        if self.max_train_rois:
            rois, positive, matched, lost = proposals.positives_first(
                rois, positive, matched, self.max_train_rois)
            dropped = cross_replica_sum(tf.reduce_sum(tf.cast(lost, tf.float32)))
        if not xla_compatible:  # no work on slots that carry no loss
            rois, positive, matched = proposals.trim_to_positives(rois, positive, matched)
        computed = cross_replica_sum(tf.cast(tf.size(positive), tf.float32))
        logits = self.logits(pyramid, rois, training, roi_align.kernel_for(xla_compatible))  # [B, R, m, m, K]
        size = logits.shape[2]
        target = mask_ops.mask_targets(labels["gt_masks"], labels["gt_boxes"], rois, matched, size,
                                       xla_compatible)
        classes = tf.gather(labels["gt_classes"], matched, batch_dims=1)

        def flat(t):  # [B, R, ...] -> [B * R, ...]
            return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))

        loss_sum = mask_loss_sum(flat(logits), tf.reshape(classes, [-1]), flat(target),
                                 tf.reshape(positive, [-1]))
        num = cross_replica_sum(tf.reduce_sum(tf.cast(positive, tf.float32)))
        mask_loss = self.loss_weight * loss_sum / tf.maximum(num * size * size, 1.0)
        return {"mask_loss": mask_loss, "num_mask_rois": num, "mask_rois_dropped": dropped,
                "mask_rois_computed": computed}

    def predict(self, pyramid, boxes, classes, roi_kernel="crop_and_resize"):
        """Mask probabilities [B, n, m, m] float32 of the first n = ``num_masks`` (at most
        D) detections: boxes [B, D, 4] model-input pixels, classes [B, D] (contiguous), in
        the frame of each box. ``roi_kernel``: as in ``logits``."""
        num = self.num_masks
        logits = self.logits(pyramid, boxes[:, :num], False, roi_kernel)
        return tf.sigmoid(mask_ops.select_class(logits, classes[:, :num]))

    def get_config(self):
        config = super().get_config()
        config.update(roi_aligner=keras.saving.serialize_keras_object(self.roi_aligner),
                      mask_head=keras.saving.serialize_keras_object(self.mask_head),
                      proposal_iou=self.proposal_iou, train_detections=self.train_detections,
                      num_masks=self.num_masks, loss_weight=self.loss_weight,
                      max_train_rois=self.max_train_rois)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("roi_aligner", "mask_head"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
