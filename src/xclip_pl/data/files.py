"""File helpers of the data path: find videos by name, read annotation text and JSON (errors name the file and
line), read id lists, write files atomically."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")


def _preference(path: Path) -> tuple[int, str]:
    """Known video suffixes first (in ``VIDEO_SUFFIXES`` order), then any other file; ties by path."""
    suffix = path.suffix.lower()
    rank = VIDEO_SUFFIXES.index(suffix) if suffix in VIDEO_SUFFIXES else len(VIDEO_SUFFIXES)
    return rank, str(path)


def split_name(name: str) -> tuple[str, str | None]:
    """``(stem, suffix)`` of a file name to look for: ``"a.b.mp4"`` -> ``("a.b", ".mp4")``; a ``.*`` suffix
    (``"a.b.*"``) -> ``("a.b", None)``: any suffix."""
    if name.endswith(".*"):
        return name[:-2], None
    return Path(name).stem, Path(name).suffix.lower()


class VideoIndex:
    """Every file under a directory by file stem (hidden files and directories are skipped, e.g. the
    ``.xclip_pl`` cache). Built on first use, once.

    Args:
        directory: the directory to search.
        recursive: search its subdirectories too (False: only the files directly in it).
    """

    def __init__(self, directory: Path, recursive: bool = True) -> None:
        self.directory, self.recursive = Path(directory), recursive
        self._by_stem: dict[str, list[Path]] | None = None

    def _build(self) -> dict[str, list[Path]]:
        by_stem: dict[str, list[Path]] = {}
        for parent, dirs, files in os.walk(self.directory, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if self.recursive else []
            for name in files:
                if not name.startswith("."):
                    path = Path(parent) / name
                    by_stem.setdefault(path.stem, []).append(path)
        return {stem: sorted(paths, key=_preference) for stem, paths in by_stem.items()}

    def find(self, names: Sequence[str]) -> Path | None:
        """The file of the first of ``names`` (tried in order) that exists: ``"<stem>.<ext>"`` is a file of that
        stem and suffix (suffix case ignored), ``"<stem>.*"`` a file of that stem with any suffix, a known video
        suffix first (``VIDEO_SUFFIXES`` order). None if there is none."""
        if self._by_stem is None:
            self._by_stem = self._build()
        for name in names:
            stem, suffix = split_name(name)
            paths = [p for p in self._by_stem.get(stem, []) if suffix is None or p.suffix.lower() == suffix]
            if paths:
                return paths[0]
        return None


def default_cache_dir(root: Path, name: str) -> Path:
    """``<root>/.xclip_pl/<name>`` if ``root`` is writable, else ``~/.cache/xclip_pl/<hash of root>/<name>``."""
    if os.access(root, os.W_OK):
        return root / ".xclip_pl" / name
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "xclip_pl" / digest / name


def line_of(text: str | bytes, offset: int) -> int:
    """The 1-based line number of character (or byte) ``offset`` of ``text``."""
    return text.count(b"\n" if isinstance(text, bytes) else "\n", 0, offset) + 1


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark is dropped). Bytes that are not UTF-8 are a
    ValueError naming the file, the line and the byte, and how to re-encode the file."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = line_of(data, error.start)
        start = data.rfind(b"\n", 0, error.start) + 1
        column = len(data[start:error.start].decode("utf-8", errors="replace")) + 1
        raise ValueError(
            f"{path}, line {line}, column {column}: not UTF-8 text (byte 0x{data[error.start]:02x}: {error.reason}); "
            f"annotation files must be UTF-8: re-encode it, e.g. `iconv -f latin1 -t utf-8 {path} > utf8.txt` "
            "(replace latin1 by the file's encoding), then use the new file") from None


def load_json(path: str | Path):
    """The JSON value of a UTF-8 file; invalid JSON is a ValueError naming the file, line and column (and
    saying when the file ends too early, as a truncated download does)."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        truncated = not text[error.pos:].strip() or error.msg.startswith("Unterminated string")  # ran out of text
        hint = ("the file ends too early (truncated?): download or copy it again" if truncated
                else "fix the JSON there")
        raise ValueError(f"{path}, line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}); "
                         f"{hint}") from None


def read_id_list(path: Path) -> list[str]:
    """The ids of a one-id-per-line list file, in order (surrounding blanks and empty lines ignored)."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


@contextmanager
def atomic_write(path: str | Path, mode: Literal["w", "wb"] = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it is renamed to ``path`` in one step
    (readers, and other processes writing the same file, never see a partial file); on an error it is removed.

    Args:
        path: the file to write.
        mode: ``w`` (text, UTF-8) or ``wb`` (bytes).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
