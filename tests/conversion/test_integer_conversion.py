"""tfsnn.convert: exact integer thresholds, sign folding, flag wiring, errors, serialization."""
import numpy as np
import keras
import pytest
import tensorflow as tf

from tfsnn import conversion as cv
from tfsnn import quantizers as q
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense
from tfsnn.layers.neurons.integer import OutputAccumulator, SpikeEncoder
from tfsnn.conversion import thresholds

from references import ann_levels
from snn_common import ann_activations, calibrated_lenet, mnist_test, tiny_model


def _act(quantizer, c=64, seed=0, neg=0.2, zero=0.05):
    """A built QuantActivation with random BN (some gamma < 0 and == 0)."""
    rng = np.random.default_rng(seed)
    act = QuantActivation(quantizer)
    act.build((None, 1, 1, c))
    gamma = rng.uniform(0.05, 2.0, c) * np.where(rng.random(c) < neg, -1, 1)
    gamma[rng.random(c) < zero] = 0.0
    act.bn.set_weights([gamma, rng.uniform(-1, 2, c), rng.normal(0, 20, c),
                        rng.uniform(0.1, 400, c)])
    return act, gamma


def _keras_level(act, z, scale):
    return np.asarray(act(tf.constant(z[None, :, None, :], tf.float32), training=False),
                      np.float64)[0, :, 0, :] * scale


@pytest.mark.parametrize("k", [0, 1, 2])
def test_int_thresholds_reproduce_keras_on_dense_integer_grid(k):
    act, gamma = _act(q.KLevel(k), seed=k)
    flip = gamma < 0
    m = 48
    th = thresholds.int_thresholds(act, k, m, flip)
    assert th.dtype == np.int32 and th.shape == (64, m)
    assert np.all(np.diff(th.astype(np.int64), axis=1) >= 0)
    v = np.arange(-3000, 3001, dtype=np.int64)[:, None].repeat(64, 1)  # membrane grid [N, C]
    sign = np.where(flip, -1, 1)
    want = np.minimum(_keras_level(act, (sign * v / 2 ** k).astype(np.float32), 2 ** k), m)
    got = tf.searchsorted(th, tf.constant(v.T, tf.int32), side="right").numpy().T
    np.testing.assert_array_equal(got, want)
    # float (analytic float64) thresholds agree except at float ties
    fth = thresholds.float_thresholds(act, k, m, flip)
    gotf = tf.searchsorted(fth, tf.constant(v.T, tf.float64), side="right").numpy().T
    assert np.mean(gotf != want) < 1e-4


def test_gamma_zero_channel_is_constant_level():
    act, gamma = _act(q.KLevel(0), c=16, seed=3, neg=0.0, zero=1.0)
    assert np.all(gamma == 0)
    th = thresholds.int_thresholds(act, 0, 8, gamma < 0)
    beta = act.bn.get_weights()[1]
    q0 = np.floor(np.maximum(beta, 0) + 0.5)
    levels = (th == thresholds.INT_ALWAYS).sum(1)
    np.testing.assert_array_equal(levels, np.minimum(q0, 8))
    assert np.all((th == thresholds.INT_ALWAYS) | (th == thresholds.INT_NEVER))


def test_encoder_thresholds_exact_at_float32_boundaries():
    act, gamma = _act(q.FirstLayer(4), c=32, seed=5)
    th, flip = thresholds.encoder_thresholds(act, 4)
    assert th.dtype == np.float32 and th.shape == (32, 4)
    np.testing.assert_array_equal(flip, gamma < 0)
    fin = np.where(np.isfinite(th), th, 0).astype(np.float32)
    # each threshold, its float32 neighbours, and random values
    probes = np.concatenate([fin.T, np.nextafter(fin, -np.inf).T, np.nextafter(fin, np.inf).T,
                             np.random.default_rng(0).normal(0, 40, (200, 32)).astype(np.float32)])
    sign = np.where(flip, -1, 1).astype(np.float32)
    want = _keras_level(act, sign * probes, 1.0)
    got = tf.searchsorted(th, tf.constant(probes.T), side="right").numpy().T
    np.testing.assert_array_equal(got, want)


def test_flag_wiring_and_integer_dtypes():
    m = calibrated_lenet(k=1)
    snn = cv.convert(m, timesteps=8)
    enc, hidden, out = cv.split_snn(snn)
    assert isinstance(enc, SpikeEncoder) and isinstance(out, OutputAccumulator)
    assert [l.name for l in hidden] == ["conv2", "conv3", "conv4", "conv5"]
    assert enc.amplitude == 2 and enc.kernel.dtype == "float32"
    np.testing.assert_array_equal(enc.get_weights()[0], m.get_layer("conv1").kernel.numpy())
    for layer in hidden:
        kern, thr = layer.get_weights()
        assert kern.dtype == np.int32 and thr.dtype == np.int32
        assert set(np.unique(kern)) <= {-1, 0, 1}
        np.testing.assert_array_equal(kern, m.get_layer(layer.name).quantized_kernel().numpy())
    np.testing.assert_array_equal(out.get_weights()[0], m.get_layer("output").kernel.numpy())
    snn_f = cv.convert(m, timesteps=8, use_int=False)
    assert cv.split_snn(snn_f)[1][0].get_weights()[1].dtype == np.float64


def test_threshold_form_ann_equals_keras_on_real_images():
    x, _ = mnist_test(300)
    for k in (0, 1):
        m = calibrated_lenet(k=k)
        acts, logits = ann_activations(m, x)
        for use_int in (True, False):
            snn = cv.convert(m, timesteps=64, use_int=use_int)
            levels, y = ann_levels(snn, x)
            for a, lev in zip(acts, levels):
                np.testing.assert_array_equal(np.asarray(lev), a * 2 ** k)
            np.testing.assert_allclose(np.asarray(y), logits * 2 ** k, rtol=1e-5, atol=1e-4)


def test_sign_folding_negative_gamma_real_images():
    x, _ = mnist_test(200)
    m = calibrated_lenet(k=0, seed=1, neg_gamma=0.3, zero_gamma=0.05)
    assert any(np.any(m.get_layer(f"act{i}").bn.gamma.numpy() < 0) for i in range(1, 6))
    acts, _ = ann_activations(m, x)
    levels, _ = ann_levels(cv.convert(m, timesteps=64), x)
    for a, lev in zip(acts, levels):
        np.testing.assert_array_equal(np.asarray(lev), a)


def test_unsupported_layers_named_in_error():
    inp = keras.Input((8, 8, 1))
    h = QuantConv2D(2, 3, name="c1")(inp)
    h = QuantActivation("first_layer", name="a1")(h)
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = QuantConv2D(2, 3, kernel_quantizer="ternary", name="c2")(h)
    h = QuantActivation("k_level", name="a2")(h)
    out = QuantDense(3, name="output")(keras.layers.Flatten()(h))
    with pytest.raises(ValueError, match=r"'norm' \(LayerNormalization\).*Supported"):
        cv.convert(keras.Model(inp, out))
    inp = keras.Input((8, 8, 1))
    h = QuantConv2D(2, 3, name="c1")(inp)
    h = QuantActivation(None, name="a1")(h)
    with pytest.raises(ValueError, match="'a1'.*FirstLayer"):
        cv.convert(keras.Model(inp, QuantDense(3)(keras.layers.Flatten()(h))))


def test_bad_arguments():
    m, _ = tiny_model(k=1)
    with pytest.raises(ValueError, match="k=0 does not match"):
        cv.convert(m, k=0)
    with pytest.raises(ValueError, match="timesteps"):
        cv.convert(m, timesteps=0)
    fp, _ = tiny_model(k=0, ternary=False)
    with pytest.raises(ValueError, match="'conv2'.*integer"):
        cv.convert(fp, use_int=True)
    cv.convert(fp, use_int=False)  # float mode takes FP hidden weights


def test_keras_round_trip(tmp_path):
    m, x = tiny_model(k=1)
    for use_int in (True, False):
        snn = cv.convert(m, timesteps=6, use_int=use_int)
        path = tmp_path / f"snn_{use_int}.keras"
        snn.save(path)
        back = keras.saving.load_model(path)
        np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(snn(x)))
        for a, b in zip(snn.get_weights(), back.get_weights()):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        for layer in back.layers[1:]:
            assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
