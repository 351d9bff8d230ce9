"""``XCLIPProgressBar``: Lightning's tqdm bars with clips/s on a terminal, plain log lines elsewhere.

On a terminal the bars are Lightning's (``TQDMProgressBar``) with ``clips/s`` (``captions/s`` for caption
batches) in their postfix. When stdout is not a terminal (a batch job, ``| tee``, a CI log) carriage-return
bars are unreadable, so every bar is a :class:`LineBar` instead: one line every ``log_every_n_steps``
batches and one at the end of each loop, on stderr::

    Epoch 3: 40/157 (25%) 0:00:03<0:00:09, 786.4 clips/s, train/loss=3.21, v_num=x1y2
    Validation DataLoader 0: 2/2 (100%) 0:00:01<0:00:00, 251.0 clips/s
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Literal, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from xclip_pl.callbacks.throughput import RateMeter, batch_items

ProgressMode = Literal["auto", "bar", "lines"]


class LineBar:
    """The part of tqdm's interface Lightning's progress bar uses, printing plain lines instead of redrawing.

    Args:
        desc: the line's prefix.
        every: a line every this many steps (and one at :meth:`close` for the steps since the last line).
        file: where lines go (default stderr).
    """

    def __init__(self, desc: str = "", every: int = 50, file: TextIO | None = None, **_: object) -> None:
        self.desc, self.every, self.file = desc, max(1, every), file
        self.n, self.total, self.initial, self.disable, self.leave = 0, None, 0, False, True
        self.postfix: dict[str, object] = {}
        self.printed, self.began = 0, time.perf_counter()

    def reset(self, total: float | None = None) -> None:
        self.n, self.total, self.printed, self.began = 0, total, 0, time.perf_counter()
        self.postfix = {}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: object) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def refresh(self) -> None:
        """Print a line when ``every`` steps passed since the last one, or at the last step."""
        last = self.total is not None and self.n >= self.total
        if not self.disable and self.n > self.printed and (self.n - self.printed >= self.every or last):
            self.write(self.line())
            self.printed = self.n

    def close(self) -> None:
        if not self.disable and self.n > self.printed:
            self.write(self.line())
            self.printed = self.n
        self.disable = True

    def write(self, text: str, **_: object) -> None:
        print(text, file=self.file or sys.stderr, flush=True)

    def line(self) -> str:
        """``desc: n/total (pct) elapsed<left, rate, postfix``."""
        elapsed = time.perf_counter() - self.began
        parts = [f"{self.desc}: {self.n}"]
        if self.total and self.total != float("inf"):
            left = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            parts = [(f"{self.desc}: {self.n}/{int(self.total)} ({100 * self.n / self.total:.0f}%) "
                      f"{_clock(elapsed)}<{_clock(left)}")]
        else:
            parts.append(_clock(elapsed))
        parts += [f"{v} {k}" if k.endswith("/s") else f"{k}={_short(v)}" for k, v in self.postfix.items()]
        return ", ".join(parts)


class XCLIPProgressBar(TQDMProgressBar):
    """Progress of training, validation, test and predict with clips per second; log lines off a terminal.

    Args:
        refresh_rate: a terminal bar is redrawn every this many batches (0 hides every bar).
        log_every_n_steps: off a terminal, a line every this many batches (and one at each loop's end).
        mode: ``auto`` (bars on a terminal, lines otherwise), ``bar`` or ``lines``.
        leave: keep each finished training epoch's bar on the terminal.
    """

    def __init__(self, refresh_rate: int = 1, log_every_n_steps: int = 50, mode: ProgressMode = "auto",
                 leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.log_every_n_steps = log_every_n_steps
        self.mode = mode
        self._rates: dict[int, RateMeter] = {}  # id(bar) -> clips since the bar's loop started

    @property
    def lines(self) -> bool:
        """Whether bars are printed as log lines."""
        return self.mode == "lines" or (self.mode == "auto" and not sys.stdout.isatty())

    def _line_bar(self, desc: str) -> LineBar:
        line = LineBar(desc, every=self.log_every_n_steps)
        line.disable = self.is_disabled
        return line

    def init_sanity_tqdm(self):
        return self._line_bar(self.sanity_check_description) if self.lines else super().init_sanity_tqdm()

    def init_train_tqdm(self):
        return self._line_bar(self.train_description) if self.lines else super().init_train_tqdm()

    def init_validation_tqdm(self):
        return self._line_bar(self.validation_description) if self.lines else super().init_validation_tqdm()

    def init_test_tqdm(self):
        return self._line_bar(self.test_description) if self.lines else super().init_test_tqdm()

    def init_predict_tqdm(self):
        return self._line_bar(self.predict_description) if self.lines else super().init_predict_tqdm()

    # ------------------------------------------------------------------------------------------ counting
    def _start(self, bar, batch_idx: int) -> None:
        """At a loop's (or dataloader's) first batch: a new rate for ``bar``."""
        if bar is not None and (batch_idx == 0 or id(bar) not in self._rates):
            self._rates[id(bar)] = RateMeter()
            self._rates[id(bar)].start()

    def _count(self, bar, batch) -> None:
        """Add ``batch``'s clips (or captions) to ``bar``'s rate and show the rate in its postfix (the training
        bar's tqdm postfix comes from :meth:`get_metrics`)."""
        meter = self._rates.get(id(bar))
        if bar is None or meter is None:
            return
        unit, n = batch_items(batch)
        meter.add(n)
        if meter.rate is None:
            return
        if isinstance(bar, LineBar):
            bar.postfix[f"{unit}/s"] = f"{meter.rate:.1f}"
        elif bar is not self._train_progress_bar:
            bar.set_postfix({f"{unit}/s": f"{meter.rate:.1f}"}, refresh=False)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        """Lightning's postfix metrics plus the training bar's clips/s."""
        metrics = super().get_metrics(trainer, pl_module)
        meter = self._rates.get(id(self._train_progress_bar))
        if meter is not None and meter.rate is not None:
            metrics = {"clips/s": f"{meter.rate:.1f}", **metrics}
        return metrics

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._start(self._train_progress_bar, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._count(self._train_progress_bar, batch)
        if isinstance(self._train_progress_bar, LineBar):  # the line printed below shows this step's metrics
            self._train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._start(self._val_progress_bar, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count(self._val_progress_bar, batch)
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._start(self._test_progress_bar, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count(self._test_progress_bar, batch)
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._start(self._predict_progress_bar, batch_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count(self._predict_progress_bar, batch)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))
