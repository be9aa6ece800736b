"""Comparing two formats' detections when near-tied scores may order them differently."""

import numpy as np


def _box_errors(a, b, top):
    """For each of a's first ``top`` detections, b's detection of the same class with the
    closest box: [top, 2] (max box difference px, score difference); inf where b has none
    of that class."""
    out = []
    for i in range(top):
        same = np.flatnonzero(b.classes == a.classes[i])
        if not len(same):
            out.append((np.inf, np.inf))
            continue
        err = np.abs(b.boxes[same] - a.boxes[i]).max(1)
        j = same[np.argmin(err)]
        out.append((err.min(), abs(b.scores[j] - a.scores[i])))
    return np.array(out)


def matched(a, b, top, box_tol=1.0, score_tol=1e-4):
    """(max box difference px, max score difference) of a's first ``top`` detections and
    b's (objects with ``boxes`` [N, 4], ``scores`` [N] descending, ``classes`` [N]),
    matched by class and closest box: near-tied scores may order two formats' detections
    differently, or swap which of two near-tied candidates makes the cut (the
    per-level top-k before NMS with a score threshold of 0): a detection of a with no box
    in b must be such a swap, paired with one of b's first ``top`` that has no box in a,
    the two scores within ``score_tol`` (at most two swaps)."""
    ab, ba = _box_errors(a, b, top), _box_errors(b, a, top)
    lost_a = a.scores[:top][ab[:, 0] > box_tol]
    lost_b = list(b.scores[:top][ba[:, 0] > box_tol])
    for score in lost_a:  # each paired with a distinct near-tied one of b
        partner = int(np.argmin(np.abs(np.array(lost_b) - score))) if lost_b else None
        assert partner is not None and abs(lost_b[partner] - score) <= score_tol, (
            "detections differ beyond a near-tie swap", lost_a, lost_b)
        lost_b.pop(partner)
    assert len(lost_a) <= 2, ("more than two near-tie swaps", lost_a)
    kept = ab[ab[:, 0] <= box_tol]
    return kept.max(0)
