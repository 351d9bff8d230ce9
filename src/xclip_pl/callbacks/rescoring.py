"""``TestTimeRescoring``: DSL / QB-Norm / Sinkhorn re-scorings of the test matrix, beside the raw metrics.

None of them is part of X-CLIP (see :mod:`xclip_pl.evaluate.rescoring` for what each assumes), so they run
at ``test`` only, never at validation (a checkpoint is never chosen by them), and each is logged under its
own name (``test/dsl/t2v/R@1``), never mixed into the raw ``test/t2v/*`` numbers.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from xclip_pl.callbacks.base import RetrievalCallback
from xclip_pl.evaluate.evaluation import format_metric_table
from xclip_pl.evaluate.rescoring import TestTimeOption, rescored_metrics
from xclip_pl.evaluate.result import RetrievalResult, name_v2t
from xclip_pl.model import TextFeatures, VideoFeatures
from xclip_pl.train.distributed import all_gather_uneven


class TestTimeRescoring(RetrievalCallback):
    """Test-time re-scorings (DSL, QB-Norm, Sinkhorn) of the test matrix, logged beside the raw metrics.

    They run at ``test`` only (never at validation); each option is logged as ``test/<option>/*`` and printed
    as its own table.

    Args:
        options: the re-scorings: ``dsl`` (dual softmax; sees all test queries), ``qb_norm`` (QB-Norm with a
            bank of training captions; t2v only), ``sinkhorn`` (doubly-stochastic normalisation).
        temperature: temperature of DSL / QB-Norm / Sinkhorn, in logit units (logits carry the logit scale,
            ~100, so 1.0 here is 0.01 on cosine similarities).
        qb_norm_bank_size: number of training captions in the QB-Norm query bank.
        qb_norm_k: QB-Norm: a video is normalised when it is in the top-k of some bank query.
        qb_norm_beta: QB-Norm inverse temperature of the dynamic inverted softmax.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(
        self,
        options: tuple[TestTimeOption, ...] = ("dsl", "qb_norm", "sinkhorn"),
        temperature: float = 1.0,
        qb_norm_bank_size: int = 5000,
        qb_norm_k: int = 1,
        qb_norm_beta: float = 20.0,
        sinkhorn_iterations: int = 50,
    ) -> None:
        self.options = tuple(options)
        self.temperature = temperature
        self.qb_norm_bank_size = qb_norm_bank_size
        self.qb_norm_k = qb_norm_k
        self.qb_norm_beta = qb_norm_beta
        self.sinkhorn_iterations = sinkhorn_iterations

    def on_retrieval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, result: RetrievalResult) -> None:
        """At ``test`` only: every rank assembles the full matrix and scores each option (identical on all
        ranks), logged as ``test/<option>/*``."""
        if result.stage != "test" or not self.options:  # re-scorings are test-time only: never at validation
            return
        index = all_gather_uneven(result.row_caption_index)
        sim = all_gather_uneven(result.rows)[torch.argsort(index)]  # [a, b] in caption order
        bank_sim = self._qb_norm_bank(trainer, pl_module, result.video) if "qb_norm" in self.options else None
        for option in self.options:
            metrics = rescored_metrics(sim, result.caption_video, option, result.ties, result.missing_videos,
                                       temperature=self.temperature, bank_sim=bank_sim, qb_norm_k=self.qb_norm_k,
                                       qb_norm_beta=self.qb_norm_beta, sinkhorn_iterations=self.sinkhorn_iterations)
            metrics = name_v2t(metrics, result.v2t_multi_caption)
            pl_module.log_dict({f"test/{option}/{k}": v for k, v in metrics.items()}, sync_dist=False)
            rank_zero_info(format_metric_table(metrics, title=f"test retrieval with {option} (test-time re-scoring)"))

    @torch.no_grad()
    def _qb_norm_bank(self, trainer: pl.Trainer, pl_module: pl.LightningModule, video: VideoFeatures) -> Tensor:
        """Similarities [bank, b] of training captions (the QB-Norm query bank) to the test videos, scored by
        the module's network with its evaluation settings (``eval_chunk_size``, ``eval_kernel``)."""
        ids, mask = trainer.datamodule.caption_bank(self.qb_norm_bank_size)
        step, device, model = trainer.datamodule.eval_batch_size, pl_module.device, pl_module.model
        bank = TextFeatures.cat([model.encode_text(ids[i : i + step].to(device), mask[i : i + step].to(device))
                                 for i in range(0, len(ids), step)])
        return model.similarity(bank.to(video.video_emb.dtype), video, pl_module.hparams.eval_chunk_size,
                                kernel=pl_module.hparams.eval_kernel).float()
