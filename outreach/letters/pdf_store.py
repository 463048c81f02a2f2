"""Rendered PDF letters on disk, addressed by content: the same letter is laid out once.

The key of a letter is the sha256 of its HTML together with everything else that shapes the page (the
renderer's fingerprint: WeasyPrint's version, fonts, campaign files), so a key never goes stale: a changed
letter simply has another key. ``outreach check`` and ``outreach send`` fill the store ahead of time in
worker processes; the composer then only reads. The folder is ``OUTREACH_PDF_CACHE`` or ``pdf-cache`` in
the working directory; it holds letters (names and offices of the recipients), so files older than
:data:`KEEP_DAYS` are removed when letters are prepared, and the folder may be deleted at any time.
A key does not say whose letter it is, so erasing a person (``contacts forget``, ``contacts purge``)
empties the whole store: the next check or send lays the letters out again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from outreach.errors import ConfigError

ENVIRONMENT = "OUTREACH_PDF_CACHE"
DEFAULT_FOLDER = Path("pdf-cache")
KEEP_DAYS = 30


class PdfStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def default(cls) -> PdfStore:
        return cls(Path(os.environ.get(ENVIRONMENT) or DEFAULT_FOLDER))

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pdf"

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except OSError:
            return None

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, data: bytes) -> None:
        """Store atomically (a reader never sees half a file; two writers of one key write the same)."""
        path = self.path(key)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ConfigError(
                f"{self.folder}: cannot store a PDF letter: {exc.strerror}",
                hint=f"set {ENVIRONMENT} to a writable folder",
            ) from exc

    def prune(self, *, keep_days: int = KEEP_DAYS) -> int:
        """Remove letters stored more than ``keep_days`` ago; returns how many."""
        if not self.folder.is_dir():
            return 0
        limit = time.time() - keep_days * 86400
        removed = 0
        for path in self.folder.glob("*/*.pdf"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def clear(self) -> int:
        """Remove every stored letter (erasure: no key tells whose letter it is); returns how many."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        for path in self.folder.glob("*/*.pdf"):
            try:
                path.unlink()
                removed += 1
            except OSError as exc:
                raise ConfigError(
                    f"{path}: cannot remove a stored PDF letter: {exc.strerror}",
                    hint=f"delete the folder {self.folder} by hand",
                ) from exc
        return removed
