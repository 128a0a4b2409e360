"""Bridges to other toolkits. Imported on demand only; the core never imports them.

* ``tfsnn.interop.portable``: the framework-neutral form of a trained ALL_INT ANN (an ``.npz``
  of kernels and BN parameters) and its loader into a tfsnn Keras 3 model.
* ``tfsnn.interop.tfmot``: tensorflow-model-optimization (Keras 2, ``tf_keras``) QAT with tfsnn's
  quantizers; needs ``pip install tfsnn[tfmot]`` and ``TF_USE_LEGACY_KERAS=1``. The training
  procedure that uses it is ``tfsnn.training.tfmot``.
* ``tfsnn.interop.nir``: NIR export (``to_nir``, ``save_nir``) and import (``from_nir``) of
  directly trained SNNs; needs ``pip install tfsnn[nir]`` (``nir`` is imported on first use).

Bridges only: nothing here imports ``tfsnn.training``.
"""
