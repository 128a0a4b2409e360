"""TensorBoard views of spiking activity, one naming scheme for training and simulation.

Layers are named as the SNN names them: a layer of neurons takes the name of the synaptic
layer (conv / dense) that drives it, so the ALL_INT ANN's ``act3`` (after ``conv3``) and the
converted SNN's ``conv3`` are both ``conv3``. SOPs belong to the layer that *receives* the
events. The TensorBoard step is 0-based everywhere: the epoch index in training, the time step t
in simulation (values after step t, cumulative where marked).

Per layer ``<layer>`` (``LAYER_TAGS``):

* ``spikes/<layer>/spikes_per_image``: spikes per image (simulation: cumulative up to step t)
* ``spikes/<layer>/spikes_per_neuron``: spikes per neuron per image (ditto)
* ``spikes/<layer>/firing_rate``: spikes per neuron per time step (only where there is a time
  axis: simulation (at step t), training probes with ``time_axis=True``)
* ``spikes/<layer>/sops_per_image``: SOPs the layer receives per image (cumulative in simulation)
* ``spikes/<layer>/counts``: histogram of per-neuron net spike counts per image (simulation:
  cumulative up to step t, at every step, on the sampled images)
* ``spikes/<layer>/activity``: image: a raster of image 0 over its active steps (time axis) or
  a neurons x images heatmap, with the neuron selection stated
* ``spikes/total/sops_per_image``

Simulation only (``SIM_TAGS``): ``snn/accuracy``, ``snn/ann_accuracy``,
``snn/agreement_with_ann`` (share of images predicted as the ANN does), ``negative`` spikes as
``spikes/<layer>/negative_spikes_per_image``, with a report ``energy/<device>`` (µJ per image if
inference stopped after step t; the ANN's as ``energy/ann_<device>``) and the per-layer table in
the Text tab as ``report/per_layer``.
"""
import keras
import numpy as np
import tensorflow as tf

from tfsnn.accounting import activity_stats
from tfsnn.simulation import spike_trains
from tfsnn.viz import plots

LAYER_TAGS = ("spikes_per_image", "spikes_per_neuron", "firing_rate", "sops_per_image",
              "counts", "activity")
SIM_TAGS = ("snn/accuracy", "snn/ann_accuracy", "snn/agreement_with_ann")


def _synaptic(layer):
    inner = getattr(layer, "layer", layer)
    return hasattr(inner, "kernel_size") or hasattr(inner, "units")


def snn_layer_names(model, probes):
    """``{probe: (layer name, receiving layer name or None)}``: the synaptic layer before each
    probed layer of ``model`` (its name is the SNN layer's) and the next one (which receives
    its spikes), in ``model.layers`` order. A probe with no synaptic layer before it keeps its
    own name."""
    layers = list(model.layers)
    index = {l.name: i for i, l in enumerate(layers)}
    out = {}
    for p in probes:
        i = index[p]
        before = [l.name for l in layers[:i] if _synaptic(l)]
        after = [l.name for l in layers[i + 1:] if _synaptic(l)]
        out[p] = (before[-1] if before else p, after[0] if after else None)
    return out


class SpikeActivity(keras.callbacks.Callback):
    """Logs spiking activity of probed layers on a fixed image sample after every epoch.

    Args:
      log_dir: TensorBoard directory (events go to ``<log_dir>/spikes``).
      images: the fixed sample, preprocessed model inputs ``[n, ...]``.
      probes: ``{layer_name: (scale, fanout or None)}`` (e.g. ``all_int_probes``), or a function
        ``model -> probes`` called when training starts.
      max_neurons: neurons shown in the activity images (``plots.select_neurons``).
      time_axis: layer outputs are spike trains ``[n, T, ...]``: rates are per step and the
        image is the raster of the first sample image; otherwise a neurons x images heatmap.
      tag_names: ``{probe: (layer, receiver)}`` overriding ``snn_layer_names``.
    Tags: see the module doc (step = epoch, 0-based).
    """

    def __init__(self, log_dir, images, probes, max_neurons=64, time_axis=False, tag_names=None):
        super().__init__()
        self.log_dir, self.images, self.probes = str(log_dir), images, probes
        self.max_neurons, self.time_axis = max_neurons, time_axis
        self.tag_names = tag_names
        self._writer = None

    def _probe_model(self):
        if callable(self.probes):
            self.probes = self.probes(self.model)
        if self.tag_names is None:
            self.tag_names = snn_layer_names(self.model, self.probes)
        outs = [self.model.get_layer(n).output for n in self.probes]
        return keras.Model(self.model.input, outs)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir + "/spikes")
            self._probe = self._probe_model()
        outputs = self._probe(self.images, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        total = 0.0
        with self._writer.as_default(step=epoch):
            for (probe, (scale, fanout)), out in zip(self.probes.items(), outputs):
                name, receiver = self.tag_names[probe]
                out = out.numpy()
                rate, sops, counts = activity_stats(out, scale, fanout, self.time_axis)
                steps = out.shape[1] if self.time_axis else 1
                tf.summary.scalar(f"spikes/{name}/spikes_per_image", float(counts.sum(1).mean()))
                tf.summary.scalar(f"spikes/{name}/spikes_per_neuron", rate * steps)
                if self.time_axis:
                    tf.summary.scalar(f"spikes/{name}/firing_rate", rate)
                if sops is not None:
                    tf.summary.scalar(f"spikes/{receiver or name}/sops_per_image", sops)
                    total += sops
                tf.summary.histogram(f"spikes/{name}/counts", counts.reshape(-1))
                pick, how = plots.select_neurons(counts.sum(0), self.max_neurons)
                if self.time_axis:
                    train = out[0].reshape(out.shape[1], -1)[:, pick]
                    t_act = plots.active_steps(train)
                    fig = plots.raster(train[:t_act], title=f"{name}: spikes of image 0",
                                       selection=how, caption=f"epoch {epoch}")
                else:
                    fig = plots.heatmap(counts[:, pick].T, ylabel=f"neuron ({len(pick)} shown)",
                                        title=f"{name}: spikes per neuron per image",
                                        caption=f"epoch {epoch}; {how}")
                tf.summary.image(f"spikes/{name}/activity",
                                 tf.image.decode_png(plots.png_bytes(fig))[None])
            tf.summary.scalar("spikes/total/sops_per_image", total)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


# ----------------------------------------------------------------------------- simulations

def sample_spike_trains(snn, images, timesteps=None):
    """Per-step spikes of every spiking layer of a converted SNN (any graph ``tfsnn.convert``
    builds) on a few images: ``tfsnn.simulation.spike_trains``.

    Returns ``{layer_name: int32 [n, T, ...]}`` (encoder events have amplitude 2^k; hidden
    spikes are -1, 0, +1). Meant for small samples (rasters, histograms).
    """
    return spike_trains(snn, images, timesteps)


def _raster_of_image0(name, train, max_neurons, t_act, caption=None):
    """Raster figure of image 0 of ``train`` ``[n, T, ...]`` over steps ``0..t_act-1``."""
    flat = np.sign(train[0].reshape(train.shape[1], -1))
    pick, how = plots.select_neurons(np.abs(flat).sum(0), max_neurons)
    return plots.raster(flat[:t_act, pick], title=f"{name}: spikes of test image 0",
                        selection=how + f"; steps 0-{t_act - 1} of {train.shape[1]} "
                        "(all later steps silent)" if t_act < train.shape[1] else how,
                        caption=caption)


def documented_tags(result, trains=None, report=None):
    """The exact tag set ``log_simulation`` writes for these arguments (for checks)."""
    tags = {"spikes/total/sops_per_image"}
    if result.labels is not None:
        tags.add("snn/accuracy")
        if result.ann_accuracy is not None:
            tags.add("snn/ann_accuracy")
    if result.ann_logits is not None:
        tags.add("snn/agreement_with_ann")
    sizes = _layer_sizes(result, trains, report)
    for name in result.layer_names:
        tags |= {f"spikes/{name}/spikes_per_image", f"spikes/{name}/negative_spikes_per_image"}
        if sizes.get(name):
            tags |= {f"spikes/{name}/spikes_per_neuron", f"spikes/{name}/firing_rate"}
    tags |= {f"spikes/{name}/sops_per_image" for name in result.sop_layer_names}
    for name in trains or {}:
        tags |= {f"spikes/{name}/counts", f"spikes/{name}/activity"}
    if report is not None:
        tags.add("report/per_layer")
        tags |= {f"energy/{d}" for d in report.devices}
        tags |= {f"energy/ann_{d}" for d in report.ann_devices}
    return tags


def log_simulation(log_dir, result, trains=None, max_neurons=64, *, report=None, dataset=None):
    """Write a simulation's activity to TensorBoard; the step is the 0-based time step t.

    Args:
      log_dir: TensorBoard directory.
      result: a ``tfsnn.simulate.SimResult``.
      trains: optional ``sample_spike_trains`` output: count histograms at every step and the
        rasters of image 0 (over its active steps).
      report: optional ``tfsnn.report.Report``: energy per device over the steps and the
        per-layer table (Text tab); its neuron counts also give the rates without ``trains``.
      dataset: for the raster captions.
    Tags: ``documented_tags(result, trains, report)``; meanings in the module doc.
    """
    n = max(result.n_images, 1)
    ev = (result.pos + result.neg).sum(axis=0)         # [L, T]
    cum_ev = np.cumsum(ev, axis=1) / n
    cum_neg = np.cumsum(result.neg.sum(axis=0), axis=1) / n
    cum_sops = np.cumsum(result.sops.sum(axis=0), axis=1) / n   # [R, T]
    agree = (None if result.ann_logits is None else
             (result.predictions == result.ann_predictions[:, None]).mean(0))
    sizes = _layer_sizes(result, trains, report)
    acc = result.accuracy_per_step if result.labels is not None else None
    cum_net = {name: np.cumsum(tr, axis=1).reshape(tr.shape[0], tr.shape[1], -1)
               for name, tr in (trains or {}).items()}
    amp = max(int(result.amplitude), 1)
    energy = report.energy_per_step if report is not None else None
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        if report is not None:
            tf.summary.text("report/per_layer", report.markdown(), step=0)
        for t in range(result.timesteps):
            if acc is not None:
                tf.summary.scalar("snn/accuracy", acc[t], step=t)
                if result.ann_accuracy is not None:
                    tf.summary.scalar("snn/ann_accuracy", result.ann_accuracy, step=t)
            if agree is not None:
                tf.summary.scalar("snn/agreement_with_ann", agree[t], step=t)
            for l, name in enumerate(result.layer_names):
                tf.summary.scalar(f"spikes/{name}/spikes_per_image", cum_ev[l, t], step=t)
                tf.summary.scalar(f"spikes/{name}/negative_spikes_per_image", cum_neg[l, t],
                                  step=t)
                if sizes.get(name):
                    tf.summary.scalar(f"spikes/{name}/spikes_per_neuron",
                                      cum_ev[l, t] / sizes[name], step=t)
                    tf.summary.scalar(f"spikes/{name}/firing_rate", ev[l, t] / n / sizes[name],
                                      step=t)
            for r, name in enumerate(result.sop_layer_names):
                tf.summary.scalar(f"spikes/{name}/sops_per_image", cum_sops[r, t], step=t)
            tf.summary.scalar("spikes/total/sops_per_image", cum_sops[:, t].sum(), step=t)
            for name, net in cum_net.items():
                scale = amp if name == result.layer_names[0] else 1
                tf.summary.histogram(f"spikes/{name}/counts", net[:, t].reshape(-1) / scale,
                                     step=t)
            if energy is not None:
                for d in report.devices:
                    tf.summary.scalar(f"energy/{d}", energy[d][t] * 1e6, step=t)
                for d in report.ann_devices:
                    tf.summary.scalar(f"energy/ann_{d}", energy[f"ann:{d}"] * 1e6, step=t)
        if trains:
            t_act = plots.active_steps(*[tr[0] for tr in trains.values()])
            cap = plots.caption(dataset, None, int(np.log2(amp)), result.timesteps)
            for name, train in trains.items():
                fig = _raster_of_image0(name, train, max_neurons, t_act, cap)
                tf.summary.image(f"spikes/{name}/activity",
                                 tf.image.decode_png(plots.png_bytes(fig))[None],
                                 step=result.timesteps - 1)
    writer.close()


def _layer_sizes(result, trains, report=None):
    sizes = {}
    if report is not None:
        sizes.update({r["layer"]: r["neurons"] for r in report.rows})
    if trains:
        sizes.update({name: int(np.prod(t.shape[2:])) for name, t in trains.items()})
    return sizes


def save_simulation_plots(out_dir, result, trains=None, ann_macs=None, max_neurons=64, *,
                          report=None, dataset=None, formats=plots.FORMATS):
    """Figures of a simulation in ``out_dir`` (each as PNG at ``plots.DPI`` dpi plus the other
    ``formats``, e.g. SVG and PDF, alongside); returns the PNG paths.

    ``accuracy_vs_timestep.png`` and ``sops_vs_accuracy.png`` (need labels; ``ann_macs``: the
    ANN's MACs per image of the layers that receive SOPs (conv2..output: the encoder excluded),
    as a separate labelled bar), ``firing_rates.png``
    (spikes / neuron / step over the T steps, encoder in its own panel; layer sizes from
    ``trains`` or ``report``), ``energy_vs_accuracy.png`` (with ``report``: per device, over the
    steps) and ``raster_<layer>.png`` (with ``trains``: test image 0, its active steps, the most
    active neurons plus an even spread). Titles carry dataset, N, k and T.
    """
    from pathlib import Path
    out_dir = Path(out_dir)
    k = int(np.log2(max(int(result.amplitude), 1)))
    cap = plots.caption(dataset, result.n_images, k, result.timesteps)
    paths = []

    def save(fig, name):
        paths.append(plots.save_figure(fig, out_dir / name, formats)[0])

    if result.labels is not None:
        acc = result.accuracy_per_step
        eq = result.equal_from_step if result.ann_logits is not None else None
        save(plots.accuracy_vs_timestep(acc, result.ann_accuracy, equal_from_step=eq,
                                        caption=cap), "accuracy_vs_timestep.png")
        cum = np.cumsum(result.sops.sum(axis=(0, 1)), dtype=np.float64) / max(result.n_images, 1)
        save(plots.sops_vs_accuracy(cum, acc, ann_macs, result.ann_accuracy, caption=cap,
                                    mac_label="ANN MACs\n(same layers)"),
             "sops_vs_accuracy.png")
        if report is not None and report.energy_per_step is not None:
            e = report.energy_per_step
            save(plots.energy_vs_accuracy(
                {d: e[d] for d in report.devices}, acc,
                {f"{d} (MACs)": e[f"ann:{d}"] for d in report.ann_devices},
                result.ann_accuracy, caption=cap), "energy_vs_accuracy.png")
    sizes = _layer_sizes(result, trains, report)
    if sizes:
        per_image = result.spikes_per_image()
        names = [m for m in result.layer_names[1:] if m in sizes]
        rates = [per_image[m] / sizes[m] / result.timesteps for m in names]
        enc = result.layer_names[0]
        encoder = ((enc, per_image[enc] / sizes[enc] / result.timesteps) if enc in sizes
                   else None)
        save(plots.firing_rates(names, rates, encoder=encoder,
                                title="firing rate per layer (encoder events counted once)",
                                caption=cap), "firing_rates.png")
    if trains:
        t_act = plots.active_steps(*[tr[0] for tr in trains.values()])
        for name, train in trains.items():
            save(_raster_of_image0(name, train, max_neurons, t_act, cap), f"raster_{name}.png")
    return paths
