"""Models saved by tfsnn before the package layout changed (commit e42ac73: ``tfsnn.models`` was
one module, the neurons lived in ``tfsnn.layers.neurons`` / ``spiking`` / ``iir``, the losses in
``tfsnn.iir_models`` / ``tfsnn.training.spike_bp``) still load after ``import tfsnn`` alone and
give the outputs recorded when they were saved (``tests/data/legacy/expected.npz``)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO

LEGACY = REPO / "tests" / "data" / "legacy"
MODELS = ["quant_ann", "integer_snn", "lif_snn", "iir_snn", "proxy_net"]


@pytest.mark.parametrize("name", MODELS)
def test_pre_layout_model_loads_with_identical_outputs(name, tmp_path):
    # a fresh interpreter: only ``import tfsnn`` may register what the file needs
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras, tfsnn
        exp = np.load({str(LEGACY / "expected.npz")!r})
        m = keras.models.load_model({str(LEGACY / (name + ".keras"))!r})
        x = exp["xp"] if {name!r} == "proxy_net" else exp["x"]
        y = m.predict(x, verbose=0)
        y = y[:, -1] if {name!r} == "integer_snn" and y.ndim == 3 else y
        np.save({str(tmp_path / "y.npy")!r}, y)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    expected = np.load(LEGACY / "expected.npz")[name]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
