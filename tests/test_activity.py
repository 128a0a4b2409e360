"""Spike / SOP counts of directly trained SNNs against numpy brute force on a tiny model."""
import keras
import numpy as np
import pytest

from tfsnn import activity, report
from tfsnn.layers import encoders
from tfsnn.layers.neurons.lif import LIF
from tfsnn.layers.sequence import TimeFolded


def tiny_snn(t=5):
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 1), name="image")
    h = encoders.PoissonEncoder(t, name="encoder")(inp)
    h = TimeFolded(keras.layers.Conv2D(3, 3, 2, "same", use_bias=False, name="c"), name="conv1")(h)
    h = LIF(threshold=0.3, leak=1.0, name="spike1")(h)
    h = TimeFolded(keras.layers.AveragePooling2D(2, 2, name="p"), name="pool1")(h)
    h = TimeFolded(keras.layers.Flatten(name="f"), name="flatten")(h)
    h = keras.layers.Dense(4, use_bias=False, name="output")(h)
    return keras.Model(inp, h)


def _conv_fanout_brute(h, w, k, s, pad_before, oh, ow):
    fan = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            fan[i, j] = sum(1 for a in range(oh) for b in range(ow)
                            if a * s - pad_before <= i < a * s - pad_before + k
                            and b * s - pad_before <= j < b * s - pad_before + k)
    return fan


def test_counts_equal_brute_force():
    m = tiny_snn()
    x = np.random.default_rng(1).random((7, 6, 6, 1)).astype(np.float32)
    c = activity.ActivityCounter(m)
    assert [p[0] for p in c.plan] == ["encoder", "conv1", "pool1", "output"]
    assert [p[1] for p in c.plan] == ["encoder", "hidden", "synapses", "output"]
    fan_conv = _conv_fanout_brute(6, 6, 3, 2, 0, 3, 3) * 3   # 'same', stride 2: pad (0, 1)
    fan_pool = _conv_fanout_brute(3, 3, 2, 2, 0, 1, 1)       # 2x2/2 valid on 3x3: one window
    enc_s = spk = sops_conv = sops_pool = sops_out = macs_out = 0.0
    for i in range(0, 7, 4):
        outs = c.probe(x[i:i + 4])
        c.add(outs)
        e, s1, p_in, o_in = outs[0], outs[2], outs[3], outs[4]  # conv1's input is e (outs[1])
        np.testing.assert_array_equal(outs[1], e)
        enc_s += np.abs(e).sum()
        spk += np.abs(s1).sum()
        sops_conv += (np.abs(e) * fan_conv[..., None]).sum()
        sops_pool += (np.abs(p_in) * fan_pool[..., None]).sum()
        if np.all(o_in == np.round(o_in)):
            sops_out += np.abs(o_in).sum() * 4
        else:  # averaged spikes are analog: the output Dense multiplies, MACs = nonzero x 4
            macs_out += np.count_nonzero(o_in) * 4
    rows = {r["layer"]: r for r in c.rows()}
    assert rows["conv1"]["neurons"] == 3 * 3 * 3 and rows["encoder"]["neurons"] == 36
    assert rows["conv1"]["ann_macs_per_image"] == fan_conv.sum() * 1
    assert rows["pool1"]["ann_macs_per_image"] == 4 * 3 and rows["pool1"]["neurons"] == 0
    assert rows["output"]["ann_macs_per_image"] == 3 * 4 and rows["output"]["neurons"] == 4
    assert rows["encoder"]["spikes_per_image"] == pytest.approx(enc_s / 7)
    assert rows["conv1"]["spikes_per_image"] == pytest.approx(spk / 7)
    assert spk > 0 and sops_pool > 0
    assert rows["conv1"]["sops_per_image"] == pytest.approx(sops_conv / 7)
    assert rows["pool1"]["sops_per_image"] == pytest.approx(sops_pool / 7)
    assert rows["output"]["input_macs_per_image"] == pytest.approx(macs_out / 7)
    assert rows["output"]["sops_per_image"] == pytest.approx(sops_out / 7)
    assert rows["conv1"]["firing_rate"] == pytest.approx(spk / 7 / 27 / 5)
    assert rows["conv1"]["neuron_updates_per_image"] == 27 * 5
    rep = c.report({"dataset": "random"})
    assert isinstance(rep, report.Report)
    assert rep.totals["sops_per_image"] == pytest.approx((sops_conv + sops_pool + sops_out) / 7)
    assert rep.meta["timesteps"] == 5 and rep.meta["n_images"] == 7
    counted = activity.count_activity(m, x, np.zeros(7), batch_size=3)
    assert counted.n_images == 7 and 0 <= counted.accuracy <= 1
    with pytest.raises(ValueError, match="no batch"):
        activity.ActivityCounter(m).rows()
