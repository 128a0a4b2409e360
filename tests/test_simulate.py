"""tfsnn.simulate + tfsnn.layers.spiking: the spec §7 invariants on real MNIST images and random
networks, a literal step-by-step reference, exact SOP counts, the stat files."""
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import convert as cv
from tfsnn import monitor
from tfsnn import simulate as sim
from tfsnn.layers.spiking import DynamicThresholdNeuron, signed_counts

from test_snn_common import ann_activations, calibrated_lenet, mnist_test, tiny_model

N_IMG = 100
STEPS = {0: 20, 1: 36}


# ----------------------------------------------------------------------------- single neuron

def _neuron(thresholds, v):
    layer = DynamicThresholdNeuron(1, len(thresholds))
    layer.build((None, None, 1))
    layer.set_weights([np.asarray([thresholds], np.int32)])
    s = layer(tf.constant(np.asarray(v, np.int32)[None, :, None])).numpy()[0, :, 0]
    return s


THR = [0, 3, 5, 5, 9, 12, 20, 30]  # theta_1..theta_8


def test_constant_drive_fires_n_star_spikes_on_first_steps():
    s = _neuron(THR, [10] * 8)  # n* = #{theta <= 10} = 5
    np.testing.assert_array_equal(s, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(_neuron(THR, [10] * 3), [1, 1, 1])  # min(n*, T)


def test_negative_input_restores_n_star_with_negative_spikes():
    s = _neuron(THR, [10] * 6 + [4] * 6)  # level 5 then #{theta <= 4} = 2
    np.testing.assert_array_equal(s, [1, 1, 1, 1, 1, 0, -1, -1, -1, 0, 0, 0])
    assert np.cumsum(s)[-1] == 2


def test_membrane_below_floor_never_goes_negative():
    s = _neuron(THR, [-100, -5, -1, 4, -50, -50])
    n = np.cumsum(s)
    assert n.min() >= 0
    np.testing.assert_array_equal(s, [0, 0, 0, 1, -1, 0])


def test_ties_follow_the_ge_rule():
    # V == theta_{n+1} fires +1; V == theta_n - 1 fires -1; V == theta_n stays.
    np.testing.assert_array_equal(_neuron(THR, [3, 3, 3]), [1, 1, 0])
    np.testing.assert_array_equal(_neuron(THR, [3, 3, 2, 2]), [1, 1, -1, 0])
    np.testing.assert_array_equal(_neuron(THR, [5, 5, 5, 5, 5]), [1, 1, 1, 1, 0])


def test_closed_form_tail_equals_full_scan():
    rng = np.random.default_rng(0)
    lev = rng.integers(0, 9, (4, 5, 3, 2)).astype(np.int32)
    full = np.concatenate([lev, np.repeat(lev[:, -1:], 11, axis=1)], axis=1)
    np.testing.assert_array_equal(signed_counts(tf.constant(lev), 16).numpy(),
                                  signed_counts(tf.constant(full)).numpy())


# ----------------------------------------------------------------------------- reference

def reference_sim(snn, x, t_steps):
    """Literal step-by-step simulation (spec §2.1-2.3 with the §6.5 tie rule): per step, every
    layer in order; V integrates; +1 if V >= theta_{n+1}, -1 if V < theta_n. Float64 math."""
    enc, hidden, out = cv.split_snn(snn)
    z = enc.membrane(x).numpy()
    thr_e = enc.get_weights()[1]
    states = [dict(v=0.0, n=0) for _ in hidden]
    spikes = [[] for _ in range(len(hidden) + 1)]
    logits = []
    for t in range(t_steps):
        fire = (t < enc.levels) & (z >= thr_e[:, min(t, enc.levels - 1)])
        s = np.where(fire, enc.amplitude, 0).astype(np.float64)
        spikes[0].append(s)
        for i, layer in enumerate(hidden):
            kern, thr = (np.asarray(w, np.float64) for w in layer.get_weights())
            st = states[i]
            st["v"] = st["v"] + tf.nn.conv2d(s, kern, layer.strides, layer.padding.upper()).numpy()
            n = np.broadcast_to(st["n"], st["v"].shape).astype(np.int64)
            m = thr.shape[1]
            th_up = _gather(thr, np.minimum(n, m - 1))          # theta_{n+1}
            th_dn = _gather(thr, np.maximum(n - 1, 0))          # theta_n
            up = (n < m) & (st["v"] >= th_up)
            dn = (n >= 1) & (st["v"] < th_dn)
            s = up.astype(np.float64) - dn
            st["n"] = n + s.astype(np.int64)
            spikes[i + 1].append(s)
        logits.append(states[-1]["n"].reshape(len(x), -1) @ out.get_weights()[0].astype(np.float64))
    return [np.stack(sp, 1) for sp in spikes], np.stack(logits, 1)


def _gather(thr, idx):
    """``thr[c, idx[..., c]]`` for idx ``[..., C]``."""
    c = thr.shape[0]
    return thr[np.arange(c), idx]


def _run_layers(snn, x, t_steps):
    enc, hidden, _ = cv.split_snn(snn)
    s = enc(x, timesteps=t_steps)
    out = [s.numpy()]
    for layer in hidden:
        s = layer(s)
        out.append(s.numpy())
    return out


@pytest.mark.parametrize("k", [0, 1])
def test_folded_time_equals_step_by_step_tiny(k):
    m, x = tiny_model(k=k, seed=k)
    snn = cv.convert(m, timesteps=12)
    ref, ref_logits = reference_sim(snn, x[:16], 12)
    got = _run_layers(snn, x[:16], 12)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(snn(x[:16]).numpy(), ref_logits, rtol=1e-5, atol=1e-5)


def test_folded_time_equals_step_by_step_lenet_real_images():
    x, _ = mnist_test(4)
    snn = cv.convert(calibrated_lenet(k=0), timesteps=10)
    ref, _ = reference_sim(snn, x, 10)
    for a, b in zip(_run_layers(snn, x, 10), ref):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- invariants

@pytest.fixture(scope="module", params=[0, 1], ids=["k0", "k1"])
def lenet_run(request):
    k = request.param
    x, y = mnist_test(N_IMG)
    m = calibrated_lenet(k=k)
    snn = cv.convert(m, timesteps=STEPS[k])
    res = sim.simulate(snn, x, y, batch_size=50, ann=m, return_counts=True)
    return dict(k=k, x=x, y=y, m=m, snn=snn, res=res)


def test_counts_equal_2k_ann_activations_elementwise(lenet_run):
    k, res = lenet_run["k"], lenet_run["res"]
    acts, logits = ann_activations(lenet_run["m"], lenet_run["x"])
    assert res.converged, "the network did not settle within T"
    for a, n in zip(acts, res.final_counts):
        np.testing.assert_array_equal(n, a * 2 ** k)
    np.testing.assert_allclose(res.logits[:, -1], logits * 2 ** k, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(res.predictions[:, -1], np.argmax(logits, -1))
    assert res.disagreements == 0 and res.equal_from_step is not None
    assert res.accuracy == pytest.approx(res.ann_accuracy)


def test_per_step_constraints_and_encoder_code(lenet_run):
    k, x, snn = lenet_run["k"], lenet_run["x"][:20], lenet_run["snn"]
    t_steps = STEPS[k]
    spikes = _run_layers(snn, x, t_steps)
    a1 = ann_activations(lenet_run["m"], x)[0][0]
    t = np.arange(t_steps).reshape(1, -1, 1, 1, 1)
    np.testing.assert_array_equal(spikes[0], 2 ** k * (t < a1[:, None]))
    for s in spikes[1:]:
        assert set(np.unique(s)) <= {-1, 0, 1}
        n = np.cumsum(s, axis=1)
        assert n.min() >= 0 and np.all(n <= t + 1)
    # once silent at step t in every layer, silent forever (stationary)
    last = lenet_run["res"].converged_step
    for s in spikes:
        assert not np.any(s[:, last:])


def test_stat_identities(lenet_run, tmp_path):
    k, res = lenet_run["k"], lenet_run["res"]
    ser = res.stat_series()
    np.testing.assert_array_equal(ser["abs_spike.txt"].sum(1), ser["spike_num.txt"][:, -1])
    np.testing.assert_array_equal(ser["sum_spike.txt"].sum(1), ser["spike_collect.txt"][:, -1])
    assert np.all(ser["spike_num.txt"] >= ser["spike_collect.txt"])
    acts, _ = ann_activations(lenet_run["m"], lenet_run["x"])
    assert ser["spike_collect.txt"][:, -1].sum() == sum(int(round(a.astype(np.float64).sum() * 2 ** k)) for a in acts[1:])
    assert ser["accuracy.txt"][:, -1].sum() == round(res.accuracy * res.n_images)
    monitor.write_stat_files(tmp_path, ser)
    for name in monitor.STAT_FILES:
        lines = (tmp_path / name).read_text().split()
        assert len(lines) == len(res.batch_sizes) * res.timesteps
    assert res.spikes_per_image()["total_hidden"] * res.n_images == pytest.approx(
        ser["spike_num.txt"][:, -1].sum())


def test_sop_count_matches_independent_fanout(lenet_run):
    res, snn, k = lenet_run["res"], lenet_run["snn"], lenet_run["k"]
    spikes = _run_layers(snn, lenet_run["x"][:50], STEPS[k])
    _, hidden, out = cv.split_snn(snn)
    for r, layer in enumerate(hidden):  # fan-out by the gradient of a ones-kernel conv
        s_in = tf.constant(np.abs(spikes[r]).sum(1) > 0, tf.float32)
        ones = tf.ones((*layer.kernel_size, 1, 1))
        xin = tf.ones((1, *s_in.shape[1:3], 1))
        with tf.GradientTape() as tape:
            tape.watch(xin)
            o = tf.reduce_sum(tf.nn.conv2d(xin, ones, layer.strides, layer.padding.upper()))
        fan = tape.gradient(o, xin).numpy()[0, :, :, 0] * layer.filters
        ev = (spikes[r] != 0).sum(-1)  # [B, T, H, W]
        assert (ev * fan).sum() == res.sops[0, r].sum()
    assert res.sops[0, -1].sum() == (spikes[-1] != 0).sum() * out.units


def test_int_mode_equals_float_mode(lenet_run):
    x, y, m, k = lenet_run["x"], lenet_run["y"], lenet_run["m"], lenet_run["k"]
    res_i = lenet_run["res"]
    res_f = sim.simulate(cv.convert(m, timesteps=STEPS[k], use_int=False), x, y, batch_size=50,
                         return_counts=True)
    np.testing.assert_array_equal(res_f.pos, res_i.pos)
    np.testing.assert_array_equal(res_f.neg, res_i.neg)
    for a, b in zip(res_f.final_counts, res_i.final_counts):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res_f.predictions, res_i.predictions)


def test_integer_membrane_is_exact(lenet_run):
    snn, x, k = lenet_run["snn"], lenet_run["x"][:20], lenet_run["k"]
    spikes = _run_layers(snn, x, STEPS[k])
    for s, layer in zip(spikes[:-1], cv.split_snn(snn)[1]):
        counts = np.cumsum(s, axis=1).reshape(-1, *s.shape[2:]).astype(np.int32)
        v = layer.membrane_from_counts(tf.constant(counts))
        assert v.dtype == tf.int32
        exact = tf.nn.conv2d(tf.constant(counts), tf.constant(layer.get_weights()[0]),
                             layer.strides, layer.padding.upper())  # int32 conv
        np.testing.assert_array_equal(v.numpy(), exact.numpy())


# ----------------------------------------------------------------------------- SOPs, API

def _brute_sops(spikes_in, kernel_size, strides, padding, in_hw, out_channels):
    """SOPs by enumerating, per input event, every output position whose window covers it."""
    h, w = in_hw
    kh, kw = kernel_size
    sh, sw = strides
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0) // 2
        pw = max((ow - 1) * sw + kw - w, 0) // 2
    else:
        oh, ow, ph, pw = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    total = 0
    for b, t, i, j, c in zip(*np.nonzero(spikes_in)):
        for oi in range(oh):
            for oj in range(ow):
                if oi * sh - ph <= i < oi * sh - ph + kh and oj * sw - pw <= j < oj * sw - pw + kw:
                    total += out_channels
    return total


@pytest.mark.parametrize("k", [0, 1])
def test_sops_equal_brute_force_on_tiny_net(k):
    m, x = tiny_model(k=k, seed=2 + k)
    snn = cv.convert(m, timesteps=10)
    res = sim.simulate(snn, x[:8], batch_size=8)
    spikes = _run_layers(snn, x[:8], 10)
    _, hidden, out = cv.split_snn(snn)
    for r, layer in enumerate(hidden):
        want = _brute_sops(spikes[r], layer.kernel_size, layer.strides, layer.padding,
                           spikes[r].shape[2:4], layer.filters)
        assert want > 0
        assert res.sops[0, r].sum() == want
    assert res.sops[0, -1].sum() == (spikes[-1] != 0).sum() * out.units


@pytest.mark.parametrize("hw,ks,st,pad", [((7, 7), (3, 3), (2, 2), "same"),
                                          ((8, 6), (2, 2), (2, 2), "same"),
                                          ((9, 9), (5, 3), (1, 2), "valid"),
                                          ((5, 5), (3, 3), (1, 1), "same")])
def test_fanout_map_equals_brute_force(hw, ks, st, pad):
    fan = monitor.conv_fanout(hw, ks, st, pad, out_channels=3)
    for i in range(hw[0]):
        for j in range(hw[1]):
            spk = np.zeros((1, 1, *hw, 1))
            spk[0, 0, i, j, 0] = 1
            assert fan[i, j] == _brute_sops(spk, ks, st, pad, hw, 3)


def test_dataset_input_noise_and_errors():
    m, x = tiny_model(k=0)
    snn = cv.convert(m, timesteps=6)
    y = np.arange(len(x)) % 4
    a = sim.simulate(snn, x, y, batch_size=16, max_examples=40)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    b = sim.simulate(snn, ds, max_examples=40)
    assert a.n_images == b.n_images == 40
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.sops, b.sops)
    n1 = sim.simulate(snn, x, batch_size=16, noise_ratio=0.5, seed=3)
    n2 = sim.simulate(snn, x, batch_size=16, noise_ratio=0.5, seed=3)
    np.testing.assert_array_equal(n1.logits, n2.logits)
    assert not np.array_equal(n1.logits, sim.simulate(snn, x, batch_size=16).logits)
    with pytest.raises(ValueError, match="noise_ratio"):
        sim.simulate(snn, x, noise_ratio=-1)
    with pytest.raises(ValueError, match="timesteps"):
        sim.simulate(snn, x, timesteps=7)


def test_ann_macs_lenet():
    snn = cv.convert(calibrated_lenet(k=0), timesteps=4)
    macs = sim.ann_macs(snn)
    want = {"conv1": 460800, "conv2": 589824, "conv3": 3276800, "conv4": 262144,
            "conv5": 1024000, "output": 10000}  # spec §1.4 table
    for name, v in want.items():
        assert macs[name] == v
    assert macs["total"] == sum(want.values())
