"""Benchmark: training throughput (images/s) and peak memory of each direct-SNN method's default
network, side by side with its dense floor and the same network in two peer libraries.

    python bench/train_throughput.py [--network lenet|vgg5|iir_mlp|proxy|all
                                      --batch B --timesteps T --steps N --repeats 5
                                      --variants tfsnn,tfsnn_xla,...,floor,snntorch,spikingjelly
                                      --width 16 --rate 0.15 --threads 0 --nomemory]

``--network`` (default ``lenet``; ``all`` runs the four one after another in one process and
prints one table and one JSON line per network). ``--batch`` / ``--timesteps`` / ``--steps``
default to the network's (below; given, they apply to every network of the run). ``--variants``
defaults to the network's list; with ``all``, a variant a network lacks is skipped.

Networks (B, T, steps per repeat), real MNIST test images in [0, 1], one optimizer step per
training step (forward over T steps, the recipe's loss and optimizer, backward, update):

* ``lenet`` (32, 20, 4): spike_bp LeNet (Lee et al.: conv5x5(20) - LIF - spiking avg pool -
  conv5x5(50) - LIF - spiking pool - fc 200 - LIF - fc 10 - leaky mean readout), Poisson
  ``1[x/2 > u]`` (fresh draw per step), SGD + sum-squared error (``train_snn.py --method
  spike_bp``; the recipe has T = 100). Variants ``tfsnn`` (``compile_spike_bp``, the neurons'
  time loops XLA-compiled), ``tfsnn_xla`` (the whole train step XLA), ``tfsnn_graph_loops``
  (``jit_neurons=False``), ``floor``, ``snntorch`` (``snn.Leaky``, reset to zero, leak 0.99; pool
  neurons IF theta 0.75), ``spikingjelly`` (``LIFNode``, hard reset).
* ``vgg5`` (32, 20, 2; the recipe has T = 100): the STDB stage of ``train_snn.py --method hybrid
  --model vgg5`` (Fashion-MNIST-shaped 28x28x1): conv3x3(64) - IF - avg pool - conv(128) - IF -
  drop 0.3 - conv(128) - IF - avg pool - fc 4096 - IF - drop 0.5 - fc 4096 - IF - drop 0.5 -
  fc 10 - sum readout; ``RathiNeuron`` (IF, soft reset, fires from V(t-1), STDB surrogate),
  time-constant dropout, signed Poisson input, ``hybrid.compile_for_fine_tuning`` (Adam amsgrad
  1e-4, coupled L2 5e-4, cross-entropy on the summed output). Random kernels; thresholds set by
  the recipe's max-input balancing (scale 0.7) on 8 images, then rescaled layer by layer until
  each layer fires at ``--rate`` (default 0.15) spikes per neuron and step (measured rates are
  printed). ``tfsnn``: the library's default, the step in graph mode with the neurons' loops
  XLA-compiled (``compile_for_fine_tuning``); ``tfsnn_xla``: the whole train step XLA-compiled
  (``jit_compile=True``, ``train_snn.py --jit_compile``; the default until 2026-12-07: the
  faster one on some CPUs only); ``tfsnn_graph_loops``: graph step and graph while loops. Peers: the same layers with IF neurons (leak 1,
  subtractive reset, threshold 1, no one-step delay, their default surrogates; snnTorch
  ``snn.Leaky(beta=1, reset_mechanism="subtract")``, SpikingJelly ``IFNode(v_reset=None)``),
  time-constant dropout masks, Adam(amsgrad, weight_decay 5e-4: PyTorch's coupled L2).
* ``iir_mlp`` (64, 25, 4): ``tfsnn.models.iir.snn_mlp_1`` (784 - IIR - 500 - drop 0.3 - IIR - 500
  - drop 0.3 - IIR - 10, spike-count logits; the image held for every step by the first
  synapse, ``held_steps``) compiled by
  ``tfsnn.training.iir.build_model`` (Adam 1e-4, cross-entropy on the counts): dual-exponential
  IIR synapse (tau_m 4, tau_s 1) on each layer's input, IIR neuron (reset recursion, Gaussian
  surrogate). Peers (equal shapes and work, not equal dynamics): snnTorch ``snn.Synaptic(alpha=
  exp(-1/tau_s), beta=exp(-1/tau_m), reset_mechanism="subtract")`` after each Linear (its
  synaptic current then membrane form the same dual-exponential response up to the gain
  ``a - b`` and the per-element trainable coefficients; the filter sits on the 500/500/10
  outputs instead of the 784/500/500 inputs); SpikingJelly ``layer.SynapseFilter(tau=1/(1 -
  exp(-1/tau_s)))`` on each layer's input (a first-order filter) then Linear then
  ``LIFNode(tau=1/(1 - exp(-1/tau_m)), decay_input=False, v_reset=None)`` (the second pole as the
  membrane leak, soft reset). Per-step dropout, Adam(1e-4, eps 1e-8), cross-entropy on counts.
* ``proxy`` (100, 15, 4) at ``--width`` (default 16; the paper's is 128): ``ProxyNet`` as
  ``tfsnn.training.proxy.build_model`` builds and compiles it (Adam 1e-4, betas (0.8, 0.99);
  BN in training mode, as in epoch 0): its ``train_step`` runs the IF SNN forward on all B*T
  frames (no gradient; XLA-compiled after ``BN(conv1(x))``, ``ProxyNet.snn``) and
  backpropagates ``mean((o - Y)^2)`` through the ReLU ANN on the B images. ``tfsnn_xla``: the
  whole step XLA-compiled (``jit_compile=True``). Peers have no proxy learning: the same
  IF network (conv1 - BN - IF (a constant current) - conv - BN - IF - max pool - conv - BN - IF -
  max pool - fc 20w - IF - fc 9w - IF - fc 2w - IF - fc 10 - IF - spike counts; threshold 2,
  hard reset) trained by plain BPTT with the library's default surrogate on the same loss,
  Adam(1e-4, (0.8, 0.99), weight_decay 1e-6).

Floors: the network's convolutions, poolings and matmuls applied to all B*T frames in a plain
Keras model (time folded into the batch), forward + backward with the recipe's loss and
optimizer, no neurons, no synapse filters, no dropout / BatchNorm, no encoder (Poisson frames
are drawn outside the timing; the IIR and proxy inputs are the image at every step; the proxy
floor applies conv1 once per image, as the SNN does, and the rest to all B*T frames). The proxy
``tfsnn`` step does less dense work than its floor (backward on B frames, not B*T). The iir_mlp
``tfsnn`` step does more: its first synapse's coefficients are trained, so the first layer's
input gradient (a ``[B*T, 500] x [500, 784]`` matmul) is computed, which the floor, fed the
image, skips; ``floor_dx`` (iir_mlp only) is the floor with that matmul: the image is first
scaled by a trainable per-pixel weight; ``tfsnn_no_dropout`` is ``tfsnn`` with dropout 0 (the
cost of dropout's random numbers). The gap between ``floor_dx`` and ``tfsnn_no_dropout`` is then
the time loops (three neurons, three filters) and their surrogates; ``bench/time_loop_floor.py``
measures the cheapest time loop TensorFlow runs, for comparison. ``bound`` is ``floor_dx`` run
time-major (``[T*B, N]`` frames, no transposes) with what every implementation of this network
must add, in its cheapest form: after each Dense a one-op time loop ``r = 0.8 r + x`` (Python-
unrolled; for the neurons) and, for the hidden layers, the recipe's dropout (``SpikeDropout``)
and a second such loop (for the next synapse's filter): a lower bound for tfsnn's step.
``bound_fused``: the same with each hidden layer's two loops and dropout mask in one loop.
``fused_sketch``: snn_mlp_1's real arithmetic written as one time-major Keras model with one
loop per layer (neuron, dropout, next filter), autodiff backward: a candidate design, not a
library path.

Torch variants step over T in Python (snnTorch's model) or in SpikingJelly's multi-step mode
(``step_mode="m"``, time folded into the batch for the stateless layers).

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
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

from absl import app, flags  # noqa: E402

NETWORKS = ("lenet", "vgg5", "iir_mlp", "proxy")
FLAGS = flags.FLAGS
flags.DEFINE_enum("network", "lenet", NETWORKS + ("all",),
                  "network to benchmark (all: each in turn, one table per network)")
flags.DEFINE_integer("batch", None, "batch size B (default: the network's, see the docstring)")
flags.DEFINE_integer("timesteps", None, "time steps T (default: the network's)")
flags.DEFINE_integer("steps", None, "timed training steps per repeat (default: the network's)")
flags.DEFINE_integer("repeats", 5, "repeats per variant (median reported)")
flags.DEFINE_list("variants", [], "variants to run (default: the network's; see the docstring)")
flags.DEFINE_integer("width", 16, "proxy network width w (the paper's: 128)")
flags.DEFINE_float("rate", 0.15, "vgg5: target spikes per neuron and step of every layer")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0: torch's default)")
flags.DEFINE_bool("memory", True, "also measure each variant's peak memory in a subprocess")
flags.DEFINE_string("memory_of", "", "internal: measure the peak memory of one variant")

VARIANTS = ("tfsnn", "tfsnn_xla", "tfsnn_graph_loops", "tfsnn_no_dropout", "floor", "floor_dx",
            "bound", "bound_fused", "fused_sketch", "snntorch", "spikingjelly")
LR, WD, LEAK = 0.0085, 5e-4, 0.99
NOTES = {}  # network -> extra facts printed under its table title (e.g. measured spike rates)


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


def _cached_frames(model, draw):
    """A step ``(x, y) -> loss`` feeding ``model`` the frames ``draw(x)``, drawn once per batch
    (outside the timing after the warm-up)."""
    cache = {}

    def step(x, y):
        key = id(x)
        if key not in cache:
            cache[key] = draw(x)
        return model.train_on_batch(cache[key], y)
    return step


# ------------------------------------------------------------------ lenet: TensorFlow

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
    return _cached_frames(model, lambda x: (rng.random((b, t, 28, 28, 1)) < x[:, None] / 2)
                          .astype(np.float32))


# ------------------------------------------------------------------ lenet: torch

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

    net = Net()
    return _torch_step(torch, net, _lenet_sgd(torch, net), lambda x: _poisson(torch, x, t, 0.5),
                       _sse)


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

    model = _SJNet(torch, functional, net, lambda y: y.mean(0))
    return _torch_step(torch, model, _lenet_sgd(torch, model),
                       lambda x: _poisson(torch, x, t, 0.5), _sse)


def _lenet_sgd(torch, net):
    return torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)


# ------------------------------------------------------------------ torch helpers

def _torch_setup():
    import torch
    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    return torch


def _poisson(torch, x, t, gain):
    """``[T, B, 1, 28, 28]`` spikes ``1[gain*x > u]`` from images ``[B, 28, 28, 1]`` (numpy)."""
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    return (torch.rand((t,) + tuple(xt.shape)) < xt * gain).float()


def _repeat(torch, x, t):
    """``[T, B, 784]``: the flattened image at every step."""
    xf = torch.from_numpy(x).reshape(x.shape[0], -1)
    return xf.unsqueeze(0).expand(t, *xf.shape)


def _onehot(torch, y):
    return torch.nn.functional.one_hot(torch.from_numpy(y), 10).float()


def _sse(torch, out, y):
    return ((out - _onehot(torch, y)) ** 2).sum()


def _ce(torch, out, y):
    return torch.nn.functional.cross_entropy(out, torch.from_numpy(y))


def _onehot_mse(torch, out, y):
    return ((out - _onehot(torch, y)) ** 2).mean()


def _SJNet(torch, functional, net, readout):
    """A SpikingJelly multi-step network ``[T, B, ...] -> readout([T, B, ...])``, its state
    reset before every forward."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, s):
            functional.reset_net(self.net)
            return readout(self.net(s))
    return Net()


def _torch_step(torch, net, opt, encode, loss_fn):
    """One training step ``(x, y) -> loss``: ``loss_fn(net(encode(x)), y)``, backward, ``opt``."""
    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(torch, net(encode(x)), y)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


# ------------------------------------------------------------------ vgg5 (hybrid STDB stage)

VGG5_LR, VGG5_WD = 1e-4, 5e-4


def _set_rates(snn, images, target, rounds=4):
    """Rathi's max-input balancing (scale 0.7) on ``images`` (skipped if a layer gets no input),
    then each neuron layer's threshold rescaled in order (``theta *= rate / target``, ``rounds``
    times: an IF neuron's rate is about ``current / theta``) so that every layer fires at about
    ``target``; returns the measured rates ``{layer: spikes per neuron and step}`` (inference, a
    fresh Poisson draw per call)."""
    import keras
    import tensorflow as tf

    from tfsnn.conversion import balancing
    try:  # (at least 20 steps: with few, a deep layer may see no input spike at all)
        balancing.balance_thresholds(snn, images=images, scale=0.7, batch_size=len(images),
                                     timesteps=max(snn.layers[1].timesteps, 20), seed=(0, 7))
    except ValueError:  # no positive current reached a layer: the rescaling below still works
        pass
    layers = balancing.spiking_layers(snn)
    probe = keras.Model(snn.inputs, [n.output for n in layers])
    rates = tf.function(lambda x: tf.stack([tf.reduce_mean(s) for s in probe(x, training=False)]))
    x = tf.constant(images)
    for i, n in enumerate(layers):
        for _ in range(rounds):
            r = float(rates(x)[i])
            n.theta.assign(n.theta * (min(max(r / target, 0.2), 5.0) if r > 0 else 0.2))
    return {n.name: round(float(r), 3) for n, r in zip(layers, rates(x))}


def _vgg5_tfsnn(b, t, jit, jit_neurons=True):
    from tfsnn.layers.neurons.lif import LIF
    from tfsnn.models import spiking
    from tfsnn.training import hybrid
    model = spiking.snn("vgg5", t, 10, (28, 28, 1), encoder="signed_poisson")  # hybrid's encoder
    rates = _set_rates(model, _data(8, 1)[0][0], FLAGS.rate)
    NOTES["vgg5"] = f"spike rates per layer (target {FLAGS.rate}): {rates}"
    for layer in model.layers:
        if isinstance(layer, LIF):
            layer.jit_compile = jit_neurons
    hybrid.compile_for_fine_tuning(model, VGG5_LR, VGG5_WD, jit_compile=jit)
    return lambda x, y: model.train_on_batch(x, y)


def _vgg5_floor(b, t):
    import keras
    import numpy as np
    reg = dict(use_bias=False, kernel_regularizer=keras.regularizers.L2(0.5 * VGG5_WD))
    frames = keras.Input((t, 28, 28, 1), batch_size=b)
    h = keras.ops.reshape(frames, (b * t, 28, 28, 1))  # time folded into the batch
    h = keras.layers.Conv2D(64, 3, padding="same", **reg)(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Conv2D(128, 3, padding="same", **reg)(h)
    h = keras.layers.Conv2D(128, 3, padding="same", **reg)(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    for units in (4096, 4096, 10):
        h = keras.layers.Dense(units, **reg)(h)
    out = keras.ops.sum(keras.ops.reshape(h, (b, t, 10)), axis=1)
    model = keras.Model(frames, out)
    model.compile(optimizer=keras.optimizers.Adam(VGG5_LR, amsgrad=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    return _cached_frames(model, lambda x: (rng.random((b, t, 28, 28, 1)) <= x[:, None])
                          .astype(np.float32))  # signed Poisson of x >= 0


def _vgg5_torch_layers(nn):
    return dict(c1=nn.Conv2d(1, 64, 3, padding=1, bias=False),
                c2=nn.Conv2d(64, 128, 3, padding=1, bias=False),
                c3=nn.Conv2d(128, 128, 3, padding=1, bias=False),
                f1=nn.Linear(128 * 7 * 7, 4096, bias=False), f2=nn.Linear(4096, 4096, bias=False),
                f3=nn.Linear(4096, 10, bias=False))


def _vgg5_snntorch(b, t):
    torch = _torch_setup()
    import snntorch as snn
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in _vgg5_torch_layers(nn).items():
                setattr(self, k, v)
            self.pool = nn.AvgPool2d(2)
            self.ns = nn.ModuleList(snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract")
                                    for _ in range(5))

        def forward(self, s):  # s [T, B, 1, 28, 28]
            mems = [n.reset_mem() for n in self.ns]
            masks = {}

            def drop(h, k, p):  # one mask per sequence (time-constant dropout)
                if k not in masks:
                    masks[k] = (torch.rand_like(h) >= p).float() / (1.0 - p)
                return h * masks[k]

            out = 0.0
            for st in s:
                h, mems[0] = self.ns[0](self.c1(st), mems[0])
                h = self.pool(h)
                h, mems[1] = self.ns[1](self.c2(h), mems[1])
                h = drop(h, 1, 0.3)
                h, mems[2] = self.ns[2](self.c3(h), mems[2])
                h = self.pool(h).flatten(1)
                h, mems[3] = self.ns[3](self.f1(h), mems[3])
                h = drop(h, 3, 0.5)
                h, mems[4] = self.ns[4](self.f2(h), mems[4])
                out = out + self.f3(drop(h, 4, 0.5))
            return out

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=VGG5_LR, amsgrad=True, weight_decay=VGG5_WD)
    return _torch_step(torch, net, opt, lambda x: _poisson(torch, x, t, 1.0), _ce)


def _vgg5_spikingjelly(b, t):
    torch = _torch_setup()
    from spikingjelly.activation_based import functional, layer, neuron
    nn = torch.nn
    m = "m"
    w = _vgg5_torch_layers(layer)  # SpikingJelly's Conv2d / Linear take step_mode
    for v in w.values():
        v.step_mode = m

    def if_():
        return neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode=m)

    net = nn.Sequential(
        w["c1"], if_(), layer.AvgPool2d(2, step_mode=m),
        w["c2"], if_(), layer.Dropout(0.3, step_mode=m), w["c3"], if_(),
        layer.AvgPool2d(2, step_mode=m), layer.Flatten(step_mode=m),
        w["f1"], if_(), layer.Dropout(0.5, step_mode=m), w["f2"], if_(),
        layer.Dropout(0.5, step_mode=m), w["f3"])
    model = _SJNet(torch, functional, net, lambda y: y.sum(0))
    opt = torch.optim.Adam(model.parameters(), lr=VGG5_LR, amsgrad=True, weight_decay=VGG5_WD)
    return _torch_step(torch, model, opt, lambda x: _poisson(torch, x, t, 1.0), _ce)


# ------------------------------------------------------------------ iir_mlp (IIR method)

TAU_M, TAU_S, IIR_LR, IIR_DROP = 4.0, 1.0, 1e-4, 0.3


def _iir_tfsnn(b, t, jit, dropout=True):
    import keras

    from tfsnn.training import iir
    c = iir.resolve({"batch_size": b, "timesteps": t, **({} if dropout else {"dropout": 0.0})})
    model = iir.build_model(c, steps_per_epoch=1000)
    if jit:
        model.compile(optimizer=keras.optimizers.Adam(iir.learning_rate(c, 1000), epsilon=1e-8),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=True)
    return lambda x, y: model.train_on_batch(x, y)


def _iir_floor(b, t, input_gradient=False, loops=None):
    """The iir_mlp floor; ``input_gradient``: the image first scaled by a trainable per-pixel
    weight, so that the first layer's input gradient is computed, as the SNN's trained first
    synapse needs (``floor_dx``); ``loops`` (with ``input_gradient``: the bounds): time-major
    frames ``[T*B, N]``, and after each Dense a one-op time loop (the neurons' stand-in), then
    for the hidden layers the SNN's ``SpikeDropout`` and a second one-op loop (the next
    filter's): ``"separate"`` (``bound``) five loops, ``"fused"`` (``bound_fused``) the
    hidden layers' two loops and dropout mask in one loop (three loops)."""
    import keras

    from tfsnn.layers.sequence import SpikeDropout
    img = keras.Input((28, 28, 1), batch_size=b)
    h = keras.ops.reshape(img, (1, b, 784))
    if input_gradient:
        h = _pixel_scale()(h)
    h = keras.ops.reshape(keras.ops.repeat(h, t, axis=0), (t * b, 784))  # the image every step
    for units in (500, 500, 10):
        h = keras.layers.Dense(units)(h)
        if loops:
            h = keras.ops.reshape(h, (t, b, units))
            if units == 10:
                h = _time_loop()(h)
            elif loops == "fused":
                h = _time_loop(dropout=IIR_DROP)(h)
            else:
                h = _time_loop()(SpikeDropout(IIR_DROP)(_time_loop()(h)))
            h = keras.ops.reshape(h, (t * b, units))
    out = keras.ops.sum(keras.ops.reshape(h, (t, b, 10)), axis=0)
    model = keras.Model(img, out)
    model.compile(optimizer=keras.optimizers.Adam(IIR_LR, epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    return lambda x, y: model.train_on_batch(x, y)


def _pixel_scale():
    """A layer ``x * w`` with ``w`` trainable, one per element of the last axis (init 1)."""
    import keras

    class PixelScale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

    return PixelScale()


def _iir_fused_sketch(b, t):
    """snn_mlp_1's arithmetic (held dual-exponential first synapse, IIR neurons with the Gaussian
    surrogate, SpikeDropout, trained dual-exponential hidden synapses, spike-count logits) as
    one Keras model, time-major (``[T*B, N]`` frames), with one Python-unrolled loop per layer
    running the neuron, the dropout mask and the next layer's filter in the same step (autodiff
    backward). A sketch of a faster design, measured beside ``tfsnn``; not a library path."""
    import keras
    import tensorflow as tf

    from tfsnn.layers.filters import dual_exp_coefficients
    from tfsnn.layers.neurons.iir import iir_surrogate, torch_kernel_init
    from tfsnn.layers.sequence import SpikeDropout
    decay, sur = math.exp(-1.0 / TAU_M), iir_surrogate()
    coefs = dual_exp_coefficients(TAU_M, TAU_S)

    class FusedMLP(keras.Model):
        def __init__(self):
            super().__init__()
            self.w = [self.add_weight(shape=s, initializer=torch_kernel_init())
                      for s in ((784, 500), (500, 500), (500, 10))]
            self.bias = [self.add_weight(shape=(n,), initializer="zeros") for n in (500, 500, 10)]
            self.coef = [[self.add_weight(shape=(n,), initializer=keras.initializers.Constant(v))
                          for v in coefs] for n in (784, 500, 500)]
            self.drops = [SpikeDropout(IIR_DROP), SpikeDropout(IIR_DROP)]

        def call(self, x, training=False):
            x = tf.reshape(x, (b, 784))
            a1, a2, b1 = self.coef[0]
            y1 = y2 = tf.zeros((784,))
            step = []
            for _ in range(t):  # the first filter's step response [T, 784]
                y1, y2 = a1 * y1 + a2 * y2 + b1, y1
                step.append(y1)
            h = tf.reshape(tf.stack(step)[:, None] * x[None], (t * b, 784))
            for layer in range(3):
                z = tf.unstack(tf.reshape(tf.matmul(h, self.w[layer]) + self.bias[layer],
                                          (t, b, -1)))
                r = tf.zeros_like(z[0])
                y1 = y2 = r
                last = layer == 2
                if not last:
                    a1, a2, b1 = self.coef[layer + 1]
                    shape = (t, b, 500)
                    m = self.drops[layer].keep_mask(tf.zeros(shape)) if training else 1.0
                    m = tf.unstack(m * tf.broadcast_to(b1, shape))
                out = []
                for i in range(t):
                    s = sur.spike(z[i] - r - 1.0)
                    r = decay * r + s
                    if last:
                        out.append(s)
                    else:
                        y1, y2 = a1 * y1 + a2 * y2 + s * m[i], y1
                        out.append(y1)
                if last:
                    return tf.add_n(out)
                h = tf.reshape(tf.stack(out), (t * b, 500))

    model = FusedMLP()
    model.compile(optimizer=keras.optimizers.Adam(IIR_LR, epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return lambda x, y: model.train_on_batch(x, y)


def _time_loop(dropout=None):
    """A layer running ``r[t] = 0.8 r[t-1] + x[t]`` over axis 0 of ``[T, B, N]``, Python-unrolled
    (the cheapest graph-mode time loop of ``bench/time_loop_floor.py``), autodiff backward; with
    ``dropout``, in the same loop ``y[t] = 0.6 y[t-1] + r[t] m[t]`` (``m``: a ``SpikeDropout``
    mask drawn for the whole sequence), returning ``y``."""
    import keras
    import tensorflow as tf

    from tfsnn.layers.sequence import SpikeDropout

    class TimeLoop(keras.layers.Layer):
        def build(self, input_shape):
            self.drop = SpikeDropout(dropout) if dropout else None

        def call(self, x):
            r = y = tf.zeros_like(x[0])
            masks = tf.unstack(self.drop.keep_mask(x), axis=0) if self.drop else None
            out = []
            for i, xt in enumerate(tf.unstack(x, axis=0)):
                r = 0.8 * r + xt
                if masks is not None:
                    y = 0.6 * y + r * masks[i]
                out.append(y if masks is not None else r)
            return tf.stack(out, axis=0)

    return TimeLoop()


def _iir_snntorch(b, t):
    torch = _torch_setup()
    import snntorch as snn
    nn = torch.nn
    alpha, beta = math.exp(-1.0 / TAU_S), math.exp(-1.0 / TAU_M)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fcs = nn.ModuleList([nn.Linear(784, 500), nn.Linear(500, 500),
                                      nn.Linear(500, 10)])
            self.ns = nn.ModuleList(snn.Synaptic(alpha=alpha, beta=beta, threshold=1.0,
                                                 reset_mechanism="subtract") for _ in range(3))
            self.drop = nn.Dropout(IIR_DROP)

        def forward(self, x):  # x [T, B, 784]
            states = [n.reset_mem() for n in self.ns]
            count = 0.0
            for xt in x:
                h = xt
                for i, (fc, n) in enumerate(zip(self.fcs, self.ns)):
                    h, *states[i] = n(fc(h), *states[i])
                    if i < 2:
                        h = self.drop(h)
                count = count + h
            return count

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=IIR_LR, eps=1e-8)
    return _torch_step(torch, net, opt, lambda x: _repeat(torch, x, t), _ce)


def _iir_spikingjelly(b, t):
    torch = _torch_setup()
    from spikingjelly.activation_based import functional, layer, neuron
    nn = torch.nn
    m = "m"
    tau_syn = 1.0 / (1.0 - math.exp(-1.0 / TAU_S))  # SynapseFilter decays by 1 - 1/tau
    tau_mem = 1.0 / (1.0 - math.exp(-1.0 / TAU_M))
    mods = []
    for i, (n_in, n_out) in enumerate(((784, 500), (500, 500), (500, 10))):
        mods += [layer.SynapseFilter(tau=tau_syn, step_mode=m), layer.Linear(n_in, n_out,
                                                                             step_mode=m),
                 neuron.LIFNode(tau=tau_mem, decay_input=False, v_threshold=1.0, v_reset=None,
                                step_mode=m)]
        if i < 2:
            mods.append(nn.Dropout(IIR_DROP))  # elementwise: per step, as Keras' Dropout
    model = _SJNet(torch, functional, nn.Sequential(*mods), lambda y: y.sum(0))
    opt = torch.optim.Adam(model.parameters(), lr=IIR_LR, eps=1e-8)
    return _torch_step(torch, model, opt, lambda x: _repeat(torch, x, t), _ce)


# ------------------------------------------------------------------ proxy

PROXY_LR, PROXY_BETAS, PROXY_WD, PROXY_THETA = 1e-4, (0.8, 0.99), 1e-6, 2.0


def _proxy_tfsnn(b, t, jit):
    import keras

    from tfsnn.training import proxy
    c = proxy.resolve({"width": FLAGS.width, "timesteps": t, "batch_size": b})
    model = proxy.build_model(c)
    if jit:
        model.compile(optimizer=keras.optimizers.Adam(
            c["learning_rate"], beta_1=c["beta_1"], beta_2=c["beta_2"], epsilon=c["epsilon"]),
            jit_compile=True)
    return lambda x, y: model.train_on_batch(x, y)


def _proxy_floor(b, t):
    import keras
    w = FLAGS.width
    img = keras.Input((28, 28, 1), batch_size=b)
    h = keras.layers.Conv2D(w, 3, padding="same", use_bias=False)(img)  # once per image
    h = keras.ops.reshape(keras.ops.repeat(h[:, None], t, axis=1), (b * t, 28, 28, w))
    for _ in range(2):
        h = keras.layers.Conv2D(w, 3, padding="same", use_bias=False)(h)
        h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    for units in (20 * w, 9 * w, 2 * w, 10):
        h = keras.layers.Dense(units, use_bias=False)(h)
    out = keras.ops.sum(keras.ops.reshape(h, (b, t, 10)), axis=1)
    model = keras.Model(img, out)
    model.compile(optimizer=keras.optimizers.Adam(PROXY_LR, *PROXY_BETAS, epsilon=1e-8),
                  loss=_OneHotMSE(), jit_compile=False)
    return lambda x, y: model.train_on_batch(x, y)


def _OneHotMSE():
    import keras

    class OneHotMSE(keras.losses.Loss):
        """``mean((o - one_hot(y))^2)`` (ProxyNet's loss) on integer labels."""

        def call(self, y, o):
            y1 = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32"), 10)
            return keras.ops.mean(keras.ops.square(o - y1), axis=-1)
    return OneHotMSE()


def _proxy_torch_layers(nn, lib):
    """conv1..3, bn1..3, fc1..4 of width ``--width`` from ``lib`` (``torch.nn`` or SpikingJelly's
    ``layer``), in ``nn.ModuleList`` s."""
    w = FLAGS.width
    return dict(convs=nn.ModuleList(lib.Conv2d(c, w, 3, padding=1, bias=False)
                                    for c in (1, w, w)),
                bns=nn.ModuleList(lib.BatchNorm2d(w) for _ in range(3)),
                fcs=nn.ModuleList(lib.Linear(a, u, bias=False) for a, u in
                                  ((w * 7 * 7, 20 * w), (20 * w, 9 * w), (9 * w, 2 * w),
                                   (2 * w, 10))))


def _proxy_snntorch(b, t):
    torch = _torch_setup()
    import snntorch as snn
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in _proxy_torch_layers(nn, nn).items():
                setattr(self, k, v)
            self.ns = nn.ModuleList(snn.Leaky(beta=1.0, threshold=PROXY_THETA,
                                              reset_mechanism="zero") for _ in range(7))
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):  # x [B, 1, 28, 28]
            mems = [n.reset_mem() for n in self.ns]
            i0 = self.bns[0](self.convs[0](x))  # a constant current
            count = 0.0
            for _ in range(t):
                h, mems[0] = self.ns[0](i0, mems[0])
                for k in (1, 2):
                    h, mems[k] = self.ns[k](self.bns[k](self.convs[k](h)), mems[k])
                    h = self.pool(h)
                h = h.flatten(1)
                for k, fc in enumerate(self.fcs, start=3):
                    h, mems[k] = self.ns[k](fc(h), mems[k])
                count = count + h
            return count

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=PROXY_LR, betas=PROXY_BETAS,
                           weight_decay=PROXY_WD)
    return _torch_step(torch, net, opt, lambda x: torch.from_numpy(x).permute(0, 3, 1, 2),
                       _onehot_mse)


def _proxy_spikingjelly(b, t):
    torch = _torch_setup()
    from spikingjelly.activation_based import functional, layer, neuron
    nn = torch.nn
    m = "m"
    ls = _proxy_torch_layers(nn, layer)  # SpikingJelly's layers take step_mode

    def if_():
        return neuron.IFNode(v_threshold=PROXY_THETA, v_reset=0.0, step_mode=m)

    for mod in ls.values():
        for v in mod:
            v.step_mode = m
    conv1, bn1 = ls["convs"][0], ls["bns"][0]
    conv1.step_mode = bn1.step_mode = "s"
    body = [if_()]
    for k in (1, 2):
        body += [ls["convs"][k], ls["bns"][k], if_(), layer.MaxPool2d(2, step_mode=m)]
    body.append(layer.Flatten(step_mode=m))
    for fc in ls["fcs"]:
        body += [fc, if_()]
    body = nn.Sequential(*body)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.body = conv1, bn1, body

        def forward(self, x):  # x [B, 1, 28, 28]
            functional.reset_net(self.body)
            i0 = self.bn1(self.conv1(x))
            return self.body(i0.unsqueeze(0).expand(t, *i0.shape)).sum(0)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=PROXY_LR, betas=PROXY_BETAS,
                           weight_decay=PROXY_WD)
    return _torch_step(torch, net, opt, lambda x: torch.from_numpy(x).permute(0, 3, 1, 2),
                       _onehot_mse)


# ------------------------------------------------------------------ registry and measurement

BUILDERS = {
    "lenet": {"tfsnn": lambda b, t: _tfsnn(b, t, False),
              "tfsnn_xla": lambda b, t: _tfsnn(b, t, True),
              "tfsnn_graph_loops": lambda b, t: _tfsnn(b, t, False, jit_neurons=False),
              "floor": _floor, "snntorch": _snntorch, "spikingjelly": _spikingjelly},
    "vgg5": {"tfsnn": lambda b, t: _vgg5_tfsnn(b, t, False),
             "tfsnn_xla": lambda b, t: _vgg5_tfsnn(b, t, True),
             "tfsnn_graph_loops": lambda b, t: _vgg5_tfsnn(b, t, False, jit_neurons=False),
             "floor": _vgg5_floor, "snntorch": _vgg5_snntorch,
             "spikingjelly": _vgg5_spikingjelly},
    "iir_mlp": {"tfsnn": lambda b, t: _iir_tfsnn(b, t, False),
                "tfsnn_xla": lambda b, t: _iir_tfsnn(b, t, True),
                "tfsnn_no_dropout": lambda b, t: _iir_tfsnn(b, t, False, dropout=False),
                "floor": _iir_floor, "floor_dx": lambda b, t: _iir_floor(b, t, True),
                "bound": lambda b, t: _iir_floor(b, t, True, loops="separate"),
                "bound_fused": lambda b, t: _iir_floor(b, t, True, loops="fused"),
                "fused_sketch": _iir_fused_sketch,
                "snntorch": _iir_snntorch,
                "spikingjelly": _iir_spikingjelly},
    "proxy": {"tfsnn": lambda b, t: _proxy_tfsnn(b, t, False),
              "tfsnn_xla": lambda b, t: _proxy_tfsnn(b, t, True),
              "floor": _proxy_floor, "snntorch": _proxy_snntorch,
              "spikingjelly": _proxy_spikingjelly},
}
DEFAULTS = {"lenet": (32, 20, 4), "vgg5": (32, 20, 2), "iir_mlp": (64, 25, 4),
            "proxy": (100, 15, 4)}  # (B, T, steps)
TITLES = {"lenet": "spike_bp LeNet", "vgg5": "hybrid VGG5 STDB stage",
          "iir_mlp": "IIR snn_mlp_1", "proxy": "proxy net"}


def _settings(net):
    """``(B, T, steps)`` of ``net``: the flags where given, else the network's defaults."""
    b, t, s = DEFAULTS[net]
    return FLAGS.batch or b, FLAGS.timesteps or t, FLAGS.steps or s


def _variants(net, strict):
    """The variants to run for ``net`` (``strict``: an unsupported one is an error)."""
    if not FLAGS.variants:
        return list(BUILDERS[net])
    unknown = [v for v in FLAGS.variants if v not in VARIANTS]
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; accepted: {', '.join(VARIANTS)}")
    missing = [v for v in FLAGS.variants if v not in BUILDERS[net]]
    if missing and strict:
        raise app.UsageError(f"--variants: {missing} not available for --network={net}; "
                             f"accepted: {', '.join(BUILDERS[net])}")
    return [v for v in FLAGS.variants if v in BUILDERS[net]]


def _run(step, xs, ys):
    for x, y in zip(xs, ys):
        step(x, y)


def _torch_first(variants):
    """Import torch (and its lazily loaded compiler stack) before TensorFlow: loaded after it,
    triton's import (from ``torch.optim``) crashes the process."""
    if any(v in variants for v in ("snntorch", "spikingjelly")):
        import torch._dynamo  # noqa: F401


def measure_memory(net, variant):
    _torch_first([variant])
    b, t, steps = _settings(net)
    xs, ys = _data(b, steps)
    step = BUILDERS[net][variant](b, t)
    before = _vm_kib("VmRSS:")
    _run(step, xs[:2], ys[:2])
    _run(step, xs, ys)
    print(json.dumps({"variant": variant, "peak_mib": (_vm_kib("VmHWM:") - before) / 1024}))


def _title(net, b, t):
    extra = f", width {FLAGS.width}" if net == "proxy" else ""
    return f"{TITLES[net]} training ({net}{extra}), B={b} T={t}"


def bench(net, variants):
    """Time ``variants`` of ``net`` (interleaved repeats), print the table and a JSON line."""
    b, t, n_steps = _settings(net)
    xs, ys = _data(b, n_steps)
    steps, times = {}, {v: [] for v in variants}
    for v in variants:
        steps[v] = BUILDERS[net][v](b, t)
        _run(steps[v], xs[:2], ys[:2])  # trace / compile / warm up
    for _ in range(FLAGS.repeats):
        for v in variants:
            start = time.perf_counter()
            _run(steps[v], xs, ys)
            times[v].append(time.perf_counter() - start)
    med = {v: statistics.median(times[v]) for v in variants}
    mem = {}
    if FLAGS.memory:
        for v in variants:
            args = [sys.executable, os.path.abspath(__file__), f"--memory_of={v}",
                    f"--network={net}", f"--batch={b}", f"--timesteps={t}",
                    f"--steps={n_steps}", f"--threads={FLAGS.threads}",
                    f"--width={FLAGS.width}", f"--rate={FLAGS.rate}"]
            out = subprocess.run(args, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            mem[v] = json.loads(lines[-1])["peak_mib"] if lines else float("nan")
    floor = med.get("floor")
    print(f"{_title(net, b, t)}, {n_steps} steps x {FLAGS.repeats} repeats (median), "
          f"{os.cpu_count()} CPUs")
    if net in NOTES:
        print(NOTES[net])
    print(f"{'variant':18s} {'images/s':>9s} {'s/step':>8s} {'x floor':>8s} {'peak MiB':>9s}")
    rows = {}
    for v in variants:
        per_step = med[v] / n_steps
        ratio = med[v] / floor if floor else float("nan")
        rows[v] = dict(images_per_s=b / per_step, s_per_step=per_step, x_floor=ratio,
                       peak_mib=mem.get(v), seconds=times[v])
        print(f"{v:18s} {b / per_step:9.1f} {per_step:8.3f} {ratio:8.2f} "
              f"{mem.get(v, float('nan')):9.0f}")
    record = {"network": net, "batch": b, "timesteps": t, "steps": n_steps, "rows": rows}
    if net == "proxy":
        record["width"] = FLAGS.width
    if net in NOTES:
        record["notes"] = NOTES[net]
    print(json.dumps(record), flush=True)


def main(argv):
    del argv
    nets = NETWORKS if FLAGS.network == "all" else (FLAGS.network,)
    if FLAGS.memory_of:
        return measure_memory(nets[0], FLAGS.memory_of)
    for flag in ("batch", "timesteps", "steps"):
        if getattr(FLAGS, flag) is not None and getattr(FLAGS, flag) < 1:
            raise app.UsageError(f"--{flag} must be >= 1, got {getattr(FLAGS, flag)}")
    if FLAGS.width < 1 or FLAGS.repeats < 1 or not 0 < FLAGS.rate < 1:
        raise app.UsageError("--width and --repeats must be >= 1 and --rate in (0, 1), got "
                             f"{FLAGS.width}, {FLAGS.repeats}, {FLAGS.rate}")
    plan = {net: _variants(net, strict=len(nets) == 1) for net in nets}
    _torch_first([v for vs in plan.values() for v in vs])
    for net in nets:
        bench(net, plan[net])


if __name__ == "__main__":
    app.run(main)
