"""The per-layer report: totals equal the stat files', rows equal SimResult's counts, renderings
and files."""
import json

import numpy as np
import pytest

from snn_common import tiny_model
from tfsnn import accounting, conversion as cv, report, simulation as sim


@pytest.fixture(scope="module")
def tiny_run():
    m, x = tiny_model(k=0, seed=7)
    snn = cv.convert(m, timesteps=8)
    y = np.arange(len(x)) % 4
    res = sim.simulate(snn, x[:30], y[:30], batch_size=10, ann=m)
    return snn, res


def test_totals_equal_stat_files(tiny_run):
    snn, res = tiny_run
    rep = report.from_sim(res, accounting.ann_macs(snn), snn=snn, dataset="random")
    series = res.stat_series()  # what spike_num.txt / sop_num.txt hold, [nb, T]
    n = res.n_images
    assert rep.totals["spikes_per_image_hidden"] == pytest.approx(
        series["spike_num.txt"][:, -1].sum() / n)
    assert rep.totals["sops_per_image"] == pytest.approx(series["sop_num.txt"][:, -1].sum() / n)
    assert rep.totals["spikes_per_image"] == pytest.approx(res.spikes_per_image()["total"])
    macs = accounting.ann_macs(snn)
    assert rep.totals["ann_macs_per_image"] == macs["total"]
    assert rep.totals["ann_macs_per_image_without_encoder"] == macs["total_hidden_and_output"]
    assert rep.totals["sop_over_mac"] == pytest.approx(
        res.sops_per_image()["total"] / macs["total_hidden_and_output"])
    by_layer = {r["layer"]: r for r in rep.rows}
    neurons = {"conv1": 7 * 7 * 2, "conv2": 4 * 4 * 3, "conv3": 3 * 3 * 2, "output": 4}
    for name, want in neurons.items():
        assert by_layer[name]["neurons"] == want
    ev = (res.pos + res.neg).sum(axis=(0, 2))
    for i, name in enumerate(res.layer_names):
        assert by_layer[name]["firing_rate"] == pytest.approx(ev[i] / n / neurons[name] / 8)
    assert by_layer["output"]["firing_rate"] is None
    assert by_layer["conv1"]["input_macs_per_image"] == macs["conv1"]
    assert by_layer["conv1"]["sop_over_mac"] is None
    assert by_layer["conv3"]["sop_over_mac"] == pytest.approx(
        res.sops_per_image()["conv3"] / macs["conv3"])
    for d in rep.devices:
        assert rep.totals["energy_J"][d] == pytest.approx(sum(r["energy_J"][d] for r in rep.rows))
    m = rep.meta
    assert (m["dataset"], m["n_images"], m["k"], m["timesteps"]) == ("random", 30, 0, 8)
    assert m["equal_from_step"] == res.equal_from_step
    assert m["accuracy_equal_from_step"] == report.accuracy_equal_from_step(
        res.accuracy_per_step, res.ann_accuracy)


def test_accuracy_equal_from_step():
    assert report.accuracy_equal_from_step([0.5, 0.9, 0.9], 0.9) == 1
    assert report.accuracy_equal_from_step([0.9, 0.8, 0.9], 0.9) == 2
    assert report.accuracy_equal_from_step([0.9, 0.9], 0.9) == 0
    assert report.accuracy_equal_from_step([0.9, 0.8], 0.9) is None


def test_renderings_and_files(tiny_run, tmp_path):
    snn, res = tiny_run
    rep = report.write(tmp_path, res, accounting.ann_macs(snn), snn=snn, dataset="random")
    md = (tmp_path / "report.md").read_text()
    assert "random, N = 30 images, k = 0, T = 8" in md
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    assert len(lines) == 1 + 4 + 1  # header, 4 layers, total
    assert lines[-1].startswith("| total |")
    for d in ("loihi", "spinnaker", "spinnaker2", "truenorth", "cmos45_int32"):
        assert f"E SNN {d} (µJ)" in lines[0]
    assert "E ANN cmos45_fp32 (µJ)" in lines[0]
    assert "from step" in md and "Horowitz" in md
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["totals"]["sops_per_image"] == pytest.approx(rep.totals["sops_per_image"])
    assert len(data["energy_per_step_J"]["loihi"]) == 8
    assert data["devices"]["loihi"]["sop"] == pytest.approx(23.6e-12)
    text = rep.text()
    assert text.splitlines()[0] == rep.title() and "conv2" in text
    # plain rows from any source give the same report
    again = report.Report.from_rows([{k: r[k] for k in report.ROW_KEYS} for r in rep.rows])
    assert again.totals["energy_J"] == pytest.approx(rep.totals["energy_J"])
    with pytest.raises(ValueError, match="lacks"):
        report.Report.from_rows([{"layer": "x"}])
    with pytest.raises(ValueError, match="snn .*neurons"):
        report.from_sim(res, accounting.ann_macs(snn))
