"""TensorBoard views of spiking activity.

* ``SpikeActivity``: a Keras callback for training scripts. After every epoch it runs a fixed
  sample of images through the model and logs, per probed layer, the spike events per neuron per
  image (scalar), SOPs per image (scalar, when the layer's fan-out is known), a histogram of
  per-neuron spike counts, and an image of the activity (neurons x images, or a raster when the
  layer output has a time axis ``[batch, time, ...]``).
* ``all_int_probes(model, k)``: the probes of an ALL_INT quantized ANN: the ``act<i>`` layers, as
  the SNN would fire them (a hidden neuron at level a fires 2^k a net spikes; the encoder fires
  one event per level), with the fan-out of the layer that receives them.

Tags are ``spikes/<layer>/{events_per_neuron,sops_per_image,counts,activity}`` and
``spikes/total/sops_per_image``; they go to ``<log_dir>/spikes``.

For simulation runs of a converted SNN (``tfsnn.simulate``): ``log_simulation`` writes the same
kind of views with the *time step* as the TensorBoard step, ``save_simulation_plots`` the PNGs,
and ``sample_spike_trains`` the per-step spikes of a few images for rasters.
"""
import keras
import numpy as np
import tensorflow as tf

from tfsnn.accounting import activity_stats
from tfsnn.conversion import split_snn
from tfsnn.viz import plots


class SpikeActivity(keras.callbacks.Callback):
    """Logs spiking activity of probed layers on a fixed image sample after every epoch.

    Args:
      log_dir: TensorBoard directory (events go to ``<log_dir>/spikes``).
      images: the fixed sample, preprocessed model inputs ``[n, ...]``.
      probes: ``{layer_name: (scale, fanout or None)}`` (e.g. ``all_int_probes``), or a function
        ``model -> probes`` called when training starts.
      max_neurons: neurons shown in the activity images.
      time_axis: layer outputs are spike trains ``[n, T, ...]``: rates are per step and the
        image is the raster of the first sample image; otherwise a neurons x images heatmap.
    """

    def __init__(self, log_dir, images, probes, max_neurons=64, time_axis=False):
        super().__init__()
        self.log_dir, self.images, self.probes = str(log_dir), images, probes
        self.max_neurons, self.time_axis = max_neurons, time_axis
        self._writer = None

    def _probe_model(self):
        if callable(self.probes):
            self.probes = self.probes(self.model)
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
            for (name, (scale, fanout)), out in zip(self.probes.items(), outputs):
                out = out.numpy()
                rate, sops, counts = activity_stats(out, scale, fanout, self.time_axis)
                tf.summary.scalar(f"spikes/{name}/events_per_neuron", rate)
                if sops is not None:
                    tf.summary.scalar(f"spikes/{name}/sops_per_image", sops)
                    total += sops
                tf.summary.histogram(f"spikes/{name}/counts", counts.reshape(-1))
                pick = np.linspace(0, counts.shape[1] - 1,
                                   min(self.max_neurons, counts.shape[1])).astype(int)
                if self.time_axis:
                    train = out[0].reshape(out.shape[1], -1)[:, pick]
                    fig = plots.raster(train, title=f"{name}: spike raster, image 0")
                else:
                    fig = plots.heatmap(counts[:, pick].T,
                                        title=f"{name}: spike counts per neuron")
                tf.summary.image(f"spikes/{name}/activity",
                                 tf.image.decode_png(plots.png_bytes(fig))[None])
            tf.summary.scalar("spikes/total/sops_per_image", total)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


# ----------------------------------------------------------------------------- simulations

def sample_spike_trains(snn, images, timesteps=None):
    """Per-step spikes of every spiking layer of a converted SNN on a few images.

    Returns ``{layer_name: int32 [n, T, H, W, C]}`` (encoder events have amplitude 2^k; hidden
    spikes are -1, 0, +1). Meant for small samples (rasters, histograms).
    """
    enc, hidden, _ = split_snn(snn)
    t = enc.timesteps if timesteps is None else int(timesteps)
    s = enc(tf.constant(images, tf.float32), timesteps=t)
    out = {enc.name: tf.cast(s, tf.int32).numpy()}
    for layer in hidden:
        s = layer(s)
        out[layer.name] = tf.cast(s, tf.int32).numpy()
    return out


def _neuron_pick(n, count):
    return np.linspace(0, n - 1, min(count, n)).astype(int)


def log_simulation(log_dir, result, trains=None, max_neurons=64):
    """Write a simulation's activity to TensorBoard, with the time step as the step axis.

    Args:
      log_dir: TensorBoard directory.
      result: a ``tfsnn.simulate.SimResult``.
      trains: optional ``sample_spike_trains`` output for rasters and count histograms.
    Tags (step t = time steps run, 1..T): ``snn/accuracy`` (and ``snn/ann_accuracy``),
    ``snn/agreement_with_ann`` (share of images predicted as the ANN does),
    ``snn/<layer>/firing_rate`` (events per neuron per image at that step),
    ``snn/<layer>/spikes_per_image``, ``snn/<layer>/negative_spikes_per_image`` and
    ``snn/<layer>/sops_per_image`` (cumulative),
    ``snn/total/sops_per_image`` (cumulative); with ``trains``: ``snn/<layer>/net_counts``
    (histogram at the last step) and ``snn/<layer>/raster`` (image, first sample image).
    """
    n = max(result.n_images, 1)
    events = (result.pos + result.neg).sum(axis=0)  # [L, T]
    neg = result.neg.sum(axis=0)
    agree = (None if result.ann_logits is None else
             (result.predictions == result.ann_predictions[:, None]).mean(0))
    sops = result.sops.sum(axis=0)                    # [R, T]
    sizes = _layer_sizes(result, trains)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        acc = result.accuracy_per_step if result.labels is not None else None
        for t in range(result.timesteps):
            step = t + 1
            if acc is not None:
                tf.summary.scalar("snn/accuracy", acc[t], step=step)
                if result.ann_accuracy is not None:
                    tf.summary.scalar("snn/ann_accuracy", result.ann_accuracy, step=step)
            if agree is not None:
                tf.summary.scalar("snn/agreement_with_ann", agree[t], step=step)
            for l, name in enumerate(result.layer_names):
                if sizes.get(name):
                    tf.summary.scalar(f"snn/{name}/firing_rate", events[l, t] / n / sizes[name],
                                      step=step)
                tf.summary.scalar(f"snn/{name}/spikes_per_image", events[l, :step].sum() / n,
                                  step=step)
                tf.summary.scalar(f"snn/{name}/negative_spikes_per_image", neg[l, :step].sum() / n,
                                  step=step)
            for r, name in enumerate(result.sop_layer_names):
                tf.summary.scalar(f"snn/{name}/sops_per_image", sops[r, :step].sum() / n, step=step)
            tf.summary.scalar("snn/total/sops_per_image", sops[:, :step].sum() / n, step=step)
        for name, train in (trains or {}).items():
            net = train.sum(axis=1).reshape(len(train), -1)
            tf.summary.histogram(f"snn/{name}/net_counts", net.reshape(-1), step=result.timesteps)
            flat = train[0].reshape(train.shape[1], -1)
            pick = _neuron_pick(flat.shape[1], max_neurons)
            fig = plots.raster(flat[:, pick], title=f"{name}: spikes of {len(pick)} neurons, image 0")
            tf.summary.image(f"snn/{name}/raster", tf.image.decode_png(plots.png_bytes(fig))[None],
                             step=result.timesteps)
    writer.close()


def _layer_sizes(result, trains):
    if trains:
        return {name: int(np.prod(t.shape[2:])) for name, t in trains.items()}
    return {}


def save_simulation_plots(out_dir, result, trains=None, ann_macs=None, max_neurons=64):
    """PNG figures of a simulation in ``out_dir``; returns their paths.

    ``accuracy_vs_timestep.png`` and ``sops_vs_accuracy.png`` (needs labels),
    ``firing_rates.png`` (spikes per neuron per image over the run, per layer; needs ``trains``
    for the layer sizes), and ``raster_<layer>.png`` per layer (with ``trains``).
    """
    from pathlib import Path
    out_dir = Path(out_dir)
    paths = []
    n = max(result.n_images, 1)
    if result.labels is not None:
        acc = result.accuracy_per_step
        paths.append(plots.save_png(plots.accuracy_vs_timestep(acc, result.ann_accuracy),
                                    out_dir / "accuracy_vs_timestep.png"))
        cum = np.cumsum(result.sops.sum(axis=(0, 1)), dtype=np.float64) / n
        paths.append(plots.save_png(plots.sops_vs_accuracy(cum, acc, ann_macs, result.ann_accuracy),
                                    out_dir / "sops_vs_accuracy.png"))
    sizes = _layer_sizes(result, trains)
    if sizes:
        per_image = result.spikes_per_image()
        names = [m for m in result.layer_names if m in sizes]
        rates = [per_image[m] / sizes[m] for m in names]
        paths.append(plots.save_png(plots.firing_rates(names, rates, ylabel="spikes / neuron / image"),
                                    out_dir / "firing_rates.png"))
    for name, train in (trains or {}).items():
        flat = train[0].reshape(train.shape[1], -1)
        pick = _neuron_pick(flat.shape[1], max_neurons)
        paths.append(plots.save_png(plots.raster(flat[:, pick], title=f"{name}: image 0"),
                                    out_dir / f"raster_{name}.png"))
    return paths
