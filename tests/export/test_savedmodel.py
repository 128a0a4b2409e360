"""SavedModel export (tfsnn.export.savedmodel): reload gives the in-memory models' outputs on real
MNIST; every variable is tracked (saved_model_cli run, a process without tfsnn); int8 storage, no
optimizer state; the input contract (bad shapes / dtypes -> InvalidArgumentError, empty batch);
chunked batches; per-image counts; attributes visible in saved_model_cli show --all; any
converted SNN (a zoo ResNet twin); atomic failure."""
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import conversion as convert, export, simulation as simulate
from tfsnn.conversion.graph import SnnGraph
from tfsnn.models import all_int as models
from tfsnn.models.zoo import zoo_model

SHAPE_ERROR = r"images: expected shape \[batch, 28, 28, 1\]"


@pytest.fixture(scope="module")
def nets(mnist_test_split):
    """all_int_lenet (k=1) after a few Adam steps (so it has optimizer state), BN randomized."""
    xs, ys = mnist_test_split
    x = xs[:64].astype(np.float32) / 256.0
    keras.utils.set_random_seed(0)
    ann = models.all_int_model("all_int_lenet", k=1)
    ann.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ann.fit(x, ys[:64], batch_size=32, epochs=1, verbose=0)
    assert ann.optimizer.variables
    rng = np.random.default_rng(0)
    for l in ann.layers:
        if l.name.startswith("act"):
            g, b, m, v = l.bn.get_weights()
            l.bn.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                              rng.uniform(-0.5, 1.0, b.shape).astype(np.float32), m, v])
    return ann, x, xs[:64]


@pytest.fixture(scope="module")
def snn_export(nets, tmp_path_factory):
    """The integer SNN (T=24) exported with chunks of 16 images and MNIST's uint8 signature."""
    ann, _, _ = nets
    snn = convert.convert(ann, use_int=True, timesteps=24)
    path = export.export_snn(snn, tmp_path_factory.mktemp("snn") / "snn", chunk_size=16,
                             dataset="mnist")
    return snn, path


@pytest.fixture(scope="module")
def ann_export(nets, tmp_path_factory):
    ann, _, _ = nets
    return export.export_ann(ann, tmp_path_factory.mktemp("ann") / "ann", dataset="mnist")


def _sig(path, name):
    return tf.saved_model.load(str(path)).signatures[name]


def test_snn_export_reload_identical(nets, snn_export):
    _, x, x8 = nets
    snn, path = snn_export
    loaded = tf.saved_model.load(str(path))
    assert int(loaded.timesteps.numpy()) == 24 and int(loaded.k.numpy()) == 1
    assert int(loaded.use_int.numpy()) == 1 and int(loaded.chunk_size.numpy()) == 16
    assert [n.decode() for n in loaded.layer_names.numpy()] == [f"conv{i}" for i in range(1, 6)]
    got = loaded.signatures["serving_default"](images=tf.constant(x))
    # the output layer's float matmul rounds alike for the same batch shape: the export's chunks
    want = simulate.simulate(snn, x, batch_size=16, warn=False)
    np.testing.assert_array_equal(got["logits"].numpy(), want.logits[:, -1])
    np.testing.assert_array_equal(got["class"].numpy(), want.logits[:, -1].argmax(-1))
    stats = loaded.signatures["spike_stats"](images=tf.constant(x))
    assert stats["spikes_pos"].dtype == tf.int64 and stats["spikes_per_image"].dtype == tf.int64
    np.testing.assert_array_equal(stats["spikes_pos"].numpy(), want.pos.sum(0))
    np.testing.assert_array_equal(stats["spikes_neg"].numpy(), want.neg.sum(0))
    np.testing.assert_array_equal(stats["sops"].numpy(), want.sops.sum(0))
    np.testing.assert_array_equal(stats["logits_per_step"].numpy(), want.logits)
    # per-image counts: sum to the batch sums and equal simulate's one image at a time
    per_s, per_o = stats["spikes_per_image"].numpy(), stats["sops_per_image"].numpy()
    assert per_s.shape == (64, 5) and per_o.shape == (64, 5)
    np.testing.assert_array_equal(per_s.sum(0), (want.pos + want.neg).sum(axis=(0, 2)))
    np.testing.assert_array_equal(per_o.sum(0), want.sops.sum(axis=(0, 2)))
    one = simulate.simulate(snn, x[:6], batch_size=1, warn=False)
    np.testing.assert_array_equal(per_s[:6], (one.pos + one.neg).sum(-1))
    np.testing.assert_array_equal(per_o[:6], one.sops.sum(-1))
    # uint8 pixels, preprocessed in the graph (/256 for MNIST's quant method)
    u8 = loaded.signatures["serving_uint8"](images=tf.constant(x8))
    np.testing.assert_array_equal(u8["logits"].numpy(), got["logits"].numpy())
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    np.testing.assert_array_equal(layer(tf.constant(x))["logits"].numpy(), want.logits[:, -1])


def test_chunked_equals_unchunked_float_mode(nets, tmp_path):
    """The float-mode SNN in chunks of 7 (nine full chunks and a partial one) vs simulate's one
    batch of 64: identical counts, per-image counts summing to them, logits equal up to the
    float32 rounding of the readout matmul (its summation order may depend on the batch shape)."""
    ann, x, _ = nets
    snn = convert.convert(ann, use_int=False, timesteps=24)
    small = tf.saved_model.load(str(export.export_snn(snn, tmp_path / "c7", chunk_size=7)))
    assert int(small.use_int.numpy()) == 0 and int(small.chunk_size.numpy()) == 7
    a = small.signatures["spike_stats"](images=tf.constant(x))
    want = simulate.simulate(snn, x, batch_size=64, warn=False)
    np.testing.assert_array_equal(a["spikes_pos"].numpy(), want.pos[0])
    np.testing.assert_array_equal(a["spikes_neg"].numpy(), want.neg[0])
    np.testing.assert_array_equal(a["sops"].numpy(), want.sops[0])
    np.testing.assert_array_equal(a["spikes_per_image"].numpy().sum(0),
                                  (want.pos + want.neg)[0].sum(-1))
    np.testing.assert_array_equal(a["sops_per_image"].numpy().sum(0), want.sops[0].sum(-1))
    np.testing.assert_allclose(a["logits_per_step"].numpy(), want.logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(
        small.signatures["serving_default"](images=tf.constant(x))["class"].numpy(),
        want.logits[:, -1].argmax(-1))


def test_ann_export_and_tfsmlayer(nets, ann_export):
    ann, x, x8 = nets
    path = ann_export
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_array_equal(out["logits"].numpy(), ann(x, training=False).numpy())
    u8 = loaded.signatures["serving_uint8"](images=tf.constant(x8))
    np.testing.assert_array_equal(u8["logits"].numpy(), out["logits"].numpy())
    inp = keras.Input((28, 28, 1))
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    wrapped = keras.Model(inp, layer(inp))
    np.testing.assert_array_equal(wrapped(x)["class"].numpy(), ann(x).numpy().argmax(-1))


def _dir_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_int8_storage_and_no_optimizer_state(nets, snn_export, ann_export, tmp_path):
    ann, _, _ = nets
    snn, snn_path = snn_export
    loaded = tf.saved_model.load(str(snn_path))
    stored = {v.name.split(":")[0]: v for v in loaded.weights}
    int8 = {n.decode() for n in loaded.int8_variables.numpy()}
    assert {f"conv{i}/kernel" for i in range(2, 6)} <= int8  # the ternary kernels
    assert "output/kernel" not in int8  # full-precision readout
    for name, v in stored.items():
        assert (v.dtype == tf.int8) == (name in int8), name
    for v in snn.variables:  # int8 copies hold exactly the model's values
        np.testing.assert_array_equal(stored[v.path].numpy().astype(v.dtype), v.numpy())
    ann_loaded = tf.saved_model.load(str(ann_export))
    names = [v.name.split(":")[0] for v in ann_loaded.weights]
    assert len(names) == len({id(v) for v in ann.variables})  # the weights, no optimizer state
    assert not any("adam" in n or "optimizer" in n or "iteration" in n for n in names)
    ann_int8 = {n.decode() for n in ann_loaded.int8_variables.numpy()}
    assert {f"conv{i}/kernel" for i in range(2, 6)} <= ann_int8  # ternary: q(w) stored
    for v in ann_loaded.weights:
        if v.name.split(":")[0] in ann_int8 and v.name.startswith("conv"):
            assert set(np.unique(v.numpy())) <= {-1, 0, 1}
    # sizes: the ternary kernels take 1 byte instead of 4; Keras' own save has Adam state
    keras_file = tmp_path / "ann.keras"
    ann.save(keras_file)
    assert _dir_bytes(ann_export / "variables") < keras_file.stat().st_size / 4
    int32_bytes = sum(4 * int(np.prod(v.shape)) for v in snn.variables if v.path in int8)
    int8_bytes = sum(int(np.prod(v.shape)) for v in snn.variables if v.path in int8)
    assert _dir_bytes(snn_path / "variables") < sum(
        v.numpy().nbytes for v in snn.variables) - int32_bytes + int8_bytes + 4096


def test_input_contract_in_process(snn_export, ann_export):
    _, snn_path = snn_export
    for path, names in ((snn_path, ("serving_default", "spike_stats")),
                        (ann_export, ("serving_default",))):
        loaded = tf.saved_model.load(str(path))
        for name in names:
            sig = loaded.signatures[name]
            for bad in [(4, 28, 28), (28, 28, 1), (4, 27, 28, 1), (4, 28, 28, 3), (),
                        (1, 4, 28, 28, 1)]:
                with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_ERROR):
                    sig(images=tf.zeros(bad, tf.float32))
            with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float"):
                sig(images=tf.zeros((2, 28, 28, 1), tf.float64))
            empty = sig(images=tf.zeros((0, 28, 28, 1), tf.float32))
            assert empty["logits" if "logits" in empty else "logits_per_step"].shape[0] == 0
        u8 = loaded.signatures["serving_uint8"]
        with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8"):
            u8(images=tf.zeros((2, 28, 28, 1), tf.float32))
        with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_ERROR):
            u8(images=tf.zeros((2, 28, 28), tf.uint8))
    stats = _sig(snn_path, "spike_stats")(images=tf.zeros((0, 28, 28, 1)))
    assert stats["logits_per_step"].shape == (0, 24, 10)
    assert stats["spikes_per_image"].shape == (0, 5) and stats["sops_per_image"].shape == (0, 5)
    assert stats["spikes_pos"].shape == (5, 24) and not stats["spikes_pos"].numpy().any()
    assert _sig(snn_path, "serving_default")(images=tf.zeros((0, 28, 28, 1)))["class"].shape == (0,)


# Runs in a fresh interpreter where importing tfsnn fails: every signature, every bad input, of
# each export given.
NO_TFSNN = textwrap.dedent("""
    import json, sys
    sys.modules["tfsnn"] = None  # any import of tfsnn raises ImportError
    import numpy as np, tensorflow as tf
    data, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    d = np.load(data)
    res, report = {}, {"tfsnn": sys.modules.get("tfsnn")}
    for i, path in enumerate(paths):
        m = tf.saved_model.load(path)
        errors = report.setdefault(f"errors{i}", {})
        for name, sig in m.signatures.items():
            if name == "metadata":
                report[f"meta{i}"] = {k: np.asarray(v.numpy()).tolist() for k, v in sig().items()}
                continue
            x = d["x8"] if name == "serving_uint8" else d["x"]
            for k, v in sig(images=tf.constant(x)).items():
                res[f"{i}/{name}/{k}"] = v.numpy()
            dt = x.dtype
            cases = {"no_channel": np.zeros((4, 28, 28), dt),
                     "unbatched": np.zeros((28, 28, 1), dt),
                     "wrong_h": np.zeros((4, 27, 28, 1), dt),
                     "wrong_c": np.zeros((4, 28, 28, 3), dt), "scalar": np.zeros((), dt),
                     "float64": np.zeros((4, 28, 28, 1), np.float64),
                     "empty": np.zeros((0, 28, 28, 1), dt)}
            for case, arr in cases.items():
                try:
                    r = sig(images=tf.constant(arr))
                    errors[f"{name}/{case}"] = {k: list(v.shape) for k, v in r.items()}
                except tf.errors.InvalidArgumentError as e:
                    errors[f"{name}/{case}"] = "InvalidArgumentError: " + e.message
    np.savez(out, **res)
    print(json.dumps(report, default=lambda b: b.decode()))
""")


def _check_errors(errors, sig_names):
    for name in sig_names:
        for case in ("no_channel", "unbatched", "wrong_h", "wrong_c", "scalar"):
            msg = errors[f"{name}/{case}"]
            assert isinstance(msg, str) and "images: expected shape [batch, 28, 28, 1]" in msg
        want = "uint8" if name == "serving_uint8" else "float"
        assert f"expected to be a {want} tensor" in errors[f"{name}/float64"], name
        assert all(s[0] == 0 for k, s in errors[f"{name}/empty"].items()
                   if k in ("logits", "class", "logits_per_step", "spikes_per_image",
                            "sops_per_image"))


def test_runs_without_tfsnn(nets, snn_export, ann_export, tmp_path):
    ann, x, x8 = nets
    snn, snn_path = snn_export
    data, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(data, x=x, x8=x8)
    p = subprocess.run([sys.executable, "-c", NO_TFSNN, str(data), str(out), str(snn_path),
                        str(ann_export)], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]  # no abort, no exception
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["tfsnn"] is None
    with np.load(out) as f:
        res = {k: f[k] for k in f.files}
    loaded = tf.saved_model.load(str(snn_path))
    for name in ("serving_default", "spike_stats", "serving_uint8"):
        for key, value in loaded.signatures[name](
                images=tf.constant(x8 if name == "serving_uint8" else x)).items():
            np.testing.assert_array_equal(res[f"0/{name}/{key}"], value.numpy(), err_msg=key)
    _check_errors(report["errors0"], ("serving_default", "spike_stats", "serving_uint8"))
    meta = report["meta0"]
    assert meta["timesteps"] == 24 and meta["k"] == 1 and meta["use_int"] == 1
    assert meta["layer_names"] == [f"conv{i}" for i in range(1, 6)]
    assert meta["sop_layer_names"] == [f"conv{i}" for i in range(2, 6)] + ["output"]
    assert meta["input_shape"] == [28, 28, 1] and meta["chunk_size"] == 16
    assert meta["dataset"] == "mnist" and meta["preprocessing"] == "mnist:quant"
    np.testing.assert_array_equal(res["1/serving_default/logits"], ann(x, training=False).numpy())
    _check_errors(report["errors1"], ("serving_default", "serving_uint8"))
    assert report["meta1"]["classes"] == 10


def _cli(*args):
    p = subprocess.run(["saved_model_cli", *args], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_saved_model_cli(nets, snn_export, tmp_path):
    """``saved_model_cli run`` (TF1 session loading: needs every variable tracked; the ANN
    export's variables are stored the same way) and ``show --all`` (the attributes and their
    values)."""
    _, x, _ = nets
    snn, snn_path = snn_export
    np.save(tmp_path / "x.npy", x[:5])
    _cli("run", "--dir", str(snn_path), "--tag_set", "serve", "--signature_def", "spike_stats",
         "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "stats"))
    want = simulate.simulate(snn, x[:5], batch_size=5, warn=False)
    np.testing.assert_allclose(np.load(tmp_path / "stats" / "logits_per_step.npy"),
                               want.logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "stats" / "spikes_pos.npy"), want.pos[0])
    per_image = np.load(tmp_path / "stats" / "spikes_per_image.npy")
    assert per_image.shape == (5, 5)
    np.testing.assert_array_equal(per_image.sum(0), (want.pos + want.neg)[0].sum(-1))
    shown = _cli("show", "--all", "--dir", str(snn_path))
    for sig in ("serving_default", "serving_uint8", "spike_stats", "metadata"):
        assert f"signature_def['{sig}']" in shown
    for key in ("timesteps", "k", "use_int", "layer_names", "sop_layer_names", "chunk_size",
                "int8_variables", "preprocessing"):
        assert f"outputs['{key}']" in shown
    assert "'timesteps': 24" in shown and "'k': 1" in shown
    assert "'layer_names': ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')" in shown


def test_zoo_twin_export(mnist_test_split, tmp_path):
    """Any converted SNN: a tiny zoo ResNet twin (stride-2 convs, residual Add, global average
    pooling) exports, reloads, and its names come from the SnnGraph."""
    xs, ys = mnist_test_split
    x = xs[:96].astype(np.float32) / 256.0
    keras.utils.set_random_seed(0)
    twin = zoo_model("zoo_resnet8", input_shape=(28, 28, 1), k=1, widths=(4, 4, 8))
    twin.compile(optimizer="adam",
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    twin.fit(x[:64], ys[:64], epochs=1, batch_size=16, verbose=0)
    snn = convert.convert(twin)
    graph = SnnGraph.of(snn)
    path = export.export_snn(snn, tmp_path / "snn", chunk_size=32)
    loaded = tf.saved_model.load(str(path))
    assert [n.decode() for n in loaded.layer_names.numpy()] == graph.layer_names
    assert [n.decode() for n in loaded.sop_layer_names.numpy()] == graph.sop_row_names
    xe = x[64:]
    want = simulate.simulate(snn, xe, batch_size=32, warn=False)
    stats = loaded.signatures["spike_stats"](images=tf.constant(xe))
    np.testing.assert_array_equal(stats["logits_per_step"].numpy(), want.logits)
    np.testing.assert_array_equal(stats["spikes_pos"].numpy(), want.pos.sum(0))
    np.testing.assert_array_equal(stats["sops"].numpy(), want.sops.sum(0))
    np.testing.assert_array_equal(stats["sops_per_image"].numpy().sum(0),
                                  want.sops.sum(axis=(0, 2)))
    assert "serving_uint8" not in loaded.signatures  # no dataset given
    assert {n.decode() for n in loaded.int8_variables.numpy()}  # its ternary synapses
    ann_path = export.export_ann(twin, tmp_path / "ann")
    np.testing.assert_array_equal(
        _sig(ann_path, "serving_default")(images=tf.constant(xe))["logits"].numpy(),
        twin(xe, training=False).numpy())


def test_bad_arguments(nets, tmp_path):
    ann, _, _ = nets
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        export.export_ann(ann, tmp_path / "a", chunk_size=0)
    with pytest.raises(ValueError, match="dataset='cifar10'.*shape"):
        export.export_ann(ann, tmp_path / "a", dataset="cifar10")
    with pytest.raises(ValueError, match="unknown dataset .nosuch."):
        export.export_ann(ann, tmp_path / "a", dataset="nosuch")
    assert not (tmp_path / "a").exists()


def test_failed_export_leaves_nothing_that_looks_complete(tmp_path, nets, monkeypatch):
    ann, _, _ = nets
    export.export_ann(ann, tmp_path / "ann")
    before = sorted(p.name for p in (tmp_path / "ann").rglob("*"))

    def broken(*a, **kw):
        raise RuntimeError("disk full")
    monkeypatch.setattr(tf.saved_model, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_ann(ann, tmp_path / "new")
    with pytest.raises(RuntimeError):
        export.export_ann(ann, tmp_path / "ann")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in (tmp_path / "ann").rglob("*")) == before  # old export intact
    assert [p.name for p in tmp_path.iterdir()] == ["ann"]  # no temporary leftovers
