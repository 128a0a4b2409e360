"""Hybrid conversion: threshold balancing, ANN agreement vs T, fine-tuning smoke (spec §5.10-§5.13)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.models import spiking as snn_models
from tfsnn.layers import encoders as enc
from tfsnn.layers.neurons import lif as nr
from tfsnn.training import hybrid
from tfsnn.conversion import balancing
from tfsnn.layers.readouts import SumReadout
from tfsnn.layers.sequence import TimeConstantDropout
from tfsnn.training.schedules import step_decay



def agreement(a, b):
    """Fraction of rows whose argmax agrees."""
    return float(np.mean(np.argmax(np.asarray(a), -1) == np.argmax(np.asarray(b), -1)))

def mlp(widths, n_in, spiking, leak=1.0, dropout=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, n_in) if spiking else (n_in,))
    h = inp
    for i, u in enumerate(widths[:-1]):
        h = keras.layers.Dense(u, use_bias=False, name=f"fc{i}")(h)
        h = nr.RathiNeuron(leak=leak, name=f"s{i}")(h) if spiking else keras.layers.ReLU()(h)
        if dropout:
            h = (TimeConstantDropout(dropout) if spiking else keras.layers.Dropout(dropout))(h)
    h = keras.layers.Dense(widths[-1], use_bias=False, name="out")(h)
    if spiking:
        h = SumReadout()(h)
    return keras.Model(inp, h)


def rathi_if_numpy(current, theta):
    """Reference Rathi IF (fire from V(t-1), subtract theta), current [N, T, M]."""
    v = np.zeros(current[:, 0].shape)
    out = np.zeros_like(current)
    for t in range(current.shape[1]):
        o = (v > theta).astype(current.dtype)
        v = v - theta * o + current[:, t]
        out[:, t] = o
    return out


def test_balance_matches_layer_by_layer_numpy_simulation():
    snn = mlp([8, 6, 3], 5, spiking=True, leak=0.9, dropout=0.5, seed=1)
    rng = np.random.default_rng(0)
    for layer in snn_models.kernel_layers(snn):
        layer.kernel.assign(np.abs(rng.normal(0.2, 0.5, layer.kernel.shape)).astype("float32"))
    x = rng.uniform(-1, 1, (20, 5)).astype("float32")
    seq = enc.poisson_encode(x, 40, signed=True, seed=(5, 6))
    found = balancing.balance_thresholds(snn, sequences=seq, scale=0.7, batch_size=7)
    w = [k.kernel.numpy().astype(np.float64) for k in snn_models.kernel_layers(snn)]
    i1 = seq.numpy().astype(np.float64) @ w[0]
    th1 = i1.max()
    i2 = rathi_if_numpy(i1, np.float32(th1)) @ w[1]  # leak 1 and no dropout while balancing
    th2 = i2.max()
    assert found["s0"] == pytest.approx(th1, rel=1e-5)
    assert found["s1"] == pytest.approx(th2, rel=1e-5)
    assert float(snn.get_layer("s0").theta.numpy()) == pytest.approx(0.7 * th1, rel=1e-5)
    assert float(snn.get_layer("s1").theta.numpy()) == pytest.approx(0.7 * th2, rel=1e-5)
    assert snn.get_layer("s0").leak == 0.9, "leak restored after balancing"
    p = balancing.balance_thresholds(snn, sequences=seq, scale=1.0, stat=100)
    assert p["s0"] == pytest.approx(th1, rel=1e-5)


def test_hybrid_agreement_with_ann_rises_with_timesteps():
    ann = mlp([128, 128, 10], 32, spiking=False, seed=0)
    snn = mlp([128, 128, 10], 32, spiking=True, seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (256, 32)).astype("float32")
    y = ann(x).numpy()
    balancing.convert(ann, snn, sequences=enc.poisson_encode(x, 200, signed=True, seed=(1, 2)),
                   scale=0.7)
    agree = {t: agreement(snn(enc.poisson_encode(x, t, signed=True, seed=(3, t))), y)
             for t in (25, 100, 400)}
    assert agree[400] >= 0.9
    # rate * theta of the first hidden layer tracks the ANN's (clipped) activation at large T
    seq = enc.poisson_encode(x, 400, signed=True, seed=(9, 9))
    rate = keras.Model(snn.input, snn.get_layer("s0").output)(seq).numpy().mean(axis=1)
    theta = float(snn.get_layer("s0").theta.numpy())
    act = np.maximum(x @ snn.get_layer("fc0").kernel.numpy(), 0)
    assert np.corrcoef((rate * theta).ravel(), np.minimum(act, theta).ravel())[0, 1] > 0.95
    assert agree[25] < agree[100] <= agree[400] + 0.03 and agree[25] < agree[400]


def test_convert_model_with_encoder_and_save_load(tmp_path):
    ann = snn_models.ann("resnet12", input_shape=(8, 8, 3))
    snn = snn_models.snn("resnet12", timesteps=4, input_shape=(8, 8, 3))
    for layer in snn_models.kernel_layers(ann):  # all-positive: every layer stays active
        layer.kernel.assign(np.abs(layer.kernel.numpy()))
    images = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    neurons_ = [n.name for n in balancing.spiking_layers(snn)]
    assert len(neurons_) == 3 + 2 * 4  # stem + two per block, block outputs included
    found = balancing.convert(ann, snn, images=images, scale=0.5, timesteps=24,
                           batch_size=3, seed=(1, 1))
    assert set(found) == set(neurons_) and all(v > 0 for v in found.values())
    path = tmp_path / "snn.keras"
    snn.save(path)
    loaded = keras.models.load_model(path)
    for name, th in found.items():
        assert float(loaded.get_layer(name).theta.numpy()) == pytest.approx(0.5 * th)
    with pytest.raises(ValueError, match="exactly one"):
        balancing.balance_thresholds(snn)


def test_transfer_weights_rejects_mismatch():
    with pytest.raises(ValueError, match="kernel"):
        balancing.transfer_weights(mlp([8, 3], 5, False), mlp([8, 6, 3], 5, True))
    with pytest.raises(ValueError, match="shape mismatch"):
        balancing.transfer_weights(mlp([8, 3], 5, False), mlp([7, 3], 5, True))


def test_fine_tuning_smoke_lowers_loss():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (128, 16)).astype("float32")
    labels = (x[:, :8].sum(1) > x[:, 8:].sum(1)).astype("int32")
    ann = mlp([32, 2], 16, spiking=False, seed=0)
    ann.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    ann.fit(x, labels, epochs=20, batch_size=32, verbose=0)
    snn = mlp([32, 2], 16, spiking=True, seed=1)
    seq = enc.poisson_encode(x, 20, signed=True, seed=(1, 2))
    balancing.convert(ann, snn, sequences=seq, scale=0.7)
    hybrid.compile_for_fine_tuning(snn, learning_rate=step_decay(3e-3, 4, 4))
    before = snn.evaluate(seq, labels, verbose=0, return_dict=True)
    hist = snn.fit(seq, labels, epochs=4, batch_size=32, verbose=0, shuffle=False)
    after = snn.evaluate(seq, labels, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"]
    assert after["accuracy"] >= before["accuracy"] - 0.05
    assert np.all(np.isfinite(hist.history["loss"]))
    assert float(snn.get_layer("s0").theta.numpy()) > 0 and snn.losses  # coupled L2 active
    assert snn.get_layer("fc0").get_config()["kernel_regularizer"] is not None  # kept on reload


def test_step_decay():
    sched = step_decay(1e-4, epochs=10, steps_per_epoch=5, reduce=10)
    lrs = [float(sched(s)) for s in (0, 29, 30, 39, 40, 44, 45, 49)]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6, 1e-7, 1e-7], rtol=1e-5)


def test_whole_step_xla_gradients_equal_graph_mode():
    """Fine-tuning's ``jit_compile=True`` compiles the whole train step with XLA: its gradients (a conv
    Rathi SNN with a spiking pool, leak < 1, STDB surrogate) equal those of the same step traced
    without XLA, whose neuron ops are checked against per-step autograd in tests/layers."""
    snn = snn_models.snn("vgg5", 10, 3, (8, 8, 1), encoder="direct", fc_widths=[8, 8], leak=0.95)
    snn.compile(jit_compile=False)
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)), tf.float32)
    y = tf.constant([0, 1, 2, 1])
    for layer in snn.layers:  # low thresholds: every layer spikes (one step of delay each)
        if isinstance(layer, nr.RathiNeuron):
            layer.theta.assign(tf.fill(layer.theta.shape, 0.05))

    def grads():
        with tf.GradientTape() as tape:
            out = snn(x, training=False)
            loss = tf.reduce_sum(
                keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True))
        return out, tape.gradient(loss, snn.trainable_weights)

    out_g, g_graph = tf.function(grads, jit_compile=False)()
    out_x, g_xla = tf.function(grads, jit_compile=True)()
    np.testing.assert_allclose(out_x, out_g, rtol=1e-5, atol=1e-5)
    assert all(float(tf.reduce_sum(tf.abs(b))) > 0 for b in g_graph)  # every kernel learns
    for a, b in zip(g_xla, g_graph):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(tf.reduce_max(tf.abs(b))) + 1e-7)
    hybrid.compile_for_fine_tuning(snn)
    assert snn.jit_compile is False and snn.get_layer("spike1").jit_compile is True  # default
    hybrid.compile_for_fine_tuning(snn, jit_compile=True)
    assert snn.jit_compile is True
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():  # replicas: neuron loops only
        net = mlp([4, 2], 3, spiking=True)
        hybrid.compile_for_fine_tuning(net)
        with pytest.raises(ValueError, match="strategy"):
            hybrid.compile_for_fine_tuning(net, jit_compile=True)
    assert net.jit_compile is False and net.get_layer("s0").jit_compile is True
