"""Benchmark: a training epoch of the IIR MLP (snn_mlp_1) with time folded into batch vs the
same network run step by step.

    python bench/iir_mlp.py [--examples 1024 --batch 64 --timesteps 25 --repeats 3]

* ``folded``: the tfsnn design: every Dense runs once on all ``B*T`` frames, only the IIR filter
  and neuron recurrences loop over time (``tf.scan``).
* ``stepwise``: ``stepwise_mlp`` of ``tests/references.py`` (the tests' step-by-step reference), the same layers and weights run one time step
  at a time (filter step, ``[B, N]`` matmul, neuron step, dropout, for every layer, T times;
  Python-unrolled in the graph), as a per-step PyTorch-style loop.

Both train with the same ``tf.function`` step (softmax CE on spike counts, Adam lr 1e-4, dropout
0.3) on ``--examples`` random images; an "epoch" is ``examples / batch`` steps. Before timing,
the two variants' spike counts are checked equal (dropout off). The variants are interleaved
per repeat (so load from other processes hits them alike); the median epoch time is reported,
with the ratio stepwise / folded. Prints one JSON line at the end.
"""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("examples", 1024, "training images per timed epoch")
flags.DEFINE_integer("batch", 64, "batch size")
flags.DEFINE_integer("timesteps", 25, "time steps T")
flags.DEFINE_integer("repeats", 3, "timed epochs per variant (median reported)")


def main(_):
    import keras
    import numpy as np
    import tensorflow as tf

    from tfsnn.models import iir as M
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from references import stepwise_mlp

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, b = FLAGS.examples, FLAGS.batch
    x = tf.constant(rng.random((n, 28, 28, 1)), tf.float32)
    y = tf.constant(rng.integers(0, 10, n))
    model = M.snn_mlp_1(timesteps=FLAGS.timesteps)
    for l in model.layers:  # make it spike so both variants do real work
        if hasattr(l, "units"):
            l.kernel.assign(l.kernel * 4.0)
            l.bias.assign(l.bias + 0.3)
    same = np.array_equal(model(x[:b], training=False).numpy(),
                          stepwise_mlp(model, x[:b]).numpy())
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    forwards = {"folded": lambda xb: model(xb, training=True),
                "stepwise": lambda xb: stepwise_mlp(model, xb, training=True)}
    steps = {}
    for name, fwd in forwards.items():
        opt = keras.optimizers.Adam(1e-4, epsilon=1e-8)

        @tf.function
        def step(xb, yb, fwd=fwd, opt=opt):
            with tf.GradientTape() as tape:
                loss = ce(yb, fwd(xb))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            return loss
        steps[name] = step

    def epoch(name):
        t0 = time.perf_counter()
        for i in range(0, n - b + 1, b):
            loss = steps[name](x[i:i + b], y[i:i + b])
        float(loss)
        return time.perf_counter() - t0

    compile_s = {}
    for name in steps:  # trace + warm up
        t0 = time.perf_counter()
        steps[name](x[:b], y[:b])
        compile_s[name] = time.perf_counter() - t0
    times = {k: [] for k in steps}
    for _ in range(FLAGS.repeats):
        for name in steps:
            times[name].append(epoch(name))
    med = {k: float(np.median(v)) for k, v in times.items()}
    per_step = {k: med[k] / (n // b) for k in med}
    full = {k: per_step[k] * (50000 // b) for k in med}
    for k in steps:
        print(f"{k:9s} epoch of {n // b * b} images: {med[k]:.2f} s (median of "
              f"{FLAGS.repeats}; {1000 * per_step[k]:.1f} ms/step; first call incl. trace "
              f"{compile_s[k]:.1f} s; est. 50k-image epoch {full[k]:.0f} s)")
    print(f"stepwise / folded = {med['stepwise'] / med['folded']:.2f}x   spikes identical: {same}")
    print(json.dumps(dict(examples=n // b * b, batch=b, timesteps=FLAGS.timesteps,
                          epoch_seconds=med, all_seconds=times, ms_per_step=per_step,
                          trace_seconds=compile_s, ratio=med["stepwise"] / med["folded"],
                          spikes_identical=bool(same), cpu_count=os.cpu_count())))


if __name__ == "__main__":
    app.run(main)
