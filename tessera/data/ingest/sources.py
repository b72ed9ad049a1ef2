"""Sources: the video paths SRC names, and the title a person gave each video.

Every path with a video extension is listed, also one that is not a readable file (a
folder named like a video, a broken link, a symbolic-link loop): the probe stage rejects it
with a reason, so it appears in the manifest instead of vanishing. Folders are walked
following links to folders; a link back to a folder above it (a loop) is listed, not followed.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import av

from tessera.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


class SourceError(InputError):
    """The SRC argument names no videos, or cannot be read."""


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def link_loops(path: Path) -> bool:
    """True when `path` is a symbolic link that cannot be resolved for a loop, or leads back to a folder above it."""
    if not path.is_symlink():
        return False
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        return False  # a broken link, not a loop
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's "Symlink loop"
        return True
    return target in {q.resolve() for q in path.parents}


def list_sources(src: str | Path) -> list[Path]:
    """Video paths named by `src`: a folder (searched recursively), a glob, a list file or one video.

    A list file holds one path per line (relative paths are relative to the list file;
    blank lines and lines starting with `#` are skipped). Paths come back absolute and
    sorted; files are resolved (so two links to one video count once), other entries are not.
    """
    src_s = str(src)
    p = Path(src_s).expanduser()
    try:
        if p.is_dir():
            paths = _walk(p)
        elif is_video_name(p) and (p.is_file() or p.is_symlink()):
            paths = [p]
        elif p.is_file():
            paths = _read_list(p)
        elif glob.has_magic(src_s):
            paths = [Path(q) for q in glob.glob(src_s, recursive=True) if Path(q).is_file() or is_video_name(Path(q))]
        else:
            raise SourceError(f"source {src_s} is not a folder, a glob, a list file or a video; check the path")
    except OSError as e:
        raise SourceError(
            f"source {src_s} cannot be read ({e.strerror or e}); check the path and its permissions"
        ) from e
    out = sorted({_absolute(q) for q in paths})
    if not out:
        raise SourceError(
            f"source {src_s} names no video files (looked for {', '.join(VIDEO_EXTENSIONS)}); check the path or pattern"
        )
    return out


def source_names(src: str | Path) -> list[str]:
    """The sources `src` names, as the stage functions take them: local paths (`list_sources`), or the URLs
    of an fsspec URL (`remote.list_remote`); a `file://` URL is the local path it names."""
    src_s = str(src)
    if src_s.startswith("file://"):
        return [str(p) for p in list_sources(src_s[len("file://") :])]
    from tessera.data.ingest.remote import is_url, list_remote

    if is_url(src_s):
        return list_remote(src_s)
    return [str(p) for p in list_sources(src)]


def _absolute(path: Path) -> Path:
    """A regular file resolved (links and `..` followed); anything else made absolute as it is named."""
    if path.is_file():
        return path.resolve()
    return Path(os.path.abspath(path))


def _read_list(list_file: Path) -> list[Path]:
    paths = []
    for line in list_file.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            q = Path(line).expanduser()
            paths.append(q if q.is_absolute() else list_file.parent / q)
    return paths


def _walk(root: Path) -> list[Path]:
    """Video-named entries under `root`, and links that loop; links to folders are followed once."""
    found: list[Path] = []
    walked: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        walked.add(here.resolve())
        for d in list(dirnames):
            q = here / d
            if q.is_symlink() and (link_loops(q) or q.resolve() in walked):
                dirnames.remove(d)  # never walk a folder twice: a loop would never end
                if link_loops(q):
                    found.append(q)
                continue
            if is_video_name(q):
                found.append(q)  # a folder named like a video: the probe rejects it; its contents are walked
        found += [here / f for f in filenames if is_video_name(here / f)]
    return found


def title_of(path: str | Path) -> str:
    """The title a person gave a video: a sidecar `NAME.txt`, else the container title, else file-name words."""
    from tessera.data.ingest.remote import local_path

    path = Path(local_path(path))
    try:
        side = path.with_suffix(".txt")
        text = " ".join(side.read_text(errors="replace").split()) if side.is_file() else ""
    except OSError:
        text = ""  # an unreadable sidecar: fall back to the container and the file name
    if text:
        return text
    try:
        with av.open(str(path)) as c:
            title = str(c.metadata.get("title", "")).strip()
        if title:
            return title
    except (av.error.FFmpegError, OSError):
        pass
    return name_words(path.stem)


def name_words(stem: str) -> str:
    """File-name words: `0003_red-circle_leftTake2` -> `red circle left take`; numbers and camera junk dropped."""
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem)
    words = [w.lower() for w in re.split(r"[\W_]+", s) if w]
    junk = {"img", "vid", "mov", "dsc", "gopr", "mvi", "pxl", "final", "copy", "edit", "take", "clip", "video"}
    return " ".join(w for w in words if not w.isdigit() and w not in junk and not re.fullmatch(r"\d+\w{0,2}", w))
