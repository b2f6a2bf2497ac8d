"""``tessera connector new NAME``: a connector package whose conformance tests pass at once."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["new_connector"]

_TEMPLATES = Path(__file__).parent / "template"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def new_connector(name: str, where: Path) -> Path:
    """Write ``where/tessera-<name>/`` and return it; refuse to overwrite anything."""
    if not _NAME.match(name):
        raise ValueError(f"name: {name!r} must be lowercase letters, digits and _, "
                         "starting with a letter")
    package = f"tessera_{name}"
    cls = "".join(part.capitalize() for part in name.split("_")) + "Destination"
    root = where / f"tessera-{name}"
    if root.exists():
        raise ValueError(f"{root} already exists")
    values = {"name": name, "package": package, "cls": cls}
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{package}/__init__.py": None,
        f"{package}/destination.py": "destination.py.tmpl",
        f"{package}/fake.py": "fake.py.tmpl",
        "tests/test_conformance.py": "test_conformance.py.tmpl",
    }
    for relative, template in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = "" if template is None else (_TEMPLATES / template).read_text().format(**values)
        target.write_text(text)
    return root
