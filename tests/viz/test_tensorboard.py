"""TensorBoard spike-activity callback: statistics by hand, tags read back with TensorBoard."""
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
    for i in range(1, 6):
        for kind in ("events_per_neuron", "sops_per_image", "counts", "activity"):
            assert f"spikes/act{i}/{kind}" in tags
    assert "spikes/total/sops_per_image" in tags
    steps = [e.step for e in acc.Tensors("spikes/act2/events_per_neuron")]
    assert steps == [0, 1]
    img = acc.Tensors("spikes/act3/activity")[0].tensor_proto
    assert img.string_val[2][:4] == b"\x89PNG"  # [width, height, png]


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
    callbacks.log_simulation(tmp_path / "tb", res, trains)
    acc = read_tags(tmp_path / "tb")
    tags = set(acc.Tags()["tensors"])
    for want in ("snn/accuracy", "snn/ann_accuracy", "snn/conv2/firing_rate",
                 "snn/conv2/sops_per_image", "snn/output/sops_per_image", "snn/total/sops_per_image",
                 "snn/conv3/net_counts", "snn/conv3/raster", "snn/conv1/spikes_per_image"):
        assert want in tags, want
    steps = [e.step for e in acc.Tensors("snn/accuracy")]
    assert steps == list(range(1, 13))
    last = acc.Tensors("snn/total/sops_per_image")[-1]
    assert float(tf_value(last)) == pytest.approx(res.sops_per_image()["total"])
    paths = callbacks.save_simulation_plots(tmp_path / "png", res, trains, ann_macs=1e6)
    names = sorted(p.name for p in paths)
    assert names[:3] == ["accuracy_vs_timestep.png", "firing_rates.png", "raster_conv1.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def tf_value(event):
    import tensorflow as tf
    return tf.make_ndarray(event.tensor_proto)
