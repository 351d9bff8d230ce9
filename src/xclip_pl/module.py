"""XCLIPRetrieval: the LightningModule (training, distributed evaluation, prediction, optimisation).

Batches (see ``xclip_pl.data.dataset``): training pairs carry ``frames`` uint8 [b, f, h, w, 3],
``frame_mask`` [b, f], ``input_ids``/``attention_mask`` [b, w]; evaluation uses two loaders, unique videos
(dataloader 0) and captions (dataloader 1), with global ``video_index`` / ``text_index``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from .distributed import all_gather_uneven, gather_features, world
from .evaluation import EvalBuffer, format_metric_table
from .loss import contrastive_loss
from .model import XCLIP, TextFeatures, VideoFeatures
from .optim import build_optimizer, parameter_groups, warmup_cosine
from .retrieval import RetrievalMetrics, TieRule

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class XCLIPRetrieval(pl.LightningModule):
    """X-CLIP text-video retrieval.

    Args:
        clip: CLIP backbone: a random preset (``tiny``, ``small``, ``random-vit-b-32``, ``random-vit-b-16``),
            a local Hugging Face CLIP directory, or a hub id such as ``openai/clip-vit-base-patch32``.
        max_words: caption length in tokens (linked from ``data.max_words``).
        max_frames: frames per video (linked from ``data.max_frames``).
        temporal_layers: temporal transformer blocks (paper: 4).
        temporal_layer_norm_eps: LayerNorm epsilon of the temporal blocks (reference: 1e-12).
        temporal_init: ``clip_text`` copies CLIP text blocks and positions into the temporal encoder
            (reference); ``random`` starts it fresh.
        temperature: AOSM softmax temperature (paper: 0.01).
        mask_padding: mask pad tokens and padded frames in AOSM (reference: false).
        frame_features: frames entering AOSM: ``clip`` (before the temporal encoder, reference) or
            ``temporal`` (after it, the paper's figure).
        text_padding_mask: give the text transformer a padding mask (reference: false).
        official_checkpoint: optional reference X-CLIP ``pytorch_model.bin.N`` to initialise every weight from.
        lr: learning rate of the new modules (temporal encoder, AOSM matrices).
        backbone_lr_scale: CLIP learning rate = ``lr * backbone_lr_scale`` (paper: 1e-3).
        weight_decay: decoupled weight decay (no decay on biases, norms and embeddings).
        betas: Adam betas (paper: 0.9, 0.98).
        eps: Adam epsilon (paper: 1e-6).
        warmup_ratio: fraction of the steps with linear warmup before the cosine decay (paper: 0.1).
        max_logit_scale: ``logit_scale`` is clamped to this after every step (ln 100).
        local_loss: each rank scores only its own rows and columns of the global logits (same gradients,
            ~2/W of the AOSM work); false computes the full global matrix on every rank, as the reference.
        eval_chunk_size: texts and videos per similarity block at evaluation (None: automatic, bounded memory).
        ties: how a ground-truth score tied with others is ranked (``pessimistic``, ``optimistic``, ``mean``).
    """

    def __init__(
        self,
        clip: str = "tiny",
        max_words: int = 32,
        max_frames: int = 12,
        temporal_layers: int = 4,
        temporal_layer_norm_eps: float = 1e-12,
        temporal_init: Literal["clip_text", "random"] = "clip_text",
        temperature: float = 0.01,
        mask_padding: bool = False,
        frame_features: Literal["clip", "temporal"] = "clip",
        text_padding_mask: bool = False,
        official_checkpoint: str | None = None,
        lr: float = 1e-4,
        backbone_lr_scale: float = 1e-3,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_ratio: float = 0.1,
        max_logit_scale: float = math.log(100.0),
        local_loss: bool = True,
        eval_chunk_size: int | None = None,
        ties: TieRule = "pessimistic",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_args = dict(max_words=max_words, max_frames=max_frames, temporal_layer_norm_eps=temporal_layer_norm_eps,
                          temperature=temperature, mask_padding=mask_padding, frame_features=frame_features,
                          text_padding_mask=text_padding_mask)
        if official_checkpoint:
            self.model = XCLIP.from_official_checkpoint(official_checkpoint, **model_args)
        else:
            self.model = XCLIP(clip, temporal_layers=temporal_layers, temporal_init=temporal_init, **model_args)
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.eval_buffer = EvalBuffer()
        self.metrics = RetrievalMetrics(ties=ties)

    @property
    def image_size(self) -> int:
        """Frame size the CLIP vision tower expects (linked into ``data.image_size``)."""
        return self.model.towers.image_size

    @property
    def vocab_size(self) -> int:
        return self.model.towers.clip.config.text_config.vocab_size

    # ----------------------------------------------------------------------------------------- encoding
    def normalize_frames(self, frames: Tensor, frame_mask: Tensor) -> Tensor:
        """uint8 [b, f, h, w, 3] -> CLIP-normalised float [b, f, 3, h, w]; padded slots are zero (mean colour)."""
        if frames.shape[2] != self.image_size or frames.shape[3] != self.image_size:
            raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]} but the CLIP vision tower expects "
                             f"{self.image_size}x{self.image_size}: set data.image_size={self.image_size}")
        pixels = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)  # [b, f, 3, h, w]
        pixels = (pixels - self.pixel_mean) / self.pixel_std
        return pixels * frame_mask[:, :, None, None, None].to(pixels.dtype)

    def encode_video_batch(self, batch: dict) -> VideoFeatures:
        return self.model.encode_video(self.normalize_frames(batch["frames"], batch["frame_mask"]), batch["frame_mask"])

    def encode_text_batch(self, batch: dict) -> TextFeatures:
        ids = batch["input_ids"]
        if int(ids.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(ids.max())} >= the text tower's vocabulary ({self.vocab_size}): "
                             "the tokenizer does not belong to this CLIP (check data.tokenizer / model.clip)")
        return self.model.encode_text(ids, batch["attention_mask"])

    # ----------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        """Keep a copy of the tokenizer beside the run's checkpoints (``<run>/tokenizer``)."""
        datamodule, checkpoint = self.trainer.datamodule, self.trainer.checkpoint_callback
        if (self.trainer.is_global_zero and getattr(datamodule, "tokenizer", None) is not None
                and checkpoint is not None and checkpoint.dirpath):
            datamodule.save_tokenizer(Path(checkpoint.dirpath).parent / "tokenizer")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        text, video = self.encode_text_batch(batch), self.encode_video_batch(batch)
        rank, world_size = world()
        loss = contrastive_loss(self.model.similarity, text, video, gather_features, rank, world_size, self.hparams.local_loss)
        batch_size = len(text)
        self.log("train/loss", loss, prog_bar=True, sync_dist=world_size > 1, batch_size=batch_size)
        self.log("train/logit_scale", self.model.logit_scale.detach().exp(), batch_size=batch_size)
        for group in self.optimizers().optimizer.param_groups if self._trainer else ():
            self.log(f"train/lr_{group['name']}", group["lr"], batch_size=batch_size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(max=self.hparams.max_logit_scale)

    # --------------------------------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict, dataloader_idx: int) -> None:
        if dataloader_idx == 0:
            self.eval_buffer.add_videos(self.encode_video_batch(batch), batch["video_index"], batch["video_ok"])
        else:
            self.eval_buffer.add_texts(self.encode_text_batch(batch), batch["text_index"], batch["video_index"])

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_retrieval("val")
        if metrics is not None and self.trainer.state.fn != "fit":
            rank_zero_info(format_metric_table(metrics, title="validation retrieval"))

    def on_test_epoch_end(self) -> None:
        metrics = self._log_retrieval("test")
        if metrics is not None:
            rank_zero_info(format_metric_table(metrics, title="test retrieval"))

    def _log_retrieval(self, stage: str) -> dict[str, float] | None:
        """Gather features from every rank, score this rank's share of the caption rows, sync the metric."""
        if self.trainer.sanity_checking or self.eval_buffer.empty:
            self.eval_buffer.clear()
            return None
        text, caption_index, caption_video, video, video_ok = self.eval_buffer.gathered(all_gather_uneven)
        rank, world_size = world()
        mine = torch.arange(rank, len(text), world_size, device=self.device)  # this rank's caption rows
        with torch.no_grad():
            rows = self.model.similarity(text[mine], video, self.hparams.eval_chunk_size)
        self.metrics.update(rows, caption_index[mine], caption_video[mine])
        self.metrics.missing_videos = ~video_ok
        metrics = self.metrics.compute()
        self.metrics.reset()
        self.eval_buffer.clear()
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=False, rank_zero_only=False)
        self.log(f"{stage}/num_captions", float(len(text)))
        self.log(f"{stage}/num_videos", float(len(video)))
        self.log(f"{stage}/num_undecodable_videos", float((~video_ok).sum()))
        return metrics

    # --------------------------------------------------------------------------------------- prediction
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        if dataloader_idx == 0:
            video = self.encode_video_batch(batch)
            return {"video_index": batch["video_index"], "video_emb": video.video_emb, "frame_emb": video.frame_emb,
                    "frame_mask": video.frame_mask}
        text = self.encode_text_batch(batch)
        return {"text_index": batch["text_index"], "caption_video": batch["video_index"], "sentence_emb": text.sentence_emb,
                "word_emb": text.word_emb, "word_mask": text.word_mask}

    # ------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        groups = parameter_groups(self.model, self.model.towers, hp.lr, hp.backbone_lr_scale, hp.weight_decay)
        optimizer = build_optimizer(groups, tuple(hp.betas), hp.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, hp.warmup_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
