"""SavedModel export of a quantized ANN and of its converted integer SNN.

``export_snn(snn, path)`` writes a SavedModel whose functions carry the whole time loop (the
neuron state lives inside the call; nothing stateful is exported):

* ``serving_default``: ``images`` float32 ``[B, H, W, C]`` -> ``logits`` float32 ``[B, classes]``
  (at the last step; ``2^k`` x the ANN's at convergence) and ``class`` int64 ``[B]``.
* ``spike_stats``: ``images`` -> ``spikes_pos`` / ``spikes_neg`` int64 ``[L, T]`` (+1 / -1
  events of each spiking layer, encoder first, summed over the batch), ``sops`` int64 ``[R, T]``
  (SOPs of each receiving layer), ``logits_per_step`` float32 ``[B, T, classes]``.

Attributes of the loaded object: ``timesteps``, ``k``, ``use_int`` (int32 scalars),
``layer_names``, ``sop_layer_names`` (string vectors). ``export_ann(model, path)`` writes the
quantized ANN with the same ``serving_default`` signature. Both reload with
``tf.saved_model.load`` and ``keras.layers.TFSMLayer(path, call_endpoint="serving_default")``.

An export is written to a temporary directory beside ``path`` and renamed into place only when
complete, so a failed export never leaves a directory that looks whole.
"""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfsnn.conversion import split_snn
from tfsnn.layers.neurons.base import NeuronLayer
from tfsnn.simulation import make_batch_fn


def _image_spec(model):
    return tf.TensorSpec([None, *model.input.shape[1:]], tf.float32, name="images")


class _Module(tf.Module):
    pass


def _ann_module(model):
    m = _Module()
    m.model = model

    @tf.function(input_signature=[_image_spec(model)])
    def serve(images):
        logits = model(images, training=False)
        return {"logits": logits, "class": tf.argmax(logits, axis=-1)}

    m.serve = serve
    return m, {"serving_default": serve}


def _snn_module(snn, timesteps=None):
    enc, hidden, out = split_snn(snn)
    run = make_batch_fn(snn, timesteps)
    m = _Module()
    m.snn = snn
    t = enc.timesteps if timesteps is None else int(timesteps)
    m.timesteps = tf.Variable(t, dtype=tf.int32, trainable=False, name="timesteps")
    m.k = tf.Variable(int(np.log2(enc.amplitude)), dtype=tf.int32, trainable=False, name="k")
    m.use_int = tf.Variable(int(bool(getattr(hidden[0], "use_int", False))) if hidden else 0,
                            dtype=tf.int32, trainable=False, name="use_int")
    m.layer_names = tf.Variable([enc.name] + [l.name for l in hidden], trainable=False,
                                name="layer_names")
    m.sop_layer_names = tf.Variable([l.name for l in hidden] + [out.name], trainable=False,
                                    name="sop_layer_names")

    @tf.function(input_signature=[_image_spec(snn)])
    def serve(images):
        logits = run(images)["logits"][:, -1]
        return {"logits": logits, "class": tf.argmax(logits, axis=-1)}

    @tf.function(input_signature=[_image_spec(snn)])
    def spike_stats(images):
        r = run(images)
        return {"spikes_pos": r["pos"], "spikes_neg": r["neg"], "sops": r["sops"],
                "logits_per_step": r["logits"]}

    m.serve, m.spike_stats = serve, spike_stats
    return m, {"serving_default": serve, "spike_stats": spike_stats}


def _atomic_save(module, signatures, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        if path.exists():  # replace an older export: move it aside first, drop it after
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / "export")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def export_snn(snn, path, timesteps=None):
    """Write a converted SNN (``tfsnn.convert.convert``) as a SavedModel at ``path``."""
    return _atomic_save(*_snn_module(snn, timesteps), path)


def export_ann(model, path):
    """Write a (quantized) Keras ANN as a SavedModel with the ``serving_default`` signature."""
    return _atomic_save(*_ann_module(model), path)


def _all_layers(layer):
    for sub in getattr(layer, "layers", ()):
        yield sub
        yield from _all_layers(sub)


def _stream_module(model):
    """A module with the ``step`` / ``reset`` signatures of a model of stateful neuron layers."""
    stateful = [l for l in _all_layers(model) if isinstance(l, NeuronLayer) and l.stateful]
    if not stateful:
        raise ValueError("export_stream needs a model with stateful neuron layers "
                         "(stateful=True, fixed batch size)")
    batch = model.input.shape[0]
    if batch is None:
        raise ValueError("export_stream needs a fixed batch size: keras.Input(shape, batch_size=B)")
    m = _Module()
    m.model = model
    spec = tf.TensorSpec([batch, *model.input.shape[2:]], model.input.dtype, name="frames")

    @tf.function(input_signature=[spec])
    def step(frames):
        out = model(frames[:, None], training=False)
        flat = [o[:, 0] for o in tf.nest.flatten(out)]
        return {"output" if len(flat) == 1 else f"output_{i}": o for i, o in enumerate(flat)}

    @tf.function(input_signature=[])
    def reset():
        for layer in stateful:
            layer.reset_states()
        return {"done": tf.constant(True)}

    m.step, m.reset = step, reset
    return m, {"serving_default": step, "step": step, "reset": reset}


def export_stream(model, path):
    """Write a model of ``stateful=True`` neuron layers as a streaming SavedModel at ``path``.

    Signatures: ``step`` (also ``serving_default``): ``frames`` ``[B, ...]`` (one time step of
    the model's ``[B, T, ...]`` input, fixed batch ``B``) -> ``output`` (``output_<i>`` for
    several) ``[B, ...]``, advancing the neuron states kept in the SavedModel's variables;
    ``reset``: zero every state -> ``done``. Stepping T frames gives the model's output on the
    whole ``[B, T, ...]`` sequence.
    """
    return _atomic_save(*_stream_module(model), path)
