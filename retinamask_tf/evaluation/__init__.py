"""COCO evaluation with pycocotools."""
