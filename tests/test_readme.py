"""The README's examples run as written: the NumPy one everywhere, the GPU ones on a GPU."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def examples():
    text = README.read_text()
    section = text[text.index("## Examples"):text.index("## API reference")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _by_import(name):
    found = [code for code in examples() if re.search(rf"^import {name}\b|^from {name}\b", code, re.M)]
    assert found, f"no README example imports {name}"
    return found[0]


def test_readme_has_the_four_examples():
    assert len(examples()) == 4


def test_numpy_example_runs():
    exec(compile(_by_import("numpy"), "README numpy example", "exec"), {})


@pytest.mark.gpu
@pytest.mark.parametrize("framework", ["cupy", "torch", "jax"])
def test_gpu_example_runs(framework):
    pytest.importorskip(framework)
    if framework == "jax":
        import jax
        if not any(d.platform == "gpu" for d in jax.devices()):
            pytest.skip("JAX sees no GPU")
    exec(compile(_by_import(framework), f"README {framework} example", "exec"), {})
