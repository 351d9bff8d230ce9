"""``RetrievalDiagnostics``: after every validation and test, what the scores look like, for W&B and as files.

Views (``<stage>`` = ``val`` / ``test``), each both in the W&B run (images and scalars) and as files in
``<run dir>/diagnostics/<stage>/`` (see :func:`~xclip_pl.callbacks.run_files.run_directory`; the latest
evaluation's files, scalars of every evaluation appended to ``history.jsonl``):

- the similarity heatmap of a block: the first ``heatmap_size`` videos (decoded ones) against one caption of
  each, ground truth on the diagonal: W&B image ``<stage>/similarity_block``; ``similarity_block.png``,
  ``.npy`` and ``.csv`` (logits; rows = caption index, columns = video id);
- the rank of the ground truth, text-to-video and video-to-text (standard multi-caption rule, as ``v2t/*``
  without group-max): W&B image ``<stage>/rank_histogram``; ``rank_histogram.png`` / ``.csv`` (counts per
  bin), ``ranks_t2v.npy`` / ``ranks_v2t.npy`` (every query's rank);
- per-term diagnostics on a ``sample_size`` block of the same kind
  (:mod:`~xclip_pl.callbacks.term_diagnostics`): scalars ``<stage>/diagnostics/share/<term>``,
  ``gap/<term>``, ``R@1/<term>``, ``entropy/{words,frames}``, ``entropy_normalised/{words,frames}``, and
  ``<stage>/logit_scale`` (the learnt scale, not its log); ``diagnostics.json``.
"""
from __future__ import annotations

import csv
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from xclip_pl.callbacks.base import RetrievalCallback
from xclip_pl.callbacks.figures import bar_chart, heatmap
from xclip_pl.callbacks.run_files import append_jsonl, run_directory, wandb_logger, write_json, write_png
from xclip_pl.callbacks.term_diagnostics import attention_entropies, similarity_terms, term_diagnostics
from xclip_pl.evaluate.result import RetrievalResult
from xclip_pl.evaluate.retrieval import TieRule, ground_truth_ranks
from xclip_pl.train.distributed import all_gather_uneven

#: lower edges of the rank-histogram bins (the last bin is open)
RANK_BINS = (1, 2, 3, 4, 5, 6, 11, 21, 51, 101, 201, 501, 1001)


class RetrievalDiagnostics(RetrievalCallback):
    """Similarity heatmap, ground-truth rank histogram and per-term diagnostics after each evaluation (see the
    module doc for every key and file name).

    Args:
        heatmap_size: videos (and as many captions) in the heatmap block.
        sample_size: videos (and captions) in the block the per-term diagnostics are computed on.
        stages: evaluations observed (``val``, ``test``).
        directory: folder under the run directory for the files.
    """

    def __init__(self, heatmap_size: int = 32, sample_size: int = 64, stages: tuple[str, ...] = ("val", "test"),
                 directory: str = "diagnostics") -> None:
        self.heatmap_size = heatmap_size
        self.sample_size = sample_size
        self.stages = tuple(stages)
        self.directory = directory

    def on_retrieval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, result: RetrievalResult) -> None:
        if result.stage not in self.stages:
            return
        index = all_gather_uneven(result.row_caption_index)  # every rank takes part in the gathers
        sim = all_gather_uneven(result.rows)[torch.argsort(index)]  # [a, b] in caption order
        if not trainer.is_global_zero:
            return
        out = run_directory(trainer) / self.directory / result.stage
        scalars = self._diagnose(pl_module, result, out)
        t2v, v2t = ground_truth_rank_lists(sim, result.caption_video, result.missing_videos, result.ties)
        histogram = write_rank_files(out, t2v, v2t, len(result.video), len(result.text))
        block = self._heatmap(trainer, result, sim, out)
        epoch, step = trainer.current_epoch, trainer.global_step
        write_json(out / "diagnostics.json", {**scalars, "epoch": epoch, "step": step})
        append_jsonl(out / "history.jsonl", {**scalars, "epoch": epoch, "step": step})
        pl_module.log_dict({f"{result.stage}/{k}": v for k, v in scalars.items()}, rank_zero_only=True)
        self._log_images(trainer, result.stage, block, histogram, t2v, v2t)

    def _diagnose(self, pl_module: pl.LightningModule, result: RetrievalResult, out: Path) -> dict[str, float]:
        """Per-term diagnostics and the logit scale on the ``sample_size`` block."""
        captions, videos = sample_positions(result.caption_video, result.missing_videos, self.sample_size)
        text, video = result.text[captions], result.video[videos]
        model = pl_module.model
        scalars = {f"diagnostics/{k}": v for k, v in term_diagnostics(similarity_terms(model, text, video)).items()}
        scalars.update({f"diagnostics/{k}": v for k, v in attention_entropies(model, text, video).items()})
        scalars["diagnostics/sample_size"] = float(len(videos))
        scalars["logit_scale"] = float(model.logit_scale.detach().float().exp())
        return scalars

    def _heatmap(self, trainer: pl.Trainer, result: RetrievalResult, sim: Tensor, out: Path) -> np.ndarray:
        """The heatmap block's logits written as .npy / .csv / .png; returns its image."""
        captions, videos = sample_positions(result.caption_video, result.missing_videos, self.heatmap_size)
        block = sim[captions][:, videos].cpu().numpy()
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "similarity_block.npy", block)
        datamodule = getattr(trainer, "datamodule", None)
        names = [_video_id(datamodule, result.stage, int(v)) for v in videos]
        caption_ids = result.caption_index[captions].tolist()
        with (out / "similarity_block.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["caption_index", *names])
            writer.writerows([int(c), *(f"{x:.6g}" for x in row)] for c, row in zip(caption_ids, block))
        image = heatmap(block)
        write_png(out / "similarity_block.png", image)
        return image

    def _log_images(self, trainer: pl.Trainer, stage: str, block: np.ndarray, histogram: np.ndarray,
                    t2v: Tensor, v2t: Tensor) -> None:
        logger = wandb_logger(trainer)
        if logger is None:
            return
        size = block.shape[0] // 8
        logger.log_image(key=f"{stage}/similarity_block", images=[block],
                         caption=[f"logits of the first {size} videos x one caption each (ground truth: dotted diagonal)"])
        logger.log_image(key=f"{stage}/rank_histogram", images=[histogram],
                         caption=[(f"rank of the ground truth: t2v median {float(t2v.double().median()):g}, "
                                   f"v2t median {float(v2t.double().median()):g}")])


def sample_positions(caption_video: Tensor, missing_videos: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """A square block: the first ``size`` decodable videos and, for each, its first caption (caption
    positions [n], video positions [n]; caption i belongs to video i)."""
    videos = torch.nonzero(~missing_videos.bool().cpu()).flatten()[:size]
    caption_video = caption_video.cpu()
    first = torch.full((len(missing_videos),), -1, dtype=torch.long)
    positions = torch.arange(len(caption_video))
    first.scatter_reduce_(0, caption_video, positions, "amin", include_self=False)
    return first[videos], videos


def ground_truth_rank_lists(sim: Tensor, caption_video: Tensor, missing_videos: Tensor,
                            ties: TieRule) -> tuple[Tensor, Tensor]:
    """Ranks of the ground truth as the raw metrics count them: text-to-video [a] and video-to-text [b]
    (standard rule: a video's best-ranked caption among all captions); a query needing an undecodable video
    gets the worst rank."""
    a, b = sim.shape
    positives = caption_video[:, None].to(sim.device) == torch.arange(b, device=sim.device)[None, :]
    missing = missing_videos.bool().to(sim.device)
    if missing.any():
        floor = sim[:, ~missing].min() - 1.0 if (~missing).any() else sim.new_tensor(0.0)
        sim = sim.masked_fill(missing[None, :], float(floor))
    t2v = ground_truth_ranks(sim, positives, ties).masked_fill(missing[caption_video.to(sim.device)], b)
    v2t = ground_truth_ranks(sim.t(), positives.t(), ties).masked_fill(missing, a)
    return t2v.cpu(), v2t.cpu()


def rank_histogram(ranks: Tensor, largest: int) -> tuple[list[str], list[int]]:
    """Counts of ``ranks`` in :data:`RANK_BINS` up to the bin holding ``largest`` (the worst possible rank)."""
    edges = [e for e in RANK_BINS if e <= largest] + [float("inf")]
    labels = [str(lo) if hi - lo == 1 else (f"{lo}-{int(hi) - 1}" if hi != float("inf") else f">={lo}")
              for lo, hi in pairwise(edges)]
    r = ranks.double()
    counts = [int(((r >= lo) & (r < hi)).sum()) for lo, hi in pairwise(edges)]
    return labels, counts


def write_rank_files(out: Path, t2v: Tensor, v2t: Tensor, videos: int, captions: int) -> np.ndarray:
    """``ranks_t2v.npy``, ``ranks_v2t.npy``, ``rank_histogram.csv`` / ``.png`` in ``out``; returns the image."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "ranks_t2v.npy", t2v.numpy())
    np.save(out / "ranks_v2t.npy", v2t.numpy())
    labels, t2v_counts = rank_histogram(t2v, max(videos, captions))  # one set of bins for both directions
    _, v2t_counts = rank_histogram(v2t, max(videos, captions))
    with (out / "rank_histogram.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["rank", "t2v", "v2t"], *zip(labels, t2v_counts, v2t_counts)])
    image = bar_chart(labels, {"t2v": t2v_counts, "v2t": v2t_counts}, title="rank of the ground truth (queries per bin)")
    write_png(out / "rank_histogram.png", image)
    return image


def _video_id(datamodule, stage: str, video: int) -> str:
    try:
        return str(datamodule.eval_video_id(stage, video))
    except (AttributeError, KeyError, IndexError):
        return f"video{video}"
