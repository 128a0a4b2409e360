"""Benchmark: peak memory (RSS) of a SavedModel signature on one large batch.

    python bench/export_memory.py --export logs/quant_fashion_mnist_k0_ternary/export/snn \\
        [--export OTHER_EXPORT ...] [--images 5000 --signature spike_stats]

Each export runs in a fresh Python process that imports only TensorFlow and numpy: it loads the
SavedModel, runs the signature once on 2 images (warm-up), notes the peak RSS, then runs it on
``--images`` real MNIST test images (pixels / 256, the bundled split) and notes the peak RSS
again. Prints one JSON line per export (``peak_rss_gb``, ``warm_rss_gb``, ``seconds``) and the
ratios of the peaks to the first export's. Chunked exports (``tfsnn.export.savedmodel``,
``chunk_size``) keep the peak bounded; an export without chunks grows with the batch.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("export", None, "SavedModel directories to measure (in order).")
flags.DEFINE_integer("images", 5000, "batch size of the measured call")
flags.DEFINE_string("signature", "spike_stats", "signature to call (images -> ...)")

CHILD = """
import json, resource, sys, time
import numpy as np, tensorflow as tf
path, data, sig_name = sys.argv[1:4]
x = np.load(data)
sig = tf.saved_model.load(path).signatures[sig_name]
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
sig(images=tf.constant(x[:2]))
warm = peak()
t0 = time.perf_counter()
out = sig(images=tf.constant(x))
dt = time.perf_counter() - t0
print(json.dumps({"export": path, "images": len(x), "warm_rss_gb": round(warm, 3),
                  "peak_rss_gb": round(peak(), 3), "seconds": round(dt, 2)}))
"""


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.export:
        raise app.UsageError("--export is required (a SavedModel directory; repeat for several)")
    if FLAGS.images < 1:
        raise app.UsageError(f"--images={FLAGS.images}: must be >= 1")
    import numpy as np
    from tfsnn.data import bundled
    xs = bundled.mnist_test_split()[0]
    x = np.resize(xs, (FLAGS.images, *xs.shape[1:])).astype(np.float32) / 256.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, x)
        for path in FLAGS.export:
            p = subprocess.run([sys.executable, "-c", CHILD, path, str(data), FLAGS.signature],
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(json.dumps({"export": path, "error": p.stderr.strip().splitlines()[-1:]}))
                continue
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]))
    if rows:
        base = rows[0]["peak_rss_gb"]
        print(json.dumps({"peak_ratio_to_first": [round(r["peak_rss_gb"] / base, 3)
                                                  for r in rows]}))


if __name__ == "__main__":
    app.run(main)
