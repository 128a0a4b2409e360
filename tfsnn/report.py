"""Per-layer spike / SOP / energy report of an SNN run, as data, text, markdown and JSON.

One row per layer, per image (averaged over the N images run):

==========================  ====================================================================
``neurons``                 neurons of the layer (output: its accumulators)
``spikes_per_image``        spikes the layer emits (+1 and -1 alike; encoder events once each)
``firing_rate``             spikes / neuron / time step, over the T steps run
``silent_fraction``         optional: fraction of the layer's neurons that fired on none of the N
                            images (never-firing neurons pass no gradient under spike-gated
                            surrogates); shown as a column when any row has it
``sops_per_image``          synaptic operations the layer *receives* (``tfsnn.accounting``)
``input_macs_per_image``    MACs of analog input (the encoder conv: pixels in)
``ann_macs_per_image``      MACs of the same layer in the ANN twin (exact fan-out)
``sop_over_mac``            ``sops_per_image / ann_macs_per_image`` (None for the encoder)
``neuron_updates_per_image``  ``neurons x T`` (spiking layers; the output accumulator: 0)
``energy_J``                ``{device: J}`` of the SNN layer (``tfsnn.energy.snn_energy``)
``ann_energy_J``            ``{device: J}`` of the ANN layer (``tfsnn.energy.ann_energy``)
==========================  ====================================================================

``Report.from_rows(rows, ...)`` takes these rows as plain numbers (any source: ``rows_from_sim``
for ``tfsnn.simulate``, ``tfsnn.activity.count_activity`` for directly trained SNNs, or a
per-layer table of another tool with the same keys); ``write(out_dir, result, ann_macs, ...)``
is the one call for a simulation: ``report.md`` + ``report.json`` in ``out_dir``.
Steps are 0-based everywhere: "step t" is the (t+1)-th time step.
"""
import dataclasses
import math
from pathlib import Path

import numpy as np

from tfsnn import energy as en

ROW_KEYS = ("layer", "role", "neurons", "spikes_per_image", "firing_rate", "sops_per_image",
            "input_macs_per_image", "ann_macs_per_image", "neuron_updates_per_image")


def neuron_counts(snn):
    """``{row: neurons}`` of a converted SNN (``tfsnn.convert``): spiking layers and output."""
    from tfsnn.conversion.graph import SnnGraph
    return SnnGraph.of(snn).neurons()


def rows_from_sim(result, ann_macs, neurons):
    """Per-layer rows (plain numbers, keys ``ROW_KEYS``) of a ``tfsnn.simulate`` result: the
    one implementation is ``SimResult.layer_table``.

    Args:
      result: ``SimResult``.
      ann_macs: ``tfsnn.accounting.ann_macs(snn)`` (``{layer: MACs per image}``).
      neurons: ``{layer: neurons}`` (``neuron_counts(snn)``).
    """
    return result.layer_table(ann_macs, neurons)


def _layer_counts(row):
    return en.LayerCounts(row["layer"], sops=row["sops_per_image"],
                          neuron_updates=row["neuron_updates_per_image"],
                          spikes=row["spikes_per_image"], macs=row["input_macs_per_image"],
                          ann_macs=row["ann_macs_per_image"])


@dataclasses.dataclass
class Report:
    """Rows with energies, totals and run metadata (dataset, n_images, k, timesteps, ...)."""

    rows: list
    totals: dict
    meta: dict
    devices: tuple
    ann_devices: tuple
    energy_per_step: dict = None  # {device: [T] J per image if stopped after step t}; ann: J

    @classmethod
    def from_rows(cls, rows, meta=None, devices=en.SNN_DEVICES, ann_devices=en.ANN_DEVICES,
                  host="cmos45_fp32", energy_per_step=None):
        """Energies per device for plain per-layer rows (keys ``ROW_KEYS``; see the module doc)."""
        rows = [dict(r) for r in rows]
        for r in rows:
            missing = [k for k in ROW_KEYS if k not in r]
            if missing:
                raise ValueError(f"rows: layer {r.get('layer')!r} lacks {missing}")
        counts = [_layer_counts(r) for r in rows]
        snn = {d: en.snn_energy(counts, d, host) for d in devices}
        ann = {d: en.ann_energy(counts, d) for d in ann_devices}
        for r in rows:
            r["sop_over_mac"] = (r["sops_per_image"] / r["ann_macs_per_image"]
                                 if r["role"] != "encoder" and r["ann_macs_per_image"] else None)
            r["energy_J"] = {d: snn[d][r["layer"]]["total"] for d in devices}
            r["ann_energy_J"] = {d: ann[d][r["layer"]] for d in ann_devices}
        enc_macs = sum(r["ann_macs_per_image"] for r in rows if r["role"] == "encoder")
        hidden = [r for r in rows if r["role"] != "encoder"]
        macs_wo = sum(r["ann_macs_per_image"] for r in hidden)
        totals = {
            "neurons": sum(r["neurons"] for r in rows),
            "spikes_per_image": sum(r["spikes_per_image"] for r in rows),
            "spikes_per_image_hidden": sum(r["spikes_per_image"] for r in rows
                                           if r["role"] == "hidden"),
            "sops_per_image": sum(r["sops_per_image"] for r in rows),
            "neuron_updates_per_image": sum(r["neuron_updates_per_image"] for r in rows),
            "ann_macs_per_image": enc_macs + macs_wo,
            "ann_macs_per_image_without_encoder": macs_wo,
            "sop_over_mac": (sum(r["sops_per_image"] for r in hidden) / macs_wo
                             if macs_wo else None),
            "energy_J": {d: snn[d]["total"] for d in devices},
            "energy_J_by_op": {d: {op: sum(snn[d][r["layer"]][op] for r in rows)
                                   for op in en.OPS} for d in devices},
            "ann_energy_J": {d: ann[d]["total"] for d in ann_devices},
        }
        eq = (meta or {}).get("equal_from_step")
        if energy_per_step is not None and eq is not None:
            totals["energy_J_if_stopped_at_equal_from_step"] = {
                d: float(energy_per_step[d][eq]) for d in devices}
        return cls(rows, totals, dict(meta or {}), tuple(devices), tuple(ann_devices),
                   energy_per_step)

    def to_json(self):
        """A JSON-ready dict (rows, totals, meta, devices with their per-op energies and sources)."""
        devs = {d: dataclasses.asdict(en.get_device(d)) for d in (*self.devices, *self.ann_devices)}
        out = {"meta": self.meta, "rows": self.rows, "totals": self.totals, "devices": devs,
               "units": {"energy": "J per image", "firing_rate": "spikes / neuron / time step",
                         "steps": "0-based"}}
        if self.energy_per_step is not None:
            out["energy_per_step_J"] = {d: [float(v) for v in np.atleast_1d(e)]
                                        for d, e in self.energy_per_step.items()}
        return out

    # ------------------------------------------------------------------ rendering

    def _columns(self):
        cols = [("layer", "layer", str), ("neurons", "neurons", _int),
                ("spikes/img", "spikes_per_image", _num), ("rate (spk/neuron/step)",
                                                           "firing_rate", _rate),
                ("SOPs/img", "sops_per_image", _num), ("ANN MACs/img", "ann_macs_per_image", _num),
                ("SOP÷MAC", "sop_over_mac", _ratio)]
        if any(r.get("silent_fraction") is not None for r in self.rows):
            cols.insert(4, ("silent (never fired)", "silent_fraction", _pct))
        cols += [(f"E SNN {d} (µJ)", ("energy_J", d), _uj) for d in self.devices]
        cols += [(f"E ANN {d} (µJ)", ("ann_energy_J", d), _uj) for d in self.ann_devices]
        return cols

    def _cells(self):
        cols = self._columns()
        body = [[fmt(_get(r, key)) for _, key, fmt in cols] for r in self.rows]
        t = self.totals
        total = {"layer": "total", "neurons": t["neurons"], "spikes_per_image": t["spikes_per_image"],
                 "firing_rate": None, "sops_per_image": t["sops_per_image"],
                 "ann_macs_per_image": t["ann_macs_per_image"], "sop_over_mac": t["sop_over_mac"],
                 "energy_J": t["energy_J"], "ann_energy_J": t["ann_energy_J"]}
        last = [fmt(_get(total, key)) for _, key, fmt in cols]
        if t["sop_over_mac"] is not None:  # MACs of the layers that receive SOPs only
            last[[c[1] for c in cols].index("sop_over_mac")] += " (no encoder)"
        body.append(last)
        return [c[0] for c in cols], body

    def title(self):
        """``dataset, N images, k, T`` (what is known) in one line."""
        m = self.meta
        parts = [str(m["dataset"])] if m.get("dataset") else []
        parts += [f"N = {m['n_images']:,} images"] if m.get("n_images") is not None else []
        parts += [f"k = {m['k']}"] if m.get("k") is not None else []
        parts += [f"T = {m['timesteps']}"] if m.get("timesteps") is not None else []
        return ", ".join(parts)

    def _notes(self):
        m, t = self.meta, self.totals
        lines = []
        for key, label in (("ann_accuracy", "ANN accuracy"), ("snn_accuracy", "SNN accuracy (last step)")):
            if m.get(key) is not None:
                lines.append(f"{label}: {100 * m[key]:.2f} %")
        for key, label in (("equal_from_step", "SNN predictions equal the ANN's on every image from step"),
                           ("accuracy_equal_from_step", "SNN accuracy equals the ANN's from step"),
                           ("converged_step", "network silent from step")):
            if key in m:
                lines.append(f"{label}: {m[key] if m[key] is not None else 'never'} (0-based)")
        if t["sop_over_mac"] is not None:
            lines.append(f"SOPs ÷ ANN MACs (encoder excluded): {t['sop_over_mac']:.3f}")
        eq = m.get("equal_from_step")
        eps = self.energy_per_step
        for d in self.devices:
            by = t["energy_J_by_op"][d]
            split = ", ".join(f"{op} {_uj(by[op])}" for op in en.OPS if by[op])
            line = (f"energy per inference, SNN on {d}: {_uj(t['energy_J'][d])} µJ over "
                    f"{m.get('timesteps', 'all')} steps ({split})")
            if eps is not None and eq is not None:
                line += f"; {_uj(eps[d][eq])} µJ if stopped after step {eq}"
            lines.append(line)
        for d in self.ann_devices:
            lines.append(f"energy per inference, ANN on {d}: {_uj(t['ann_energy_J'][d])} µJ")
        lines.append("devices:")
        lines += [f"  {en.describe(d)}" for d in dict.fromkeys((*self.devices, *self.ann_devices))]
        lines.append("compute only (no memory traffic, no static power); MACs of analog inputs "
                     "(the encoder's; every layer's in IIR nets, fed analog PSPs) are charged on a "
                     "45 nm fp32 host (4.6 pJ) on every device; neuron updates = "
                     "neurons x steps run (time-driven); SOPs: int32 accumulates on cmos45_int32")
        return lines

    def markdown(self):
        head, body = self._cells()
        out = [f"## Per-layer spikes, SOPs and energy per image: {self.title()}", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in body]
        out += [""] + [f"* {line}" if not line.startswith("  ") else f"  * {line.strip()}"
                       for line in self._notes()]
        return "\n".join(out) + "\n"

    def text(self):
        """A fixed-width table (for a terminal) followed by the notes."""
        head, body = self._cells()
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        out = [self.title(), line(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        out += [line(r) for r in body[:-1]] + ["-" * len(out[-1]), line(body[-1])]
        return "\n".join(out + self._notes()) + "\n"


def _get(row, key):
    if isinstance(key, tuple):
        return (row.get(key[0]) or {}).get(key[1])
    return row.get(key)


def _int(v):
    return "" if v is None else f"{int(v):,}"


def _num(v):
    if v is None:
        return ""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3f} M"
    return f"{v:,.1f}" if abs(v) < 1e4 else f"{v:,.0f}"


def _rate(v):
    return "" if v is None else f"{float(v):.4f}"


def _pct(v):
    return "" if v is None else f"{100 * float(v):.1f} %"


def _ratio(v):
    return "" if v is None else f"{float(v):.3f}"


def _uj(v):
    """Joules as µJ with 4 significant digits, without exponents."""
    if v is None:
        return ""
    v = float(v) * 1e6
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def accuracy_equal_from_step(accuracy, ann_accuracy):
    """First 0-based step from which the SNN accuracy equals the ANN's at every later step
    (None if it does not at the last step)."""
    acc = np.asarray(accuracy, float)
    diff = np.flatnonzero(np.abs(acc - ann_accuracy) > 1e-12)
    if diff.size == 0:
        return 0
    return int(diff[-1] + 1) if diff[-1] + 1 < len(acc) else None


def sim_meta(result, dataset=None):
    """Run metadata of a simulation for titles: dataset, n_images, k, timesteps, accuracies and
    the steps from which the SNN equals the ANN."""
    m = {"dataset": dataset, "n_images": result.n_images,
         "k": int(round(math.log2(result.amplitude))), "timesteps": result.timesteps,
         "converged_step": result.converged_step}
    if result.labels is not None:
        m["snn_accuracy"] = result.accuracy
        m["accuracy_per_step"] = [float(a) for a in result.accuracy_per_step]
    if result.ann_logits is not None:
        m["equal_from_step"] = result.equal_from_step
        if result.labels is not None:
            m["ann_accuracy"] = result.ann_accuracy
            m["accuracy_equal_from_step"] = accuracy_equal_from_step(
                result.accuracy_per_step, result.ann_accuracy)
    return m


def sim_energy_per_step(result, rows, devices=en.SNN_DEVICES, ann_devices=en.ANN_DEVICES,
                        host="cmos45_fp32"):
    """``{device: float [T]}``: SNN energy per image (J) if inference stopped after step t
    (cumulative SOPs and spikes up to t, neurons x (t+1) updates, the encoder's MACs once), and
    ``{ann device: float}`` the ANN's (one number: it has no steps)."""
    n = max(result.n_images, 1)
    spk = dict(zip(result.layer_names, np.cumsum((result.pos + result.neg).sum(0), 1) / n))
    sop = dict(zip(result.sop_layer_names, np.cumsum(result.sops.sum(0), 1) / n))
    steps = np.arange(1, result.timesteps + 1, dtype=np.float64)
    zero = np.zeros(result.timesteps)
    out = {}
    for d in devices:
        e, total = en.per_op(d, host), zero.copy()
        for r in rows:
            name = r["layer"]
            if name in sop:
                if e["sop"] is None and sop[name][-1]:
                    raise ValueError(f"device {d!r} has no SOP energy")
                total += sop[name] * (e["sop"] or 0.0)
            total += spk.get(name, zero) * e["spike"]
            if r["neuron_updates_per_image"]:
                total += r["neurons"] * steps * e["neuron_update"]
            total += r["input_macs_per_image"] * (e["mac"] or 0.0)
        out[d] = total
    counts = [_layer_counts(r) for r in rows]
    for d in ann_devices:
        out[f"ann:{d}"] = en.ann_energy(counts, d)["total"]
    return out


def from_sim(result, ann_macs, snn=None, neurons=None, dataset=None, devices=en.SNN_DEVICES,
             ann_devices=en.ANN_DEVICES, host="cmos45_fp32", meta=None):
    """The ``Report`` of a ``tfsnn.simulate`` result (give ``snn`` or ``neurons``)."""
    if neurons is None:
        if snn is None:
            raise ValueError("give snn (the converted model) or neurons ({layer: count})")
        neurons = neuron_counts(snn)
    rows = rows_from_sim(result, ann_macs, neurons)
    m = {**sim_meta(result, dataset), **(meta or {})}
    return Report.from_rows(rows, m, devices, ann_devices, host,
                            energy_per_step=sim_energy_per_step(result, rows, devices,
                                                                ann_devices, host))


def write(out_dir, result, ann_macs, snn=None, neurons=None, dataset=None,
          devices=en.SNN_DEVICES, ann_devices=en.ANN_DEVICES, meta=None):
    """Write ``report.md`` and ``report.json`` of a simulation into ``out_dir``; returns the
    ``Report`` (``.text()`` for the terminal, ``.to_json()`` to merge into a summary)."""
    rep = from_sim(result, ann_macs, snn, neurons, dataset, devices, ann_devices, meta=meta)
    write_report(out_dir, rep)
    return rep


def write_report(out_dir, report):
    """Write an already built ``Report`` as ``report.md`` + ``report.json``; returns the paths."""
    from tfsnn.runs import atomic_write_json, atomic_write_text
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.md", report.markdown())
    atomic_write_json(out_dir / "report.json", report.to_json())
    return [out_dir / "report.md", out_dir / "report.json"]

