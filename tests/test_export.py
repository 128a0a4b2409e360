"""SavedModel export: reload gives bit-identical outputs; TFSMLayer; atomic failure."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import conversion as convert, export, simulation as simulate
from tfsnn.models import all_int as models


@pytest.fixture(scope="module")
def nets(mnist_test_split):
    x = mnist_test_split[0][:64].astype(np.float32) / 256.0
    ann = models.all_int_model("all_int_lenet", k=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ann(x, training=True)
    for l in ann.layers:
        if l.name.startswith("act"):
            g, b, m, v = l.bn.get_weights()
            l.bn.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                              rng.uniform(-0.5, 1.0, b.shape).astype(np.float32), m, v])
    return ann, x


@pytest.mark.parametrize("use_int", [True, False])
def test_snn_export_reload_identical(tmp_path, nets, use_int):
    ann, x = nets
    snn = convert.convert(ann, use_int=use_int, timesteps=24)
    path = export.export_snn(snn, tmp_path / "snn")
    loaded = tf.saved_model.load(str(path))
    assert int(loaded.timesteps.numpy()) == 24 and int(loaded.k.numpy()) == 1
    assert int(loaded.use_int.numpy()) == int(use_int)
    assert [n.decode() for n in loaded.layer_names.numpy()] == [f"conv{i}" for i in range(1, 6)]
    sig = loaded.signatures["serving_default"]
    got = sig(images=tf.constant(x))
    want = simulate.simulate(snn, x, batch_size=64)
    np.testing.assert_array_equal(got["logits"].numpy(), want.logits[:, -1])
    np.testing.assert_array_equal(got["class"].numpy(), want.logits[:, -1].argmax(-1))
    stats = loaded.signatures["spike_stats"](images=tf.constant(x))
    assert stats["spikes_pos"].dtype == tf.int64
    np.testing.assert_array_equal(stats["spikes_pos"].numpy(), want.pos[0])
    np.testing.assert_array_equal(stats["spikes_neg"].numpy(), want.neg[0])
    np.testing.assert_array_equal(stats["sops"].numpy(), want.sops[0])
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    np.testing.assert_array_equal(layer(tf.constant(x))["logits"].numpy(), want.logits[:, -1])


def test_ann_export_and_tfsmlayer(tmp_path, nets):
    ann, x = nets
    path = export.export_ann(ann, tmp_path / "ann")
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_array_equal(out["logits"].numpy(), ann(x, training=False).numpy())
    inp = keras.Input((28, 28, 1))
    wrapped = keras.Model(inp, keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")(inp))
    np.testing.assert_array_equal(wrapped(x)["class"].numpy(), ann(x).numpy().argmax(-1))


def test_failed_export_leaves_nothing_that_looks_complete(tmp_path, nets, monkeypatch):
    ann, _ = nets
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
