"""Figures of spiking activity (matplotlib, Agg backend; no tfsnn imports).

Each function takes numpy arrays and returns a ``matplotlib.figure.Figure``; ``save_png`` writes
one to disk and ``png_bytes`` encodes it for ``tf.summary.image``.

* ``raster(spikes)``: spike raster of ``[T, N]`` signed events (+1 dots black, -1 red)
* ``heatmap(matrix)``: e.g. spike counts of neurons x images
* ``firing_rates(names, rates)``: per-layer bars (spikes per neuron per step)
* ``accuracy_vs_timestep(acc)``: accuracy at every step, with the ANN's as a line
* ``sops_vs_accuracy(sops, acc)``: cumulative SOPs per image vs accuracy, with the ANN's MACs
"""
import io
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100


def _figure(size):
    return plt.figure(figsize=size, dpi=DPI)


def raster(spikes, title="spike raster", neuron_labels=None, size=(6.4, 4.0)):
    """Raster of signed events ``spikes`` ``[T, N]`` (step x neuron): +events black, -events red.

    Values other than 0 count as events; their sign picks the colour.
    """
    s = np.asarray(spikes)
    if s.ndim != 2:
        raise ValueError(f"spikes must be [T, N], got shape {s.shape}")
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    for sign, colour, label in ((1, "black", "+1"), (-1, "red", "-1")):
        t, n = np.nonzero(np.sign(s) == sign)
        if len(t):
            ax.scatter(t, n, s=8, marker="|" if s.shape[1] > 40 else "o", c=colour, label=label)
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    if neuron_labels is not None:
        ax.set_yticks(range(len(neuron_labels)), neuron_labels, fontsize=6)
    ax.set_title(title)
    if (s != 0).any():
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def heatmap(matrix, xlabel="image", ylabel="neuron", title="spike counts", size=(6.4, 4.0)):
    """``[rows, cols]`` values as an image with a colour bar (e.g. counts of neurons x images)."""
    m = np.asarray(matrix, float)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {m.shape}")
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def firing_rates(names, rates, ylabel="spikes / neuron / step", title="firing rate per layer",
                 size=(6.4, 4.0)):
    """Bar chart of one value per layer."""
    if len(names) != len(rates):
        raise ValueError(f"{len(names)} names but {len(rates)} rates")
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), rates, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def accuracy_vs_timestep(accuracy, ann_accuracy=None, title="accuracy vs time step",
                         size=(6.4, 4.0)):
    """Accuracy (fraction) at steps 1..T; the ANN's accuracy as a dashed line."""
    acc = np.asarray(accuracy, float)
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(1, len(acc) + 1), 100 * acc, marker="o", ms=3, label="SNN")
    if ann_accuracy is not None:
        ax.axhline(100 * ann_accuracy, color="gray", ls="--", label="quantized ANN")
    return _accuracy_axes(fig, ax, "time steps", title)


def sops_vs_accuracy(sops_per_image, accuracy, ann_macs=None, ann_accuracy=None,
                     title="accuracy vs synaptic operations", size=(6.4, 4.0)):
    """Accuracy against cumulative SOPs per image after each step; the ANN's MACs as a point."""
    sops, acc = np.asarray(sops_per_image, float), np.asarray(accuracy, float)
    if sops.shape != acc.shape:
        raise ValueError(f"sops {sops.shape} and accuracy {acc.shape} differ in shape")
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(sops, 100 * acc, marker="o", ms=3, label="SNN (after each step)")
    if ann_macs is not None and ann_accuracy is not None:
        ax.scatter([ann_macs], [100 * ann_accuracy], marker="*", s=120, c="tab:red",
                   label="quantized ANN (MACs)")
    return _accuracy_axes(fig, ax, "operations per image", title)


def _accuracy_axes(fig, ax, xlabel, title):
    """Labels, legend and grid of an accuracy (%) plot; returns ``fig``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def png_bytes(fig, close=True):
    """PNG encoding of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    if close:
        plt.close(fig)
    return buf.getvalue()


def save_png(fig, path, close=True):
    """Write a figure as PNG (through a temporary file and a rename); returns the path."""
    data = png_bytes(fig, close)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
