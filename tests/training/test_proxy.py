"""Proxy learning: IF staircase, proxy gradient, weight sharing, separate / frozen BN statistics,
metrics (spec iir_and_proxy.md Part B, §C.3; invariants D.2.1-D.2.7)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import runs
from tfsnn.training import proxy
from tfsnn import metrics
from tfsnn.layers.neurons import proxy as proxy_layers
from tfsnn.models import proxy as proxy_models


def test_if_count_staircase():
    currents = np.array([0.3, 0.5, 0.7, 1.5, 1.9, 2.0, 3.0, 0.0, -0.5, -3.0], np.float32)
    s = proxy_layers.if_spikes(np.broadcast_to(currents, (1, 15, 10)), threshold=2.0).numpy()
    counts = s.sum(1)[0]
    np.testing.assert_array_equal(counts, [2, 3, 5, 7, 7, 15, 15, 0, 0, 0])
    for i, c in zip(currents[:7], counts[:7]):
        assert c == 15 // math.ceil(2.0 / i)
    # v = theta exactly fires (0.5 * 4 = 2.0) and v is exactly 0 after a spike
    np.testing.assert_array_equal(s[0, :8, 1], [0, 0, 0, 1, 0, 0, 0, 1])


def small_net(seed=0, threshold=0.5, width=4, **kw):
    keras.utils.set_random_seed(seed)
    return proxy_models.ProxyNet(width=width, timesteps=6, threshold=threshold, **kw)


def batch(seed=1, n=6):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.random((n, 28, 28, 1)), tf.float32),
            tf.constant(rng.integers(0, 10, n)))


def test_forward_value_is_the_snn_counts():
    m = small_net()
    x, _ = batch()
    c = m.snn(x, True)
    o = m(x, training=True)
    np.testing.assert_array_equal(o.numpy(), c.numpy())
    assert c.numpy().sum() > 0 and c.numpy().max() <= 6
    np.testing.assert_array_equal(m(x).numpy(), m.snn(x, False).numpy())


def test_train_step_gradient_is_the_ann_backward_at_the_snn_output():
    m = small_net(weight_decay=1e-3)
    m.compile(optimizer=keras.optimizers.SGD(1.0))
    x, y = batch()
    m.bn_update.assign(0.0)  # frozen statistics: forward passes do not change them
    before = [v.numpy().copy() for v in m.trainable_variables]
    c = m.snn(x, False)
    y1 = tf.one_hot(y, 10)
    with tf.GradientTape() as tape:
        a = m.ann(x, False)
    g_ref = tape.gradient(a, m.trainable_variables, output_gradients=2 * (c - y1) / (6 * 10))
    m.train_step((x, y))
    for v, b, g in zip(m.trainable_variables, before, g_ref):
        np.testing.assert_allclose(v.numpy(), b - (g.numpy() + 1e-3 * b), rtol=1e-5, atol=1e-7)
    # with c == a the proxy gradient is the plain ANN gradient of mean((a - Y)^2)
    with tf.GradientTape(persistent=True) as tape:
        a = m.ann(x, False)
        lp = m.proxy_loss(y, a + tf.stop_gradient(a - a))
        la = tf.reduce_mean(tf.square(a - y1))
    for g1, g2 in zip(tape.gradient(lp, m.trainable_variables),
                      tape.gradient(la, m.trainable_variables)):
        np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-6)


def test_no_gradient_into_the_snn_and_shared_variables():
    m = small_net()
    x, _ = batch()
    with tf.GradientTape() as tape:
        c = m.snn(x, True)
    assert all(g is None for g in tape.gradient(c, m.trainable_variables))
    with tf.GradientTape() as t_snn:
        m.snn(x, False)
    with tf.GradientTape() as t_ann:
        m.ann(x, False)
    snn_vars = [v for v in t_snn.watched_variables() if v.trainable]
    ann_vars = [v for v in t_ann.watched_variables() if v.trainable]
    assert len(snn_vars) == len(ann_vars) == 3 + 6 + 4  # kernels, gamma/beta x3, FC kernels
    assert {id(v) for v in snn_vars} == {id(v) for v in ann_vars}  # the same objects
    assert len(m.trainable_variables) == 13


def test_bn_statistics_separate_then_frozen():
    m = small_net()
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = batch()
    m.train_step((x, y))  # epoch 0: both branches in training mode
    # the static conv's BN sees the same pre-activation in both branches; the others differ
    np.testing.assert_allclose(m.bns[0].ann_mean.numpy(), m.bns[0].snn_mean.numpy(), rtol=1e-6)
    for bn in m.bns[1:]:
        assert not np.allclose(bn.ann_mean.numpy(), bn.snn_mean.numpy())
        assert not np.allclose(bn.snn_mean.numpy(), 0.0)
    m.bn_update.assign(0.0)  # from epoch 1 on
    stats = [v.numpy().copy() for bn in m.bns for v in (bn.ann_mean, bn.ann_var, bn.snn_mean,
                                                        bn.snn_var)]
    gammas = [bn.gamma.numpy().copy() for bn in m.bns]
    m.train_step(batch(2))
    after = [v.numpy() for bn in m.bns for v in (bn.ann_mean, bn.ann_var, bn.snn_mean,
                                                 bn.snn_var)]
    for s0, s1 in zip(stats, after):
        np.testing.assert_array_equal(s0, s1)
    assert any(not np.array_equal(g, bn.gamma.numpy()) for g, bn in zip(gammas, m.bns))


def test_time_axis_bn_equals_per_step_updates():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(2.0, 3.0, (5, 4, 3, 3, 2)), tf.float32)
    a, b = proxy_layers.ProxyBatchNorm(), proxy_layers.ProxyBatchNorm()
    ya = a(x, branch="snn", batch_stats=True, time_axis=True)
    yb = tf.stack([b(x[:, t], branch="snn", batch_stats=True) for t in range(4)], 1)
    np.testing.assert_allclose(ya.numpy(), yb.numpy(), atol=1e-5)
    np.testing.assert_allclose(a.snn_mean.numpy(), b.snn_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(a.snn_var.numpy(), b.snn_var.numpy(), atol=1e-5)
    np.testing.assert_array_equal(a.ann_mean.numpy(), [0, 0])
    # one PyTorch update: momentum 0.1, unbiased variance
    c = proxy_layers.ProxyBatchNorm()
    x0 = x[:, 0]
    c(x0, branch="ann", batch_stats=True)
    flat = x0.numpy().reshape(-1, 2)
    np.testing.assert_allclose(c.ann_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(c.ann_var.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)


@pytest.mark.parametrize("flag", [True, "tensor"])
def test_training_mode_bn_equals_keras_batch_norm(flag):
    """Training-mode ProxyBatchNorm (Python ``True`` or a tensor flag, which runs through
    ``tf.cond``) against keras.layers.BatchNormalization(training=True): output, moving mean and
    the gradients w.r.t. input, gamma and beta (moving variance: PyTorch's unbiased update, checked
    in the test above). With a False tensor flag the output is the moving-statistics one."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(1.0, 2.0, (6, 5, 5, 3)), tf.float32)
    mine = proxy_layers.ProxyBatchNorm()
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    mine.build(x.shape)
    ref.build(x.shape)
    g = rng.normal(1.0, 0.3, 3).astype(np.float32)
    bt = rng.normal(0.0, 0.3, 3).astype(np.float32)
    for layer in (mine, ref):
        layer.gamma.assign(g)
        layer.beta.assign(bt)
    up = tf.constant(rng.normal(size=x.shape), tf.float32)  # upstream gradient
    batch_stats = True if flag is True else tf.constant(True)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y1 = mine(x, branch="ann", batch_stats=batch_stats)
        y2 = ref(x, training=True)
        l1, l2 = tf.reduce_sum(y1 * up), tf.reduce_sum(y2 * up)
    np.testing.assert_allclose(y1.numpy(), y2.numpy(), atol=2e-5)
    np.testing.assert_allclose(mine.ann_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
    for a, b in ((x, x), (mine.gamma, ref.gamma), (mine.beta, ref.beta)):
        np.testing.assert_allclose(tape.gradient(l1, a).numpy(), tape.gradient(l2, b).numpy(),
                                   atol=1e-4)
    mean, var = mine.ann_mean.numpy().copy(), mine.ann_var.numpy().copy()
    y3 = mine(x, branch="ann", batch_stats=tf.constant(False))
    np.testing.assert_allclose(y3.numpy(), (x.numpy() - mean) / np.sqrt(var + 1e-5) * g + bt,
                               atol=1e-5)
    np.testing.assert_array_equal(mine.ann_mean.numpy(), mean)  # frozen: unchanged


def test_max_pool_of_spikes_is_or():
    s = tf.constant(np.random.default_rng(4).random((3, 8, 8, 2)) < 0.2, tf.float32)
    pooled = tf.nn.max_pool2d(s, 2, 2, "VALID").numpy()
    ref = s.numpy().reshape(3, 4, 2, 4, 2, 2).any(axis=(2, 4))
    np.testing.assert_array_equal(pooled, ref.astype(np.float32))


def test_strict_argmax_and_lenient_metrics_on_ties():
    counts = tf.constant([[0, 0, 0], [2, 2, 0], [0, 3, 1], [1, 0, 1], [0, 1, 1]], tf.float32)
    labels = tf.constant([0, 0, 1, 2, 2])
    np.testing.assert_array_equal(metrics.strict_accuracy(labels, counts).numpy(), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(metrics.argmax_accuracy(labels, counts).numpy(), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(metrics.lenient_accuracy(labels, counts).numpy(), [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(metrics.strict_accuracy(tf.one_hot(labels, 3), counts).numpy(),
                                  [0, 0, 1, 0, 0])
    ties = metrics.tie_breakdown(labels, counts)  # rows 0, 1, 3, 4: true class tied at the top
    assert ties == {"tied_fraction": 0.8, "top_count_histogram": [1, 2, 1, 1],
                    "tied_by_top_count": [1, 2, 1, 0]}
    lenient = metrics.lenient_accuracy(labels, counts).numpy().mean()
    assert ties["tied_fraction"] == pytest.approx(lenient - metrics.strict_accuracy(
        labels, counts).numpy().mean())
    with pytest.raises(ValueError, match="labels"):
        metrics.tie_breakdown(labels[:2], counts)


def test_parameter_count_and_round_trip(tmp_path):
    assert sum(int(np.prod(v.shape)) for v in proxy_models.proxy_fashion_mnist().trainable_variables) \
        == 19_599_744
    m = small_net()
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = batch()
    m.train_step((x, y))
    m.bn_update.assign(0.0)
    m.save(tmp_path / "p.keras")
    back = keras.models.load_model(tmp_path / "p.keras")
    np.testing.assert_array_equal(back(x).numpy(), m(x).numpy())
    assert float(back.bn_update) == 0.0
    np.testing.assert_array_equal(back.bns[1].snn_var.numpy(), m.bns[1].snn_var.numpy())


def test_flags_and_tiny_training(tmp_path):
    with pytest.raises(runs.ConfigError, match="--width"):
        proxy.resolve({"width": 0})
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (24, 28, 28, 1)).astype(np.uint8)
    y = rng.integers(0, 10, 24)
    cfg = dict(width=2, timesteps=3, epochs=2, batch_size=8, run_dir=str(tmp_path / "p"),
               verbose=0, tensorboard=False)
    r = proxy.train(cfg, arrays=((x[:16], y[:16]), (x[16:], y[16:])))
    assert r["epochs"] == 2 and len(r["epoch_curve"]["val_strict_accuracy"]) == 2
    assert r["test_strict_accuracy"] <= r["test_argmax_accuracy"] <= r["test_lenient_accuracy"]
    assert r["test_ties"]["tied_fraction"] == pytest.approx(
        r["test_lenient_accuracy"] - r["test_strict_accuracy"], abs=1e-6)
    assert sum(r["test_ties"]["top_count_histogram"]) == 8
    back = keras.models.load_model(tmp_path / "p" / "model.keras")
    assert float(back.bn_update) == 0.0  # frozen after the first epoch
    # the one-pass scores equal Keras' evaluate (loss: the mean of per-batch losses; 8 test
    # images in batches of 3 make a partial last batch)
    ds = tf.data.Dataset.from_tensor_slices((x[16:].astype(np.float32) / 255.0, y[16:])).batch(3)
    back.compile(optimizer="adam")
    ev = back.evaluate(ds, verbose=0, return_dict=True)
    got = proxy.test_scores(back, ds, y[16:], 3)
    for k in ("strict_accuracy", "argmax_accuracy", "lenient_accuracy", "loss"):
        assert got[f"test_{k}"] == pytest.approx(float(ev[k]), abs=1e-6), k
    with pytest.raises(ValueError, match="predictions for"):
        proxy.test_scores(back, ds, y[15:], 3)


def test_augment_crop_pad():
    img = tf.ones((2, 28, 28, 1))
    out = proxy.augment(img, tf.constant([[1, 2], [3, 4]], tf.int64)).numpy()
    assert out.shape == (2, 28, 28, 1)
    assert out[:, 0].sum() == 0 and out[:, :, 0].sum() == 0 and out[:, 1:27, 1:27].min() == 1


def test_target_spikes_and_rate_target_losses():
    """The loss against ``k * one_hot`` (``target_spikes``) and ``o/T`` against the one-hot
    (``rate_target``), checked with numpy; bad values are refused naming the flag."""
    x, y = batch()
    o = tf.constant(np.random.default_rng(3).integers(0, 7, (6, 10)), tf.float32)
    y1 = np.eye(10)[y.numpy()]
    for kw, ref in (({}, np.mean((o.numpy() - y1) ** 2)),
                    ({"target_spikes": 4.0}, np.mean((o.numpy() - 4 * y1) ** 2)),
                    ({"rate_target": True}, np.mean((o.numpy() / 6 - y1) ** 2))):
        np.testing.assert_allclose(small_net(**kw).proxy_loss(y, o).numpy(), ref, rtol=1e-6)
    m = small_net(target_spikes=3.0)
    assert proxy_models.ProxyNet.from_config(m.get_config()).target_spikes == 3.0
    for bad in ({"target_spikes": 0}, {"target_spikes": 16}, {"rate_target": True,
                                                              "target_spikes": 2}):
        with pytest.raises(runs.ConfigError, match="--target_spikes"):
            proxy.resolve(bad)
    with pytest.raises(ValueError, match="target_spikes"):
        small_net(target_spikes=7.0)  # more than timesteps=6


def test_lr_milestones_schedule():
    """``--lr_milestones`` / ``--lr_gamma``: x gamma from each milestone epoch on (constant by
    default, the recipe's); bad values name the flag."""
    c = proxy.resolve({"learning_rate": 1e-3, "lr_milestones": "2,3", "lr_gamma": 0.5})
    assert c["lr_milestones"] == [2, 3]
    sched = proxy.learning_rate(c, steps_per_epoch=10)
    got = [float(sched(s)) for s in (0, 19, 20, 29, 30, 100)]
    np.testing.assert_allclose(got, [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4], rtol=1e-6)
    assert proxy.learning_rate(proxy.resolve({}), 10) == 1e-4
    for bad, flag in (({"lr_milestones": "3,2"}, "--lr_milestones"),
                      ({"lr_gamma": 0}, "--lr_gamma")):
        with pytest.raises(runs.ConfigError, match=flag):
            proxy.resolve(bad)


def test_freeze_batch_norm_schedule():
    """``FreezeBatchNorm(after)``: BN in training mode (``bn_update`` 1) for epochs ``< after``,
    frozen from then on, set from the epoch index alone (right on resumed runs); ``after`` >=
    the epochs run never freezes; ``--freeze_bn_after`` must be an integer >= 0."""
    m = small_net()
    for after, expected in ((1, [1, 0, 0, 0]), (3, [1, 1, 1, 0]), (9, [1, 1, 1, 1]),
                            (0, [0, 0, 0, 0])):
        cb = proxy.FreezeBatchNorm(after)
        cb.set_model(m)
        got = []
        for epoch in (0, 1, 2, 3):
            cb.on_epoch_begin(epoch)
            got.append(float(m.bn_update))
        assert got == expected, after
    cb = proxy.FreezeBatchNorm(2)
    cb.set_model(m)
    cb.on_epoch_begin(5)  # a resumed run starting at epoch 5
    assert float(m.bn_update) == 0.0
    cb.on_epoch_begin(1)
    assert float(m.bn_update) == 1.0
    for bad in (-1, 1.5):
        with pytest.raises(runs.ConfigError, match="--freeze_bn_after"):
            proxy.resolve({"freeze_bn_after": bad})
