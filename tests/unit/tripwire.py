"""A hook module that writes a file the moment it is imported: proof that a hook ran."""

from __future__ import annotations

import uuid
from pathlib import Path


def write_tripwire_module(directory: Path, function: str) -> tuple[str, Path]:
    """``(module name, marker file)``: importing the module creates the marker."""
    module = f"tripwire_{uuid.uuid4().hex[:8]}"
    marker = directory / "imported.txt"
    (directory / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        f"def {function}(doc):\n    return 1\n"
    )
    return module, marker
