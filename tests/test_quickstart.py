"""The README's Python quickstart, extracted from README.md and run as written (a few hundred
bundled MNIST images, one epoch): it must run and its SNN must agree with the quantized ANN."""
import re

from conftest import REPO


def _quickstart_code():
    text = (REPO / "README.md").read_text()
    sec = text.split("## Python quickstart", 1)
    assert len(sec) == 2, "README.md has no '## Python quickstart' section"
    blocks = re.findall(r"```python\n(.*?)```", sec[1].split("\n## ", 1)[0], flags=re.S)
    assert len(blocks) == 1, "the quickstart section needs exactly one python block"
    return blocks[0]


def test_readme_quickstart_runs_as_written(capsys):
    code = _quickstart_code()
    for call in ("tfsnn.quantize_model", ".fit(", "tfsnn.convert", "tfsnn.simulate", ".table("):
        assert call in code, call
    scope = {"__name__": "__quickstart__"}
    exec(compile(code, "README.md:quickstart", "exec"), scope)
    out = capsys.readouterr().out
    res = scope["result"]
    assert res.n_images == 100 and res.disagreements == 0 and res.equal_from_step is not None
    assert "disagreements with the quantized ANN: 0" in out
    for row in res.layer_table():
        assert row["layer"] in out
    assert "SOPs/img" in out and "total" in out
