"""SavedModel export of a quantized ANN and of its converted integer SNN, ready for serving.

``export_snn(snn, path)`` writes a SavedModel of any SNN ``tfsnn.convert`` builds (ALL_INT
chains and ``quantize_model`` twins) whose functions carry the whole time loop (the neuron state
lives inside the call; nothing stateful is exported). Signatures:

* ``serving_default``: ``images`` float32 ``[B, H, W, C]`` (preprocessed as for training) ->
  ``logits`` float32 ``[B, classes]`` (at the last step; ``2^k`` x the ANN's at convergence) and
  ``class`` int64 ``[B]``.
* ``serving_uint8`` (only with ``dataset=``): ``images`` uint8 ``[B, H0, W0, C]`` (the dataset's
  stored pixels 0..255) -> the same outputs; applies the dataset's evaluation preprocessing
  (``tfsnn.data.pipelines.preprocess(dataset, x, training=False, method)``) inside the graph.
* ``spike_stats``: ``images`` -> ``spikes_pos`` / ``spikes_neg`` int64 ``[L, T]`` (+1 / -1
  events of each spiking layer, encoder first, summed over the batch), ``sops`` int64 ``[R, T]``
  (SOPs of each receiving row), ``spikes_per_image`` int64 ``[B, L]`` (+1 and -1 events of each
  image over all steps), ``sops_per_image`` int64 ``[B, R]``, ``logits_per_step`` float32
  ``[B, T, classes]`` (definitions of ``tfsnn.simulate``; the per-image counts sum to the
  batch sums). Counts equal ``tfsnn.simulate``'s exactly; logits up to the float32 rounding of
  the readout matmul, whose summation order may depend on the batch shape (~1e-6 relative).
* ``metadata`` (no inputs): the attributes below as constants.

``export_ann(model, path)`` writes the quantized ANN with ``serving_default``, ``serving_uint8``
(with ``dataset=``) and ``metadata``.

Attributes (plain TF: ``tf.saved_model.load(path).<name>``, and the ``metadata`` signature):
``timesteps``, ``k``, ``use_int`` (SNN only), ``chunk_size``, ``classes`` (int32 scalars),
``input_shape`` (int32 ``[3]``, H, W, C), ``layer_names``, ``sop_layer_names`` (SNN only),
``dataset``, ``preprocessing`` (``"<dataset>:<method>"``, or ``""`` without ``dataset``) and
``int8_variables`` (strings). ``weights`` is the list of stored variables.
``saved_model_cli show --all`` lists the ``metadata`` outputs and prints every value (the
argument of the function ``attributes``, under "Concrete Functions").

Serving guarantees:

* Every variable is tracked by the exported object, so ``saved_model_cli run``, TF Serving and a
  process that never imports tfsnn (``tf.saved_model.load`` only) run every signature. Only the
  model's weights are stored: no optimizer state, no training-only objects.
* int8 storage: a variable whose values are all integers in ``[-128, 127]`` is stored as int8
  and cast back to its dtype inside the graph (exact). In the SNN these are the ternary kernels
  (int32 with ``use_int``, float32 otherwise) and the +-1 ``signs``; in the ANN a quantized
  kernel is stored as its quantized values (the ternary ``{-1, 0, 1}``, when the quantizer is
  idempotent on them, which is checked) instead of the latent float kernel. Their names are in
  ``int8_variables``. Measured (``du -sb``) on the default run (``all_int_lenet``, k=0, T=32,
  trained with Adam): the ANN export shrinks from 13.6 MB (Adam state, float32 latent kernels)
  to 1.4 MB, the SNN export from 5.3 MB (int32 kernels) to 2.1 MB.
* Input contract, checked inside the graph (a clear ``InvalidArgumentError``, never a crash):
  rank 4 (a ``[B, H, W]`` batch without the channel axis, or one unbatched ``[H, W, C]`` image,
  is refused with the shape received), and ``H, W, C`` equal to the model's. A dtype other than
  the signature's (float32; uint8 for ``serving_uint8``) is refused by TensorFlow before the
  graph runs (``InvalidArgumentError``: "expected to be a float tensor"). An empty batch gives
  empty outputs of the documented shapes.
* Bounded memory: the batch is processed in chunks of ``chunk_size`` images (a sequential
  ``tf.while_loop``), so peak memory follows ``chunk_size``, not ``B``. ``spike_stats`` on 5,000
  images of the default run's SNN (``bench/export_memory.py``): peak RSS 9.77 GB without chunks
  (the previous export), 1.39 GB with ``chunk_size=256`` (0.72 GB after loading).

An export is written to a temporary directory beside ``path`` and renamed into place only when
complete, so a failed export never leaves a directory that looks whole.
"""
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfsnn.conversion.graph import SnnGraph
from tfsnn.integers import check_integer
from tfsnn.layers.neurons.base import NeuronLayer
from tfsnn.simulation import check_timesteps, run_graph
from tfsnn.timeaxis import pad_time

CHUNK_SIZE = 256  # images per chunk inside the exported graph (default of export_snn / export_ann)


class _Module(tf.Module):
    pass


# --------------------------------------------------------------------------- stored weights

def _int8_exact(value):
    """True if every entry of ``value`` (numpy) is an integer in [-128, 127]."""
    if value.dtype == bool or value.size == 0 or value.dtype.kind not in "iuf":
        return False
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        return False
    return bool(np.all(value == np.round(value)) and value.min() >= -128 and value.max() <= 127)


def _quantized_kernels(model):
    """``{id(kernel variable): quantized value}`` for quantized-kernel layers (``QuantConv2D``,
    ``QuantDense``, ...) whose quantizer is idempotent on its own output (ternary): storing
    ``q(w)`` instead of the latent ``w`` then gives the same forward pass."""
    out = {}
    for layer in _all_layers(model):
        quant = getattr(layer, "kernel_quantizer", None)
        if quant is None or not hasattr(layer, "quantized_kernel"):
            continue
        qk = np.asarray(keras.ops.convert_to_numpy(layer.quantized_kernel()))
        again = np.asarray(keras.ops.convert_to_numpy(quant(tf.constant(qk))))
        if _int8_exact(qk) and np.array_equal(again, qk):
            out[id(layer.kernel)] = qk
    return out


def _store_weights(module, model, replace=None):
    """Copy the model's variables into ``module.weights`` (tf.Variables the module tracks;
    int8 where ``_int8_exact``). Returns ``state()``: the ``(keras variable, tensor)`` pairs of
    a ``keras.StatelessScope`` that makes the model read the stored copies (call it inside the
    traced function)."""
    replace = replace or {}
    seen, pairs, stored, int8 = set(), [], [], []
    for v in model.variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        value = replace.get(id(v))
        value = np.asarray(v.numpy() if value is None else value)
        name = v.path
        if _int8_exact(value):
            s = tf.Variable(value.astype(np.int8), trainable=False, name=name)
            int8.append(name)
        else:
            s = tf.Variable(value.astype(v.dtype), trainable=False, name=name)
        stored.append(s)
        pairs.append((v, s))
    module.weights = stored

    def state():
        return [(v, tf.cast(s, v.dtype)) for v, s in pairs]
    return state, int8


# --------------------------------------------------------------------------- input contract

def _checked(images, shape):
    """``images`` with the static shape ``[None, *shape]`` after an in-graph check of its rank
    and ``H, W, C`` (``InvalidArgumentError`` naming the expected and the received shape; no op
    that could fail on a wrong shape runs before it)."""
    want = f"[batch, {', '.join(str(d) for d in shape)}]"
    dims = tf.concat([tf.shape(images), tf.fill([4], -1)], 0)[1:4]  # defined for any rank
    ok = tf.logical_and(tf.equal(tf.rank(images), 4),
                        tf.reduce_all(tf.equal(dims, tf.constant(shape, tf.int32))))
    check = tf.debugging.Assert(
        ok, [f"images: expected shape {want} (NHWC; one image needs the batch axis, x[None], "
             "a [batch, H, W] batch the channel axis, x[..., None]); got shape",
             tf.shape(images)], summarize=8)
    with tf.control_dependencies([check]):
        return tf.ensure_shape(tf.identity(images), [None, *shape])


def _chunked(fn, images, chunk, per_image, sums):
    """Run ``fn(images[i:i + chunk])`` over the batch in sequence (bounded memory).

    ``fn`` returns ``(per-image dict, summed dict)``; ``per_image`` / ``sums``:
    ``{key: (dtype, shape without the batch axis / full shape)}``. Returns the per-image tensors
    concatenated over the batch and the sums added over the chunks (empty batch: ``[0, ...]``
    and zeros)."""
    n = tf.shape(images)[0]
    steps = (n + chunk - 1) // chunk
    tas = {k: tf.TensorArray(d, size=steps, infer_shape=False, element_shape=[None, *s])
           for k, (d, s) in per_image.items()}
    acc = {k: tf.zeros(s, d) for k, (d, s) in sums.items()}

    def body(i, tas, acc):
        per, tot = fn(images[i * chunk:tf.minimum((i + 1) * chunk, n)])
        tas = {k: ta.write(i, per[k]) for k, ta in tas.items()}
        acc = {k: a + tot[k] for k, a in acc.items()}
        return i + 1, tas, acc

    _, tas, acc = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), tas, acc),
                                parallel_iterations=1)
    return {k: tf.ensure_shape(ta.concat(), [None, *per_image[k][1]])
            for k, ta in tas.items()}, acc


# --------------------------------------------------------------------------- attributes

def _metadata(module, attrs):
    """Attach ``attrs`` ({name: python value}) as variables of ``module`` and return a zero-input
    ``metadata`` function returning them."""
    for name, value in attrs.items():
        if isinstance(value, (list, tuple)) and not value:
            var = tf.Variable(tf.constant([], tf.string), shape=[None], trainable=False,
                              name=name)
        else:
            var = tf.Variable(value, dtype=tf.string if _is_text(value) else tf.int32,
                              trainable=False, name=name)
        setattr(module, name, var)
    names = list(attrs)

    @tf.function(input_signature=[])
    def metadata():
        return {n: tf.identity(getattr(module, n)) for n in names}

    @tf.function
    def attributes(values):  # traced once on the values: show --all prints them
        del values
        return metadata()
    attributes.get_concrete_function(
        {n: tuple(v) if isinstance(v, (list, tuple)) else v for n, v in attrs.items()})
    module.attributes = attributes
    return metadata


def _is_text(value):
    if isinstance(value, (list, tuple)):
        return bool(value) and isinstance(value[0], str)
    return isinstance(value, str)


def _preprocessing(dataset, method, model_shape):
    """``(fn(uint8 images) -> float32, stored shape (H0, W0, C), "<dataset>:<method>")`` of the
    dataset's evaluation preprocessing, checked to produce ``model_shape``."""
    from tfsnn.data import registry
    record = registry.get(dataset)
    fn = record.preprocessor(method)
    out_shape = tuple(record.input_shape(method))
    if out_shape != tuple(model_shape):
        raise ValueError(f"dataset={dataset!r} (method {method!r}) gives images of shape "
                         f"{out_shape}, the model takes {tuple(model_shape)}")
    return (lambda x: fn(x, False)), tuple(record.shape), f"{record.name}:{method}"


def _add_uint8(signatures, serve, shape, dataset, method):
    """``serving_uint8``: the preprocessing of ``dataset`` in the graph, then ``serve``."""
    if dataset is None:
        return ""
    prep, raw, label = _preprocessing(dataset, method, shape)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serving_uint8(images):
        return serve(prep(_checked(images, raw)))
    signatures["serving_uint8"] = serving_uint8
    return label


# --------------------------------------------------------------------------- the modules

def _model_shape(model):
    shape = tuple(model.input.shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"model: expected an image input [batch, H, W, C] with fixed H, W, C; "
                         f"got {model.input.shape}")
    return tuple(int(d) for d in shape)


def _ann_module(model, chunk_size=CHUNK_SIZE, dataset=None, method="quant"):
    chunk = check_integer(chunk_size, "chunk_size", 1)
    shape = _model_shape(model)
    classes = int(model.output.shape[-1])
    m = _Module()
    state, int8 = _store_weights(m, model, _quantized_kernels(model))

    def serve(images):
        def one(x):
            with keras.StatelessScope(state_mapping=state()):
                logits = tf.cast(model(x, training=False), tf.float32)
            return {"logits": logits}, {}
        per, _ = _chunked(one, images, chunk, {"logits": (tf.float32, [classes])}, {})
        return {"logits": per["logits"], "class": tf.argmax(per["logits"], axis=-1)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serving_default(images):
        return serve(_checked(images, shape))

    sigs = {"serving_default": serving_default}
    label = _add_uint8(sigs, serve, shape, dataset, method)
    sigs["metadata"] = _metadata(m, {
        "chunk_size": chunk, "classes": classes, "input_shape": list(shape),
        "dataset": dataset or "", "preprocessing": label, "int8_variables": int8})
    for name, fn in sigs.items():
        setattr(m, name, fn)
    return m, sigs


def _use_int(graph):
    hidden = [graph.spiking[i] for i in graph.hidden_indices] or graph.spiking
    return int(any(bool(getattr(l, "use_int", False)) for l in hidden))


def _snn_stats(graph, t):
    """``fn(images [b, H, W, C]) -> (per-image dict, batch-sum dict)`` of ``spike_stats``
    (the counting rules of ``tfsnn.simulate``, kept per image)."""
    fans = {key: tf.constant(f, tf.int64) for key, f in graph.fanouts.items()}
    rows = graph.sop_row_names

    def stats(x):
        vals = run_graph(graph, x, t)
        b = tf.shape(x)[0]
        pos, neg = [], []
        for layer in graph.spiking:
            sp = tf.cast(vals[layer.name], tf.int32)
            unit = graph.units[layer.name]
            axes = list(range(2, len(sp.shape)))
            n_ev = tf.reduce_sum(tf.abs(sp), axis=axes) // unit  # [b, t_c]
            net = tf.reduce_sum(sp, axis=axes) // unit
            pos.append(pad_time((n_ev + net) // 2, t))
            neg.append(pad_time((n_ev - net) // 2, t))
        sops = {r: tf.zeros(tf.stack([b, t]), tf.int64) for r in rows}
        for layer, ins, row in graph.receivers:
            for i in ins:
                ev = tf.cast(tf.abs(tf.cast(vals[i], tf.int32)) // graph.units[i], tf.int64)
                axes = list(range(2, len(ev.shape)))
                sops[row] = sops[row] + pad_time(
                    tf.reduce_sum(ev * fans[(layer.name, i)], axis=axes), t)
        pos = tf.cast(tf.stack(pos, axis=1), tf.int64)  # [b, L, T]
        neg = tf.cast(tf.stack(neg, axis=1), tf.int64)
        sops = tf.stack([sops[r] for r in rows], axis=1)  # [b, R, T]
        logits = tf.cast(vals[graph.output.name], tf.float32)  # [b, T, classes]
        per = {"logits_per_step": logits,
               "spikes_per_image": tf.reduce_sum(pos + neg, axis=-1),
               "sops_per_image": tf.reduce_sum(sops, axis=-1)}
        tot = {"spikes_pos": tf.reduce_sum(pos, 0), "spikes_neg": tf.reduce_sum(neg, 0),
               "sops": tf.reduce_sum(sops, 0)}
        return per, tot
    return stats


def _snn_module(snn, timesteps=None, chunk_size=CHUNK_SIZE, dataset=None, method="quant"):
    graph = SnnGraph.of(snn)
    t = check_timesteps(graph, timesteps)
    chunk = check_integer(chunk_size, "chunk_size", 1)
    shape = _model_shape(snn)
    classes = int(graph.output.units)
    n_l, n_r = len(graph.spiking), len(graph.sop_row_names)
    m = _Module()
    state, int8 = _store_weights(m, snn)
    stats = _snn_stats(graph, t)

    def logits_only(x):
        with keras.StatelessScope(state_mapping=state()):
            vals = run_graph(graph, x, t)
        return {"logits": tf.cast(vals[graph.output.name][:, -1], tf.float32)}, {}

    def serve(images):
        per, _ = _chunked(logits_only, images, chunk, {"logits": (tf.float32, [classes])}, {})
        return {"logits": per["logits"], "class": tf.argmax(per["logits"], axis=-1)}

    def all_stats(x):
        with keras.StatelessScope(state_mapping=state()):
            return stats(x)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serving_default(images):
        return serve(_checked(images, shape))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def spike_stats(images):
        per, tot = _chunked(
            all_stats, _checked(images, shape), chunk,
            {"logits_per_step": (tf.float32, [t, classes]),
             "spikes_per_image": (tf.int64, [n_l]), "sops_per_image": (tf.int64, [n_r])},
            {"spikes_pos": (tf.int64, [n_l, t]), "spikes_neg": (tf.int64, [n_l, t]),
             "sops": (tf.int64, [n_r, t])})
        return {**per, **tot}

    sigs = {"serving_default": serving_default, "spike_stats": spike_stats}
    label = _add_uint8(sigs, serve, shape, dataset, method)
    sigs["metadata"] = _metadata(m, {
        "timesteps": t, "k": int(np.log2(graph.amplitude)), "use_int": _use_int(graph),
        "chunk_size": chunk, "classes": classes, "input_shape": list(shape),
        "layer_names": graph.layer_names, "sop_layer_names": graph.sop_row_names,
        "dataset": dataset or "", "preprocessing": label, "int8_variables": int8})
    for name, fn in sigs.items():
        setattr(m, name, fn)
    return m, sigs


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


def export_snn(snn, path, timesteps=None, *, chunk_size=CHUNK_SIZE, dataset=None,
               method="quant"):
    """Write a converted SNN (any ``tfsnn.convert`` output) as a SavedModel at ``path``.

    Args:
      snn: the converted SNN.
      path: the SavedModel directory (replaced atomically if it exists).
      timesteps: steps the exported SNN runs (default the SNN's; at most its threshold tables').
      chunk_size: images per chunk inside the graph (peak memory follows it).
      dataset: a ``tfsnn.data`` dataset name: adds ``serving_uint8`` with its preprocessing.
      method: the preprocessing method of ``dataset`` (``"quant"`` for ALL_INT / zoo runs).
    Returns:
      ``path`` as a ``Path``.
    """
    return _atomic_save(*_snn_module(snn, timesteps, chunk_size, dataset, method), path)


def export_ann(model, path, *, chunk_size=CHUNK_SIZE, dataset=None, method="quant"):
    """Write a (quantized) Keras ANN as a SavedModel (``serving_default``, ``metadata``, and
    ``serving_uint8`` with ``dataset``; arguments as ``export_snn``)."""
    return _atomic_save(*_ann_module(model, chunk_size, dataset, method), path)


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
