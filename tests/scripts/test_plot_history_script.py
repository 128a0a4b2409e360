"""scripts/plot_history.py and plots.learning_curve: history.csv round trip, the curves drawn
(values, dashed validation, test lines from results.json), clear errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from tfsnn import runs
from tfsnn.viz import plots

SCRIPT = REPO / "scripts" / "plot_history.py"
ROWS = [dict(epoch=0, accuracy=0.5, loss=1.2, val_accuracy=0.6, val_loss=1.0, stable_x=1.0),
        dict(epoch=1, accuracy=0.7, loss=0.8, val_accuracy=0.72, val_loss=0.7, stable_x=1.0),
        dict(epoch=2, accuracy=0.8, loss=0.5, val_accuracy=0.78, val_loss=0.6, stable_x=0.5)]


def test_read_history_round_trip(tmp_path):
    runs.write_history(tmp_path / "history.csv", ROWS)
    h = runs.read_history(tmp_path / "history.csv")
    assert h["epoch"] == [0.0, 1.0, 2.0] and h["val_loss"] == [1.0, 0.7, 0.6]
    assert runs.read_history(tmp_path / "none.csv") == {}
    runs.write_history(tmp_path / "gap.csv", [ROWS[0], {"epoch": 1, "loss": 0.8}])
    gap = runs.read_history(tmp_path / "gap.csv")  # a missing cell stays in its epoch's place
    assert gap["loss"] == [1.2, 0.8] and gap["accuracy"][0] == 0.5
    assert np.isnan(gap["accuracy"][1])


def test_learning_curve_draws_each_column():
    h = {k: [r[k] for r in ROWS] for k in ROWS[0]}
    fig = plots.learning_curve(h, "t", lines={"test": 0.81})
    acc_ax, loss_ax = fig.axes
    lines = {ln.get_label(): ln for ln in acc_ax.get_lines()}
    assert set(lines) == {"accuracy", "val_accuracy", "test 81.00 %"}
    np.testing.assert_allclose(lines["val_accuracy"].get_ydata(), [60, 72, 78])
    np.testing.assert_allclose(lines["accuracy"].get_xdata(), [1, 2, 3])  # after epoch e
    assert lines["val_accuracy"].get_linestyle() == "--"
    np.testing.assert_allclose(lines["test 81.00 %"].get_ydata(), [81, 81])
    assert {ln.get_label() for ln in loss_ax.get_lines()} == {"loss", "val_loss"}
    with pytest.raises(ValueError, match="no accuracy or loss column"):
        plots.learning_curve({"epoch": [0.0], "stable_x": [1.0]})


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_script_writes_png_with_results_lines(tmp_path):
    runs.write_history(tmp_path / "history.csv", ROWS)
    (tmp_path / "results.json").write_text(json.dumps(
        {"test_accuracy": 0.8, "converted_test_accuracy": 0.75, "epochs": 3}))
    out = run("--run_dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    png = tmp_path / "learning_curve.png"
    assert out.stdout.strip().endswith(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = run("--run_dir", str(tmp_path / "missing"))
    assert out.returncode != 0 and "no history" in out.stderr
