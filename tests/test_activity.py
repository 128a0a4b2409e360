"""Spike / SOP / MAC counts of directly trained SNNs (LIF, IIR, ProxyNet) against numpy brute
force on tiny models; train_snn.py writes the report for every classification method."""
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


def test_silent_fraction_counts_neurons_that_never_fired():
    m = tiny_snn()
    conv = m.get_layer("conv1").layer
    k = conv.get_weights()[0]
    k[..., 1] = -np.abs(k[..., 1])  # channel 1 gets only negative current: never fires
    conv.set_weights([k])
    x = np.random.default_rng(2).random((9, 6, 6, 1)).astype(np.float32)
    c = activity.ActivityCounter(m)
    fired = np.zeros((3, 3, 3), bool)
    for i in range(0, 9, 4):
        outs = c.probe(x[i:i + 4])
        c.add(outs)
        fired |= np.any(outs[2] != 0, axis=(0, 1))  # spike1's output [B, T, 3, 3, 3]
    assert not fired[..., 1].any() and fired.any()
    rows = {r["layer"]: r for r in c.rows()}
    assert rows["conv1"]["silent_fraction"] == pytest.approx(1 - fired.mean())
    assert rows["conv1"]["silent_fraction"] >= 1 / 3
    assert rows["encoder"]["silent_fraction"] is None and rows["output"]["silent_fraction"] is None
    md = c.report({"dataset": "random"}).markdown()
    assert "silent (never fired)" in md
    assert f"{100 * (1 - fired.mean()):.1f} %" in md
    # rows without the key (e.g. a converted SNN's simulation) render without the column
    plain = [{k: v for k, v in r.items() if k != "silent_fraction"} for r in c.rows()]
    assert "silent" not in report.Report.from_rows(plain).markdown()


# ------------------------------------------------------------------ IIR nets and ProxyNet

def _rows_match_totals(rep):
    for key in ("spikes_per_image", "sops_per_image", "neuron_updates_per_image"):
        assert rep.totals[key] == pytest.approx(sum(r[key] for r in rep.rows))
    for d in rep.devices:
        assert rep.totals["energy_J"][d] == pytest.approx(sum(r["energy_J"][d] for r in rep.rows))


def tiny_iir_mlp(t=4, encoder="direct"):
    from tfsnn.layers.filters import DualExpIIR, FirstOrderLowPass
    from tfsnn.layers.neurons.iir import IIRSpikingDense
    from tfsnn.layers.readouts import SumReadout
    keras.utils.set_random_seed(4)
    inp = keras.Input((5, 5, 1), name="image")
    h = keras.layers.Flatten(name="flatten")(inp)
    h = (encoders.DirectEncoder(t, name="encoder") if encoder == "direct"
         else encoders.PoissonEncoder(t, strict=True, name="encoder"))(h)
    h = DualExpIIR(4.0, 1.0, name="synapse1")(h)
    h = IIRSpikingDense(6, threshold=0.2, name="neuron1")(h)
    h = keras.layers.Dropout(0.3, name="dropout1")(h)
    h = FirstOrderLowPass(4.0, name="synapse2")(h)
    h = IIRSpikingDense(3, threshold=0.1, name="neuron2")(h)
    return keras.Model(inp, SumReadout(name="spike_count")(h))


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_iir_mlp_counts_equal_brute_force(encoder):
    m = tiny_iir_mlp(encoder=encoder)
    x = np.random.default_rng(2).random((6, 5, 5, 1)).astype(np.float32)
    x[:, :2] = 0.0  # zero pixels: zero PSP entries cost nothing
    c = activity.ActivityCounter(m)
    assert [p[:2] for p in c.plan] == [("encoder", "encoder"), ("neuron1", "hidden"),
                                       ("neuron2", "hidden")]
    ref = keras.Model(m.input, [m.get_layer(n).output for n in
                                ("encoder", "synapse1", "neuron1", "synapse2", "neuron2")])
    enc = spk1 = spk2 = macs1 = macs2 = 0.0
    for i in (0, 4):
        outs = c.probe(x[i:i + 4])
        e, psp1, s1, psp2, s2, logits = outs
        if encoder == "direct":  # deterministic: the probe returns the layers' actual tensors
            for got, want in zip(outs[:-1], ref(x[i:i + 4])):
                np.testing.assert_array_equal(got, np.asarray(want))
        np.testing.assert_array_equal(logits, s2.sum(axis=1))  # the model's own output
        c.add(outs)
        enc += np.abs(e).sum() if encoder == "poisson" else 0.0  # an analog copy: no spikes
        spk1 += s1.sum()
        spk2 += s2.sum()
        macs1 += np.count_nonzero(psp1) * 6  # analog PSP: nonzero entries x fan-out (units)
        macs2 += np.count_nonzero(psp2) * 3
    n = 6  # images, in batches of 4 and 2
    assert spk1 > 0 and macs1 > 0
    rows = {r["layer"]: r for r in c.rows()}
    assert rows["encoder"]["spikes_per_image"] == pytest.approx(enc / n)
    assert rows["neuron1"]["spikes_per_image"] == pytest.approx(spk1 / n)
    assert rows["neuron2"]["spikes_per_image"] == pytest.approx(spk2 / n)
    assert rows["neuron1"]["input_macs_per_image"] == pytest.approx(macs1 / n)
    assert rows["neuron2"]["input_macs_per_image"] == pytest.approx(macs2 / n)
    assert rows["neuron1"]["sops_per_image"] == 0 and rows["neuron2"]["sops_per_image"] == 0
    assert rows["neuron1"]["ann_macs_per_image"] == 25 * 6
    assert rows["neuron2"]["ann_macs_per_image"] == 6 * 3
    assert rows["neuron1"]["neurons"] == 6 and rows["neuron2"]["neurons"] == 3
    assert rows["neuron1"]["neuron_updates_per_image"] == 6 * 4
    assert rows["neuron2"]["firing_rate"] == pytest.approx(spk2 / n / 3 / 4)
    _rows_match_totals(c.report())


def tiny_iir_conv(t=3):
    from tfsnn.layers.filters import DualExpIIR
    from tfsnn.layers.neurons.iir import IIRSpikingConv2D, IIRSpikingDense, PSPMaxPool2D
    from tfsnn.layers.readouts import SumReadout
    keras.utils.set_random_seed(6)
    inp = keras.Input((8, 8, 1), name="image")
    h = encoders.PoissonEncoder(t, strict=True, name="encoder")(inp)
    h = DualExpIIR(4.0, 1.0, name="synapse1")(h)
    h = IIRSpikingConv2D(3, 3, strides=2, padding="same", threshold=0.05, name="conv1")(h)
    h = PSPMaxPool2D(2, name="pool1")(DualExpIIR(4.0, 1.0, name="synapse2")(h))  # on the PSP
    h = DualExpIIR(4.0, 1.0, name="synapse3")(h)
    h = IIRSpikingConv2D(4, 2, padding="valid", threshold=0.02, name="conv2")(h)
    h = keras.layers.Reshape((t, 4), name="flatten")(h)
    h = IIRSpikingDense(3, threshold=0.01, name="fc1")(DualExpIIR(4.0, 1.0, name="synapse4")(h))
    return keras.Model(inp, SumReadout(name="spike_count")(h))


def test_iir_conv_counts_equal_brute_force():
    m = tiny_iir_conv()
    x = np.random.default_rng(3).random((5, 8, 8, 1)).astype(np.float32)
    c = activity.ActivityCounter(m)
    assert [p[:2] for p in c.plan] == [("encoder", "encoder"), ("conv1", "hidden"),
                                       ("conv2", "hidden"), ("fc1", "hidden")]
    outs = c.probe(x)
    e, psp1, s1, psp3, s2, psp4, s3, logits = outs
    assert psp1.shape == (5, 3, 8, 8, 1) and psp3.shape == (5, 3, 2, 2, 3)
    np.testing.assert_array_equal(logits, s3.sum(axis=1))
    c.add(outs)
    fan1 = _conv_fanout_brute(8, 8, 3, 2, 0, 4, 4) * 3  # 'same', stride 2 on 8x8: pad (0, 1)
    fan2 = _conv_fanout_brute(2, 2, 2, 1, 0, 1, 1) * 4  # 2x2 valid on 2x2: one position
    rows = {r["layer"]: r for r in c.rows()}
    assert rows["encoder"]["spikes_per_image"] == pytest.approx(np.abs(e).sum() / 5)
    for name, psp, fan, s in (("conv1", psp1, fan1, s1), ("conv2", psp3, fan2, s2),
                              ("fc1", psp4, np.float64(3), s3)):
        f = fan[..., None] if np.ndim(fan) == 2 else fan
        assert rows[name]["input_macs_per_image"] == pytest.approx(((psp != 0) * f).sum() / 5)
        assert rows[name]["sops_per_image"] == 0
        assert rows[name]["spikes_per_image"] == pytest.approx(s.sum() / 5)
        assert rows[name]["neurons"] == int(np.prod(s.shape[2:]))
    assert s1.sum() > 0 and rows["conv1"]["input_macs_per_image"] > 0
    assert rows["conv1"]["ann_macs_per_image"] == fan1.sum() * 1
    assert rows["conv2"]["ann_macs_per_image"] == fan2.sum() * 3
    assert rows["fc1"]["ann_macs_per_image"] == 4 * 3
    _rows_match_totals(c.report())


def _maxpool2(s):
    b, t, h, w, ch = s.shape
    return s[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, t, h // 2, 2, w // 2, 2, ch).max((3, 5))


def test_proxy_net_counts_equal_brute_force():
    from tfsnn.models.proxy import ProxyNet
    keras.utils.set_random_seed(2)
    m = ProxyNet(width=2, timesteps=4, threshold=0.05)
    x = np.random.default_rng(4).random((3, 28, 28, 1)).astype(np.float32)
    x[:, :5] = 0.0
    rec = m.snn_record(x)
    assert [layer.name for layer, _, _ in rec] == ["conv1", "conv2", "conv3", "fc1", "fc2",
                                                   "fc3", "fc4"]
    np.testing.assert_array_equal(m(x).numpy(), np.asarray(rec[-1][2]).sum(axis=1))
    c = activity.ActivityCounter(m)
    outs = c.probe(x)
    ins, spikes = outs[0:-1:2], outs[1:-1:2]
    for (_, i_rec, s_rec), i, s in zip(rec, ins, spikes):  # BN in inference mode: deterministic
        np.testing.assert_array_equal(i, np.asarray(i_rec))
        np.testing.assert_array_equal(s, np.asarray(s_rec))
    np.testing.assert_array_equal(ins[0], x[:, None])  # the image once
    np.testing.assert_array_equal(ins[1], spikes[0])
    np.testing.assert_array_equal(ins[2], _maxpool2(spikes[1]))  # max pool of spikes: an OR
    np.testing.assert_array_equal(ins[3], _maxpool2(spikes[2]).reshape(3, 4, -1))
    for k in range(4, 7):
        np.testing.assert_array_equal(ins[k], spikes[k - 1])
    assert all(s.sum() > 0 for s in spikes[:4])
    c.add(outs, np.array([0, 1, 2]))
    rows = {r["layer"]: r for r in c.rows()}
    w = 2
    fan28 = _conv_fanout_brute(28, 28, 3, 1, 1, 28, 28)
    fan14 = _conv_fanout_brute(14, 14, 3, 1, 1, 14, 14)
    assert rows["conv1"]["input_macs_per_image"] == pytest.approx(
        (np.count_nonzero(x, axis=0)[..., 0] * fan28 * w).sum() / 3)
    assert rows["conv1"]["sops_per_image"] == 0
    assert rows["conv1"]["ann_macs_per_image"] == fan28.sum() * 1 * w
    assert rows["conv2"]["sops_per_image"] == pytest.approx(
        (spikes[0].sum((0, 1)) * fan28[..., None] * w).sum() / 3)
    assert rows["conv2"]["ann_macs_per_image"] == fan28.sum() * w * w
    assert rows["conv3"]["sops_per_image"] == pytest.approx(
        (ins[2].sum((0, 1)) * fan14[..., None] * w).sum() / 3)
    units = [20 * w, 9 * w, 2 * w, 10]
    n_in = [7 * 7 * w, *units[:3]]
    for k, (name, u) in enumerate(zip(("fc1", "fc2", "fc3", "fc4"), units), start=3):
        assert rows[name]["sops_per_image"] == pytest.approx(ins[k].sum() * u / 3)
        assert rows[name]["input_macs_per_image"] == 0
        assert rows[name]["ann_macs_per_image"] == n_in[k - 3] * u
    for k, name in enumerate(("conv1", "conv2", "conv3", "fc1", "fc2", "fc3", "fc4")):
        assert rows[name]["role"] == "hidden"
        assert rows[name]["spikes_per_image"] == pytest.approx(spikes[k].sum() / 3)
        assert rows[name]["neurons"] == int(np.prod(spikes[k].shape[2:]))
        assert rows[name]["neuron_updates_per_image"] == rows[name]["neurons"] * 4
    counts = spikes[-1].sum(axis=1)
    assert c.accuracy == pytest.approx(np.mean(np.argmax(counts, -1) == [0, 1, 2]))
    _rows_match_totals(c.report())


def test_associative_memory_net_counts():
    from tfsnn.models.iir import associative_memory_net
    keras.utils.set_random_seed(1)
    m = associative_memory_net(timesteps=6, channels=4, widths=(3, 2, 3))
    x = (np.random.default_rng(1).random((2, 6, 4)) < 0.5).astype(np.float32)
    c = activity.count_activity(m, x)
    rows = c.rows()
    assert [r["layer"] for r in rows] == ["neuron1", "neuron2", "neuron3", "neuron4"]
    assert rows[0]["ann_macs_per_image"] == 4 * 3 and rows[0]["sops_per_image"] == 0
    assert rows[0]["input_macs_per_image"] > 0


@pytest.mark.parametrize("method,extra", [
    ("iir", ["--validation_examples", "0"]),
    ("proxy", ["--width", "2", "--threshold", "0.5"])])
def test_train_snn_script_writes_the_report(tmp_path, method, extra):
    """``scripts/train_snn.py`` on a tiny real-data run writes report.md / report.json and the
    results keys, and the report's totals are those of results.json."""
    import json
    import subprocess
    import sys

    from conftest import REPO
    from tfsnn import data
    try:
        data.load("fashion_mnist", download=False)
    except data.DatasetNotFoundError:
        pytest.skip("Fashion-MNIST not available offline")
    run = tmp_path / "r"
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_snn.py"), "--method", method,
         "--epochs", "1", "--timesteps", "3", "--max_train_examples", "32",
         "--max_test_examples", "16", "--batch_size", "16", "--notensorboard",
         "--run_dir", str(run), *extra], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    rep = json.loads((run / "report.json").read_text())
    assert (run / "report.md").read_text().startswith("## Per-layer spikes")
    assert rep["meta"]["n_images"] == 16 and rep["meta"]["timesteps"] == 3
    assert res["spikes_per_image"] == pytest.approx(rep["totals"]["spikes_per_image"])
    assert res["sops_per_image"] == pytest.approx(rep["totals"]["sops_per_image"])
    assert res["energy_J_per_image"] == pytest.approx(rep["totals"]["energy_J"])
    assert res["energy_J_per_image"]["loihi"] > 0
    names = [r["layer"] for r in rep["rows"]]
    assert names == (["neuron1", "neuron2", "neuron3"] if method == "iir" else  # image held
                     ["conv1", "conv2", "conv3", "fc1", "fc2", "fc3", "fc4"])  # by synapse1
    first = rep["rows"][0]  # analog input: the PSP / the image
    assert first["input_macs_per_image"] > 0
