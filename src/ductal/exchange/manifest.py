"""The manifest written beside every export: what, from where, when, how it was de-identified."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ductal import __version__
from ductal.protocols.model import Protocol

__all__ = ["MANIFEST_NAME", "build_manifest", "file_sha256", "write_manifest"]

MANIFEST_NAME = "manifest.json"


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(
    *,
    export_format: str,
    protocol: Protocol,
    files: Iterable[Path],
    root: Path,
    deidentification: Mapping[str, Any],
    subjects: int,
    actor: str | None = None,
    notes: Iterable[str] = (),
    created: dt.datetime | None = None,
) -> dict[str, Any]:
    """Return the manifest of an export (files listed relative to ``root`` with SHA-256)."""
    moment = created or dt.datetime.now(dt.UTC)
    return {
        "format": export_format,
        "created_utc": moment.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "software": f"ductal {__version__}",
        "exported_by": actor,
        "protocol": {
            "id": protocol.id,
            "version": protocol.version,
            "sha256": protocol.sha256(),
        },
        "subjects": subjects,
        "deidentification": dict(deidentification),
        "notes": list(notes),
        "files": [
            {"path": str(p.relative_to(root)), "bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(files)
        ],
    }


def write_manifest(manifest: Mapping[str, Any], path: Path) -> Path:
    """Write ``manifest`` as JSON to ``path`` and return it."""
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
