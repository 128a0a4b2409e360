"""Spiking architectures and their ANN twins (spec §2.10, §3.6)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.models import spiking as sm
from tfsnn.layers.neurons import lif as nr
from tfsnn.conversion.balancing import transfer_weights
from tfsnn.layers.readouts import LeakyMeanReadout, SumReadout
from tfsnn.layers.sequence import TimeFolded

# Expected kernel counts (convs incl. 1x1 shortcuts + FCs incl. output).
KERNELS = {"vgg5": 6, "vgg9": 10, "vgg11": 12, "vgg13": 13, "vgg16": 16, "resnet12": 15,
           "resnet20": 23, "resnet34": 39, "resnet11": 14, "spike_bp_vgg9": 9,
           "spike_bp_lenet": 4}


@pytest.mark.parametrize("name", sm.names())
def test_twins_have_matching_kernels(name):
    small = None if name == "spike_bp_lenet" else (16, 16, 3)  # keep the big FCs small
    fcs = None if name in sm.RESNET_BLOCKS else [16] * (2 if name[:3] == "vgg" else 1)
    ann = sm.ann(name, input_shape=small, fc_widths=fcs)
    snn = sm.snn(name, timesteps=3, input_shape=small, fc_widths=fcs)
    assert len(sm.kernel_layers(ann)) == KERNELS[name]
    transfer_weights(ann, snn)
    for a, s in zip(sm.kernel_layers(ann), sm.kernel_layers(snn)):
        np.testing.assert_array_equal(a.kernel.numpy(), s.kernel.numpy())
        assert not getattr(a, "use_bias", False) and not getattr(s, "use_bias", False)
    fam = sm.FAMILY[name]
    spiking = [type(l) for l in snn.layers if isinstance(l, nr.LIF)]
    main = nr.RathiNeuron if fam == "rathi" else nr.LeeNeuron
    n_relu = sum(isinstance(l, keras.layers.ReLU) for l in ann.layers)
    assert spiking.count(main) == n_relu
    readout = snn.get_layer("readout")
    assert isinstance(readout, SumReadout if fam == "rathi" else LeakyMeanReadout)


def test_paper_shapes_and_forward():
    """CIFAR sizes: the first FC has the fan-in of the original configs."""
    fan_in = {"vgg5": 8192, "vgg9": 2048, "vgg11": 8192, "vgg16": 2048, "spike_bp_vgg9": 4096,
              "resnet11": 8192}
    for name, n in fan_in.items():
        fc = sm.ann(name, fc_widths=[8]).get_layer("fc1")
        assert fc.kernel.shape[0] == n, name
    assert sm.ann("resnet20").get_layer("output").kernel.shape == (2048, 10)
    assert len(sm.kernel_layers(sm.ann("vgg16"))) == 16  # full size, paper classifier
    lenet = sm.snn("spike_bp_lenet", timesteps=5, encoder="poisson_half")
    assert lenet.get_layer("fc1").kernel.shape == (2450, 200)
    y = lenet(np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32"))
    assert y.shape == (2, 10) and np.all(np.isfinite(y.numpy()))
    assert lenet.get_layer("pool1_spike").threshold_init == 0.75


def test_snn_trains_end_to_end_and_roundtrips(tmp_path):
    snn = sm.snn("spike_bp_lenet", timesteps=4, input_shape=(12, 12, 1), num_classes=3,
                 encoder="poisson_half")
    x = np.random.default_rng(1).random((4, 12, 12, 1)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(snn(x, training=True) - 0.1))
    grads = tape.gradient(loss, snn.trainable_weights)
    assert len(grads) == 4 and all(g is not None for g in grads)
    path = tmp_path / "lenet.keras"
    snn.save(path)
    loaded = keras.models.load_model(path)
    assert [w.shape for w in loaded.weights] == [w.shape for w in snn.weights]
    assert isinstance(loaded.get_layer("conv1"), TimeFolded)


def test_time_folded_equals_per_frame():
    rng = np.random.default_rng(2)
    x = rng.random((2, 5, 6, 6, 3)).astype("float32")
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    y = TimeFolded(conv)(x)
    ref = np.stack([conv(x[:, t]).numpy() for t in range(5)], axis=1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert TimeFolded(keras.layers.Flatten())(x).shape == (2, 5, 108)


def test_bad_names_and_args():
    with pytest.raises(ValueError, match="unknown SNN architecture 'vgg8'"):
        sm.ann("vgg8")
    with pytest.raises(ValueError, match="timesteps"):
        sm.snn("vgg5", timesteps=None)
    with pytest.raises(ValueError, match="no hidden FC"):
        sm.ann("resnet20", fc_widths=[10])
    with pytest.raises(ValueError, match="unknown encoder"):
        sm.snn("spike_bp_lenet", timesteps=2, encoder="rank")


def test_divide_by_time_readout(tmp_path):
    """``divide_by_time``: Rathi's summed readout divided by T (same weights: logits / T, the
    same predictions); kept through .keras; Lee's models refuse it."""
    t, low = 12, {"threshold": 0.01}  # low thresholds; T past the layers' one-step delays
    keras.utils.set_random_seed(0)
    summed = sm.snn("vgg5", timesteps=t, num_classes=10, input_shape=(12, 12, 1),
                    encoder="direct", fc_widths=(16,), dropout=0.0, neuron_kwargs=low)
    mean = sm.snn("vgg5", timesteps=t, num_classes=10, input_shape=(12, 12, 1),
                  encoder="direct", fc_widths=(16,), dropout=0.0, divide_by_time=True,
                  neuron_kwargs=low)
    mean.set_weights(summed.get_weights())
    x = np.random.default_rng(1).random((3, 12, 12, 1)).astype(np.float32)
    a, b = summed(x).numpy(), mean(x).numpy()
    assert np.abs(a).max() > 0
    np.testing.assert_allclose(b, a / t, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    mean.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert back.get_layer("readout").divide_by_time
    np.testing.assert_allclose(back(x).numpy(), b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="divide_by_time"):
        sm.snn("spike_bp_lenet", timesteps=2, divide_by_time=True)
