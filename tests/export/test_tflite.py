"""LiteRT export: the unrolled SNN equals simulate bit for bit; the .tflite ANN / SNN run in the
LiteRT interpreter with the TF model's classes and spike / SOP counts; int8 kernels; clear
errors."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsnn
from tfsnn import simulation
from tfsnn.conversion.graph import SnnGraph
from tfsnn.export import tflite, unrolled
from tfsnn.models.all_int import all_int_model
from tfsnn.models.zoo import zoo_model

T = 8  # short runs keep the unrolled graphs (and the default suite) small


def randomised(ann, x, seed=0):
    """A few training steps, then random BN affine parameters so that spikes are non-trivial
    (both signs, several levels)."""
    ann.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.arange(len(x)) % 10
    for _ in range(2):
        ann.train_on_batch(x[:64], y[:64])
    rng = np.random.default_rng(seed)
    for l in ann.layers:
        bn = getattr(l, "bn", None) or (l if isinstance(l, keras.layers.BatchNormalization)
                                        else None)
        if bn is not None:
            g, b, m, v = bn.get_weights()
            bn.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                            rng.uniform(-0.5, 1.0, b.shape).astype(np.float32), m, v])
    return ann


def per_image_events(snn, x, names, amplitude):
    """Independent per-image event counts from the per-step spike trains (numpy)."""
    tr = simulation.spike_trains(snn, x)
    return np.stack([np.abs(tr[n]).reshape(len(x), -1).sum(1) // (amplitude if i == 0 else 1)
                     for i, n in enumerate(names)], 1)


def check_ann(out, want):
    """Float ANN: logits equal to float32 tolerance except on the few images where a different
    summation order moved a pre-activation across a quantization step (a level flips; the
    logits then move by far more than rounding); classes equal wherever the logits are close."""
    close = np.all(np.abs(out["logits"] - want) <= 1e-5 * np.abs(want).max(), axis=1)
    assert close.mean() >= 0.95, f"{(~close).sum()} of {len(close)} images differ"
    np.testing.assert_array_equal(out["class"][close], want.argmax(-1)[close])
    assert np.mean(out["class"] == want.argmax(-1)) >= 0.98


def check_snn_outputs(out, snn, x, sim=None):
    """``out`` (dict of numpy) against simulate: classes, spikes and SOPs bit-identical."""
    sim = simulation.simulate(snn, x, batch_size=len(x), warn=False) if sim is None else sim
    want_logits = sim.logits[:, -1]
    np.testing.assert_array_equal(out["class"], want_logits.argmax(-1))
    np.testing.assert_allclose(out["logits"], want_logits, rtol=0,
                               atol=1e-5 * np.abs(want_logits).max())
    np.testing.assert_array_equal(out["spikes"].sum(0), (sim.pos + sim.neg).sum((0, 2)))
    np.testing.assert_array_equal(out["sops"].sum(0), sim.sops.sum((0, 2)))


@pytest.fixture(scope="module")
def nets(mnist_test_split):
    x = mnist_test_split[0][:100].astype(np.float32) / 256.0
    out = {}
    for k in (0, 1):
        keras.utils.set_random_seed(k)
        ann = randomised(all_int_model("all_int_lenet", k=k), x, seed=k)
        out[k] = (ann, tfsnn.convert(ann, use_int=True, timesteps=T))
    return out, x


@pytest.mark.parametrize("k", [0, 1])
def test_unrolled_equals_simulate(nets, k):
    (_, snn), x = nets[0][k], nets[1]
    u = unrolled.UnrolledSnn(snn)
    assert u.timesteps == T and u.layer_names == [f"conv{i}" for i in range(1, 6)]
    got = {key: v.numpy() for key, v in u(tf.constant(x)).items()}
    sim = simulation.simulate(snn, x, batch_size=len(x), warn=False)
    # bit-identical logits need the same matmul shape: simulate's own logits move by float32
    # rounding with the batch size, so they are compared to tolerance; classes / counts exactly
    check_snn_outputs(got, snn, x, sim)
    np.testing.assert_array_equal(got["spikes"], per_image_events(snn, x, u.layer_names, 2 ** k))
    assert (got["spikes"][:, 1:] > 0).all()  # every hidden layer spikes on every image
    assert got["spikes"].dtype == np.int32 and got["sops"].shape == (len(x), 5)


@pytest.mark.parametrize("name, widths", [("zoo_mlp", (16, 8)), ("zoo_vgg", (4, 8, 8)),
                                          ("zoo_resnet8", (4, 4, 8))])
def test_unrolled_zoo_twins_bit_identical(mnist_test_split, name, widths):
    x = mnist_test_split[0][:24].astype(np.float32) / 256.0
    keras.utils.set_random_seed(3)
    snn = tfsnn.convert(randomised(zoo_model(name, widths=widths), x), use_int=True, timesteps=4)
    got = {key: v.numpy() for key, v in unrolled.UnrolledSnn(snn)(tf.constant(x)).items()}
    sim = simulation.simulate(snn, x, batch_size=len(x), warn=False)
    np.testing.assert_array_equal(got["logits"], sim.logits[:, -1])  # the head on one frame
    check_snn_outputs(got, snn, x, sim)
    g = SnnGraph.of(snn)
    assert len(g.encoders) == 1
    np.testing.assert_array_equal(got["spikes"], per_image_events(snn, x, g.layer_names,
                                                                  g.amplitude))


def test_unrolled_refuses_float_snn_and_bad_timesteps(nets):
    ann, _ = nets[0][0]
    with pytest.raises(ValueError, match="use_int=True"):
        unrolled.UnrolledSnn(tfsnn.convert(ann, use_int=False, timesteps=T))
    snn = nets[0][0][1]
    with pytest.raises(ValueError, match="timesteps must be in 1..8"):
        unrolled.UnrolledSnn(snn, timesteps=9)
    with pytest.raises(ValueError, match="timesteps applies to a converted SNN only"):
        unrolled.portable_module(ann, timesteps=4)


@pytest.fixture(scope="module")
def files(nets, tmp_path_factory):
    pytest.importorskip("ai_edge_litert", reason="the LiteRT interpreter (pip install "
                        "ai-edge-litert, extra 'litert') is not installed")
    d = tmp_path_factory.mktemp("tflite")
    out = {}
    for k, (ann, snn) in nets[0].items():
        out[k] = (tflite.to_tflite(ann, d / f"ann{k}.tflite"),
                  tflite.to_tflite(snn, d / f"snn{k}.tflite"))
    return out


@pytest.mark.parametrize("k", [0, 1])
def test_tflite_ann_matches_keras(nets, files, k):
    (ann, _), x = nets[0][k], nets[1]
    out = tflite.run_tflite(files[k][0], x, batch_size=64)
    want = ann(x, training=False).numpy()
    check_ann(out, want)
    assert files[k][0].stat().st_size > 4 * sum(  # the weights are in the file
        int(np.prod(v.shape)) for v in ann.trainable_variables) * 0.9


@pytest.mark.parametrize("k", [0, 1])
def test_tflite_snn_bit_identical_counts(nets, files, k):
    (_, snn), x = nets[0][k], nets[1]
    out = tflite.run_tflite(files[k][1], x, batch_size=64)
    check_snn_outputs(out, snn, x)
    ref = {key: v.numpy() for key, v in unrolled.UnrolledSnn(snn)(tf.constant(x)).items()}
    np.testing.assert_array_equal(out["spikes"], ref["spikes"])
    np.testing.assert_array_equal(out["sops"], ref["sops"])
    meta = json.loads((files[k][1].parent / f"snn{k}.tflite.json").read_text())
    assert meta["kind"] == "snn" and meta["timesteps"] == T and meta["k"] == k
    assert meta["layer_names"] == [f"conv{i}" for i in range(1, 6)]


def test_tflite_snn_int8_kernels_builtins_only(nets, files):
    from ai_edge_litert.interpreter import Interpreter
    _, snn = nets[0][0]
    path = files[0][1]
    it = Interpreter(model_path=str(path))
    int8 = {tuple(int(s) for s in d["shape"]) for d in it.get_tensor_details()
            if d["dtype"] == np.int8}
    kernels = [l.get_weights()[0] for l in snn.layers if l.name in ("conv2", "conv3", "conv4",
                                                                      "conv5")]
    assert {k.shape for k in kernels} <= int8  # [kh, kw, C_in, filters] int8 constants
    # int8 storage: the file is smaller than the ternary kernels would be in float32
    assert path.stat().st_size < 4 * sum(k.size for k in kernels)
    ops = {d["op_name"] for d in it._get_ops_details()}  # no public op listing
    assert "CAST" in ops and not any(o.startswith("Flex") for o in ops)
    assert not {"TensorListReserve", "WHILE"} & ops


def test_tflite_bad_inputs_clear_errors(nets, files):
    x = nets[1]
    path = files[0][1]
    with pytest.raises(ValueError, match=r"images must have shape \[N, 28, 28, 1\]"):
        tflite.run_tflite(path, x[..., 0])  # no channel axis
    with pytest.raises(ValueError, match=r"images must have shape \[N, 28, 28, 1\]"):
        tflite.run_tflite(path, x[0])  # one unbatched image
    with pytest.raises(ValueError, match="numeric"):
        tflite.run_tflite(path, np.array([["a"]]))
    with pytest.raises(ValueError, match="batch_size"):
        tflite.run_tflite(path, x, batch_size=0)
    empty = tflite.run_tflite(path, x[:0])
    assert empty["class"].shape == (0,) and empty["spikes"].shape == (0, 5)
    one = tflite.run_tflite(path, (x[:3] * 256).astype(np.uint8) / 256.0, batch_size=2)
    assert one["logits"].shape == (3, 10)


@pytest.mark.slow
def test_tflite_whole_fashion_mnist_test_set(tmp_path):
    """The whole Fashion-MNIST test set: TFLite SNN classes and spike / SOP counts equal the TF
    model's (simulate, unrolled), at the SNN's default T."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed")
    from tfsnn.data.loaders import load
    (xs, _), = load("fashion_mnist", splits=("test",))
    x = xs.astype(np.float32) / 256.0
    ann = randomised(all_int_model("all_int_lenet", k=0), x[:256])
    snn = tfsnn.convert(ann, use_int=True)
    path = tflite.to_tflite(snn, tmp_path / "snn.tflite")
    out = tflite.run_tflite(path, x, batch_size=100)
    sim = simulation.simulate(snn, x, batch_size=100, warn=False)
    np.testing.assert_array_equal(out["class"], sim.logits[:, -1].argmax(-1))
    np.testing.assert_array_equal(out["spikes"].sum(0), (sim.pos + sim.neg).sum((0, 2)))
    np.testing.assert_array_equal(out["sops"].sum(0), sim.sops.sum((0, 2)))
    u = unrolled.UnrolledSnn(snn)
    ref = np.concatenate([u(tf.constant(x[i:i + 100]))["spikes"].numpy()
                          for i in range(0, len(x), 100)])
    np.testing.assert_array_equal(out["spikes"], ref)
    ann_path = tflite.to_tflite(ann, tmp_path / "ann.tflite")
    np.testing.assert_array_equal(tflite.run_tflite(ann_path, x)["class"],
                                  ann.predict(x, batch_size=500, verbose=0).argmax(-1))
