"""Whole-file writes: a reader never sees half a file, whatever line a writer is killed at.

Standard library only: the model server imports it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, then rename it over
    `path`: a rename within one filesystem is atomic, so `path` holds the old content or the
    new, never a mix. The temporary file is removed when the write fails."""
    payload = data.encode() if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
