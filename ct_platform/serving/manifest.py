"""The bundle manifest: a SHA-256 digest of every file, written at export, checked at load.

`manifest.json` sits in the bundle directory::

    {"algorithm": "sha256", "files": {"<relative posix path>": "<hex digest>", ...}}

It covers every regular file under the directory (subfolders included) except itself. A
file copied in from another version, a truncated file, a missing file or an extra one makes
`verify_manifest` refuse the bundle, naming the file. Standard library only (hashlib), so
both the exporter and the slim serving image can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

MANIFEST_FILE = "manifest.json"
ALGORITHM = "sha256"


class ManifestError(ValueError):
    """The manifest is missing or malformed, or a bundle file does not match it."""


def write_manifest(bundle_dir: str | Path) -> Path:
    """Hash every file of `bundle_dir` into `manifest.json`; call it after the last file.

    Returns the manifest's path. The manifest is written atomically (temp file + rename).
    """
    directory = Path(bundle_dir)
    body = {"algorithm": ALGORITHM, "files": _digests(directory)}
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{MANIFEST_FILE}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, indent=2, sort_keys=True)
        os.replace(tmp_name, directory / MANIFEST_FILE)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return directory / MANIFEST_FILE


def verify_manifest(bundle_dir: str | Path) -> None:
    """Check every file of `bundle_dir` against `manifest.json`.

    Raises:
        ManifestError: the manifest is missing or malformed, or a file is missing, extra,
            or has a different digest (the message names the file, relative to the bundle).
    """
    expected = _read_manifest(Path(bundle_dir))
    actual = _digests(Path(bundle_dir))
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise ManifestError(f"bundle file listed in {MANIFEST_FILE} is missing: {missing[0]}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise ManifestError(f"bundle file not listed in {MANIFEST_FILE}: {extra[0]}")
    for name in sorted(expected):
        if actual[name] != expected[name]:
            raise ManifestError(
                f"bundle file {name} does not match {MANIFEST_FILE}: "
                f"{ALGORITHM} {actual[name][:12]}… expected {expected[name][:12]}…"
            )


def _read_manifest(directory: Path) -> dict[str, str]:
    try:
        raw = json.loads((directory / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise ManifestError(f"bundle has no {MANIFEST_FILE}: files unverifiable") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("algorithm") != ALGORITHM:
        raise ManifestError(f"{MANIFEST_FILE} must say algorithm {ALGORITHM!r}")
    files = raw.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and isinstance(digest, str) for name, digest in files.items()
    ):
        raise ManifestError(f"{MANIFEST_FILE} 'files' must map relative paths to hex digests")
    return files


def _digests(directory: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(directory.rglob("*")):
        # Symlinks count as files (their target is hashed), so a link to a foreign
        # model.onnx is caught like a copy.
        if not path.is_file():
            continue
        name = path.relative_to(directory).as_posix()
        if name == MANIFEST_FILE:
            continue
        with path.open("rb") as handle:
            digests[name] = hashlib.file_digest(handle, ALGORITHM).hexdigest()
    return digests
