"""The interface every detection data source implements: ``DetectionSource``.

Three sources implement it: ``coco.CocoDataset`` (a COCO JSON and an image folder, read
into memory), ``tfrecord.TFRecordSource`` (TFRecords written by ``--mode=make_tfrecords``)
and ``tfds_source.TFDSSource`` (a TFDS detection builder such as ``coco/2017``). The
input pipeline, training, evaluation and export see only this interface.
"""

from typing import List, Optional, Protocol, runtime_checkable


@runtime_checkable
class DetectionSource(Protocol):
    """A split of a detection dataset.

    Attributes:
      json_path: the name used in messages (the COCO JSON, the TFRecord meta file, or
        ``tfds:<name>:<split>``).
      class_ids: contiguous class index -> the dataset's category id.
      class_names: contiguous class index -> name.
      num_classes, num_examples, has_masks: as named.
      records: the in-memory ``coco.ImageRecord`` list, or None for a streamed source.
      truncated: [(image_id, file, annotation count)] of the images whose annotations
        beyond ``max_instances`` the last ``read_examples`` left out (the largest boxes
        are kept); streamed sources cut them in the graph and list none.
    """

    json_path: str
    class_ids: List[int]
    class_names: List[str]

    @property
    def num_classes(self) -> int: ...

    @property
    def num_examples(self) -> int: ...

    @property
    def has_masks(self) -> bool: ...

    @property
    def records(self) -> Optional[list]: ...

    @property
    def truncated(self) -> list: ...

    def summary(self) -> str:
        """One line on what the source holds (printed at the start of training)."""

    def read_examples(self, max_instances: int, with_masks: bool = False):
        """A tf.data.Dataset of unbatched examples, annotations padded to ``max_instances``
        rows: image (path or image_bytes), image_id, orientation, boxes [M, 4] (original
        frame; or normalized_boxes), classes, crowd, valid [M]; with masks also
        segmentations, height, width, mask_valid (see ``parser.parse_example``)."""
