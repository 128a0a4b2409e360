"""ANN -> SNN conversion.

* ``integer``: a quantized ANN -> the exact integer SNN with dynamic integer thresholds
  (``convert``, ``split_snn``, ``default_timesteps``).
* ``thresholds``: the integer / float / encoder thresholds derived from BatchNorm + quantizer.
* ``balancing``: a ReLU ANN -> an IF/LIF SNN by weight transfer and threshold balancing (the
  hybrid method's first stage).
"""
from tfsnn.conversion.integer import convert, default_timesteps, parse_model, split_snn  # noqa: F401
from tfsnn.conversion.quantize import quantize_model  # noqa: F401,E402
