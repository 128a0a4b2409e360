"""Benchmark: one bias-free Linear (2048 -> 2048) + LIF layer vs the dense-matmul floor.

    python bench/lif_layer.py [--batch 16 --timesteps 500 --features 2048 --density 0.2
                               --neuron lif|alif|cuba|rlif --state --record
                               --repeats 5 --surrogate linear --leak 0.95 --reset subtract
                               --jit auto|on|off]

Times (tf.function-compiled, warmed up, median of ``--repeats``; the variants are interleaved
per repeat so that load from other processes hits them alike):

* ``floor_fwd``: ``x . W`` over all ``B*T`` frames (one matmul);
* ``floor_fwd_bwd``: ``x . W`` plus the weight gradient ``x^T . G`` (two matmuls);
* ``layer_fwd``: Dense (time folded) + LIF spikes;
* ``layer_fwd_bwd``: the same plus ``dL/dW`` through the hand-written backward recursion,
  ``L = sum(spikes * G)``.

Peak memory: each variant is run again in a fresh subprocess and reports its peak resident set
size (Linux ``VmHWM``) minus the RSS measured just before the first call (inputs already
allocated), in MiB. CPU only; the GPU allocator's ``get_memory_info`` is used when a GPU is
visible.
"""
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 16, "batch size B")
flags.DEFINE_integer("timesteps", 500, "time steps T")
flags.DEFINE_integer("features", 2048, "input and output width")
flags.DEFINE_float("density", 0.2, "fraction of input spikes that are 1")
flags.DEFINE_integer("repeats", 5, "timed repeats per variant (median reported)")
flags.DEFINE_string("surrogate", "linear", "tfsnn.surrogates name")
flags.DEFINE_float("leak", 0.95, "LIF leak factor (1 = IF)")
flags.DEFINE_enum("reset", "subtract", ["subtract", "zero"], "reset mode")
flags.DEFINE_float("threshold", 1.0, "threshold")
flags.DEFINE_enum("jit", "auto", ["auto", "on", "off"], "XLA for the neuron op's loops "
                  "(auto: the library default, on for T >= 64 inside tf.function)")
flags.DEFINE_enum("neuron", "lif", ["lif", "alif", "cuba", "rlif"], "neuron op: lif "
                  "(spike_sequence), alif, cuba (CuBa-LIF), rlif (recurrent, [F, F] feedback)")
flags.DEFINE_bool("state", False, "pass an initial state and take the final state (with gradient)")
flags.DEFINE_bool("record", False, "also output the membrane trace [B, T, F] (enters the loss)")
flags.DEFINE_string("memory_of", "", "internal: measure the peak memory of one variant")

VARIANTS = ("floor_fwd", "floor_fwd_bwd", "layer_fwd", "layer_fwd_bwd")


def _vm_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def build():
    import numpy as np
    import tensorflow as tf
    from tfsnn.layers.neurons import alif_sequence, cuba_sequence, recurrent_sequence
    from tfsnn.layers.neurons.lif import spike_sequence

    B, T, F = FLAGS.batch, FLAGS.timesteps, FLAGS.features
    rng = np.random.default_rng(0)
    x = tf.constant((rng.random((B, T, F)) < FLAGS.density).astype(np.float32))
    w = tf.Variable(rng.normal(0, 1.5 / np.sqrt(F * FLAGS.density), (F, F)).astype(np.float32))
    g = tf.constant(rng.normal(size=(B, T, F)).astype(np.float32))
    kw = dict(threshold=FLAGS.threshold, leak=FLAGS.leak, reset=FLAGS.reset,
              surrogate=FLAGS.surrogate,
              jit_compile={"auto": None, "on": True, "off": False}[FLAGS.jit])

    v0 = tf.constant(rng.normal(0, 0.3, (B, F)).astype(np.float32))
    wr = tf.Variable(rng.normal(0, 0.3 / np.sqrt(F), (F, F)).astype(np.float32))
    opts = dict(threshold=FLAGS.threshold, leak=FLAGS.leak, reset=FLAGS.reset,
                surrogate=FLAGS.surrogate, return_trace=FLAGS.record, jit_compile=kw["jit_compile"],
                initial_state=(v0, v0) if FLAGS.state else None)

    def neuron(i):
        """Spikes, plus the trace and final state folded into one extra loss term."""
        if FLAGS.neuron == "lif" and not (FLAGS.state or FLAGS.record):
            return spike_sequence(i, **kw), 0.0
        if FLAGS.neuron == "lif":
            out = spike_sequence(i, **kw, initial_state=v0 if FLAGS.state else None,
                                 return_trace=FLAGS.record, return_state=FLAGS.state)
            s, rest = out[0], out[1:]
        else:
            fn = {"alif": alif_sequence, "cuba": cuba_sequence}.get(FLAGS.neuron)
            s, trace, end = (fn(i, **opts) if fn is not None
                             else recurrent_sequence(i, wr, **opts))
            rest = ((trace,) if FLAGS.record else ()) + (end if FLAGS.state else ())
        return s, sum(tf.reduce_sum(r) * 1e-3 for r in rest)

    def dense(x):  # time folded into the batch: one [B*T, F] x [F, F] matmul
        return tf.reshape(tf.matmul(tf.reshape(x, [-1, F]), w), [B, T, F])

    @tf.function
    def floor_fwd():
        return dense(x)

    @tf.function
    def floor_fwd_bwd():
        y = dense(x)
        dw = tf.matmul(tf.reshape(x, [-1, F]), tf.reshape(g, [-1, F]), transpose_a=True)
        return y, dw

    @tf.function
    def layer_fwd():
        return neuron(dense(x))

    @tf.function
    def layer_fwd_bwd():
        with tf.GradientTape() as tape:
            s, extra = neuron(dense(x))
            loss = tf.reduce_sum(s * g) + extra
        return s, tape.gradient(loss, w)

    return dict(floor_fwd=floor_fwd, floor_fwd_bwd=floor_fwd_bwd, layer_fwd=layer_fwd,
                layer_fwd_bwd=layer_fwd_bwd)


def _sync(out):
    import tensorflow as tf
    for t in tf.nest.flatten(out):
        t.numpy()


def measure_memory(name):
    import tensorflow as tf
    fn = build()[name]
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
        base = tf.config.experimental.get_memory_info("GPU:0")["current"]
    else:
        base = _vm_kib("VmRSS:") * 1024
    for _ in range(2):
        _sync(fn())
    if gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    else:
        peak = _vm_kib("VmHWM:") * 1024
    print(json.dumps({"name": name, "peak_mib": (peak - base) / 2 ** 20,
                      "kind": "gpu_allocator_peak" if gpu else "rss_peak"}))


def main(argv):
    del argv
    if FLAGS.memory_of:
        return measure_memory(FLAGS.memory_of)
    import numpy as np
    import tensorflow as tf
    fns = build()
    spikes = fns["layer_fwd"]()[0]
    rate = float(tf.reduce_mean(spikes))
    for fn in fns.values():  # trace + warm up
        _sync(fn())
        _sync(fn())
    times = {k: [] for k in fns}
    for _ in range(FLAGS.repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            _sync(fn())
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    mem = {}
    for k in VARIANTS:
        args = [sys.executable, os.path.abspath(__file__), f"--memory_of={k}"] + [
            f"--{f}={getattr(FLAGS, f)}" for f in
            ("batch", "timesteps", "features", "density", "surrogate", "leak", "reset",
             "threshold", "jit", "neuron", "state", "record")]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        mem[k] = json.loads(out.strip().splitlines()[-1])
    B, T, F = FLAGS.batch, FLAGS.timesteps, FLAGS.features
    print(f"Linear({F}->{F}, no bias) + {FLAGS.neuron.upper()}(leak={FLAGS.leak}, reset={FLAGS.reset}, "
          f"surrogate={FLAGS.surrogate}, jit={FLAGS.jit}, state={FLAGS.state}, "
          f"record={FLAGS.record}); B={B} T={T} input density={FLAGS.density}; "
          f"output rate={rate:.3f}; TF {tf.__version__}, {os.cpu_count()} CPUs, "
          f"median of {FLAGS.repeats}")
    print(f"{'variant':16s} {'time_s':>8s} {'peak_MiB':>9s} ({mem['floor_fwd']['kind']})")
    for k in VARIANTS:
        print(f"{k:16s} {med[k]:8.3f} {mem[k]['peak_mib']:9.0f}")
    print(f"ratio forward          layer_fwd / floor_fwd         = "
          f"{med['layer_fwd'] / med['floor_fwd']:.3f}")
    print(f"ratio forward+backward layer_fwd_bwd / floor_fwd_bwd = "
          f"{med['layer_fwd_bwd'] / med['floor_fwd_bwd']:.3f}   (target <= 1.2)")


if __name__ == "__main__":
    app.run(main)
