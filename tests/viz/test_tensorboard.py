"""TensorBoard views: statistics by hand, tags read back with TensorBoard's event reader equal
the documented list, one naming scheme and 0-based steps for training and simulation."""
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from tfsnn import accounting
from tfsnn.models import all_int as models
from tfsnn.viz import tensorboard as callbacks


def read_tags(directory):
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_activity_stats_by_hand():
    out = np.zeros((2, 3, 3, 1))
    out[0, 0, 0, 0], out[1, 1, 1, 0] = 2, 1
    fan = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    rate, sops, counts = accounting.activity_stats(out, scale=2, fanout=fan)
    assert rate == pytest.approx((4 + 2) / 18)
    assert sops == pytest.approx((4 * 1 + 2 * 4) / 2)
    assert counts.shape == (2, 9)
    spikes = np.zeros((2, 4, 5))
    spikes[:, 1, :] = 1
    rate, sops, _ = accounting.activity_stats(spikes, fanout=3, time_axis=True)
    assert rate == pytest.approx(0.25) and sops == pytest.approx(15)


def test_all_int_probes_fanouts():
    m = models.all_int_model("all_int_lenet", k=1)
    probes = accounting.all_int_probes(m, 1)
    assert list(probes) == [f"act{i}" for i in range(1, 6)]
    assert probes["act1"][0] == 1 and probes["act2"][0] == 2
    # act1 (24x24) feeds conv2 (2x2 stride 2, 32 filters): every input reaches 1 window x 32
    np.testing.assert_array_equal(probes["act1"][1], np.full((24, 24), 32))
    # act2 (12x12) feeds conv3 (5x5 valid, 64 filters): a corner reaches 1 window, centre 25
    assert probes["act2"][1][0, 0] == 64 and probes["act2"][1][6, 6] == 25 * 64
    assert probes["act5"][1] == 10


def test_callback_writes_expected_tags(tmp_path):
    m = models.all_int_model("all_int_lenet", k=0)
    m.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((20, 28, 28, 1)).astype(np.float32)
    y = np.arange(20) % 10
    cb = callbacks.SpikeActivity(tmp_path, x[:8], accounting.all_int_probes(m, 0))
    m.fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[cb])
    acc = read_tags(tmp_path / "spikes")
    tags = set(acc.Tags()["tensors"])
    # probes act<i> are named as the SNN layers conv<i>; SOPs belong to the receiving layer
    want = {f"spikes/conv{i}/{kind}" for i in range(1, 6)
            for kind in ("spikes_per_image", "spikes_per_neuron", "counts", "activity")}
    want |= {f"spikes/{n}/sops_per_image" for n in ("conv2", "conv3", "conv4", "conv5", "output")}
    want.add("spikes/total/sops_per_image")
    assert tags == want
    steps = [e.step for e in acc.Tensors("spikes/conv2/spikes_per_neuron")]
    assert steps == [0, 1]
    img = acc.Tensors("spikes/conv3/activity")[0].tensor_proto
    assert img.string_val[2][:4] == b"\x89PNG"  # [width, height, png]
    names = callbacks.snn_layer_names(m, ["act1", "act5"])
    assert names == {"act1": ("conv1", "conv2"), "act5": ("conv5", "output")}


def test_simulation_views(tmp_path, mnist_test_split):
    from tfsnn import conversion as convert, simulation as simulate
    x = mnist_test_split[0][:40].astype(np.float32) / 256.0
    y = mnist_test_split[1][:40]
    ann = models.all_int_model("all_int_lenet", k=0)
    for _ in range(3):
        ann(x, training=True)
    snn = convert.convert(ann, timesteps=12)
    res = simulate.simulate(snn, x, y, batch_size=20, ann=ann)
    trains = callbacks.sample_spike_trains(snn, x[:2])
    assert set(trains) == {f"conv{i}" for i in range(1, 6)}
    assert trains["conv3"].shape == (2, 12, 8, 8, 64)
    # the sample's per-step spikes agree with the simulation's counts (first batch of 20 contains them)
    np.testing.assert_array_equal(np.isin(trains["conv2"], [-1, 0, 1]), True)
    from tfsnn import accounting, report
    rep = report.from_sim(res, accounting.ann_macs(snn), snn=snn, dataset="mnist")
    callbacks.log_simulation(tmp_path / "tb", res, trains, report=rep, dataset="mnist")
    acc = read_tags(tmp_path / "tb")
    tags = set(acc.Tags()["tensors"])
    assert tags == callbacks.documented_tags(res, trains, rep)
    for want in ("snn/accuracy", "snn/ann_accuracy", "spikes/conv2/firing_rate",
                 "spikes/conv2/sops_per_image", "spikes/output/sops_per_image",
                 "spikes/total/sops_per_image", "spikes/conv3/counts", "spikes/conv3/activity",
                 "spikes/conv1/spikes_per_image", "energy/loihi", "energy/ann_cmos45_fp32",
                 "report/per_layer"):
        assert want in tags, want
    steps = [e.step for e in acc.Tensors("snn/accuracy")]
    assert steps == list(range(12))  # 0-based time steps
    assert [e.step for e in acc.Tensors("spikes/conv3/counts")] == list(range(12))
    last = acc.Tensors("spikes/total/sops_per_image")[-1]
    assert float(tf_value(last)) == pytest.approx(res.sops_per_image()["total"])
    e_last = acc.Tensors("energy/loihi")[-1]
    assert float(tf_value(e_last)) == pytest.approx(rep.totals["energy_J"]["loihi"] * 1e6, rel=1e-6)
    text = tf_value(acc.Tensors("report/per_layer")[0]).reshape(-1)[0].decode()
    assert text == rep.markdown()
    # histogram at the last step: net counts of the sampled images per neuron
    hist = tf_value(acc.Tensors("spikes/conv3/counts")[-1])  # [buckets, 3]: left, right, count
    assert hist[:, 2].sum() == 2 * 8 * 8 * 64  # 2 sampled images x conv3's neurons
    paths = callbacks.save_simulation_plots(tmp_path / "png", res, trains, ann_macs=1e6,
                                            report=rep, dataset="mnist")
    names = sorted(p.name for p in paths)
    assert names[:4] == ["accuracy_vs_timestep.png", "energy_vs_accuracy.png",
                         "firing_rates.png", "raster_conv1.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    for p in paths:
        assert p.with_suffix(".svg").is_file() and p.with_suffix(".pdf").is_file()


def tf_value(event):
    import tensorflow as tf
    return tf.make_ndarray(event.tensor_proto)


def test_callback_time_axis_names_neurons_after_their_synapses(tmp_path):
    import keras
    from tfsnn.layers import encoders
    from tfsnn.layers.neurons.lif import LIF
    from tfsnn.layers.sequence import TimeFolded
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1))
    h = encoders.PoissonEncoder(4, name="encoder")(inp)
    h = TimeFolded(keras.layers.Conv2D(2, 3, use_bias=False, name="c"), name="conv1")(h)
    h = LIF(threshold=0.2, leak=1.0, name="spike1")(h)
    h = TimeFolded(keras.layers.Flatten(name="f"), name="flatten")(h)
    out = keras.layers.Dense(3, name="output")(h)
    m = keras.Model(inp, keras.layers.Lambda(lambda z: z[:, -1])(out))
    m.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((6, 6, 6, 1)).astype(np.float32)
    cb = callbacks.SpikeActivity(tmp_path, x[:3], {"spike1": (1, 3)}, time_axis=True)
    m.fit(x, np.zeros(6), epochs=1, batch_size=3, verbose=0, callbacks=[cb])
    acc = read_tags(tmp_path / "spikes")
    assert set(acc.Tags()["tensors"]) == {
        "spikes/conv1/spikes_per_image", "spikes/conv1/spikes_per_neuron",
        "spikes/conv1/firing_rate", "spikes/output/sops_per_image", "spikes/conv1/counts",
        "spikes/conv1/activity", "spikes/total/sops_per_image"}
    assert [e.step for e in acc.Tensors("spikes/conv1/firing_rate")] == [0]
