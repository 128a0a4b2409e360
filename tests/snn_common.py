"""Helpers shared by the SNN tests (conversion / simulation): the real MNIST test split and
random quantized networks whose BatchNorm is calibrated on data. No tests here."""
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfsnn import quantizers as q  # noqa: E402
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense  # noqa: E402

@functools.lru_cache(maxsize=None)
def mnist_test(n=10000):
    """The first ``n`` real MNIST test images, float32 ``[n, 28, 28, 1]`` (pixels / 256), and
    their int64 labels."""
    from tfsnn.data import bundled
    x, y = bundled.mnist_test_split()
    return x[:n].astype(np.float32) / 256.0, y[:n]


def calibrate(model, x, seed=0, neg_gamma=0.0, zero_gamma=0.0, beta=(-0.5, 1.0)):
    """Set every ``act<i>`` BN of ``model`` to data statistics of ``x`` with random
    ``gamma ~ U(0.5, 1.5)`` (a fraction ``neg_gamma`` negated, ``zero_gamma`` zeroed) and
    ``beta ~ U(*beta)``, layer by layer (spec §8 setup)."""
    rng = np.random.default_rng(seed)
    h = x
    i = 1
    while True:
        try:
            conv, act = model.get_layer(f"conv{i}"), model.get_layer(f"act{i}")
        except ValueError:
            break
        z = np.asarray(conv(h))
        c = z.shape[-1]
        flat = z.reshape(-1, c)
        gamma = rng.uniform(0.5, 1.5, c)
        gamma[rng.random(c) < neg_gamma] *= -1
        gamma[rng.random(c) < zero_gamma] = 0.0
        act.bn.set_weights([gamma, rng.uniform(*beta, c), flat.mean(0), flat.var(0) + 1e-3])
        h = act(z, training=False)
        i += 1
    return model


@functools.lru_cache(maxsize=None)
def calibrated_lenet(k=0, seed=0, ternary=True, neg_gamma=0.0, zero_gamma=0.0, n_calib=500):
    """A random ``all_int_lenet`` with BN calibrated on real MNIST images."""
    from tfsnn.models.all_int import all_int_model
    keras.utils.set_random_seed(seed)
    m = all_int_model("all_int_lenet", k=k, ternary=ternary)
    x, _ = mnist_test(n_calib)
    m(x[:1])
    return calibrate(m, x, seed, neg_gamma, zero_gamma)


def tiny_model(k=0, seed=0, input_shape=(9, 9, 1), ternary=True):
    """A tiny quantized net: conv1 3x3 valid (2) -> conv2 3x3/2 same (3) -> conv3 2x2 valid (2)
    -> flatten -> dense 4; with random BN (calibrated on random images)."""
    keras.utils.set_random_seed(seed)
    kq = "ternary" if ternary else None
    inp = keras.Input(input_shape)
    h = QuantConv2D(2, 3, kernel_initializer="glorot_uniform", name="conv1")(inp)
    h = QuantActivation(q.FirstLayer(4), name="act1")(h)
    h = QuantConv2D(3, 3, 2, "same", kernel_quantizer=kq, kernel_initializer="glorot_uniform",
                    name="conv2")(h)
    h = QuantActivation(q.KLevel(k), name="act2")(h)
    h = QuantConv2D(2, 2, kernel_quantizer=kq, kernel_initializer="glorot_uniform",
                    name="conv3")(h)
    h = QuantActivation(q.KLevel(k), name="act3")(h)
    out = QuantDense(4, name="output")(keras.layers.Flatten(name="flatten")(h))
    m = keras.Model(inp, out, name="tiny")
    x = np.random.default_rng(seed).random((64, *input_shape)).astype(np.float32)
    return calibrate(m, x, seed, beta=(0.0, 1.5)), x


def ann_activations(model, x):
    """The Keras model's ``act<i>`` outputs (list of numpy arrays) and logits."""
    names = [l.name for l in model.layers if l.name.startswith("act")]
    sub = keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.output])
    outs = [np.asarray(o) for o in sub(x, training=False)]
    return outs[:-1], outs[-1]


def run_layers(snn, x, t_steps):
    """Spikes (numpy ``[B, T, ...]``) of every spiking layer, encoder first."""
    from tfsnn import conversion as cv
    enc, hidden, _ = cv.split_snn(snn)
    s = enc(x, timesteps=t_steps)
    out = [s.numpy()]
    for layer in hidden:
        s = layer(s)
        out.append(s.numpy())
    return out
