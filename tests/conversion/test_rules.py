"""Per-rule checks of ``tfsnn.conversion.rules`` and its spiking layers against brute-force numpy
references: exact fan-out (stride / padding / dilation borders), the integer synapse, the
spiking max / sum pool over running counts, residual sums, the signed neuron's recurrence."""
import numpy as np
import pytest

from tfsnn.conversion.rules import fanout, macs
from tfsnn.layers.neurons.integer import IntegerSynapse, SpikeOp, SpikingNeuron
from tfsnn.layers.quant import QuantConv2D, QuantDense, QuantDepthwiseConv2D


def _pads(n, k, s, d, padding):
    """Output length and leading pad of one axis (TF conventions)."""
    eff = d * (k - 1) + 1
    if padding == "valid":
        return (n - eff) // s + 1, 0
    out = -(-n // s)
    return out, max((out - 1) * s + eff - n, 0) // 2


def _taps(shape, ksize, strides, padding, dil):
    """``[(out_i, out_j, in_i, in_j, ki, kj)]`` of every in-bounds kernel tap, by loops."""
    (h, w), (kh, kw), (sh, sw), (dh, dw) = shape, ksize, strides, dil
    oh, ph = _pads(h, kh, sh, dh, padding)
    ow, pw = _pads(w, kw, sw, dw, padding)
    taps = []
    for oi in range(oh):
        for oj in range(ow):
            for a in range(kh):
                for b in range(kw):
                    i, j = oi * sh - ph + a * dh, oj * sw - pw + b * dw
                    if 0 <= i < h and 0 <= j < w:
                        taps.append((oi, oj, i, j, a, b))
    return taps, (oh, ow)


@pytest.mark.parametrize("geo", [
    dict(kernel_size=3, strides=2, padding="same", dilation_rate=1, hw=(9, 8)),
    dict(kernel_size=(3, 2), strides=(2, 3), padding="valid", dilation_rate=1, hw=(9, 10)),
    dict(kernel_size=3, strides=1, padding="same", dilation_rate=2, hw=(7, 9)),
    dict(kernel_size=(2, 3), strides=1, padding="valid", dilation_rate=(3, 2), hw=(10, 9)),
])
@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_fanout_matches_brute_force(geo, kind):
    geo = dict(geo)
    hw, c, f = geo.pop("hw"), 3, 4
    if kind == "conv":
        layer = QuantConv2D(f, **geo)
        per = f
    else:
        layer = QuantDepthwiseConv2D(geo["kernel_size"], geo["strides"], geo["padding"], 2,
                                     geo["dilation_rate"])
        per = 2
    layer.build((None, *hw, c))
    taps, _ = _taps(hw, layer.kernel_size, layer.strides, layer.padding,
                    tuple(layer.dilation_rate))
    ref = np.zeros(hw, np.int64)
    for _, _, i, j, _, _ in taps:
        ref[i, j] += per
    got = fanout(layer, (*hw, c))
    np.testing.assert_array_equal(got, np.repeat(ref[:, :, None], c, axis=2))
    assert macs(layer, (*hw, c)) == ref.sum() * c
    dense = QuantDense(7)
    assert macs(dense, (5,)) == 35


@pytest.mark.parametrize("geo", [dict(strides=2, padding="same", dilation_rate=1),
                                 dict(strides=1, padding="valid", dilation_rate=2)])
def test_integer_synapse_matches_numpy_conv(geo):
    rng = np.random.default_rng(0)
    hw, c, f = (7, 8), 3, 2
    kern = rng.integers(-1, 2, (3, 3, c, f)).astype(np.int32)
    syn = IntegerSynapse("conv", kern.shape, **geo)
    syn.build((None, None, *hw, c))
    syn.set_weights([kern])
    x = rng.integers(-2, 3, (2, 4, *hw, c)).astype(np.int32)  # [B, T, H, W, C] increments
    got = np.asarray(syn(x))
    taps, (oh, ow) = _taps(hw, (3, 3), (geo["strides"],) * 2, geo["padding"],
                           (geo["dilation_rate"],) * 2)
    ref = np.zeros((2, 4, oh, ow, f), np.int64)
    for oi, oj, i, j, a, b in taps:
        ref[:, :, oi, oj] += x[:, :, i, j] @ kern[a, b]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref)


def _trains(rng, shape, t):
    """Random net increments in {-1, 0, 1} whose running counts stay >= 0 (a ReLU neuron)."""
    s = rng.integers(-1, 2, (shape[0], t, *shape[1:]))
    n = np.zeros(shape, np.int64)
    for i in range(t):
        s[:, i] = np.maximum(s[:, i], -n)
        n += s[:, i]
    return s.astype(np.int32)


@pytest.mark.parametrize("kind,pool,strides,padding", [
    ("maxpool", 2, 2, "valid"), ("maxpool", 3, 2, "same"), ("sumpool", 2, 2, "valid"),
    ("sumpool", (2, 1), (1, 1), "valid")])
def test_spiking_pools_track_pooled_counts_every_step(kind, pool, strides, padding):
    rng = np.random.default_rng(1)
    b, t, hw, c = 2, 12, (5, 6), 3
    x = _trains(rng, (b, *hw, c), t)
    op = SpikeOp(kind, dict(pool_size=pool, strides=strides, padding=padding))
    out = np.asarray(op(x))
    counts = np.cumsum(x, axis=1)
    p = pool if isinstance(pool, tuple) else (pool, pool)
    s = strides if isinstance(strides, tuple) else (strides, strides)
    oh, ph = _pads(hw[0], p[0], s[0], 1, padding)
    ow, pw = _pads(hw[1], p[1], s[1], 1, padding)
    ref = np.zeros((b, t, oh, ow, c), np.int64)
    for oi in range(oh):
        for oj in range(ow):
            rows = slice(max(oi * s[0] - ph, 0), oi * s[0] - ph + p[0])
            cols = slice(max(oj * s[1] - pw, 0), oj * s[1] - pw + p[1])
            win = counts[:, :, rows, cols]
            ref[:, :, oi, oj] = win.max(axis=(2, 3)) if kind == "maxpool" else win.sum(axis=(2, 3))
    np.testing.assert_array_equal(np.cumsum(out, axis=1), ref)
    if kind == "maxpool":  # the pooled count moves by at most one per step
        assert np.abs(out).max() <= 1


def test_residual_add_and_concat_sum_counts():
    rng = np.random.default_rng(2)
    a = rng.integers(-1, 2, (2, 5, 3, 3, 4)).astype(np.int32)
    b = rng.integers(-1, 2, (2, 3, 3, 3, 4)).astype(np.int32)  # shorter: padded with silence
    add = np.asarray(SpikeOp("add")([a, b]))
    ref = a.copy()
    ref[:, :3] += b
    np.testing.assert_array_equal(add, ref)
    cat = np.asarray(SpikeOp("concat", {"axis": -1})([a, b]))
    np.testing.assert_array_equal(cat[..., :4], a)
    np.testing.assert_array_equal(cat[:, :3, ..., 4:], b)
    assert not cat[:, 3:, ..., 4:].any()


def test_signed_neuron_matches_numpy_recurrence():
    rng = np.random.default_rng(3)
    c, m, t = 3, 6, 20
    thr = np.sort(rng.integers(-15, 16, (c, 2 * m)), axis=1).astype(np.int32)
    signs = np.array([1, -1, 1], np.int32)
    neu = SpikingNeuron(c, 2 * m, -m)
    neu.build((None, None, c))
    neu.set_weights([thr, signs])
    x = rng.integers(-4, 5, (2, 8, c)).astype(np.int32)
    x = np.concatenate([x, np.zeros((2, t - 8, c), np.int32)], 1)  # input stops at step 8
    got = np.asarray(neu(x))
    v = np.cumsum(x, axis=1) * signs
    n = np.zeros((2, c), np.int64)
    for i in range(t):
        lev = -m + (v[:, i, :, None] >= thr[None]).sum(-1)
        s = np.clip(lev - n, -1, 1)
        np.testing.assert_array_equal(got[:, i], s, err_msg=f"step {i}")
        n += s
    np.testing.assert_array_equal(n, lev)  # converged within t steps
