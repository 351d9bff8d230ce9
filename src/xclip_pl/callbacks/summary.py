"""``RunSummary``: the data a run saw, and one summary screen at the end of ``fit`` and ``test``.

The data summary (videos, captions and undecodable files per split) is written at the end of every stage
to ``<run dir>/data_summary.csv`` and, under W&B, to the run summary (``data/<split>/videos``,
``data/<split>/captions``, ``data/<split>/bad_files``) and the table ``data/summary``. The CLI prints
:meth:`RunSummary.report` after ``fit`` (and its test) and after ``test``, and it is kept as
``<run dir>/summary.txt`` and ``summary.json``.
"""
from __future__ import annotations

import csv
import datetime
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from xclip_pl.callbacks.run_files import run_directory, wandb_logger, write_json
from xclip_pl.callbacks.throughput import Throughput
from xclip_pl.evaluate.evaluation import format_metric_table

DATA_COLUMNS = ("split", "videos", "captions", "bad_files")


def data_summary(datamodule) -> list[dict[str, object]]:
    """One row per split the datamodule loaded: its videos, captions and files that did not decode."""
    records = getattr(datamodule, "records", None) or {}
    log = getattr(datamodule, "bad_video_log", None)
    bad = set(log.read_all()) if log is not None and log.directory.is_dir() else set()
    rows = []
    for split in ("train", "val", "test"):
        if split in records:
            videos = records[split]
            rows.append({"split": split, "videos": len(videos), "captions": sum(len(r.captions) for r in videos),
                         "bad_files": sum(str(r.path) in bad for r in videos)})
    return rows


class RunSummary(Callback):
    """The run's data summary, and the summary screen the CLI prints at the end of ``fit`` and ``test``.

    Args:
        filename: the summary screen's file in the run directory (and ``<stem>.json`` beside it).
        data_filename: the data summary's CSV in the run directory.
    """

    def __init__(self, filename: str = "summary.txt", data_filename: str = "data_summary.csv") -> None:
        self.filename = filename
        self.data_filename = data_filename
        self.started: float | None = None
        self.data: list[dict[str, object]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Rank 0: the data summary as a file and in W&B."""
        if not trainer.is_global_zero:
            return
        self.data = data_summary(getattr(trainer, "datamodule", None))
        if not self.data:
            return
        path = run_directory(trainer) / self.data_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=DATA_COLUMNS)
            writer.writeheader()
            writer.writerows(self.data)
        logger = wandb_logger(trainer)
        if logger is not None:
            logger.experiment.summary.update({f"data/{r['split']}/{k}": r[k] for r in self.data for k in DATA_COLUMNS[1:]})
            logger.log_table(key="data/summary", columns=list(DATA_COLUMNS), data=[[r[k] for k in DATA_COLUMNS] for r in self.data])

    def report(self, trainer: pl.Trainer, command: str) -> str:
        """The summary screen of ``command`` (``fit`` / ``test``), also written to the run directory."""
        facts = self.facts(trainer, command)
        text = render_summary(command, facts, _metrics(trainer), self.data)
        out = run_directory(trainer)
        out.mkdir(parents=True, exist_ok=True)
        (out / self.filename).write_text(text + "\n")
        write_json(out / f"{Path(self.filename).stem}.json", {**facts, "metrics": _metrics(trainer), "data": self.data})
        return text

    def facts(self, trainer: pl.Trainer, command: str) -> dict[str, object]:
        """What the summary states, as plain values (None where it does not apply)."""
        checkpoint = trainer.checkpoint_callback
        throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
        best = getattr(checkpoint, "best_model_path", "") if command == "fit" else (trainer.ckpt_path or "")
        score = getattr(checkpoint, "best_model_score", None) if command == "fit" else None
        return {
            "command": command,
            "checkpoint": best or None,
            "monitor": getattr(checkpoint, "monitor", None) if score is not None else None,
            "monitor_value": float(score) if score is not None else None,
            "run_directory": str(run_directory(trainer)),
            "wall_seconds": time.perf_counter() - self.started if self.started is not None else None,
            "epochs": trainer.current_epoch if command == "fit" else None,
            "steps": trainer.global_step if command == "fit" else None,
            "train_clips": throughput.train_clips if throughput and command == "fit" else None,
            "train_clips_per_s": throughput.clips_per_s if throughput and command == "fit" else None,
            "test_clips_per_s": _metric(trainer, "test/clips_per_s"),
            "peak_gpu_gib": throughput.peak_gpu_gib if throughput else None,
            "bad_files": sum(int(r["bad_files"]) for r in self.data) if self.data else None,
        }


def render_summary(command: str, facts: dict[str, object], metrics: dict[str, float],
                   data: list[dict[str, object]]) -> str:
    """The summary screen: a framed block of ``name  value`` lines, the data table and the metrics table."""
    rows = [("checkpoint" if command == "test" else "best checkpoint", _checkpoint(facts)),
            ("run directory", facts["run_directory"]),
            ("wall time", _duration(facts["wall_seconds"]))]
    if facts["train_clips"]:
        rate = facts["train_clips_per_s"]
        rows.append(("training", f"{facts['epochs']} epochs, {facts['steps']} steps, {facts['train_clips']} clips, "
                                 f"{rate:.1f} clips/s" if rate else f"{facts['train_clips']} clips"))
    if facts["test_clips_per_s"]:
        rows.append(("test encoding", f"{facts['test_clips_per_s']:.1f} clips/s"))
    if facts["peak_gpu_gib"] is not None:
        rows.append(("peak GPU memory", f"{facts['peak_gpu_gib']:.2f} GiB"))
    rows.append(("bad video files", "n/a" if facts["bad_files"] is None else str(facts["bad_files"])))
    lines = [f"{name:<16} {value}" for name, value in rows]
    if data:
        lines += ["", "data  | split | videos | captions | bad files |", "      |---|---:|---:|---:|"]
        lines += [f"      | {r['split']} | {r['videos']} | {r['captions']} | {r['bad_files']} |" for r in data]
    for stage, title in (("test", "test retrieval"), ("val", "validation retrieval (last epoch)")):
        stage_metrics = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{stage}/")}
        if "t2v/R@1" in stage_metrics:
            lines += ["", *format_metric_table(stage_metrics, title=title).splitlines()]
            break
    title = f" xclip-pl {command}: summary "
    rule = "=" * max(len(line) for line in lines + [title + "=" * 8])
    return "\n".join([title.center(len(rule), "="), *lines, rule])


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _checkpoint(facts: dict[str, object]) -> str:
    if not facts["checkpoint"]:
        return "none"
    if facts["monitor_value"] is None:
        return str(facts["checkpoint"])
    return f"{facts['checkpoint']} ({facts['monitor']} = {facts['monitor_value']:.2f})"


def _duration(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{datetime.timedelta(seconds=round(seconds))} ({seconds:.1f} s)"
