"""Zoo models (``tfsnn.models.zoo``) through ``quantize_model`` -> ``fit`` -> ``convert`` on real
MNIST test images: the integer SNN predicts exactly what the quantized twin predicts, and every
mapped neuron's final net count is ``2^k`` x the twin's activation level (issue 12)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import REPO

from snn_common import mnist_test
from tfsnn.conversion.integer import convert
from tfsnn.conversion.quantize import graph_nodes, quantize_model
from tfsnn.layers.quant import QuantActivation
from tfsnn.models.zoo import zoo_model
from tfsnn.conversion.graph import SnnGraph
from tfsnn.conversion.rules import fanout
from tfsnn.layers.neurons.integer import RampEncoder, SpikeEncoder
from tfsnn.report import ROW_KEYS
from tfsnn.simulation import simulate
from tfsnn.viz.tensorboard import sample_spike_trains

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


def rgb32(x):
    """Real MNIST digits as 32x32x3 images (zero border of 2, channels scaled 1, 3/4, 1/2), for
    the zoo's CIFAR-shaped input (no CIFAR-10 offline)."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.concatenate([x, 0.75 * x, 0.5 * x], axis=-1).astype(np.float32)


@pytest.mark.parametrize("k", [0, 1])
@pytest.mark.parametrize("name", sorted(TINY))
def test_zoo_snn_exact(mnist, name, k):
    _check_zoo_exact(*mnist, name, k)


@pytest.mark.parametrize("name", sorted(TINY))
def test_zoo_snn_exact_32x32x3(mnist, name):
    """The same exactness on 32x32x3 inputs (the zoo's CIFAR shape); k = 1 for the ResNet (the
    signed residual sums), 0 for the others."""
    x, y = mnist
    _check_zoo_exact(rgb32(x), y, name, 1 if name == "zoo_resnet8" else 0, (32, 32, 3))


def _check_zoo_exact(x, y, name, k, input_shape=(28, 28, 1)):
    keras.utils.set_random_seed(0)
    twin = zoo_model(name, input_shape=input_shape, k=k, widths=TINY[name])
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
    _check_simulate(snn, twin, xb, acts, layers, levels, spikes, steps)


def _check_simulate(snn, twin, xb, acts, layers, levels, spikes, steps):
    """tfsnn.simulate on the same SNN: 0 disagreements, counts == 2^k levels, spike counts equal
    the model call's, SOPs = events reaching each receiver x its fan-out (from the model call)."""
    res = simulate(snn, xb, ann=twin, batch_size=40, return_counts=True)
    assert res.disagreements == 0 and res.equal_from_step is not None
    assert res.convergence_problems() == [] and res.converged
    assert np.all(res.agreement_per_step[res.equal_from_step:] == 1.0)
    counts = dict(zip(res.layer_names, res.final_counts))
    for a, layer, lev in zip(acts, layers, levels):
        np.testing.assert_array_equal(counts[layer.name], lev, err_msg=a.name)
    trains = sample_spike_trains(snn, xb[:3], steps)  # TensorBoard rasters: any SNN graph
    for layer, s in zip(layers, spikes):
        np.testing.assert_array_equal(trains[layer.name], s[:3].astype(np.int32), layer.name)
    graph = SnnGraph.of(snn)
    amp = res.amplitude
    for layer, s in zip(layers, spikes):
        unit = amp if isinstance(layer, (RampEncoder, SpikeEncoder)) else 1
        i = res.layer_names.index(layer.name)
        assert (res.pos + res.neg)[:, i].sum() == np.abs(s).sum() // unit, layer.name
    # SOPs, independently: every tensor reaching a receiver, from the plain model call
    names = sorted({i for _, ins, _ in graph.receivers for i in ins})
    probe = keras.Model(snn.input, [snn.get_layer(n).output for n in names])
    inc = dict(zip(names, (np.asarray(v) for v in probe(xb))))
    want = dict.fromkeys(res.sop_layer_names, 0)
    for layer, ins, row in graph.receivers:
        for i in ins:
            unit = amp if isinstance(snn.get_layer(i), (RampEncoder, SpikeEncoder)) else 1
            ev = np.abs(inc[i]).astype(np.int64) // unit  # [N, T, ...]
            want[row] += int((ev.sum(axis=(0, 1)) * fanout(layer, ev.shape[2:])).sum())
    got = dict(zip(res.sop_layer_names, res.sops.sum(axis=(0, 2))))
    assert got == want
    rows = res.layer_table()
    assert [r["layer"] for r in rows] == list(dict.fromkeys(res.layer_names
                                                            + res.sop_layer_names))
    assert all(set(ROW_KEYS) <= set(r) for r in rows)
    text = res.table().text()
    assert all(r["layer"] in text for r in rows)


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


def test_quantize_model_bn_momentum():
    """The twin's BatchNormalizations track at ``bn_momentum`` (0.9 by default, the ALL_INT
    recipe's; Keras' 0.99 lags behind the ternary kernels' flips); ``None`` keeps the model's."""
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="c1")(inp)
    h = keras.layers.BatchNormalization(momentum=0.97, name="c1_bn")(h)
    h = keras.layers.ReLU(name="c1_relu")(h)
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="c2")(h)
    h = keras.layers.BatchNormalization(name="c2_bn")(h)
    h = keras.layers.ReLU(name="c2_relu")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))

    def momenta(twin):
        return [l.bn.momentum for l in twin.layers if getattr(l, "bn", None) is not None]
    assert momenta(quantize_model(model)) == pytest.approx([0.9, 0.9])
    assert momenta(quantize_model(model, bn_momentum=0.5)) == pytest.approx([0.5, 0.5])
    assert momenta(quantize_model(model, bn_momentum=None)) == pytest.approx([0.97, 0.99])
    with pytest.raises(ValueError, match="bn_momentum"):
        quantize_model(model, bn_momentum=1.5)


FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FMNIST.is_file(), reason="Fashion-MNIST not installed")
def test_spiking_inference_script_converts_a_zoo_run(mnist, tmp_path):
    """scripts/spiking_inference.py on a run dir holding a zoo twin (what train_quant.py --model
    zoo_mlp saves): converts it, 0 disagreements, per-row SOPs and the report."""
    x, y = mnist
    keras.utils.set_random_seed(0)
    twin = zoo_model("zoo_mlp", k=0, widths=(32, 32))
    twin.compile(optimizer="adam",
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    twin.fit(x[:320], y[:320], epochs=1, batch_size=16, verbose=0)
    twin.save(tmp_path / "model.keras")
    (tmp_path / "flags.json").write_text(json.dumps(
        {"k": 0, "use_ternary": True, "dataset": "fashion_mnist", "model": "zoo_mlp"}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "spiking_inference.py"),
                        "--run_dir", str(tmp_path), "--max_test_examples", "100",
                        "--batch_size", "50", "--timesteps", "48", "--notensorboard"],
                       cwd=REPO, env=env, timeout=600, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "snn" / "summary.json").read_text())
    assert s["disagreements"] == 0 and s["snn_accuracy"] == s["ann_accuracy"]
    assert s["converged"] and s["convergence_problems"] == []
    assert set(s["sops_per_image"]) == {"fc2_relu", "output", "total"}
    assert s["ann_macs_per_image"]["fc1_relu"] == 784 * 32
    assert (tmp_path / "snn" / "report.md").is_file()
