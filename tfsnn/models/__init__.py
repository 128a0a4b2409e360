"""Every architecture tfsnn builds, by name: one registry over the families' modules.

* ``all_int``: ALL_INT_SNN's quantized ANNs (``all_int_lenet``, ``all_int_vgg``), converted to
  integer SNNs by ``tfsnn.conversion``.
* ``spiking``: surrogate-gradient SNNs of the hybrid/STDB and spike-based-BP papers (VGG, ResNet,
  LeNet) and their ReLU ANN twins (``tfsnn.models.spiking.ann``).
* ``iir``: IIR-SNN classifiers and the associative-memory network.
* ``proxy``: the proxy-learning network.
* ``zoo``: plain-Keras MLP / VGG / ResNet-8 / ResNet-20 (``tfsnn.models.zoo``), quantized by
  ``tfsnn.quantize_model`` and converted exactly by ``tfsnn.convert``.

``build(name, **kwargs)`` calls the family's builder (its keyword arguments are documented there);
``names(family=None)`` lists the registered names; ``register`` adds a user architecture.
"""
import dataclasses
import functools
from typing import Callable

from tfsnn.models import all_int, iir, proxy, spiking, zoo

__all__ = ["ModelEntry", "build", "entry", "names", "register"]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: ``builder(**kwargs)`` returns a Keras model."""
    name: str
    family: str
    builder: Callable
    summary: str = ""


_REGISTRY: dict = {}


def register(name, family, builder, summary=""):
    """Register ``builder`` under ``name`` (a new name; re-registering raises ValueError)."""
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered ({_REGISTRY[name].family})")
    _REGISTRY[name] = ModelEntry(name, family, builder, summary)
    return _REGISTRY[name]


def names(family=None):
    """Sorted registered names (of one ``family`` if given)."""
    return sorted(n for n, e in _REGISTRY.items() if family in (None, e.family))


def entry(name):
    """The ``ModelEntry`` of ``name``; ValueError listing the known names if there is none."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {names()}")
    return _REGISTRY[name]


def build(name, **kwargs):
    """Build the registered architecture ``name`` with the family builder's ``kwargs``."""
    return entry(name).builder(**kwargs)


for _name in all_int.ALL_INT_ARCHS:
    register(_name, "all_int", functools.partial(all_int.all_int_model, _name),
             "quantized ANN (ternary kernels, k-level activations) -> exact integer SNN")
for _name in spiking.names():
    register(_name, "spiking", functools.partial(spiking.snn, _name),
             f"surrogate-gradient SNN ({spiking.FAMILY[_name]} family); ReLU twin: spiking.ann")
for _name, _builder in iir.IIR_BUILDERS.items():
    register(_name, "iir", _builder, "IIR-synapse SNN classifier")
register("associative_memory_net", "iir", iir.associative_memory_net,
         "IIR-synapse SNN of the associative-memory task")
register("proxy_fashion_mnist", "proxy", proxy.proxy_fashion_mnist,
         "proxy-learning network (ReLU ANN gradient, IF SNN forward)")
for _name in zoo.ZOO:
    register(_name, "zoo", functools.partial(zoo.zoo_model, _name),
             "plain Keras layers -> tfsnn.quantize_model twin -> exact integer SNN")
del _name, _builder
