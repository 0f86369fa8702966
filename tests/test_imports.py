"""Dependencies point one way: layer <- data <- models <- (checkpoint, metrics, inference) <- training, serve
<- cli. Each package is imported alone, in a fresh interpreter, and may load only what lies below it (what
``import elman`` alone loads: tests/layer/test_operator.py)."""

import subprocess
import sys

import pytest

# what each package may load besides itself and the layer (``import elman.anything`` runs ``elman/__init__``,
# which imports the layer) and the modules below everything: elman.errors, elman.options, elman.threads and
# elman.files
BELOW = {
    "elman.data": [],
    "elman.models": ["elman.data"],
    "elman.checkpoint": ["elman.data"],
    "elman.metrics": [],
    "elman.inference": ["elman.data", "elman.models", "elman.checkpoint", "elman.metrics",
                        "elman.plots"],
    "elman.training": ["elman.data", "elman.models", "elman.checkpoint", "elman.metrics",
                       "elman.plots", "elman.memory"],
    "elman.serve": ["elman.data", "elman.models", "elman.checkpoint", "elman.metrics",
                    "elman.inference", "elman.plots"],
}
# every module of a package, so that a module imported only by a command is checked too
MODULES = {
    "elman.data": ["elman.data.language", "elman.data.classification", "elman.data.batches"],
    "elman.models": ["elman.models.classifier", "elman.models.language_model"],
    "elman.inference": ["elman.inference", "elman.inference.export"],
    "elman.training": ["elman.training.classify", "elman.training.language"],
    "elman.serve": ["elman.serve.app"],
}


def loaded_by(*modules: str) -> set[str]:
    code = f"import sys, {', '.join(modules)}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("package", list(BELOW))
def test_a_package_loads_only_what_lies_below_it(package):
    allowed = {package, "elman.layer", "elman.errors", "elman.options", "elman.threads", "elman.files",
               *BELOW[package]}
    loaded = loaded_by(*MODULES.get(package, [package]))
    ours = {".".join(name.split(".")[:2]) for name in loaded if name.startswith("elman.")}
    assert ours <= allowed, f"{package} loads {sorted(ours - allowed)}"
    assert "matplotlib.pyplot" not in loaded, f"{package} loads pyplot"

