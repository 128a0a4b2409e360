"""IIR spiking neuron, IIR models and the IIR training procedure (spec iir_and_proxy.md §A.2.4-
§A.6; invariants D.1.5-D.1.10)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.models import iir as M
from tfsnn import runs
from tfsnn.layers.neurons import iir
from tfsnn.training import iir as train_iir
from tfsnn.training.schedules import multistep_lr
from tfsnn.losses import FilteredMSE

from references import stepwise_mlp

D4 = math.exp(-1 / 4)


def test_spike_gaussian_forward_and_surrogate():
    u = tf.constant([1.0, 1.0 + 1e-6, 0.999999, 2.0, -1.0])
    with tf.GradientTape() as tape:
        tape.watch(u)
        s = iir.spike_gaussian(u)
    np.testing.assert_array_equal(s.numpy(), [0, 1, 0, 1, 0])  # strict: u = 1 does not fire
    g = tape.gradient(s, u).numpy()
    assert g[0] == pytest.approx(0.997356, abs=1e-6)
    grid = np.linspace(-3.0, 5.0, 8001)
    uu = tf.constant(grid)
    with tf.GradientTape() as tape:
        tape.watch(uu)
        s = iir.spike_gaussian(uu)
    gg = tape.gradient(s, uu).numpy()
    assert np.trapezoid(gg, grid) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(gg[4000:], gg[4000::-1], atol=1e-12)  # symmetric about u = 1
    assert gg[np.argmin(np.abs(grid - 0.5))] == pytest.approx(0.4566, abs=1e-4)


def test_neuron_spike_times_under_constant_drive():
    s, (r,) = iir.iir_neuron(tf.fill((1, 12, 1), 1.5), D4)
    np.testing.assert_array_equal(s.numpy().ravel(), [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0])
    # no refractory period: a strong drive fires on consecutive steps
    s2, _ = iir.iir_neuron(tf.fill((1, 5, 1), 10.0), D4)
    np.testing.assert_array_equal(s2.numpy().ravel(), [1, 1, 1, 1, 1])


def reference_neuron(z, decay, detach_reset=False):
    """Python-unrolled per-step IIR neuron with autograd (optionally a detached reset)."""
    sur = iir.iir_surrogate()
    r = tf.zeros_like(z[:, 0])
    out = []
    for t in range(z.shape[1]):
        s = sur.spike(z[:, t] - r - 1.0)
        r = decay * r + (tf.stop_gradient(s) if detach_reset else s)
        out.append(s)
    return tf.stack(out, 1)


def test_gradient_flows_through_reset_and_matches_unrolled_autograd():
    rng = np.random.default_rng(0)
    z = tf.constant(rng.normal(1.0, 0.6, (3, 15, 4)))
    w = tf.constant(rng.normal(size=(3, 15, 4)))
    grads = {}
    for name, fn in (("scan", lambda v: iir.iir_neuron(v, D4)[0]),
                     ("ref", lambda v: reference_neuron(v, D4)),
                     ("detached", lambda v: reference_neuron(v, D4, True))):
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = fn(z)
            loss = tf.reduce_sum(w * s)
        grads[name] = (s.numpy(), tape.gradient(loss, z).numpy())
    np.testing.assert_array_equal(grads["scan"][0], grads["ref"][0])
    np.testing.assert_allclose(grads["scan"][1], grads["ref"][1], rtol=1e-10, atol=1e-12)
    assert np.abs(grads["scan"][1] - grads["detached"][1]).max() > 1e-3
    # a loss on the last step only reaches z[0] through the reset path
    with tf.GradientTape() as tape:
        tape.watch(z)
        last = tf.reduce_sum(iir.iir_neuron(z, D4)[0][:, -1])
    g = tape.gradient(last, z).numpy()
    assert np.abs(g[:, 0]).max() > 0


def test_dense_and_conv_fold_time_equal_per_frame():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.random((2, 6, 8, 8, 3)), tf.float32)
    conv = iir.IIRSpikingConv2D(4, 3, kernel_initializer=keras.initializers.RandomUniform(-1, 1))
    s = conv(x)
    z = tf.stack([tf.nn.conv2d(x[:, t], conv.kernel, 1, "SAME") + conv.bias for t in range(6)], 1)
    np.testing.assert_array_equal(s.numpy(), iir.iir_neuron(z, D4)[0].numpy())
    assert s.numpy().sum() > 0
    dense = iir.IIRSpikingDense(5, kernel_initializer=keras.initializers.RandomUniform(-1, 1))
    xd = tf.constant(rng.random((3, 7, 6)), tf.float32)
    sd = dense(xd)
    zd = tf.stack([tf.matmul(xd[:, t], dense.kernel) + dense.bias for t in range(7)], 1)
    np.testing.assert_array_equal(sd.numpy(), iir.iir_neuron(zd, D4)[0].numpy())


def test_pytorch_style_init_bounds():
    d = iir.IIRSpikingDense(50)
    d(tf.zeros((1, 2, 400)))
    lim = 1 / math.sqrt(400)
    for w in (d.kernel, d.bias):
        assert np.abs(w.numpy()).max() <= lim
        assert np.abs(w.numpy()).max() > 0.8 * lim


def test_neuron_carry_equals_concatenated_input():
    rng = np.random.default_rng(2)
    x = rng.random((4, 20, 6)).astype(np.float32)
    init = keras.initializers.RandomUniform(-1, 1, seed=3)
    whole = iir.IIRSpikingDense(5, kernel_initializer=init, bias_initializer="zeros")
    carry = iir.IIRSpikingDense(5, kernel_initializer=init, bias_initializer="zeros",
                                state="carry", batch_size=4)
    y = whole(x).numpy()
    carry(x[:, :1])
    carry.kernel.assign(whole.kernel)
    carry.reset_states()
    parts = [carry(x[:, :7]).numpy(), carry(x[:, 7:]).numpy()]
    np.testing.assert_array_equal(np.concatenate(parts, 1), y)
    assert y.sum() > 0


def _scaled_mlp(seed=0, **kw):
    """snn_mlp_1 with the fixture recipe's scaling (kernels x4, biases +0.3) so it spikes."""
    keras.utils.set_random_seed(seed)
    m = M.snn_mlp_1(**kw)
    for l in m.layers:
        if isinstance(l, iir.IIRSpikingDense):
            l.kernel.assign(l.kernel * 4.0)
            l.bias.assign(l.bias + 0.3)
    return m


def test_mlp_fold_time_equals_step_by_step():
    m = _scaled_mlp(dropout=0.3)
    x = tf.constant(np.random.default_rng(4).random((5, 28, 28, 1)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        folded = m(x, training=False)
        step = stepwise_mlp(m, x)
        lf = tf.reduce_sum(folded * tf.range(10, dtype=tf.float32))
        ls = tf.reduce_sum(step * tf.range(10, dtype=tf.float32))
    np.testing.assert_array_equal(folded.numpy(), step.numpy())
    assert 0 < folded.numpy().sum() and folded.numpy().max() <= 25  # counts in [0, T]
    for a, b in zip(tape.gradient(lf, m.trainable_weights), tape.gradient(ls, m.trainable_weights)):
        a, b = a.numpy(), b.numpy()  # float32 sums in another order
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
    np.testing.assert_array_equal(m(x).numpy(), folded.numpy())  # deterministic (copy input)


def test_poisson_encoding_counts_in_range():
    m = _scaled_mlp(encoding="poisson", timesteps=10)
    x = np.random.default_rng(5).random((4, 28, 28, 1)).astype(np.float32)
    c = m(x).numpy()
    assert c.min() >= 0 and c.max() <= 10 and np.all(c == np.round(c))


def test_parameter_counts():
    assert M.snn_mlp_1().count_params() == 653_362
    assert M.snn_mlp_2().count_params() == 649_794
    assert M.associative_memory_net().count_params() == 506_000


def test_conv_net_shapes_and_counts():
    m = M.snn_conv_1(timesteps=3)
    assert m.count_params() == 2_065_882
    iir_coef = sum(int(np.prod(w.shape)) for l in m.layers if l.name.startswith("synapse")
                   for w in l.trainable_weights)
    assert iir_coef == 389_616
    assert tuple(m(np.zeros((1, 28, 28, 1), np.float32)).shape) == (1, 10)


def test_psp_max_pool():
    x = tf.constant(np.random.default_rng(6).random((2, 3, 34, 34, 2)), tf.float32)
    y = iir.PSPMaxPool2D(2, padding=1)(x)
    assert tuple(y.shape) == (2, 3, 18, 18, 2)
    ref = tf.nn.max_pool2d(tf.pad(x[:, 1], [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-9.0),
                           2, 2, "VALID")
    np.testing.assert_array_equal(y[:, 1].numpy(), ref.numpy())


@pytest.mark.parametrize("state", ["zero", "carry"])
def test_model_round_trip(tmp_path, state):
    m = _scaled_mlp(state=state, batch_size=3 if state == "carry" else None, timesteps=8)
    x = np.random.default_rng(7).random((3, 28, 28, 1)).astype(np.float32)
    m.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(back(x).numpy(), m(x).numpy())
    cfg = back.get_layer("neuron1").get_config()
    assert cfg["state"] == state and cfg["sigma"] == 0.4 and cfg["tau_m"] == 4.0


def test_train_flags_are_validated():
    with pytest.raises(runs.ConfigError, match="--model"):
        train_iir.resolve({"model": "snn_mlp_9"})
    with pytest.raises(runs.ConfigError, match="--state"):
        train_iir.resolve({"state": "keep"})
    with pytest.raises(runs.ConfigError, match="--lr_milestones"):
        train_iir.resolve({"lr_milestones": "100,50"})
    assert train_iir.resolve({"lr_milestones": "50,100"})["lr_milestones"] == [50, 100]


def test_multistep_schedule():
    s = multistep_lr(1e-4, [2, 4], 0.1, 10)
    lrs = [float(s(i)) for i in (0, 19, 20, 39, 40)]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 1e-5, 1e-5, 1e-6], rtol=1e-5)


def test_train_and_resume_tiny(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (48, 28, 28, 1)).astype(np.uint8)
    y = rng.integers(0, 10, 48)
    arrays = ((x[:32], y[:32]), None, (x[32:], y[32:]))
    cfg = dict(timesteps=5, epochs=1, batch_size=16, run_dir=str(tmp_path / "r"), verbose=0,
               tensorboard=False, state="carry")
    r1 = train_iir.train(cfg, arrays=arrays)
    assert r1["epochs"] == 1 and 0.0 <= r1["test_accuracy"] <= 1.0
    r2 = train_iir.train({**cfg, "epochs": 2, "resume": True}, arrays=arrays)
    assert r2["epochs"] == 2
    assert len((tmp_path / "r" / "history.csv").read_text().strip().splitlines()) == 3
    assert (tmp_path / "r" / "model.keras").is_file()


def test_test_accuracy_is_the_best_dev_epochs(tmp_path):
    import csv
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (64, 28, 28, 1)).astype(np.uint8)
    y = (x[:, 10:18, 10:18, 0].mean((1, 2)) > 127).astype(int)  # learnable
    arrays = ((x[:32], y[:32]), (x[32:48], y[32:48]), (x[48:], y[48:]))
    cfg = dict(timesteps=4, epochs=3, batch_size=16, learning_rate=3e-3,
               run_dir=str(tmp_path / "r"), verbose=0, tensorboard=False)
    r = train_iir.train(cfg, arrays=arrays)
    rows = list(csv.DictReader(open(tmp_path / "r" / "history.csv")))
    acc = [float(row["val_accuracy"]) for row in rows]
    assert r["best_epoch"] == int(np.argmax(acc)) + 1  # first maximum
    best = keras.models.load_model(runs.RunDir(tmp_path / "r").best)
    _, want = best.evaluate(train_iir.eval_dataset(*arrays[2], 16), verbose=0)
    assert r["test_accuracy"] == pytest.approx(want) and "test_accuracy_last" in r
    assert set(r["filter_stability"]) == {"synapse1", "synapse2", "synapse3"}
    assert {"stable_synapse1", "stable_synapse3"} <= set(rows[0])


def test_import_tfsnn_registers_everything_a_saved_model_holds(tmp_path):
    """A fresh interpreter that only imports tfsnn loads IIR models and their loss."""
    import subprocess
    import sys
    m = M.associative_memory_net(timesteps=6, channels=4, widths=(3, 2, 3), filter_radius=0.95)
    m.compile("adam", FilteredMSE())
    m.save(tmp_path / "m.keras")
    code = ("import sys, tfsnn, keras; m = keras.models.load_model(sys.argv[1]); "
            "print(type(m.loss).__name__, m.get_layer('synapse2').max_radius)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["FilteredMSE", "0.95"]


@pytest.mark.slow
def test_real_fashion_mnist_snn_mlp_1_learns(tmp_path):
    """snn_mlp_1 on 5,000 real Fashion-MNIST images, one epoch (lr 1e-3): well above chance."""
    from tfsnn import data
    try:
        (x, y), (xt, yt) = data.load("fashion_mnist", download=False)
    except data.DatasetNotFoundError:
        pytest.skip("Fashion-MNIST not available offline")
    r = train_iir.train(dict(epochs=1, learning_rate=1e-3, run_dir=str(tmp_path / "f"),
                             verbose=0, tensorboard=False),
                        arrays=((x[:5000], y[:5000]), None, (xt[:1000], yt[:1000])))
    assert r["test_accuracy"] > 0.5


@pytest.mark.parametrize("name", ["snn_mlp_2", "snn_conv_1"])
def test_every_weight_gets_a_gradient(name):
    keras.utils.set_random_seed(9)
    m = M.iir_model(name, timesteps=4, state="carry", batch_size=2)
    x = np.random.default_rng(9).random((2, 28, 28, 1)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([1, 2]), m(x))
    grads = tape.gradient(loss, m.trainable_weights)
    assert all(g is not None for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0
