"""Figures of spiking activity (matplotlib, Agg backend; no tfsnn imports).

Each function takes numpy arrays and returns a ``matplotlib.figure.Figure``; ``save_figure``
writes one as PNG (``DPI`` = 150) plus SVG / PDF alongside, ``png_bytes`` encodes it for
``tf.summary.image``. Time steps are 0-based everywhere (step t is the (t+1)-th step), as in
``summary.json`` and TensorBoard. Give every figure a ``caption`` (``caption(dataset, N, k, T)``)
so it says what it shows.

* ``raster(spikes, steps=..., selection=...)``: signed events ``[T, N]`` (+1 black, -1 red)
* ``select_neurons(counts, n)``: the most active neurons plus an even spread of the others
* ``heatmap(matrix)``: e.g. spike counts of neurons x images
* ``firing_rates(names, rates, encoder=...)``: spikes / neuron / step per layer, encoder apart
* ``accuracy_vs_timestep(acc)``: accuracy at each step, with the ANN's as a line
* ``sops_vs_accuracy(sops, acc, ann_macs)``: accuracy vs cumulative SOPs / image (x from 0) and
  the SNN's SOPs next to the ANN's MACs as separate, labelled bars
* ``energy_vs_accuracy(energy, acc)``: accuracy vs energy per image over the steps, one panel
  per device, with the ANN's energy
* ``learning_curve(history)``: per-epoch accuracies (train / validation) and losses of a run's
  ``history.csv`` (``tfsnn.runs.read_history``), with test accuracies as lines
"""
import io
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401  (MaxNLocator)
import numpy as np  # noqa: E402

DPI = 150
FORMATS = ("png", "svg", "pdf")


def caption(dataset=None, n_images=None, k=None, timesteps=None, extra=None):
    """``"fashion_mnist, N = 10,000 images, k = 0, T = 32"`` from what is known."""
    parts = [str(dataset)] if dataset else []
    if n_images is not None:
        parts.append(f"N = {int(n_images):,} image{'s' if n_images != 1 else ''}")
    if k is not None:
        parts.append(f"k = {k}")
    if timesteps is not None:
        parts.append(f"T = {timesteps}")
    if extra:
        parts.append(str(extra))
    return ", ".join(parts)


def _figure(size):
    return plt.figure(figsize=size, dpi=DPI)


def _title(ax_or_fig, title, cap):
    text = title if not cap else f"{title}\n{cap}"
    if hasattr(ax_or_fig, "suptitle"):
        ax_or_fig.suptitle(text, fontsize=10)
    else:
        ax_or_fig.set_title(text, fontsize=10)


def select_neurons(counts, count=64, top_fraction=0.5):
    """Indices (sorted) of ``count`` neurons of ``counts`` ``[N]`` (events per neuron) and a
    phrase saying how they were chosen: the ``top_fraction`` most active (largest ``|count|``)
    plus an even spread over the rest (index order), so a raster shows both the busiest and
    typical neurons."""
    c = np.abs(np.asarray(counts, np.float64).reshape(-1))
    n = len(c)
    if count >= n:
        return np.arange(n), f"all {n:,} neurons"
    n_top = int(round(count * top_fraction))
    top = np.argsort(-c, kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(n), top)
    spread = rest[np.linspace(0, len(rest) - 1, count - n_top).astype(int)] if count > n_top else []
    pick = np.sort(np.concatenate([top, spread]).astype(int))
    return pick, (f"{n_top} most active + {count - n_top} evenly spaced of {n:,} neurons "
                  "(y: neuron index)")


def active_steps(*trains):
    """Steps ``0..t_last`` holding any event in any of ``trains`` (``[T, ...]`` each) plus one
    silent step; at least 1."""
    last = -1
    for tr in trains:
        tr = np.asarray(tr)
        act = np.flatnonzero(tr.reshape(tr.shape[0], -1).any(axis=1))
        if act.size:
            last = max(last, int(act[-1]))
    longest = max(np.asarray(tr).shape[0] for tr in trains)
    return min(last + 2, longest) if last >= 0 else 1


def raster(spikes, title="spike raster", neuron_labels=None, size=(6.4, 4.0), *, steps=None,
           selection=None, caption=None):
    """Raster of signed events ``spikes`` ``[T, N]`` (step x neuron): + events black, - red.

    ``steps``: the 0-based step of each row (default ``0..T-1``); ``selection``: how the N
    neurons were chosen (e.g. from ``select_neurons``), printed under the axis.
    Values other than 0 count as events; their sign picks the colour.
    """
    s = np.asarray(spikes)
    if s.ndim != 2:
        raise ValueError(f"spikes must be [T, N], got shape {s.shape}")
    steps = np.arange(s.shape[0]) if steps is None else np.asarray(steps)
    if len(steps) != s.shape[0]:
        raise ValueError(f"steps has {len(steps)} entries for {s.shape[0]} rows of spikes")
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    for sign, colour, label in ((1, "black", "+1"), (-1, "red", "-1")):
        t, n = np.nonzero(np.sign(s) == sign)
        if len(t):
            ax.scatter(steps[t], n, s=8, marker="|" if s.shape[1] > 40 else "o", c=colour,
                       label=label)
    ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step t (0-based)")
    ax.set_ylabel("neuron")
    if len(steps) <= 40:
        ax.set_xticks(steps)
    if neuron_labels is not None:
        ax.set_yticks(range(len(neuron_labels)), neuron_labels, fontsize=6)
    _title(ax, title, caption)
    if selection:
        fig.text(0.01, 0.01, selection, fontsize=7, color="0.3")
    if (s != 0).any():
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout(rect=(0, 0.03 if selection else 0, 1, 1))
    return fig


def heatmap(matrix, xlabel="image", ylabel="neuron", title="spike counts", size=(6.4, 4.0),
            caption=None):
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
    _title(ax, title, caption)
    fig.tight_layout()
    return fig


def firing_rates(names, rates, ylabel="spikes / neuron / step", title="firing rate per layer",
                 size=(6.4, 4.0), *, encoder=None, caption=None):
    """Bars of one rate per layer (``ylabel`` states the unit; y from 0).

    ``encoder``: ``(name, rate)`` drawn in its own panel on the left (its events follow the
    pixels, not the network, and have another scale).
    """
    if len(names) != len(rates):
        raise ValueError(f"{len(names)} names but {len(rates)} rates")
    fig = _figure(size)
    if encoder is not None:
        grid = fig.add_gridspec(1, 2, width_ratios=(1, max(len(names), 1)))
        ax_e = fig.add_subplot(grid[0, 0])
        ax_e.bar([0], [encoder[1]], color="tab:gray")
        ax_e.set_xticks([0], [f"{encoder[0]}\n(encoder)"])
        ax_e.set_ylabel(ylabel)
        ax_e.set_ylim(0, max(float(encoder[1]), 1e-12) * 1.15)
        ax = fig.add_subplot(grid[0, 1])
    else:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_ylabel(ylabel)
    ax.bar(range(len(names)), rates, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 6 else 0,
                  ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0, max([float(r) for r in rates] + [1e-12]) * 1.15)
    for i, r in enumerate(rates):
        ax.annotate(f"{r:.3g}", (i, r), ha="center", va="bottom", fontsize=7)
    _title(fig, title, caption)
    fig.tight_layout()
    return fig


def accuracy_vs_timestep(accuracy, ann_accuracy=None, title="accuracy vs time step",
                         size=(6.4, 4.0), *, equal_from_step=None, caption=None):
    """Accuracy (%) after each 0-based step t; the ANN's accuracy as a dashed line and, if
    given, the step from which the SNN's predictions equal the ANN's as a dotted one."""
    acc = np.asarray(accuracy, float)
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(len(acc)), 100 * acc, marker="o", ms=3, label="SNN")
    if ann_accuracy is not None:
        ax.axhline(100 * ann_accuracy, color="gray", ls="--", label="quantized ANN")
    if equal_from_step is not None:
        ax.axvline(equal_from_step, color="tab:green", ls=":",
                   label=f"SNN = ANN on every image from t = {equal_from_step}")
    ax.set_xlim(-0.5, len(acc) - 0.5)
    return _accuracy_axes(fig, ax, "time step t (0-based)", title, caption)


def learning_curve(history, title="learning curve", size=(9.0, 3.6), *, lines=None,
                   caption=None):
    """Per-epoch curves of ``history`` (``{column: [per-epoch floats]}``, epochs 0-based as in
    ``history.csv``): left every ``*accuracy`` column in %, with each of ``lines`` (``{label:
    accuracy fraction}``, e.g. the test accuracy) as a horizontal line; right every ``*loss``
    column. Validation columns (``val_*``) are dashed."""
    cols = sorted(k for k in history if k != "epoch" and history[k])
    acc = [k for k in cols if k.endswith("accuracy")]
    loss = [k for k in cols if k.endswith("loss")]
    if not acc and not loss:
        raise ValueError(f"history has no accuracy or loss column (columns: {cols})")
    fig = _figure(size)
    n = len(history[(acc + loss)[0]])
    epochs = np.asarray(history.get("epoch", range(n)), float) + 1  # after epoch e (1-based)
    panels = ((acc, "accuracy (%)", 100.0, lines or {}), (loss, "loss", 1.0, {}))
    for i, (keys, ylabel, scale, hlines) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for k in keys:
            ax.plot(epochs, np.asarray(history[k], float) * scale, marker="o", ms=3,
                    ls="--" if k.startswith("val_") else "-", label=k)
        for j, (label, value) in enumerate(hlines.items()):
            ax.axhline(scale * value, color=f"C{len(keys) + j}", ls=":",
                       label=f"{label} {100 * value:.2f} %")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch (1-based: after epoch e)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    _title(fig, title, caption)
    fig.tight_layout()
    return fig


def _ops(v):
    return f"{v / 1e6:.3g} M" if v >= 1e6 else f"{v:,.0f}"


def sops_vs_accuracy(sops_per_image, accuracy, ann_macs=None, ann_accuracy=None,
                     title="accuracy vs synaptic operations", size=(9.0, 4.0), *, caption=None,
                     mac_label="ANN\nMACs"):
    """Left: accuracy against cumulative SOPs per image after each step (x from 0), the ANN's
    MAC count as a labelled vertical line (a MAC is a multiply-accumulate, a SOP an accumulate:
    not the same operation). Right: SNN SOPs (at the last step) and ANN MACs per image as
    separate bars from 0 (``mac_label`` names the MAC bar, e.g. which layers it counts)."""
    sops, acc = np.asarray(sops_per_image, float), np.asarray(accuracy, float)
    if sops.shape != acc.shape:
        raise ValueError(f"sops {sops.shape} and accuracy {acc.shape} differ in shape")
    fig = _figure(size)
    ax, ax_b = fig.subplots(1, 2, gridspec_kw={"width_ratios": (3, 1)})
    ax.plot(sops, 100 * acc, marker="o", ms=3, label="SNN, after each step")
    if ann_macs is not None:
        ax.axvline(ann_macs, color="tab:red", ls="--",
                   label=f"ANN: {_ops(ann_macs)} MACs / image (not SOPs)")
    if ann_accuracy is not None:
        ax.axhline(100 * ann_accuracy, color="gray", ls=":", label="quantized ANN accuracy")
    right = max([sops.max(initial=0.0)] + ([ann_macs] if ann_macs is not None else []))
    ax.set_xlim(0, right * 1.05 or 1)
    _accuracy_axes(fig, ax, "SNN synaptic operations (SOPs) per image, cumulative", None, None)
    bars = [("SNN\nSOPs", sops[-1] if len(sops) else 0.0, "tab:blue")]
    if ann_macs is not None:
        bars.append((mac_label, float(ann_macs), "tab:red"))
    ax_b.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    ax_b.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax_b.set_ylim(0, max(b[1] for b in bars) * 1.15 or 1)
    ax_b.set_ylabel("operations per image")
    for i, b in enumerate(bars):
        ax_b.annotate(_ops(b[1]), (i, b[1]), ha="center", va="bottom", fontsize=7)
    _title(fig, title, caption)
    fig.tight_layout()
    return fig


def energy_vs_accuracy(energy_per_step, accuracy, ann_energy=None, ann_accuracy=None,
                       title="accuracy vs energy per image over time steps", size=None, *,
                       caption=None, mark_steps=None):
    """One panel per device: accuracy (%) against the SNN's energy per image (µJ, from 0) if
    inference stopped after step t = 0, 1, ...; ``ann_energy`` ``{label: J}`` drawn as vertical
    lines (the ANN has no steps). ``mark_steps``: steps labelled on the curves."""
    acc = 100 * np.asarray(accuracy, float)
    devices = list(energy_per_step)
    if not devices:
        raise ValueError("energy_per_step must hold at least one device")
    cols = min(3, len(devices))
    rows = -(-len(devices) // cols)
    fig = _figure(size or (3.6 * cols, 3.0 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    marks = mark_steps if mark_steps is not None else sorted({0, 1, 3, len(acc) - 1})
    for ax, dev in zip(axes, devices):
        e = np.asarray(energy_per_step[dev], float) * 1e6
        if e.shape != acc.shape:
            raise ValueError(f"energy of {dev!r} has shape {e.shape}, accuracy {acc.shape}")
        ax.plot(e, acc, marker="o", ms=2.5, label="SNN")
        ann_right = max([ej * 1e6 for ej in (ann_energy or {}).values()], default=0.0)
        shown = []  # overprinting is judged on the axis ranges
        span_e, span_a = max(e.max(initial=0.0), ann_right, 1e-30), max(np.ptp(acc), 1e-30)
        for t in marks:  # label the marked steps, skipping one that would overprint another
            if 0 <= t < len(e) and all(abs(e[t] - e[u]) / span_e > 0.04
                                       or abs(acc[t] - acc[u]) / span_a > 0.04 for u in shown):
                ax.annotate(f"t={t}", (e[t], acc[t]), fontsize=6, xytext=(3, -9),
                            textcoords="offset points")
                shown.append(t)
        right = e.max(initial=0.0)
        for j, (label, ej) in enumerate((ann_energy or {}).items()):
            ax.axvline(ej * 1e6, ls="--", color=f"C{j + 3}", label=f"ANN {label}")
            right = max(right, ej * 1e6)
        if ann_accuracy is not None:
            ax.axhline(100 * ann_accuracy, color="gray", ls=":", lw=0.8)
        ax.set_xlim(0, right * 1.08 or 1)
        ax.set_title(dev, fontsize=9)
        ax.set_xlabel("energy per image (µJ)", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in axes[len(devices):]:
        ax.set_visible(False)
    _title(fig, title, caption)
    fig.tight_layout()
    return fig


def _accuracy_axes(fig, ax, xlabel, title, caption):
    """Labels, legend and grid of an accuracy (%) plot; returns ``fig``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    if title:
        _title(ax, title, caption)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def png_bytes(fig, close=True):
    """PNG encoding of a figure at ``DPI``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    if close:
        plt.close(fig)
    return buf.getvalue()


def _atomic_write(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the figure normal permissions
    os.replace(tmp, path)
    return path


def save_png(fig, path, close=True):
    """Write a figure as PNG at ``DPI`` (through a temporary file and a rename); returns the path."""
    return _atomic_write(path, png_bytes(fig, close))


def save_figure(fig, path, formats=FORMATS, close=True):
    """Write ``fig`` as ``path`` with each suffix of ``formats`` (``png`` at ``DPI``, ``svg``,
    ``pdf``); returns the paths, in the order of ``formats``."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats!r}")
    path = Path(path)
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI)
        out.append(Path(_atomic_write(path.with_suffix("." + fmt), buf.getvalue())))
    if close:
        plt.close(fig)
    return out
