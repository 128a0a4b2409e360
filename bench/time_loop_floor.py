"""Benchmark: the cheapest time loop TensorFlow runs on this machine, forward + backward.

    python bench/time_loop_floor.py [--batch 64 --units 500 --timesteps 25 --repeats 7]

Every spiking layer has a recurrence over time that cannot be folded into the batch. This
measures the floor of that cost: a one-operation body ``r[t] = d * r[t-1] + z[t]`` (a leaky
integrator, ``d = 0.8``) on ``[B, N]`` frames over ``T`` steps, with the gradient of
``sum(r * g)`` with respect to ``z`` (one reverse recurrence), in five implementations:

* ``graph_unrolled_bm``: Python-unrolled in a ``tf.function``, ``[B, T, N]`` (tfsnn's layout;
  ``timeaxis.scan_time``), autodiff backward;
* ``graph_unrolled_tm``: the same on a time-major ``[T, B, N]`` tensor;
* ``graph_while_tm``: a ``tf.while_loop`` with ``TensorArray`` reads and writes, time-major;
* ``xla_unrolled_tm``: ``graph_unrolled_tm`` XLA-compiled (``jit_compile=True``);
* ``xla_while_custom``: forward and reverse ``tf.while_loop`` each XLA-compiled, joined by
  ``tf.custom_gradient`` (the form of tfsnn's fused neurons).

Each is checked against a numpy reference (forward and gradient) before timing; the variants are
interleaved per repeat and the median is reported, as the time per call (forward + backward) and
per time step (call / 2T). A real neuron or filter step has more operations than this body (the
IIR neuron: subtract, compare, cast, decay, add, plus the surrogate and the reverse recursion),
so this is a lower bound for each of a network's recurrences (iir_mlp has five: three neurons,
two trained hidden filters). Prints one JSON line at the end.
"""
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 64, "batch size B")
flags.DEFINE_integer("units", 500, "neurons per frame N")
flags.DEFINE_integer("timesteps", 25, "time steps T")
flags.DEFINE_integer("repeats", 7, "timed repeats per variant (median reported)")
flags.DEFINE_integer("calls", 20, "calls per repeat")

DECAY = 0.8


def _variants(tf):
    def unrolled(z, axis):
        r, out = tf.zeros_like(tf.gather(z, 0, axis=axis)), []
        for zt in tf.unstack(z, axis=axis):
            r = DECAY * r + zt
            out.append(r)
        return tf.stack(out, axis=axis)

    def while_tm(z, reverse=False):
        n = tf.shape(z)[0]
        zin = tf.TensorArray(z.dtype, size=n).unstack(z)

        def body(i, r, ta):
            t = n - 1 - i if reverse else i
            r = DECAY * r + zin.read(t)
            return i + 1, r, ta.write(t, r)

        _, _, ta = tf.while_loop(lambda i, *_: i < n, body,
                                 (0, tf.zeros_like(z[0]), tf.TensorArray(z.dtype, size=n)))
        return ta.stack()

    fwd = tf.function(while_tm, jit_compile=True, autograph=False)
    bwd = tf.function(lambda g: while_tm(g, reverse=True), jit_compile=True, autograph=False)

    @tf.custom_gradient
    def xla_custom(z):
        return fwd(z), bwd

    return {  # name -> (function of the sequence, time-major?)
        "graph_unrolled_bm": (lambda z: unrolled(z, 1), False),
        "graph_unrolled_tm": (lambda z: unrolled(z, 0), True),
        "graph_while_tm": (while_tm, True),
        "xla_unrolled_tm": (tf.function(lambda z: unrolled(z, 0), jit_compile=True,
                                        autograph=False), True),
        "xla_while_custom": (xla_custom, True),
    }


def _reference(z, g):
    """numpy forward ``r`` and ``d sum(r g) / dz`` of ``[B, T, N]`` arrays."""
    import numpy as np
    r, acc = np.zeros_like(z), np.zeros_like(z[:, 0])
    for t in range(z.shape[1]):
        acc = DECAY * acc + z[:, t]
        r[:, t] = acc
    dz, lam = np.zeros_like(z), np.zeros_like(z[:, 0])
    for t in reversed(range(z.shape[1])):
        lam = DECAY * lam + g[:, t]
        dz[:, t] = lam
    return r, dz


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    b, n, t = FLAGS.batch, FLAGS.units, FLAGS.timesteps
    if min(b, n, t, FLAGS.repeats, FLAGS.calls) < 1:
        raise app.UsageError("--batch, --units, --timesteps, --repeats and --calls must be >= 1")
    rng = np.random.default_rng(0)
    z_np = rng.standard_normal((b, t, n)).astype(np.float32)
    g_np = rng.standard_normal((b, t, n)).astype(np.float32)
    r_ref, dz_ref = _reference(z_np, g_np)
    steps = {}
    for name, (fn, tm) in _variants(tf).items():
        perm = (1, 0, 2) if tm else (0, 1, 2)
        z, g = tf.constant(z_np.transpose(perm)), tf.constant(g_np.transpose(perm))

        def make_step(z, g, fn):
            @tf.function(autograph=False)
            def step():
                with tf.GradientTape() as tape:
                    tape.watch(z)
                    r = fn(z)
                    loss = tf.reduce_sum(r * g)
                return r, tape.gradient(loss, z)
            return step

        step = make_step(z, g, fn)
        r, dz = step()
        for got, want, what in ((r, r_ref, "forward"), (dz, dz_ref, "gradient")):
            np.testing.assert_allclose(got.numpy().transpose(perm), want, rtol=1e-5, atol=1e-4,
                                       err_msg=f"{name}: {what}")
        step()
        steps[name] = step
    times = {k: [] for k in steps}
    for _ in range(FLAGS.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(FLAGS.calls):
                out = step()
            out[1].numpy()
            times[name].append((time.perf_counter() - start) / FLAGS.calls)
    print(f"one-op time loop r = {DECAY}*r + z, [B={b}, N={n}] frames, T={t}, forward + backward, "
          f"median of {FLAGS.repeats} x {FLAGS.calls} calls, {os.cpu_count()} CPUs")
    print(f"{'variant':20s} {'ms/call':>8s} {'us/step':>8s}")
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"ms_per_call": med * 1e3, "us_per_step": med / (2 * t) * 1e6}
        print(f"{name:20s} {med * 1e3:8.3f} {med / (2 * t) * 1e6:8.1f}")
    print(json.dumps({"batch": b, "units": n, "timesteps": t, "rows": rows}))


if __name__ == "__main__":
    app.run(main)
