"""tfsnn.monitor.Probe: recorded spikes / membranes equal the layers' own outputs, in eager
calls and in model.predict, without changing the model's outputs."""
import keras
import numpy as np
import pytest

from tfsnn.layers.neurons import ALIF, LIF
from tfsnn.monitor import Probe


def _model():
    inp = keras.Input((9, 3))
    h = keras.layers.Dense(6, name="d1")(inp)
    h = LIF(0.8, leak=0.9, name="lif1")(h)
    h = keras.layers.Dense(4, name="d2")(h)
    out = ALIF(0.6, tau=5.0, name="alif")(h)
    return keras.Model(inp, out)


def test_probe_records_predict_and_eager():
    model = _model()
    x = np.random.default_rng(0).normal(0.5, 1.0, (10, 9, 3)).astype("float32")
    plain = model.predict(x, batch_size=4, verbose=0)
    sub = keras.Model(model.input, model.get_layer("d1").output)
    expect_spk, expect_mem = LIF(0.8, leak=0.9, return_trace=True)(sub(x))
    with Probe(model, ["lif1", "alif"], record=("spikes", "membrane")) as probe:
        probed = model.predict(x, batch_size=4, verbose=0)
    np.testing.assert_array_equal(probed, plain)
    rec = probe.records
    assert probe.calls == {"lif1": 3, "alif": 3}
    np.testing.assert_array_equal(rec["lif1"]["spikes"], expect_spk.numpy())
    np.testing.assert_allclose(rec["lif1"]["membrane"], expect_mem.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(rec["alif"]["spikes"], plain)
    assert rec["alif"]["membrane"].shape == (10, 9, 4)
    with Probe(model, ["lif1"]) as probe:  # eager call, spikes only
        model(x)
    np.testing.assert_array_equal(probe.records["lif1"]["spikes"], expect_spk.numpy())
    assert "call" not in vars(model.get_layer("lif1")), "the wrapper is removed on exit"


def test_probe_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="record must be"):
        Probe(model, ["lif1"], record=("voltage",))
    with pytest.raises(ValueError, match="no membrane trace"):
        Probe(model, ["d1"], record="membrane")
