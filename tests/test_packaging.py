from pathlib import Path

import elman

SOURCE = Path(elman.__file__).parent


def test_every_source_folder_is_a_regular_package():
    """setuptools' package discovery skips folders without __init__.py: they would be missing from a wheel."""
    folders = {p.parent for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(SOURCE)) for f in folders if not (f / "__init__.py").exists())
    assert missing == []

