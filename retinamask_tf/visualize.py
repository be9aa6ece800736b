"""Drawing detections on images (PIL only): what a person looks at to judge a model."""

import numpy as np
from PIL import Image, ImageDraw

# Distinct colours, cycled by category id.
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
           (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195)]


def color_of(category_id):
    return PALETTE[int(category_id) % len(PALETTE)]


def draw_detections(image, boxes, classes, scores, names=None, score_threshold=0.3,
                    line_width=2):
    """Draws boxes with "name score" labels.

    Args:
      image: [H, W, 3] uint8 RGB.
      boxes: [n, 4] yxyx pixels of ``image``; classes: [n] category ids; scores: [n], or
        None for ground truth (all drawn, labels without a score).
      names: n class names (default: the ids).
      score_threshold: detections below it are not drawn.
    Returns:
      a PIL RGB image. Detections are drawn from the lowest score up, so where boxes or
      labels overlap the most confident one is on top.
    """
    pil = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(pil)
    names = names if names is not None else [str(int(c)) for c in classes]
    scores = [None] * len(boxes) if scores is None else scores
    order = sorted(range(len(boxes)), key=lambda i: -np.inf if scores[i] is None else scores[i])
    for i in order:
        box, cls, score, name = boxes[i], classes[i], scores[i], names[i]
        if score is not None and score < score_threshold:
            continue
        y0, x0, y1, x1 = (float(v) for v in box)
        color = color_of(cls)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=line_width)
        label = name if score is None else f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), label)
        ty = max(0.0, y0 - (bottom - top) - 2)
        draw.rectangle([x0, ty, x0 + (right - left) + 4, ty + (bottom - top) + 2], fill=color)
        draw.text((x0 + 2, ty), label, fill=(0, 0, 0))
    return pil


def overlay_masks(image, masks, classes, alpha=0.45):
    """Blends binary masks [H, W] (one per instance) into ``image`` in their class colours;
    returns a new uint8 array."""
    out = np.asarray(image, np.float32).copy()
    for mask, cls in zip(masks, classes):
        m = np.asarray(mask, bool)
        out[m] = (1 - alpha) * out[m] + alpha * np.array(color_of(cls), np.float32)
    return out.round().astype(np.uint8)


def draw(image, detections, score_threshold=0.3):
    """The image with the masks (in class colours) and the boxes labelled "name score" of
    the ``detections.Detections`` scoring at least ``score_threshold``; a PIL image."""
    shown = detections.above(score_threshold)
    if shown.masks is not None:
        image = overlay_masks(image, shown.masks, shown.classes[:len(shown.masks)])
    return draw_detections(image, shown.boxes, shown.classes, shown.scores, list(shown.names),
                           score_threshold=score_threshold)
