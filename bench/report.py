"""Writing a benchmark's results: ``<name>.json`` (everything) and ``<name>.md`` (a table)."""

import json
import os


def write_results(out_dir, name, result, lines):
    """Writes ``out_dir/<name>.json`` from ``result`` and ``out_dir/<name>.md`` from the
    markdown ``lines``; prints the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = "\n".join(lines)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
