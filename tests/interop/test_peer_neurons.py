"""tfsnn neurons vs snnTorch's, configured per the mapping table in docs/neurons.md: identical
spikes and membranes in float64 (needs CPU torch + snntorch: ``pip install -e .[interop]``)."""
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.layers.neurons import lif as nr

pytestmark = pytest.mark.interop
torch = pytest.importorskip("torch", reason="interop tests need torch (pip install -e .[interop])")
snntorch = pytest.importorskip("snntorch", reason="interop tests need snntorch")

BETA, THETA, B, T, N = 0.75, 1.0, 4, 40, 16  # beta exact in float32 (snnTorch stores it so)


def _snntorch_run(x, **kw):
    """Leaky neuron stepped over time as an snnTorch user writes it; spikes, membranes, dL/dx."""
    lif = snntorch.Leaky(beta=BETA, threshold=THETA,
                         spike_grad=snntorch.surrogate.fast_sigmoid(slope=5.0), **kw).double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    mem = lif.init_leaky()
    spk, mems = [], []
    for t in range(x.shape[1]):
        s, mem = lif(xt[:, t], mem)
        spk.append(s)
        mems.append(mem)
    spk, mems = torch.stack(spk, 1), torch.stack(mems, 1)
    g = torch.tensor(np.random.default_rng(1).normal(size=x.shape))
    (spk * g).sum().backward()
    return spk.detach().numpy(), mems.detach().numpy(), xt.grad.numpy(), g.numpy()


def _tfsnn_run(x, g, **kw):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        o, trace = nr.spike_sequence(xt, threshold=THETA, leak=BETA, return_trace=True,
                                     surrogate=sg_fast_sigmoid(), **kw)
        loss = tf.reduce_sum(o * g)
    return o.numpy(), trace.numpy(), tape.gradient(loss, xt).numpy()


def sg_fast_sigmoid():
    from tfsnn import surrogates
    return surrogates.get("fast_sigmoid", gamma=1.0, slope=5.0)  # theta = 1: z = U - theta


def test_leaky_reset_delay_false_is_lif_with_reset_gradient():
    """snnTorch Leaky(reset_delay=False) = tfsnn LIF (standard ordering) with
    detach_reset=False: spikes, membranes and input gradients (inputs in [-1, 1] keep the
    post-reset membrane below threshold, where snnTorch's double-reset guard is inactive)."""
    x = np.clip(np.random.default_rng(0).normal(0.35, 0.5, (B, T, N)), -1, 1)
    spk, mem, grad, g = _snntorch_run(x, reset_delay=False)
    o, trace, g_tf = _tfsnn_run(x, g, detach_reset=False)
    assert 0.05 < spk.mean() < 0.7
    np.testing.assert_array_equal(o, spk)
    np.testing.assert_allclose(trace, mem, rtol=1e-12, atol=1e-12)
    # snnTorch's spike is ``(x > 0).float()``: float32, so the gradient reaching it is rounded
    # to float32 on the way back; agreement is to float32 precision, not float64.
    np.testing.assert_allclose(g_tf, grad, rtol=0, atol=1e-6 * np.abs(grad).max())


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_leaky_default_is_fire_before_integrate_shifted(reset):
    """snnTorch's default Leaky (reset from the previous membrane) = tfsnn's
    fire_before_integrate ordering: same membrane trace, spikes one step earlier in snnTorch."""
    x = np.random.default_rng(2).normal(0.4, 0.8, (B, T, N))
    spk, mem, _, g = _snntorch_run(x, reset_mechanism=reset)
    o, trace, _ = _tfsnn_run(x, g, fire_before_integrate=True, reset=reset)
    assert 0.05 < spk.mean() < 0.7
    np.testing.assert_array_equal(o[:, 1:], spk[:, :-1])
    np.testing.assert_allclose(trace, mem, rtol=1e-12, atol=1e-12)
