"""tfmot bridge: run under Keras 2 in a subprocess (this process stays Keras 3)."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfsnn.interop import portable

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="needs the tfmot extra: pip install -e .[tfmot]")

LEGACY = textwrap.dedent("""
    import sys, numpy as np
    from tfsnn.interop import tfmot as bridge
    from tfsnn.training.tfmot import np_logits
    from tfsnn.data import bundled
    x, _ = bundled.mnist_test_split()
    x = x[:600].astype("float32") / 256.0
    qat = bridge.quantize_model(bridge.float_model(), k=int(sys.argv[2]))
    rng = np.random.default_rng(0)
    for w in qat.weights:   # random BN affine so that levels are spread out
        n = w.name.split("/")[-1]
        if n.startswith("gamma"): w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        if n.startswith("beta"): w.assign(rng.uniform(-0.5, 1.0, w.shape).astype("float32"))
    for i in range(0, 600, 100):
        qat(x[i:i + 100], training=True)
    bridge.export_portable(qat, sys.argv[1] + "/p.npz", k=int(sys.argv[2]))
    np.save(sys.argv[1] + "/logits.npy", np_logits(qat, x))
    acts = [l for l in qat.layers if l.name == "quant_act3"][0]
    import tf_keras
    sub = tf_keras.Model(qat.input, acts.output)
    np.save(sys.argv[1] + "/act3.npy", sub(x, training=False).numpy())
""")


def run_legacy(code, *args):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


@pytest.mark.parametrize("k", [0, 1])
def test_tfmot_forward_equals_tfsnn_keras3(tmp_path, mnist_test_split, k):
    run_legacy(LEGACY, tmp_path, k)
    arrays, meta = portable.read(tmp_path / "p.npz")
    assert meta == {"model": "all_int_lenet", "k": k, "use_ternary": True}
    model = portable.to_tfsnn(arrays, meta)
    x = mnist_test_split[0][:600].astype(np.float32) / 256.0
    import keras
    act3 = keras.Model(model.input, model.get_layer("act3").output)(x).numpy()
    want_act3 = np.load(tmp_path / "act3.npy")
    # identical quantizer code; the two BN kernels (and CPUs) may differ in the last float
    # bit, which flips a level only at an exact rounding tie: a few elements of a few rows
    assert np.mean(act3 != want_act3) < 1e-4
    assert len(np.unique(act3)) > 3  # non-trivial activations
    same = np.all((act3 == want_act3).reshape(len(x), -1), axis=1)
    assert same.sum() >= len(x) - 3
    got, want = model.predict(x, verbose=0), np.load(tmp_path / "logits.npy")
    # rows without a tie: same levels, so the same logits up to float summation order
    np.testing.assert_allclose(got[same], want[same], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(got[same].argmax(1), want[same].argmax(1))
    # the integer SNN converted from it predicts exactly what the Keras 3 model predicts,
    # hence what the tfmot model predicts on every tie-free row
    from tfsnn import conversion as convert, simulation as simulate
    res = simulate.simulate(convert.convert(model, use_int=True), x, batch_size=200)
    assert res.converged
    np.testing.assert_array_equal(res.predictions[:, -1], got.argmax(1))  # 0 disagreements


def test_clear_error_under_keras3():
    out = subprocess.run([sys.executable, "-c", "import tfsnn.interop.tfmot"],
                         env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1" in out.stderr and "pip install tfsnn[tfmot]" in out.stderr


def test_portable_round_trip_of_tfsnn_model(tmp_path):
    from tfsnn.models import all_int as models
    m = models.all_int_model("all_int_lenet", k=2)
    portable.save(tmp_path / "m.npz", portable.from_tfsnn(m), "all_int_lenet", 2, True)
    arrays, meta = portable.read(tmp_path / "m.npz")
    m2 = portable.to_tfsnn(arrays, meta)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(m2(x).numpy(), m(x).numpy())
    arrays["extra/kernel"] = np.zeros(3)
    with pytest.raises(ValueError, match="not used by model"):
        portable.to_tfsnn(arrays, meta)
    del arrays["extra/kernel"], arrays["conv2/kernel"]
    with pytest.raises(ValueError, match="lack 'conv2/kernel'"):
        portable.to_tfsnn(arrays, meta)
