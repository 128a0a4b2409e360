"""Plot functions produce non-empty PNGs of the expected size."""
import io

import numpy as np
import pytest

from tfsnn.viz import plots


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    import matplotlib.image as mpimg
    return mpimg.imread(io.BytesIO(data)).shape


def test_raster_png_dimensions(tmp_path):
    s = np.zeros((12, 30), int)
    s[0, 3] = s[1, 3] = 1
    s[4, 3] = -1
    path = plots.save_png(plots.raster(s, size=(5, 3)), tmp_path / "r.png")
    shape = png_size(path.read_bytes())
    assert shape[:2] == (300, 500)
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        plots.raster(np.zeros(5))


def test_other_figures(tmp_path):
    acc = np.array([0.1, 0.5, 0.8, 0.9, 0.9])
    figs = {"bars": plots.firing_rates(["conv2", "conv3"], [0.1, 0.05]),
            "acc": plots.accuracy_vs_timestep(acc, ann_accuracy=0.9),
            "sops": plots.sops_vs_accuracy(np.cumsum([1e5, 2e5, 1e5, 5e4, 0]), acc, 5.6e6, 0.9)}
    for name, fig in figs.items():
        assert png_size(plots.png_bytes(fig))[:2] == (400, 640), name
    with pytest.raises(ValueError, match="differ in shape"):
        plots.sops_vs_accuracy([1, 2], [0.5])
