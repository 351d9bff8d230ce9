"""Bookkeeping of videos that could not be decoded: every DataLoader worker appends to its rank's log,
and the run ends with one report listing every bad file (in the log and in the run directory)."""
from __future__ import annotations

import os
from pathlib import Path


class BadVideoLog:
    """Append-only TSV ``path<TAB>video_id<TAB>error`` of undecodable videos, one file per rank.

    Args:
        directory: where the per-rank files live (``rank<N>.tsv``).
        rank: this process's global rank.
    """

    def __init__(self, directory: str | Path, rank: int = 0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"rank{rank}.tsv"

    def reset(self) -> None:
        """Start an empty log for this rank (called once per setup, before any worker starts)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def record(self, path: str | Path, video_id: str, error: str) -> None:
        """Append one entry; a single small ``O_APPEND`` write, safe from several worker processes."""
        line = f"{path}\t{video_id}\t{' '.join(str(error).split())}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def read_all(self) -> dict[str, tuple[str, str]]:
        """``path -> (video_id, first error)`` over every rank's file in the directory."""
        entries: dict[str, tuple[str, str]] = {}
        for file in sorted(self.directory.glob("rank*.tsv")):
            for line in file.read_text().splitlines():
                path, video_id, error = (line.split("\t", 2) + ["", ""])[:3]
                entries.setdefault(path, (video_id, error))
        return entries

    def write_report(self, out_file: str | Path) -> str | None:
        """Write the de-duplicated list to ``out_file`` and return a one-message summary (None if no bad file)."""
        entries = self.read_all()
        if not entries:
            return None
        lines = [f"{path}\t{video_id}\t{error}" for path, (video_id, error) in sorted(entries.items())]
        Path(out_file).write_text("path\tvideo_id\terror\n" + "\n".join(lines) + "\n")
        listing = "\n".join(f"  - {path} ({error})" for path, (_, error) in sorted(entries.items()))
        return (f"{len(entries)} video file(s) could not be decoded; they were replaced by other videos' pairs in training and scored "
                f"as misses in evaluation (set data.strict: true to stop at the first one instead):\n{listing}\n"
                f"The list is in {out_file}.")
