"""The label map (contiguous class index -> dataset category id and name) of a run."""

import json
import os

LABEL_MAP_FILE = "label_map.json"


def write_label_map(model_dir, class_ids, class_names):
    """Writes ``model_dir/label_map.json``: [{"index", "id", "name"}, ...]."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LABEL_MAP_FILE)
    entries = [{"index": i, "id": int(c), "name": str(n)}
               for i, (c, n) in enumerate(zip(class_ids, class_names))]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)
    return path


def read_label_map(model_dir):
    """(class_ids, class_names) written by ``write_label_map``; FileNotFoundError naming
    the path if the run has none."""
    path = os.path.join(model_dir, LABEL_MAP_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: train with this version first, or write it "
                                "with retinamask_tf.export.label_map.write_label_map")
    with open(path) as f:
        entries = sorted(json.load(f), key=lambda e: e["index"])
    return [e["id"] for e in entries], [e["name"] for e in entries]
