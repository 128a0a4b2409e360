"""``import tfsnn`` selects TensorFlow's BFC host allocator unless the user chose one."""
import os
import subprocess
import sys

import pytest

CODE = ("import os, tfsnn, tensorflow as tf; tf.zeros([2]); "
        "print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'])")


@pytest.mark.parametrize("preset,expected", [(None, "true"), ("false", "false")])
def test_import_sets_bfc_unless_preset(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if preset is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = preset
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected
