"""Energy per inference from exact operation counts, under named device models.

Energy is ``sum over layers and op kinds of count x energy per op`` (joules per image). The
counts come from ``tfsnn.simulate`` / ``tfsnn.accounting`` (or any per-layer numbers, see
``LayerCounts``); this module only multiplies. Op kinds and the bit width each count uses:

=================  =========================================================================
``sop``            one synaptic operation: an input event x one synapse it reaches (exact
                   fan-out, ``tfsnn.accounting``). In the integer SNN an **int32 accumulate**
                   (membrane += ternary weight; ``use_int=False``: an fp32 add); on neuromorphic
                   chips the chip's published per-synaptic-event energy.
``neuron_update``  one neuron state update (threshold compare + membrane step) per neuron per
                   time step run: ``neurons x steps``. int32 in the integer SNN.
``spike``          routing of one emitted spike (packet) to its destination core; only devices
                   that publish it separately (Loihi).
``mac``            one multiply-accumulate of an ANN layer, or of a layer whose input is analog
                   (the SNN's first conv, the threshold-ramp encoder: its input is pixels, so it
                   costs MACs, never SOPs). fp32 unless a device says otherwise.
=================  =========================================================================

Only compute is counted: no memory traffic, no static / leakage power, no I/O. Published
energies are measured on different workloads and processes; treat the results as the usual
first-order comparison of SNN papers, not as a measurement.

Devices (``DEVICES``; add your own with ``register_device``). Energies in joules:

* ``cmos45_fp32``, ``cmos45_int32``, ``cmos45_int8``: a digital accelerator in 45 nm CMOS at
  0.9 V, per-operation energies of M. Horowitz, "Computing's energy problem (and what we can do
  about it)", ISSCC 2014, pp. 10-14 (Fig. 1.1.9): add int8 0.03 pJ, int32 0.1 pJ, fp32 0.9 pJ;
  multiply int8 0.2 pJ, int32 3.1 pJ, fp32 3.7 pJ. A MAC is one multiply plus one add (fp32
  4.6 pJ, int32 3.2 pJ, int8 0.23 pJ); a SOP and a neuron update are one add of the width.
* ``loihi``: Intel Loihi (14 nm), M. Davies et al., "Loihi: a neuromorphic manycore processor
  with on-chip learning", IEEE Micro 38(1):82-99, 2018, Table 1: synaptic spike op 23.6 pJ,
  neuron update (active) 81 pJ, across-tile spike energy 3.5 pJ per hop (charged once per emitted
  spike: one hop, a lower bound).
* ``spinnaker``, ``spinnaker2``: SpiNNaker (ARM968, 130 nm) 13.3 nJ per synaptic event and 26 nJ
  per neuron update; SpiNNaker 2 prototype (22/28 nm, DVFS) 450 pJ and 2.19 nJ. S. Höppner et
  al., "Dynamic power management for neuromorphic many-core systems", IEEE TCAS-I
  66(8):2973-2986, 2019 (arXiv:1903.08941); the same figures as keras-spiking's ``ModelEnergy``.
* ``truenorth``: IBM TrueNorth (28 nm), P. A. Merolla et al., "A million spiking-neuron
  integrated circuit with a scalable communication network and interface", Science
  345(6197):668-673, 2014: 26 pJ per synaptic event, an all-in figure (neuron updates and
  routing included, so they are not charged again).

The analog-input first layer of an SNN (full-precision weights on pixels) is charged at ``host``
(default ``cmos45_fp32``: 4.6 pJ per MAC on a conventional processor) whatever the device; the
neuromorphic devices have no MAC figure, so an ANN cannot be costed on them (``ann_energy``
refuses).
"""
import dataclasses

import numpy as np

PJ = 1e-12
NJ = 1e-9

OPS = ("sop", "neuron_update", "spike", "mac")


@dataclasses.dataclass(frozen=True)
class Device:
    """Energy per operation (joules) of one device; ``None`` = the device does not do it.

    ``widths`` says which arithmetic each op uses; ``source`` cites the figures.
    """

    name: str
    sop: float = None
    neuron_update: float = None
    spike: float = None
    mac: float = None
    spiking: bool = True
    widths: str = ""
    source: str = ""

    def energy_per_op(self, op):
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        return getattr(self, op)


_H = "Horowitz, ISSCC 2014, Fig. 1.1.9 (45 nm, 0.9 V)"
_HOPPNER = "Höppner et al., IEEE TCAS-I 66(8), 2019 (arXiv:1903.08941)"
DEVICES = {}


def register_device(name, *, sop=None, neuron_update=None, spike=None, mac=None, spiking=True,
                    widths="", source="", overwrite=False):
    """Add a device model (energies in joules per op; ``None``: op not available / included in
    another figure). Returns the ``Device``. A name already taken needs ``overwrite=True``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in DEVICES and not overwrite:
        raise ValueError(f"device {name!r} is already registered (pass overwrite=True to replace)")
    for op, v in (("sop", sop), ("neuron_update", neuron_update), ("spike", spike), ("mac", mac)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{op} must be a finite energy >= 0 in joules or None, got {v!r}")
    if all(v is None for v in (sop, neuron_update, spike, mac)):
        raise ValueError("a device needs at least one of sop, neuron_update, spike, mac")
    dev = Device(name, sop, neuron_update, spike, mac, bool(spiking), widths, source)
    DEVICES[name] = dev
    return dev


register_device("cmos45_fp32", sop=0.9 * PJ, neuron_update=0.9 * PJ, mac=4.6 * PJ,
                widths="SOP: fp32 add; neuron update: fp32 add; MAC: fp32 mult + add", source=_H)
register_device("cmos45_int32", sop=0.1 * PJ, neuron_update=0.1 * PJ, mac=3.2 * PJ,
                widths="SOP: int32 add; neuron update: int32 add; MAC: int32 mult + add",
                source=_H)
register_device("cmos45_int8", sop=0.03 * PJ, neuron_update=0.03 * PJ, mac=0.23 * PJ,
                widths="SOP: int8 add; neuron update: int8 add; MAC: int8 mult + add", source=_H)
register_device("loihi", sop=23.6 * PJ, neuron_update=81 * PJ, spike=3.5 * PJ,
                widths="Loihi synaptic spike op / active neuron update / across-tile spike hop",
                source="Davies et al., IEEE Micro 38(1), 2018, Table 1")
register_device("spinnaker", sop=13.3 * NJ, neuron_update=26 * NJ,
                widths="SpiNNaker synaptic event / neuron update (ARM968 software)",
                source=_HOPPNER)
register_device("spinnaker2", sop=450 * PJ, neuron_update=2.19 * NJ,
                widths="SpiNNaker 2 synaptic event / neuron update", source=_HOPPNER)
register_device("truenorth", sop=26 * PJ,
                widths="TrueNorth energy per synaptic event (neuron updates and routing included)",
                source="Merolla et al., Science 345(6197), 2014")

SNN_DEVICES = ("cmos45_int32", "loihi", "spinnaker", "spinnaker2", "truenorth")
ANN_DEVICES = ("cmos45_fp32",)


def get_device(device):
    """A ``Device`` by name (or the ``Device`` itself); a clear error naming the known ones."""
    if isinstance(device, Device):
        return device
    if device not in DEVICES:
        raise ValueError(f"device must be one of {sorted(DEVICES)} (or register_device it), "
                         f"got {device!r}")
    return DEVICES[device]


def names():
    return sorted(DEVICES)


@dataclasses.dataclass
class LayerCounts:
    """Per-image operation counts of one layer (plain numbers, any source).

    ``sops``: synaptic operations this layer *receives*; ``neuron_updates``: neurons x steps;
    ``spikes``: spikes this layer *emits*; ``macs``: MACs of analog-input work in the SNN (the
    encoder conv); ``ann_macs``: MACs of the same layer in the ANN twin.
    """

    name: str
    sops: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    macs: float = 0.0
    ann_macs: float = 0.0


def per_op(device, host="cmos45_fp32"):
    """``{op: J}`` charged per op of an SNN on ``device``: ``neuron_update`` / ``spike`` are 0
    where the device has no separate figure (included in its per-event energy, or not
    published), ``sop`` stays None where the device has none, and ``mac`` (the analog-input
    layers: the encoder conv, full-precision weights on pixels) is the ``host``'s on every
    device, so all devices pay the same for it."""
    dev, host_dev = get_device(device), get_device(host)
    return {"sop": dev.sop, "neuron_update": dev.neuron_update or 0.0,
            "spike": dev.spike or 0.0, "mac": host_dev.mac}


def snn_energy(layers, device, host="cmos45_fp32"):
    """Energy per inference (J) of an SNN: ``{layer: {op: J, "total": J}, "total": J}``.

    Args:
      layers: ``LayerCounts`` (or dicts with its fields) per layer, per image.
      device: device name or ``Device``.
      host: device charged for ``macs`` (analog-input layers; default 45 nm fp32, 4.6 pJ).
    Energies are ``count x per_op(device, host)[op]``; SOPs on a device without a SOP energy (or
    MACs without any MAC energy) are an error.
    """
    e = per_op(device, host)
    out, total = {}, 0.0
    for lc in _as_counts(layers):
        for op, count in (("sop", lc.sops), ("mac", lc.macs)):
            if count and e[op] is None:
                who = f"host {host!r}" if op == "mac" else f"device {get_device(device).name!r}"
                raise ValueError(f"{who} has no {op} energy; layer {lc.name!r} has {op}s")
        row = {"sop": float(lc.sops) * (e["sop"] or 0.0),
               "neuron_update": float(lc.neuron_updates) * e["neuron_update"],
               "spike": float(lc.spikes) * e["spike"],
               "mac": float(lc.macs) * (e["mac"] or 0.0)}
        row["total"] = sum(row.values())
        total += row["total"]
        out[lc.name] = row
    out["total"] = total
    return out


def ann_energy(layers, device="cmos45_fp32"):
    """Energy per inference (J) of the ANN twin: ``ann_macs x mac`` per layer, and ``total``.

    Only MACs are charged (activations, BatchNorm and quantizers are not), the usual convention.
    """
    dev = get_device(device)
    if dev.mac is None:
        raise ValueError(f"device {dev.name!r} has no MAC energy (an ANN cannot run on it); "
                         f"use one of {[n for n, d in DEVICES.items() if d.mac is not None]}")
    out = {lc.name: float(lc.ann_macs) * dev.mac for lc in _as_counts(layers)}
    out["total"] = float(sum(out.values()))
    return out


def _as_counts(layers):
    res = []
    for lc in layers:
        if isinstance(lc, LayerCounts):
            res.append(lc)
        elif isinstance(lc, dict):
            unknown = set(lc) - {f.name for f in dataclasses.fields(LayerCounts)}
            if unknown:
                raise ValueError(f"layers: unknown count fields {sorted(unknown)}; accepted: "
                                 f"{[f.name for f in dataclasses.fields(LayerCounts)]}")
            res.append(LayerCounts(**lc))
        else:
            raise ValueError(f"layers must hold LayerCounts or dicts, got {type(lc).__name__}")
    return res


def describe(device):
    """One line: the device's per-op energies in pJ and its source."""
    dev = get_device(device)
    parts = [f"{op} {getattr(dev, op) / PJ:g} pJ" for op in OPS if getattr(dev, op) is not None]
    return f"{dev.name}: {', '.join(parts)} ({dev.widths}; {dev.source})"
