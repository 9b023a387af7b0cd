"""Job inputs on disk: one directory per job, one file per item, removed when the job ends.

Files are named by item number, never by what the client called them, so no
upload or zip entry name can reach outside the job's directory. Zip archives
are read entry by entry with limits on entry count, entry size and total
expanded size (a zip bomb stops at the first limit it crosses).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from facesocial.errors import (
    InputMissing,
    InvalidArchive,
    PayloadTooLarge,
    TooManyItems,
)
from facesocial.jobs.model import NewItem

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_CHUNK = 1024 * 1024
MAX_NAME = 512


@dataclass(frozen=True, slots=True)
class ZipEntry:
    name: str  # path inside the archive
    label: str | None  # the folder the file is in (gallery import: the identity name)
    size: int  # declared expanded size


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def folder_label(name: str) -> str | None:
    """The innermost folder of ``name`` ('people/alice/1.jpg' -> 'alice'), if any."""
    parent = PurePosixPath(name.replace("\\", "/")).parent.name.strip()
    return parent or None


class Spool:
    """The spool root (``Settings.spool_path``); item paths are stored relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def path(self, rel: str) -> Path:
        p = (self.root / rel).resolve()
        if self.root.resolve() not in p.parents:
            raise InputMissing(f"input path '{rel}' is outside the spool")
        return p

    def write(self, job_id: str, seq: int, name: str, src: BinaryIO, *, max_bytes: int,
              label: str | None = None, suffix: str | None = None) -> NewItem:
        """Copy ``src`` into the job's directory as item ``seq`` (at most ``max_bytes``)."""
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        ext = suffix if suffix is not None else PurePosixPath(name).suffix.lower()[:8]
        rel = f"{job_id}/{seq:06d}{ext}"
        digest, size = hashlib.sha256(), 0
        target = self.root / rel
        with open(target, "wb") as out:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    out.close()
                    target.unlink(missing_ok=True)
                    raise PayloadTooLarge(f"'{name[:100]}' is larger than {max_bytes} bytes",
                                          field=name[:100], limit=max_bytes)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())  # the job row will point at it; it must survive a crash
        return NewItem(name=name[:MAX_NAME], input_path=rel, sha256=digest.hexdigest(),
                       size=size, label=label)

    def read(self, rel: str) -> bytes:
        return self.existing(rel).read_bytes()

    def existing(self, rel: str) -> Path:
        """The input's path; :class:`InputMissing` when it is not there."""
        p = self.path(rel)
        if not p.is_file():
            raise InputMissing(f"the spooled input '{rel}' is gone (job inputs removed, or "
                               "this worker does not see the API's spool directory)")
        return p

    def remove(self, job_id: str) -> bool:
        folder = self.job_dir(job_id)
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True


def zip_entries(archive: BinaryIO, *, max_entries: int, max_entry_bytes: int,
                max_total_bytes: int) -> tuple[zipfile.ZipFile, list[ZipEntry], list[str]]:
    """Open a zip and list its image entries (checked against the limits before any is
    expanded); returns the open archive, the entries and the names it skipped."""
    try:
        zf = zipfile.ZipFile(archive)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidArchive(f"the archive is not a readable zip file: {exc}") from None
    entries: list[ZipEntry] = []
    skipped: list[str] = []
    total = 0
    for info in infos:
        name = info.filename
        base = PurePosixPath(name.replace("\\", "/"))
        if info.is_dir():
            continue
        if name.startswith("__MACOSX/") or base.name.startswith(".") or \
                not is_image_name(name):
            skipped.append(name[:MAX_NAME])
            continue
        if info.file_size > max_entry_bytes:
            raise PayloadTooLarge(f"zip entry '{name[:100]}' expands to {info.file_size} bytes;"
                                  f" the limit per image is {max_entry_bytes}",
                                  entry=name[:100], limit=max_entry_bytes)
        total += info.file_size
        if total > max_total_bytes:
            raise PayloadTooLarge(f"the archive expands to more than {max_total_bytes} bytes",
                                  limit=max_total_bytes)
        entries.append(ZipEntry(name[:MAX_NAME], folder_label(name), info.file_size))
        if len(entries) > max_entries:
            raise TooManyItems(f"the archive holds more than {max_entries} images",
                               limit=max_entries)
    return zf, entries, skipped


def open_entry(zf: zipfile.ZipFile, entry: ZipEntry) -> BinaryIO:
    """A reader for one entry; a corrupt entry raises :class:`InvalidArchive`."""
    try:
        return zf.open(entry.name)  # type: ignore[return-value]
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise InvalidArchive(f"zip entry '{entry.name[:100]}' cannot be read: {exc}") from None
