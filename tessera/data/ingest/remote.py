"""Sources named by fsspec URLs (`s3://bucket/videos/`, `gs://...`, `memory://...`): listing, and local copies.

The decoders (PyAV, PySceneDetect) read local files, so a stage function that gets a URL
first copies the video, and its sidecar `NAME.txt` when there is one, to a cache on the
machine it runs on (`$TESSERA_CACHE/sources`, default `~/.cache/tessera/sources`); later
stages on that machine read the copy. The cache keeps at most `$TESSERA_CACHE_GB` (default
50) GB: the least recently used copies are removed first. A protocol works when its fsspec
package is installed where the stages run (`s3fs` for s3://, `gcsfs` for gs://).
`file://` URLs are plain local paths and are never copied.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import re
from pathlib import Path

from tessera.data.ingest.sources import SourceError, is_video_name

URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(name: str | Path) -> bool:
    """True for a remote URL (`s3://...`); False for a local path and for `file://` URLs."""
    return bool(URL.match(str(name))) and not str(name).startswith("file://")


def local_path(name: str | Path) -> str | Path:
    """A path the decoders can open: `name` itself when local, else its cached copy (fetched if needed)."""
    return local_copy(str(name)) if is_url(name) else name


def _filesystem(src: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(src)
    except ImportError as e:
        raise SourceError(
            f"source {src}: its protocol needs a package that is not installed ({e}); install it (s3fs for s3://)"
        ) from e
    except ValueError as e:
        raise SourceError(f"source {src}: {e}; pass a local path or a URL fsspec knows (s3://, gs://, ...)") from e


def list_remote(src: str) -> list[str]:
    """Video URLs named by the URL `src`: a folder (searched recursively), a glob, a list file or one video.

    A list file holds one URL or path per line; a path is on the list file's filesystem,
    relative to its folder unless it starts with `/`. URLs come back sorted, without repeats."""
    fs, path = _filesystem(src)
    try:
        if fs.isdir(path):
            names = [p for p in fs.find(path) if is_video_name(Path(p))]
        elif glob.has_magic(path):
            names = [p for p in fs.glob(path) if is_video_name(Path(p))]
        elif fs.isfile(path) and is_video_name(Path(path)):
            names = [path]
        elif fs.isfile(path):
            names = _read_remote_list(fs, path)
        else:
            raise SourceError(f"source {src} is not a folder, a glob, a list file or a video; check the URL")
    except OSError as e:
        raise SourceError(f"source {src} cannot be read ({e}); check the URL and your credentials") from e
    out = sorted({n if URL.match(n) else fs.unstrip_protocol(n) for n in names})
    if not out:
        raise SourceError(f"source {src} names no video files; check the URL or pattern")
    return out


def _read_remote_list(fs, path: str) -> list[str]:
    names = []
    for line in fs.cat_file(path).decode(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(
                line if URL.match(line) or line.startswith("/") else posixpath.join(posixpath.dirname(path), line)
            )
    return names


# ----------------------------------------------------------------------------- the local cache


def cache_dir() -> Path:
    return Path(os.environ.get("TESSERA_CACHE", "~/.cache/tessera")).expanduser() / "sources"


def local_copy(url: str) -> Path:
    """The cached local copy of the video at `url` (with its sidecar `.txt` if any), fetched when missing."""
    import fsspec

    folder = cache_dir() / hashlib.sha1(url.encode()).hexdigest()[:20]
    local = folder / posixpath.basename(url.rstrip("/"))
    if local.is_file():
        os.utime(local)  # recently used: trimmed last
        return local
    folder.mkdir(parents=True, exist_ok=True)
    side_url = posixpath.splitext(url)[0] + ".txt"
    for remote, dest, required in ((side_url, local.with_suffix(".txt"), False), (url, local, True)):
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        try:
            with fsspec.open(remote, "rb") as f, open(tmp, "wb") as g:
                while chunk := f.read(1 << 22):
                    g.write(chunk)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            if required:
                raise
            continue
        tmp.replace(dest)  # the video last: its presence means both are complete
    trim_cache(keep=folder)
    return local


def trim_cache(keep: Path, limit_bytes: float | None = None) -> None:
    """Remove the least recently used copies until the cache holds at most `limit_bytes`; `keep` stays."""
    if limit_bytes is None:
        limit_bytes = float(os.environ.get("TESSERA_CACHE_GB", "50")) * 1e9
    entries = []
    for folder in cache_dir().iterdir():
        try:  # other workers fetch and trim at the same time
            stats = [f.stat() for f in folder.iterdir()] if folder.is_dir() else []
        except FileNotFoundError:
            continue
        if stats:
            entries.append((max(st.st_mtime for st in stats), sum(st.st_size for st in stats), folder))
    total = sum(size for _, size, _ in entries)
    for _, size, folder in sorted(entries):
        if total <= limit_bytes:
            break
        if folder != keep:
            for f in folder.iterdir():
                f.unlink(missing_ok=True)
            total -= size
