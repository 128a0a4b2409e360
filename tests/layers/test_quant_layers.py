"""Quantized layers and models: forward math, flag wiring, .keras and SavedModel round trips."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.models import all_int as models
from tfsnn.layers import QuantActivation, QuantConv2D, QuantDense


def test_quant_conv_uses_ternary_kernel():
    layer = QuantConv2D(4, 3, padding="same", kernel_quantizer="ternary")
    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype(np.float32)
    y = layer(x)
    w = layer.kernel.numpy()
    d = 0.7 * np.abs(w).mean()
    wt = np.where(w > d, 1.0, np.where(w < -d, -1.0, 0.0)).astype(np.float32)
    np.testing.assert_allclose(y, tf.nn.conv2d(x, wt, 1, "SAME"), rtol=1e-6, atol=1e-6)
    assert layer.compute_output_shape((2, 6, 6, 3)) == (2, 6, 6, 4)


def test_quant_activation_inference_matches_numpy_bn():
    layer = QuantActivation("k_level:1")
    x = np.random.default_rng(1).normal(2, 3, size=(64, 5)).astype(np.float32)
    layer(x)
    gamma, beta, mean, var = (np.random.default_rng(2).uniform(0.5, 2, 5).astype(np.float32)
                              for _ in range(4))
    layer.bn.set_weights([gamma, beta, mean, var])
    u = gamma * (x - mean) / np.sqrt(var + 1e-5) + beta
    want = np.floor(2 * np.maximum(u, 0) + 0.5) / 2
    got = layer(x, training=False).numpy()
    close = np.abs(2 * np.maximum(u, 0) + 0.5 - np.round(2 * np.maximum(u, 0) + 0.5)) < 1e-4
    np.testing.assert_array_equal(got[~close], want[~close])  # off float ties: exact
    assert layer.bn.momentum == 0.9 and layer.bn.epsilon == 1e-5


@pytest.mark.parametrize("ternary", [True, False])
def test_flag_wiring(ternary):
    m = models.all_int_model("all_int_lenet", k=1, ternary=ternary)
    convs = [l for l in m.layers if isinstance(l, QuantConv2D)]
    assert [l.name for l in convs] == [f"conv{i}" for i in range(1, 6)]
    assert convs[0].kernel_quantizer is None
    for l in convs[1:]:
        vals = set(np.unique(l.quantized_kernel().numpy()))
        assert (vals <= {-1.0, 0.0, 1.0}) == ternary
    assert m.get_layer("output").kernel_quantizer is None
    acts = [l.quantizer for l in m.layers if isinstance(l, QuantActivation)]
    assert acts[0].get_config() == {"levels": 4} and all(a.k == 1 for a in acts[1:])


def test_fp_twin_has_no_quantizers_and_same_shapes():
    fp = models.all_int_model("all_int_lenet", quantized=False)
    qm = models.all_int_model("all_int_lenet")
    assert fp.name == "all_int_lenet_fp"
    assert all(getattr(l, "quantizer", None) is None and getattr(l, "kernel_quantizer", None) is None
               for l in fp.layers)
    assert [w.shape for w in fp.weights] == [w.shape for w in qm.weights]


def test_vgg_shapes_and_macs():
    m = models.all_int_model("all_int_vgg", k=0)
    assert m.output_shape == (None, 10) and m.input_shape == (None, 24, 24, 3)
    assert m.count_params() - sum(np.prod(w.shape) for w in m.non_trainable_weights) > 0
    with pytest.raises(ValueError, match="unknown model"):
        models.all_int_model("resnet")


def _calibrated_lenet(k=1):
    m = models.all_int_model("all_int_lenet", k=k)
    x = np.random.default_rng(3).random((16, 28, 28, 1)).astype(np.float32)
    for _ in range(3):
        m(x, training=True)
    return m, x


def test_keras_round_trip(tmp_path):
    m, x = _calibrated_lenet()
    m.save(tmp_path / "m.keras")
    m2 = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(m2(x).numpy(), m(x).numpy())
    for name in ("conv2", "act3", "output"):
        assert m2.get_layer(name).get_config() == m.get_layer(name).get_config()


def test_savedmodel_round_trip(tmp_path):
    m, x = _calibrated_lenet()
    m.export(str(tmp_path / "sm"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_array_equal(reloaded.serve(tf.constant(x)).numpy(), m(x).numpy())


@pytest.mark.parametrize("layer", [
    QuantConv2D(3, (2, 3), strides=2, padding="same", kernel_quantizer="ternary"),
    QuantDense(7, kernel_quantizer="ternary"),
    QuantActivation("first_layer"),
    QuantActivation(None)])
def test_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="padding must be"):
        QuantConv2D(3, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        QuantConv2D(3, 0)
