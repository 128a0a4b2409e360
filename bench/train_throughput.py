"""Benchmark: training throughput (images/s) and peak memory of spike_bp LeNet (Lee et al.'s
MNIST network: conv5x5(20) - LIF - spiking avg pool - conv5x5(50) - LIF - spiking pool - fc 200 -
LIF - fc 10 - leaky mean readout), side by side with its dense floor and two peer libraries.

    python bench/train_throughput.py [--batch 32 --timesteps 20 --steps 4 --repeats 5
                                      --variants tfsnn,tfsnn_xla,tfsnn_graph_loops,floor,
                                                 snntorch,spikingjelly
                                      --threads 0 --nomemory]

Variants (one SGD step each: forward over T steps, sum-squared-error loss, backward, update;
real MNIST images, Poisson rate encoding ``1[x/2 > u]`` with a fresh draw per step):

* ``tfsnn``: ``tfsnn.models.spiking.snn("spike_bp_lenet", T)`` compiled by
  ``tfsnn.training.spike_bp.compile_spike_bp`` (the ``train_snn.py --method spike_bp`` model;
  the neurons' time loops XLA-compiled), stepped by ``train_on_batch`` (its ``tf.function``);
* ``tfsnn_xla``: the same with ``jit_compile=True`` (the whole train step XLA-compiled);
* ``tfsnn_graph_loops``: ``tfsnn`` with ``jit_neurons=False`` (the time loops as TF while
  loops below T = 64, as before ``jit_neurons``);
* ``floor``: the same convolutions, poolings and matmuls applied to all B*T frames in a plain
  Keras model, forward + backward, no neurons, no encoder (the frames are given);
* ``snntorch``: the network in snnTorch 1.x (``snn.Leaky``, reset to zero, leak 0.99; pooling
  neurons IF theta 0.75), stepped over T in Python (snnTorch's model), default surrogate;
* ``spikingjelly``: the network in SpikingJelly (``activation_based``, multi-step mode
  ``step_mode="m"``, ``LIFNode``, hard reset), time folded into the batch for
  the convolutions.

Throughput: ``--steps`` steps per repeat after 2 warm-up steps, median over ``--repeats``
repeats, the variants interleaved per repeat (load from other processes hits them alike).
Ratios: ``time / floor``. Peak memory: each variant again in a fresh subprocess, peak resident
set size (``VmHWM``) minus the RSS just before its first step, in MiB. Torch uses
``--threads`` intra-op threads (0: torch's default, all cores), as TensorFlow does. The peers
share the process with TensorFlow (imported first); on the loaded 2-core machine their ratio to
the floor was 2.5-5x worse beside the compiled tfsnn models than with ``--variants
floor,snntorch,spikingjelly``, so also run them that way and compare ratios to each run's floor.
"""
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 32, "batch size B (the spike_bp recipe's)")
flags.DEFINE_integer("timesteps", 20, "time steps T (the recipe: 100)")
flags.DEFINE_integer("steps", 4, "timed training steps per repeat")
flags.DEFINE_integer("repeats", 5, "repeats per variant (median reported)")
flags.DEFINE_list("variants", ["tfsnn", "tfsnn_xla", "tfsnn_graph_loops", "floor",
                               "snntorch", "spikingjelly"],
                  "variants to run (see the module docstring)")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0: torch's default)")
flags.DEFINE_bool("memory", True, "also measure each variant's peak memory in a subprocess")
flags.DEFINE_string("memory_of", "", "internal: measure the peak memory of one variant")

VARIANTS = ("tfsnn", "tfsnn_xla", "tfsnn_graph_loops", "floor", "snntorch", "spikingjelly")
LR, WD, LEAK = 0.0085, 5e-4, 0.99


def _vm_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _data(b, steps):
    """``steps`` batches of real MNIST test images in [0, 1] ``[B, 28, 28, 1]`` and labels."""
    import numpy as np

    from tfsnn.data import bundled
    x, y = bundled.mnist_test_split()
    n = b * steps
    return (x[:n].astype(np.float32) / 255.0).reshape(steps, b, 28, 28, 1), \
        y[:n].astype(np.int64).reshape(steps, b)


# ------------------------------------------------------------------ TensorFlow variants

def _tfsnn(b, t, jit, jit_neurons=True):
    from tfsnn.models import spiking
    from tfsnn.training import spike_bp
    model = spiking.snn("spike_bp_lenet", t, 10, (28, 28, 1), encoder="poisson_half")
    spike_bp.compile_spike_bp(model, LR, WD, jit_compile=jit, jit_neurons=jit_neurons)
    return lambda x, y: model.train_on_batch(x, y)


def _floor(b, t):
    import keras
    import numpy as np

    from tfsnn.losses import SumSquaredError
    frames = keras.Input((t, 28, 28, 1), batch_size=b)
    h = keras.ops.reshape(frames, (b * t, 28, 28, 1))  # time folded into the batch
    for filters in (20, 50):
        h = keras.layers.Conv2D(filters, 5, padding="same", use_bias=False)(h)
        h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(200, use_bias=False)(h)
    h = keras.layers.Dense(10, use_bias=False)(h)
    out = keras.ops.mean(keras.ops.reshape(h, (b, t, 10)), axis=1)
    model = keras.Model(frames, out)
    model.compile(optimizer=keras.optimizers.SGD(LR, weight_decay=WD), loss=SumSquaredError(),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    cache = {}

    def step(x, y):  # the frames are given: one Poisson draw per batch, made outside the timing
        key = id(x)
        if key not in cache:
            cache[key] = (rng.random((b, t, 28, 28, 1)) < x[:, None] / 2).astype(np.float32)
        return model.train_on_batch(cache[key], y)
    return step


# ------------------------------------------------------------------ torch variants

def _torch_setup():
    import torch
    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    return torch


def _poisson(torch, x, t):
    """``[T, B, 1, 28, 28]`` spikes ``1[x/2 > u]`` from images ``[B, 28, 28, 1]`` (numpy)."""
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    return (torch.rand((t,) + tuple(xt.shape)) < xt / 2).float()


def _sse(torch, out, y):
    onehot = torch.nn.functional.one_hot(torch.from_numpy(y), 10).float()
    return ((out - onehot) ** 2).sum()


def _snntorch(b, t):
    torch = _torch_setup()
    import snntorch as snn
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 20, 5, padding=2, bias=False)
            self.c2 = nn.Conv2d(20, 50, 5, padding=2, bias=False)
            self.f1 = nn.Linear(50 * 7 * 7, 200, bias=False)
            self.f2 = nn.Linear(200, 10, bias=False)
            self.pool = nn.AvgPool2d(2)
            lif = dict(beta=LEAK, threshold=1.0, reset_mechanism="zero")
            self.n1, self.n2, self.n3 = (snn.Leaky(**lif) for _ in range(3))
            pool = dict(beta=1.0, threshold=0.75, reset_mechanism="zero")
            self.p1, self.p2 = snn.Leaky(**pool), snn.Leaky(**pool)

        def forward(self, s):  # s [T, B, 1, 28, 28]
            mems = [n.reset_mem() for n in (self.n1, self.p1, self.n2, self.p2, self.n3)]
            out = 0.0
            for st in s:
                h, mems[0] = self.n1(self.c1(st), mems[0])
                h, mems[1] = self.p1(self.pool(h), mems[1])
                h, mems[2] = self.n2(self.c2(h), mems[2])
                h, mems[3] = self.p2(self.pool(h), mems[3])
                h, mems[4] = self.n3(self.f1(h.flatten(1)), mems[4])
                out = out + self.f2(h)
            return out / s.shape[0]

    return _torch_step(torch, Net(), t)


def _spikingjelly(b, t):
    torch = _torch_setup()
    from spikingjelly.activation_based import functional, layer, neuron
    nn = torch.nn
    lif = dict(tau=1.0 / (1.0 - LEAK), decay_input=False, v_threshold=1.0, v_reset=0.0,
               step_mode="m")
    pool = dict(v_threshold=0.75, v_reset=0.0, step_mode="m")
    net = nn.Sequential(
        layer.Conv2d(1, 20, 5, padding=2, bias=False, step_mode="m"), neuron.LIFNode(**lif),
        layer.AvgPool2d(2, step_mode="m"), neuron.IFNode(**pool),
        layer.Conv2d(20, 50, 5, padding=2, bias=False, step_mode="m"), neuron.LIFNode(**lif),
        layer.AvgPool2d(2, step_mode="m"), neuron.IFNode(**pool),
        layer.Flatten(step_mode="m"), layer.Linear(50 * 7 * 7, 200, bias=False, step_mode="m"),
        neuron.LIFNode(**lif), layer.Linear(200, 10, bias=False, step_mode="m"))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, s):
            functional.reset_net(self.net)
            return self.net(s).mean(0)

    return _torch_step(torch, Net(), t)


def _torch_step(torch, net, t):
    opt = torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = _sse(torch, net(_poisson(torch, x, t)), y)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


BUILDERS = {"tfsnn": lambda b, t: _tfsnn(b, t, False), "tfsnn_xla": lambda b, t: _tfsnn(b, t, True),
            "tfsnn_graph_loops": lambda b, t: _tfsnn(b, t, False, jit_neurons=False),
            "floor": _floor, "snntorch": _snntorch, "spikingjelly": _spikingjelly}


# ------------------------------------------------------------------ measurement

def _run(step, xs, ys):
    for x, y in zip(xs, ys):
        step(x, y)


def _torch_first():
    """Import torch (and its lazily loaded compiler stack) before TensorFlow: loaded after it,
    triton's import (from ``torch.optim``) crashes the process."""
    if any(v in FLAGS.variants + [FLAGS.memory_of] for v in ("snntorch", "spikingjelly")):
        import torch._dynamo  # noqa: F401


def measure_memory(variant):
    _torch_first()
    xs, ys = _data(FLAGS.batch, FLAGS.steps)
    step = BUILDERS[variant](FLAGS.batch, FLAGS.timesteps)
    before = _vm_kib("VmRSS:")
    _run(step, xs[:2], ys[:2])
    _run(step, xs, ys)
    print(json.dumps({"variant": variant, "peak_mib": (_vm_kib("VmHWM:") - before) / 1024}))


def main(argv):
    del argv
    if FLAGS.memory_of:
        return measure_memory(FLAGS.memory_of)
    unknown = [v for v in FLAGS.variants if v not in VARIANTS]
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; accepted: {', '.join(VARIANTS)}")
    b, t = FLAGS.batch, FLAGS.timesteps
    _torch_first()
    xs, ys = _data(b, FLAGS.steps)
    steps, times = {}, {v: [] for v in FLAGS.variants}
    for v in FLAGS.variants:
        steps[v] = BUILDERS[v](b, t)
        _run(steps[v], xs[:2], ys[:2])  # trace / compile / warm up
    for _ in range(FLAGS.repeats):
        for v in FLAGS.variants:
            start = time.perf_counter()
            _run(steps[v], xs, ys)
            times[v].append(time.perf_counter() - start)
    med = {v: statistics.median(times[v]) for v in FLAGS.variants}
    mem = {}
    if FLAGS.memory:
        for v in FLAGS.variants:
            args = [sys.executable, os.path.abspath(__file__), f"--memory_of={v}",
                    f"--batch={b}", f"--timesteps={t}", f"--steps={FLAGS.steps}",
                    f"--threads={FLAGS.threads}"]
            out = subprocess.run(args, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            mem[v] = json.loads(lines[-1])["peak_mib"] if lines else float("nan")
    floor = med.get("floor")
    print(f"spike_bp LeNet training, B={b} T={t}, {FLAGS.steps} steps x {FLAGS.repeats} "
          f"repeats (median), {os.cpu_count()} CPUs")
    print(f"{'variant':18s} {'images/s':>9s} {'s/step':>8s} {'x floor':>8s} {'peak MiB':>9s}")
    rows = {}
    for v in FLAGS.variants:
        per_step = med[v] / FLAGS.steps
        ratio = med[v] / floor if floor else float("nan")
        rows[v] = dict(images_per_s=b / per_step, s_per_step=per_step, x_floor=ratio,
                       peak_mib=mem.get(v), seconds=times[v])
        print(f"{v:18s} {b / per_step:9.1f} {per_step:8.3f} {ratio:8.2f} "
              f"{mem.get(v, float('nan')):9.0f}")
    print(json.dumps({"batch": b, "timesteps": t, "steps": FLAGS.steps, "rows": rows}))


if __name__ == "__main__":
    app.run(main)
