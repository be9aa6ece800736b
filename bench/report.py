"""Shared by the benchmarks: timing a call, running a measurement in its own process, naming
the CPU, writing the results (``<name>.json``, everything, and ``<name>.md``, a table), and
a run directory of random weights to export. Importing it does not import TensorFlow (the
PyTorch benchmark venvs import it too)."""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def timed(call, repeats):
    """Median/min seconds of ``repeats`` calls after one warm-up, and this process's peak
    RSS: {median_s, min_s, warmup_s, repeats, times_s, peak_rss_mb}."""
    t = time.perf_counter()
    call()
    warmup = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "warmup_s": warmup,
            "repeats": repeats, "times_s": times,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(cmd, env, what, tag="bench"):
    """Runs one measurement process; returns the JSON row it printed last (exits naming
    ``what`` with its stderr if it failed)."""
    print(f"[{tag}] {what} ...", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{what} failed")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if "median_s" in row:
        print(f"[{tag}]   median {row['median_s']:.3f} s, peak RSS {row['peak_rss_mb']:.0f} MB",
              flush=True)
    return row


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


def cpu_name():
    """The CPU's model name and whether it has AVX-512 (the speed ratios depend on both)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(extras) if extras else 'no AVX-512'})"


def gpu_peak_mb():
    """Peak memory TF allocated on the first GPU in this process (MB), None without a GPU."""
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20


def random_run_dir(cfg, out_dir):
    """A run directory of ``cfg``'s model with seeded random weights (config.yaml, an
    80-class label map, a checkpoint), as the exports read it; returns the model."""
    import keras
    import tensorflow as tf

    from retinamask_tf import config as C
    from retinamask_tf.modeling import factory
    from retinamask_tf.run_dir import write_label_map

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:
        f.write(C.to_yaml(cfg))
    write_label_map(out_dir, list(range(1, 81)), [f"class_{i}" for i in range(1, 81)])
    keras.utils.set_random_seed(0)
    model = factory.build_model(cfg)
    tf.train.Checkpoint(model=model).save(os.path.join(out_dir, "checkpoints", "ckpt"))
    return model
