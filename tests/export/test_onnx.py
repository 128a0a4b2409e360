"""ONNX export (tf2onnx, onnxruntime): the ANN and the integer SNN give the TF model's classes and
bit-identical spike / SOP counts on real images; clear errors for bad inputs."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsnn
from tfsnn import simulation
from tfsnn.export import unrolled
from tfsnn.models.all_int import all_int_model

pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install tf2onnx "
                    "onnxruntime, extra 'onnx')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'onnx')")
from tfsnn.export import onnx as tfsnn_onnx  # noqa: E402

T = 8


def randomised(ann, x, seed=0):
    """Two training steps, then random BN affine parameters (non-trivial spikes of both signs)."""
    ann.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(2):
        ann.train_on_batch(x[:64], np.arange(64) % 10)
    rng = np.random.default_rng(seed)
    for l in ann.layers:
        if l.name.startswith("act"):
            g, b, m, v = l.bn.get_weights()
            l.bn.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                              rng.uniform(-0.5, 1.0, b.shape).astype(np.float32), m, v])
    return ann


@pytest.fixture(scope="module")
def exported(mnist_test_split, tmp_path_factory):
    x = mnist_test_split[0][:100].astype(np.float32) / 256.0
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for k in (0, 1):
        keras.utils.set_random_seed(10 + k)
        ann = randomised(all_int_model("all_int_lenet", k=k), x, seed=10 + k)
        snn = tfsnn.convert(ann, use_int=True, timesteps=T)
        out[k] = (ann, snn, tfsnn_onnx.to_onnx(ann, d / f"ann{k}.onnx"),
                  tfsnn_onnx.to_onnx(snn, d / f"snn{k}.onnx"))
    return out, x


@pytest.mark.parametrize("k", [0, 1])
def test_onnx_ann_matches_keras(exported, k):
    (ann, _, path, _), x = exported[0][k], exported[1]
    out = tfsnn_onnx.run_onnx(path, x, batch_size=64)
    want = ann(x, training=False).numpy()
    # logits to float32 tolerance except where rounding flipped a quantization level
    close = np.all(np.abs(out["logits"] - want) <= 1e-5 * np.abs(want).max(), axis=1)
    assert close.mean() >= 0.95
    np.testing.assert_array_equal(out["class"][close], want.argmax(-1)[close])
    assert np.mean(out["class"] == want.argmax(-1)) >= 0.98


@pytest.mark.parametrize("k", [0, 1])
def test_onnx_snn_bit_identical_counts(exported, k):
    (_, snn, _, path), x = exported[0][k], exported[1]
    out = tfsnn_onnx.run_onnx(path, x, batch_size=64)
    sim = simulation.simulate(snn, x, batch_size=len(x), warn=False)
    np.testing.assert_array_equal(out["class"], sim.logits[:, -1].argmax(-1))
    np.testing.assert_allclose(out["logits"], sim.logits[:, -1], rtol=0,
                               atol=1e-5 * np.abs(sim.logits).max())
    np.testing.assert_array_equal(out["spikes"].sum(0), (sim.pos + sim.neg).sum((0, 2)))
    np.testing.assert_array_equal(out["sops"].sum(0), sim.sops.sum((0, 2)))
    ref = {key: v.numpy() for key, v in unrolled.UnrolledSnn(snn)(tf.constant(x)).items()}
    np.testing.assert_array_equal(out["spikes"], ref["spikes"])
    np.testing.assert_array_equal(out["sops"], ref["sops"])
    assert (out["spikes"][:, 1:] > 0).all()
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["timesteps"] == T and meta["k"] == k and meta["kind"] == "snn"


def test_onnx_graph_portable_and_bad_inputs(exported):
    import onnx
    (_, _, _, path), x = exported[0][0], exported[1]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert not {"Loop", "Scan", "If"} & ops and {"Conv", "Gather", "ArgMax"} <= ops
    assert [i.name for i in model.graph.input] == ["images"]
    with pytest.raises(ValueError, match=r"images must have shape \[N, 28, 28, 1\]"):
        tfsnn_onnx.run_onnx(path, x[..., 0])
    with pytest.raises(ValueError, match=r"images must have shape \[N, 28, 28, 1\]"):
        tfsnn_onnx.run_onnx(path, x[0])
    empty = tfsnn_onnx.run_onnx(path, x[:0])
    assert empty["class"].shape == (0,) and empty["spikes"].shape == (0, 5)


@pytest.mark.slow
def test_onnx_whole_fashion_mnist_test_set(tmp_path):
    """The whole Fashion-MNIST test set at the SNN's default T: ONNX classes and spike / SOP
    counts equal the TF model's."""
    from tfsnn.data.loaders import load
    (xs, _), = load("fashion_mnist", splits=("test",))
    x = xs.astype(np.float32) / 256.0
    ann = randomised(all_int_model("all_int_lenet", k=0), x[:256])
    snn = tfsnn.convert(ann, use_int=True)
    out = tfsnn_onnx.run_onnx(tfsnn_onnx.to_onnx(snn, tmp_path / "snn.onnx"), x)
    sim = simulation.simulate(snn, x, batch_size=100, warn=False)
    np.testing.assert_array_equal(out["class"], sim.logits[:, -1].argmax(-1))
    np.testing.assert_array_equal(out["spikes"].sum(0), (sim.pos + sim.neg).sum((0, 2)))
    np.testing.assert_array_equal(out["sops"].sum(0), sim.sops.sum((0, 2)))
    ann_out = tfsnn_onnx.run_onnx(tfsnn_onnx.to_onnx(ann, tmp_path / "ann.onnx"), x)
    np.testing.assert_array_equal(ann_out["class"],
                                  ann.predict(x, batch_size=500, verbose=0).argmax(-1))
