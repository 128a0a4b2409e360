"""ANN -> SNN conversion.

* ``integer``: a quantized ANN -> the exact integer SNN with dynamic integer thresholds
  (``convert``, ``split_snn``, ``ann_levels``, ``default_timesteps``).
* ``thresholds``: the integer / float / encoder thresholds derived from BatchNorm + quantizer.
* ``balancing``: a ReLU ANN -> an IF/LIF SNN by weight transfer and threshold balancing (the
  hybrid method's first stage).
"""
from tfsnn.conversion.integer import (ann_levels, convert, default_timesteps,  # noqa: F401
                                      parse_model, split_snn)
