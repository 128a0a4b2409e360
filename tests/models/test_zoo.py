"""Zoo models (``tfsnn.models.zoo``) through ``quantize_model`` -> ``fit`` -> ``convert`` on real
MNIST test images: the integer SNN predicts exactly what the quantized twin predicts, and every
mapped neuron's final net count is ``2^k`` x the twin's activation level (issue 12)."""
import keras
import numpy as np
import pytest

from snn_common import mnist_test
from tfsnn.conversion.integer import convert
from tfsnn.conversion.quantize import graph_nodes, quantize_model
from tfsnn.layers.quant import QuantActivation
from tfsnn.models.zoo import zoo_model

TINY = {"zoo_mlp": (32, 32), "zoo_vgg": (8, 8, 8), "zoo_resnet8": (8, 8, 8)}


@pytest.fixture(scope="module")
def mnist():
    return mnist_test(560)


def _snn_layer_of(snn, twin, act):
    """The SNN layer producing ``act``'s spikes: same name, or the synapse fused into it."""
    names = {l.name for l in snn.layers}
    if act.name in names:
        return snn.get_layer(act.name)
    src = dict((l.name, ins) for l, ins in graph_nodes(twin))[act.name]
    assert len(src) == 1 and src[0] in names, f"{act.name}: no SNN layer for it"
    return snn.get_layer(src[0])


@pytest.mark.parametrize("k", [0, 1])
@pytest.mark.parametrize("name", sorted(TINY))
def test_zoo_snn_exact(mnist, name, k):
    x, y = mnist
    keras.utils.set_random_seed(0)
    twin = zoo_model(name, k=k, widths=TINY[name])
    twin.compile(optimizer="adam",
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    twin.fit(x[:480], y[:480], epochs=1, batch_size=16, verbose=0)  # 30 steps: BN stats settle
    xb = x[480:]
    acts = [l for l in twin.layers if isinstance(l, QuantActivation)]
    probe = keras.Model(twin.input, [twin.output] + [a.output for a in acts])
    ann, *levels = (np.asarray(v) for v in probe(xb, training=False))
    levels = [v * 2 ** k for v in levels]
    # a count moves by one per step: the sum of the layers' largest |levels| bounds the lag
    steps = int(sum(np.abs(v).max() for v in levels)) + 8
    snn = convert(twin, timesteps=steps)
    layers = [_snn_layer_of(snn, twin, a) for a in acts]
    out, *spikes = (np.asarray(v) for v in
                    keras.Model(snn.input, [snn.output] + [l.output for l in layers])(xb))
    assert out.shape == (len(xb), steps, 10)
    np.testing.assert_array_equal(out[:, -1].argmax(-1), ann.argmax(-1))
    np.testing.assert_allclose(out[:, -1] / 2 ** k, ann, rtol=1e-5, atol=1e-4)
    assert any(a.signed for a in acts) == (name == "zoo_resnet8")
    for a, lev, s in zip(acts, levels, spikes):
        np.testing.assert_array_equal(s.sum(axis=1), lev, err_msg=a.name)


def test_quantize_model_refuses_unsupported_layer():
    inp = keras.Input((8,))
    h = keras.layers.Dense(4, activation="relu", name="fc")(inp)
    h = keras.layers.LayerNormalization(name="ln")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    with pytest.raises(ValueError) as e:
        quantize_model(model)
    msg = str(e.value)
    for part in ("'ln'", "LayerNormalization", "Supported layers:", "Conv2D",
                 "GlobalAveragePooling2D", "Add", "Concatenate"):
        assert part in msg, (part, msg)
