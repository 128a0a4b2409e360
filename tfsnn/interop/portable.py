"""Framework-neutral form of a trained ALL_INT ANN, and its loader into a tfsnn model.

An ``.npz`` holding, for the i-th hidden block, ``conv<i>/kernel`` (the *latent* kernel
``[kh, kw, C_in, C_out]``; the tfsnn layer re-applies the quantizer), ``act<i>/gamma``,
``act<i>/beta``, ``act<i>/moving_mean``, ``act<i>/moving_variance`` (``[C_out]`` each, BN order
of Keras), ``output/kernel`` ``[features, classes]``, and ``meta`` (a JSON string: ``model``,
``k``, ``use_ternary``). Any framework that can write these arrays can hand its model to tfsnn.
"""
import json

import numpy as np

from tfsnn.models import all_int as models

BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")


def save(path, arrays, model, k, use_ternary):
    """Write ``arrays`` (name -> ndarray, names as in the module docstring) and the metadata."""
    meta = json.dumps({"model": model, "k": int(k), "use_ternary": bool(use_ternary)})
    np.savez(path, meta=np.array(meta), **{n: np.asarray(a) for n, a in arrays.items()})


def read(path):
    """``(arrays, meta)`` of a portable ``.npz``."""
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        return {n: f[n] for n in f.files if n != "meta"}, meta


def from_tfsnn(model):
    """The portable arrays of a tfsnn ALL_INT Keras model (``tfsnn.models.all_int_model``)."""
    out = {}
    for layer in model.layers:
        if layer.name.startswith("conv") or layer.name == "output":
            out[f"{layer.name}/kernel"] = layer.kernel.numpy()
        elif layer.name.startswith("act"):
            for key, w in zip(BN_KEYS, layer.bn.get_weights()):
                out[f"{layer.name}/{key}"] = w
    return out


def to_tfsnn(arrays, meta):
    """A tfsnn Keras 3 ALL_INT model holding the portable arrays (quantized, per ``meta``)."""
    model = models.all_int_model(meta["model"], k=meta["k"], ternary=meta["use_ternary"])
    used = set()
    for layer in model.layers:
        if layer.name.startswith("conv") or layer.name == "output":
            name = f"{layer.name}/kernel"
            _check(name, arrays, layer.kernel.shape)
            layer.kernel.assign(arrays[name])
            used.add(name)
        elif layer.name.startswith("act"):
            names = [f"{layer.name}/{key}" for key in BN_KEYS]
            for n, w in zip(names, layer.bn.weights):
                _check(n, arrays, w.shape)
            layer.bn.set_weights([arrays[n] for n in names])
            used.update(names)
    extra = set(arrays) - used
    if extra:
        raise ValueError(f"portable arrays not used by model {meta['model']!r}: {sorted(extra)}")
    return model


def _check(name, arrays, shape):
    if name not in arrays:
        raise ValueError(f"portable arrays lack {name!r}")
    if tuple(arrays[name].shape) != tuple(shape):
        raise ValueError(f"{name}: shape {arrays[name].shape} does not match the model's {tuple(shape)}")
