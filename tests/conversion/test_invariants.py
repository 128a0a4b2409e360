"""Spec §7 invariants of the integer SNN on real MNIST test images and random LeNets (k = 0, 1,
ternary, BN calibrated on the data): per-neuron counts == 2^k x ANN activations, logits, encoder
code, per-step constraints, stat-file identities, SOPs vs an independent fan-out, integer mode ==
float mode, exact integer membranes."""
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import conversion as cv
from tfsnn import accounting
from tfsnn import simulation as sim

from snn_common import ann_activations, calibrated_lenet, mnist_test, run_layers

N_IMG = 100
STEPS = {0: 20, 1: 36}


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
    spikes = run_layers(snn, x, t_steps)
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
    texts = accounting.stat_file_texts(ser)
    assert sorted(texts) == sorted(accounting.STAT_FILES)
    for name, text in texts.items():
        lines = text.split()
        assert len(lines) == len(res.batch_sizes) * res.timesteps
        np.testing.assert_array_equal(np.array(lines, np.int64), ser[name].reshape(-1))
    assert res.spikes_per_image()["total_hidden"] * res.n_images == pytest.approx(
        ser["spike_num.txt"][:, -1].sum())


def test_sop_count_matches_independent_fanout(lenet_run):
    res, snn, k = lenet_run["res"], lenet_run["snn"], lenet_run["k"]
    spikes = run_layers(snn, lenet_run["x"][:50], STEPS[k])
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
    spikes = run_layers(snn, x, STEPS[k])
    for s, layer in zip(spikes[:-1], cv.split_snn(snn)[1]):
        counts = np.cumsum(s, axis=1).reshape(-1, *s.shape[2:]).astype(np.int32)
        v = layer.membrane_from_counts(tf.constant(counts))
        assert v.dtype == tf.int32
        exact = tf.nn.conv2d(tf.constant(counts), tf.constant(layer.get_weights()[0]),
                             layer.strides, layer.padding.upper())  # int32 conv
        np.testing.assert_array_equal(v.numpy(), exact.numpy())
