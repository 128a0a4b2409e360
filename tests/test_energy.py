"""Energy per inference: count x per-op energy by hand (literal published figures), on plain
counts and on a tiny simulated SNN whose spikes / SOPs are recounted here in numpy."""
import numpy as np
import pytest

from snn_common import run_layers, tiny_model
from tfsnn import conversion as cv, energy as en, report, simulation as sim
from tfsnn.accounting import ann_macs

PJ = 1e-12
# (sop, neuron_update, spike, mac) in J, copied from the papers cited in tfsnn.energy
FIGURES = {"cmos45_fp32": (0.9 * PJ, 0.9 * PJ, 0.0, 4.6 * PJ),
           "cmos45_int32": (0.1 * PJ, 0.1 * PJ, 0.0, 3.2 * PJ),
           "cmos45_int8": (0.03 * PJ, 0.03 * PJ, 0.0, 0.23 * PJ),
           "loihi": (23.6 * PJ, 81 * PJ, 3.5 * PJ, None),
           "spinnaker": (13.3e-9, 26e-9, 0.0, None),
           "spinnaker2": (450 * PJ, 2.19e-9, 0.0, None),
           "truenorth": (26 * PJ, 0.0, 0.0, None)}


def test_registered_figures_and_hand_computation():
    for name, (sop, upd, spk, mac) in FIGURES.items():
        e = en.per_op(name)
        assert e["sop"] == pytest.approx(sop) and e["neuron_update"] == pytest.approx(upd)
        assert e["spike"] == pytest.approx(spk)
        assert e["mac"] == pytest.approx(4.6 * PJ)  # analog-input MACs: on the 45 nm fp32 host
    layers = [en.LayerCounts("enc", neuron_updates=100, spikes=7, macs=1000, ann_macs=1000),
              {"name": "h", "sops": 250, "neuron_updates": 40, "spikes": 3, "ann_macs": 600}]
    lo = en.snn_energy(layers, "loihi")
    assert lo["enc"]["mac"] == pytest.approx(1000 * 4.6 * PJ)
    assert lo["enc"]["total"] == pytest.approx(100 * 81 * PJ + 7 * 3.5 * PJ + 1000 * 4.6 * PJ)
    assert lo["h"]["total"] == pytest.approx(250 * 23.6 * PJ + 40 * 81 * PJ + 3 * 3.5 * PJ)
    assert lo["total"] == pytest.approx(lo["enc"]["total"] + lo["h"]["total"])
    tn = en.snn_energy(layers, "truenorth", host="cmos45_int8")
    assert tn["total"] == pytest.approx(250 * 26 * PJ + 1000 * 0.23 * PJ)
    i32 = en.snn_energy(layers, "cmos45_int32")
    assert i32["total"] == pytest.approx((250 + 140) * 0.1 * PJ + 1000 * 4.6 * PJ)
    ann = en.ann_energy(layers, "cmos45_fp32")
    assert ann["total"] == pytest.approx(1600 * 4.6 * PJ) and ann["h"] == pytest.approx(600 * 4.6 * PJ)
    # an int32 add is cheaper than an fp32 MAC, by the cited figures
    assert en.DEVICES["cmos45_int32"].sop < en.DEVICES["cmos45_fp32"].mac


def test_register_device_and_errors():
    try:
        dev = en.register_device("test_chip", sop=2 * PJ, neuron_update=1 * PJ, source="a test")
        assert en.snn_energy([en.LayerCounts("l", sops=10, neuron_updates=5)],
                             "test_chip")["total"] == pytest.approx(25 * PJ)
        assert en.get_device(dev) is dev and "test_chip" in en.names()
        with pytest.raises(ValueError, match="already registered"):
            en.register_device("test_chip", sop=1 * PJ)
        en.register_device("test_chip", sop=3 * PJ, overwrite=True)
        assert en.DEVICES["test_chip"].sop == 3 * PJ
    finally:
        en.DEVICES.pop("test_chip", None)
    with pytest.raises(ValueError, match="sop must be a finite energy"):
        en.register_device("bad", sop=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        en.register_device("bad")
    with pytest.raises(ValueError, match="device must be one of .*loihi"):
        en.snn_energy([], "tpu9000")
    with pytest.raises(ValueError, match="no MAC energy"):
        en.ann_energy([en.LayerCounts("l", ann_macs=3)], "loihi")
    with pytest.raises(ValueError, match="unknown count fields"):
        en.snn_energy([{"name": "l", "synops": 3}], "loihi")


def _fanout_sops(spikes, layer):
    """SOPs by brute force: each event x the output positions whose window covers it x C_out."""
    ev = np.abs(spikes).sum(axis=(0, 1, 4))  # [H, W] events summed over images, steps, channels
    h, w = ev.shape
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    if layer.padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0) // 2
        pw = max((ow - 1) * sw + kw - w, 0) // 2
    else:
        oh, ow, ph, pw = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    total = 0
    for i in range(h):
        for j in range(w):
            reach = sum(1 for oi in range(oh) for oj in range(ow)
                        if oi * sh - ph <= i < oi * sh - ph + kh
                        and oj * sw - pw <= j < oj * sw - pw + kw)
            total += ev[i, j] * reach * layer.filters
    return total


@pytest.mark.parametrize("k", [0, 1])
def test_tiny_network_energy_equals_hand_computation(k):
    m, x = tiny_model(k=k, seed=5 + k)
    t_steps, n = 10, 8
    snn = cv.convert(m, timesteps=t_steps)
    res = sim.simulate(snn, x[:n], batch_size=n, ann=m)
    spikes = run_layers(snn, x[:n], t_steps)           # encoder, conv2, conv3
    amp = 2 ** k
    events = [np.abs(spikes[0]).sum() / amp] + [np.abs(s).sum() for s in spikes[1:]]
    assert events == pytest.approx([res.spikes_per_image()[name] * n for name in
                                    ("conv1", "conv2", "conv3")])
    neurons = [int(np.prod(s.shape[2:])) for s in spikes]
    _, hidden, out = cv.split_snn(snn)
    spikes[0] = spikes[0] // amp  # encoder events have amplitude 2^k; each counts once
    sops = [_fanout_sops(spikes[i], hidden[i]) for i in range(len(hidden))]
    sops.append(np.abs(spikes[-1]).sum() * out.units)
    # ANN MACs by hand: conv1 3x3 valid on 9x9x1 -> 7x7x2; conv2 3x3/2 same 7x7x2 -> 4x4x3
    # (padding zeros excluded); conv3 2x2 valid 4x4x3 -> 3x3x2; dense 18 -> 4
    macs = ann_macs(snn)
    assert macs["conv1"] == 7 * 7 * 2 * 9 and macs["conv3"] == 3 * 3 * 2 * 2 * 2 * 3
    assert macs["output"] == 18 * 4
    rep = report.from_sim(res, macs, snn=snn)
    names = ["conv1", "conv2", "conv3", "output"]
    assert [r["layer"] for r in rep.rows] == names
    for name, (sop, upd, spk, mac) in FIGURES.items():  # every registered device
        want = ((sum(sops) * sop + sum(events) * spk) / n + sum(neurons) * t_steps * upd
                + macs["conv1"] * 4.6 * PJ)
        got = en.snn_energy([report._layer_counts(r) for r in rep.rows], name)["total"]
        assert got == pytest.approx(want, rel=1e-12), name
    for name in rep.devices:
        assert rep.totals["energy_J"][name] == pytest.approx(
            en.snn_energy([report._layer_counts(r) for r in rep.rows], name)["total"])
    assert rep.totals["ann_energy_J"]["cmos45_fp32"] == pytest.approx(macs["total"] * 4.6 * PJ)
    assert sum(sops) > 0 and rep.totals["sops_per_image"] == pytest.approx(sum(sops) / n)
    # energy if stopped after the last step = the per-inference total
    for d in rep.devices:
        assert rep.energy_per_step[d][-1] == pytest.approx(rep.totals["energy_J"][d])
        assert np.all(np.diff(rep.energy_per_step[d]) >= 0)
    # after step 0 only: events of step 0, neurons x 1 update, the encoder's MACs
    ev0 = [np.abs(s[:, 0]).sum() for s in spikes]
    sop0 = ([_fanout_sops(spikes[i][:, :1], hidden[i]) for i in range(len(hidden))]
            + [np.abs(spikes[-1][:, 0]).sum() * out.units])
    want0 = ((sum(sop0) * 23.6 * PJ + sum(ev0) * 3.5 * PJ) / n + sum(neurons) * 81 * PJ
             + macs["conv1"] * 4.6 * PJ)
    assert rep.energy_per_step["loihi"][0] == pytest.approx(want0, rel=1e-12)
