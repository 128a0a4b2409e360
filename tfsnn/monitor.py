"""Spike and synaptic-operation (SOP) accounting with exact fan-out, and the stat-file texts
of ALL_INT_SNN (spec all_int_snn.md §3). No tfsnn imports (bottom of the dependency order).

Definitions (used by ``tfsnn.simulate`` and the files below):

* A **spike** is one event of a spiking layer: hidden spikes are +1 or -1; an encoder spike is
  one event of amplitude ``2^k`` (counted once; its amplitude is a weight, not more events).
* An **SOP** is one input event times one synapse it reaches: an event at input position
  ``(h, w, c)`` of a conv layer costs ``fanout(h, w)`` = (number of output positions whose window
  covers ``(h, w)``) x ``C_out`` SOPs. Border positions reach fewer synapses; zero (ternary)
  weights are counted (a synapse is a kernel entry). SOPs are attributed to the *receiving*
  layer: ``conv2`` counts the encoder's events, ..., ``output`` counts the last hidden layer's
  events x ``num_classes`` (the output fan-out *is* counted, unlike the original's CIFAR
  script). Encoder events count once each (the original weighted them by ``2^k``; same at k=0).
  The encoder's own input is analog: its cost is MACs (``ann_macs``), not SOPs.
* ANN MACs use the same exact fan-out: ``MACs = C_in x sum_{h,w} fanout(h, w)`` (padding zeros
  are not multiplied), so an ANN whose every input neuron is 1 costs as many MACs as SOPs.

Stat files (one line per (batch, step), batch-major: line ``b*T + t``; values summed over the
images of batch b; ``H`` = the hidden spiking layers, encoder excluded, as in the original):

=================  ==========================================================================
accuracy.txt       number of correct predictions (argmax of y_t) in batch b at step t (count)
spike_num.txt      cumulative sum_{l in H} sum_{tau <= t} sum_i |s_{l,i,tau}| (+1 and -1 alike)
spike_collect.txt  cumulative net sum_{l in H} sum_i n_{l,i,t} (#(+1) - #(-1)) = 2^k sum Q at
                   convergence
sop_num.txt        cumulative SOPs of all receiving layers (conv2.. and output) up to step t
abs_spike.txt      this step only: sum_{l in H} sum_i |s_{l,i,t}|
sum_spike.txt      this step only: sum_{l in H} sum_i s_{l,i,t}
=================  ==========================================================================
"""

import numpy as np
import tensorflow as tf

STAT_FILES = ("accuracy.txt", "spike_num.txt", "spike_collect.txt", "sop_num.txt",
              "abs_spike.txt", "sum_spike.txt")


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(i) for i in v)


def conv_fanout(input_hw, kernel_size, strides=1, padding="valid", out_channels=1):
    """Exact fan-out map ``[H, W]`` (int64) of a conv: synapses reached by one input event.

    Computed as the transposed conv of ones (output positions x kernel entries that touch each
    input position) times ``out_channels``.
    """
    h, w = (int(i) for i in input_hw)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(strides)
    padding = str(padding).upper()
    ones_in = tf.ones([1, h, w, 1], tf.float64)
    ker = tf.ones([kh, kw, 1, 1], tf.float64)
    out = tf.nn.conv2d(ones_in, ker, [sh, sw], padding)
    fan = tf.nn.conv2d_transpose(tf.ones_like(out), ker, [1, h, w, 1], [sh, sw], padding)
    return np.rint(fan.numpy()[0, :, :, 0]).astype(np.int64) * int(out_channels)


def conv_macs(input_hw, in_channels, kernel_size, strides=1, padding="valid", out_channels=1):
    """Exact MACs of one conv on one image (padding zeros not counted)."""
    return int(conv_fanout(input_hw, kernel_size, strides, padding, out_channels).sum()
               * int(in_channels))


def stat_series(correct, pos, neg, sops, hidden):
    """The six per-(batch, step) series of the stat files.

    Args:
      correct: ``[nb, T]`` correct predictions per batch and step.
      pos, neg: ``[nb, L, T]`` numbers of +1 / -1 events per batch, spiking layer and step.
      sops: ``[nb, R, T]`` SOPs per batch, receiving layer and step.
      hidden: indices (into L) of the layers in ``H``.
    Returns:
      dict file name -> int64 ``[nb, T]``.
    """
    pos, neg = np.asarray(pos, np.int64)[:, hidden], np.asarray(neg, np.int64)[:, hidden]
    abs_s = (pos + neg).sum(1)
    sum_s = (pos - neg).sum(1)
    return {"accuracy.txt": np.asarray(correct, np.int64),
            "spike_num.txt": np.cumsum(abs_s, 1),
            "spike_collect.txt": np.cumsum(sum_s, 1),
            "sop_num.txt": np.cumsum(np.asarray(sops, np.int64).sum(1), 1),
            "abs_spike.txt": abs_s,
            "sum_spike.txt": sum_s}


def stat_file_texts(series):
    """``{file name: text}`` of the series of ``stat_series``: one integer per line, batch-major
    (write them with ``tfsnn.runs.atomic_write_text``)."""
    return {name: "".join(f"{int(v)}\n" for v in np.asarray(series[name]).reshape(-1))
            for name in STAT_FILES}
