"""Plot functions: sizes at the stated dpi, PNG + SVG + PDF files, captions, axes from 0, the
neuron selection of rasters."""
import io

import numpy as np
import pytest

from tfsnn.viz import plots


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    import matplotlib.image as mpimg
    return mpimg.imread(io.BytesIO(data)).shape


def test_raster_png_dimensions_and_formats(tmp_path):
    assert plots.DPI >= 150
    s = np.zeros((12, 30), int)
    s[0, 3] = s[1, 3] = 1
    s[4, 3] = -1
    fig = plots.raster(s[:5], size=(5, 3), steps=np.arange(5), selection="all 30 neurons",
                       caption="mnist, N = 1 image, k = 0, T = 12")
    assert "T = 12" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() == "time step t (0-based)"
    paths = plots.save_figure(fig, tmp_path / "r.png")
    assert [p.name for p in paths] == ["r.png", "r.svg", "r.pdf"]
    assert png_size(paths[0].read_bytes())[:2] == (3 * plots.DPI, 5 * plots.DPI)
    assert paths[1].read_text().lstrip().startswith("<?xml") and "<svg" in paths[1].read_text()
    assert paths[2].read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        plots.raster(np.zeros(5))
    with pytest.raises(ValueError, match="formats"):
        plots.save_figure(plots.raster(s), tmp_path / "x.png", formats=("jpg",))


def test_select_neurons_and_active_steps():
    counts = np.zeros(1000)
    counts[[5, 500, 999]] = [3, 9, -7]
    pick, how = plots.select_neurons(counts, 10)
    assert len(pick) == 10 and {5, 500, 999} <= set(pick) and np.all(np.diff(pick) > 0)
    assert "5 most active + 5 evenly spaced of 1,000 neurons" in how
    pick, how = plots.select_neurons(counts[:8], 10)
    assert list(pick) == list(range(8)) and how.startswith("all 8")
    tr = np.zeros((32, 4))
    tr[3, 1] = 1
    assert plots.active_steps(tr) == 5 and plots.active_steps(np.zeros((7, 2))) == 1
    assert plots.caption("fashion_mnist", 10000, 1, 64) == \
        "fashion_mnist, N = 10,000 images, k = 1, T = 64"


def test_other_figures(tmp_path):
    acc = np.array([0.1, 0.5, 0.8, 0.9, 0.9])
    cap = "mnist, N = 5 images, k = 0, T = 5"
    sops = np.cumsum([1e5, 2e5, 1e5, 5e4, 0])
    figs = {"bars": plots.firing_rates(["conv2", "conv3"], [0.1, 0.05], encoder=("conv1", 0.4),
                                       caption=cap),
            "acc": plots.accuracy_vs_timestep(acc, ann_accuracy=0.9, equal_from_step=3,
                                              caption=cap),
            "sops": plots.sops_vs_accuracy(sops, acc, 5.6e6, 0.9, caption=cap),
            "energy": plots.energy_vs_accuracy({"loihi": sops * 2e-11, "truenorth": sops * 3e-11},
                                               acc, {"cmos45_fp32": 2e-5}, 0.9, caption=cap)}
    for name, fig in figs.items():
        assert cap in (fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title())
        w, h = fig.get_size_inches()
        assert png_size(plots.png_bytes(fig, close=False))[:2] == (round(h * plots.DPI),
                                                                    round(w * plots.DPI)), name
    # SOPs and MACs: the accuracy curve's x axis starts at 0 and reaches past the ANN's MACs;
    # the bars are labelled separately and start at 0
    ax, bars = figs["sops"].axes
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] >= 5.6e6
    assert "SOPs" in ax.get_xlabel()
    assert [t.get_text() for t in bars.get_xticklabels()] == ["SNN\nSOPs", "ANN\nMACs"]
    assert bars.get_ylim()[0] == 0
    # the encoder has its own panel; rates in stated units
    enc_ax, hid_ax = figs["bars"].axes
    assert enc_ax.get_ylabel() == "spikes / neuron / step" and hid_ax.get_ylim()[0] == 0
    assert [a.get_title() for a in figs["energy"].axes[:2]] == ["loihi", "truenorth"]
    assert all(a.get_xlim()[0] == 0 for a in figs["energy"].axes[:2])
    with pytest.raises(ValueError, match="differ in shape"):
        plots.sops_vs_accuracy([1, 2], [0.5])
