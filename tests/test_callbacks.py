"""TensorBoard spike-activity callback: statistics by hand, tags read back with TensorBoard."""
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from tfsnn import callbacks, models


def read_tags(directory):
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_activity_stats_by_hand():
    out = np.zeros((2, 3, 3, 1))
    out[0, 0, 0, 0], out[1, 1, 1, 0] = 2, 1
    fan = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    rate, sops, counts = callbacks.activity_stats(out, scale=2, fanout=fan)
    assert rate == pytest.approx((4 + 2) / 18)
    assert sops == pytest.approx((4 * 1 + 2 * 4) / 2)
    assert counts.shape == (2, 9)
    spikes = np.zeros((2, 4, 5))
    spikes[:, 1, :] = 1
    rate, sops, _ = callbacks.activity_stats(spikes, fanout=3, time_axis=True)
    assert rate == pytest.approx(0.25) and sops == pytest.approx(15)


def test_all_int_probes_fanouts():
    m = models.all_int_model("all_int_lenet", k=1)
    probes = callbacks.all_int_probes(m, 1)
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
    cb = callbacks.SpikeActivity(tmp_path, x[:8], callbacks.all_int_probes(m, 0))
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
