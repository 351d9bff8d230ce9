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
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from transformers import CLIPConfig

from xclip_pl.callbacks.examples import log_retrieval_examples, top_retrievals
from xclip_pl.evaluate.evaluation import EvalBuffer, format_metric_table
from xclip_pl.evaluate.rescoring import TestTimeOption, rescored_metrics
from xclip_pl.evaluate.retrieval import RetrievalMetrics, TieRule
from xclip_pl.model import XCLIP, TextFeatures, VideoFeatures
from xclip_pl.model.freezing import freeze_clip_layers
from xclip_pl.model.precision import ClipDtype, cast_towers_fp16
from xclip_pl.model.similarity import Kernel
from xclip_pl.train.bertadam import BertAdam
from xclip_pl.train.distributed import GatherGrad, all_gather_no_grad, all_gather_uneven, feature_gather, world
from xclip_pl.train.loss import contrastive_loss
from xclip_pl.train.optim import NoDecay, OptimizerName, build_optimizer, parameter_groups, reference_parameter_groups
from xclip_pl.train.schedules import LrSchedule, reference_warmup_cosine, warmup_cosine

DEFAULT_CLIP = "tiny"
DEFAULT_TEMPORAL_LAYERS = 4
TemporalInit = Literal["clip_text", "random"]
DEFAULT_TEMPORAL_INIT: TemporalInit = "clip_text"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class XCLIPRetrieval(pl.LightningModule):
    """X-CLIP text-video retrieval.

    Args:
        clip: CLIP backbone: a random preset (``tiny``, ``small``, ``random-vit-b-32``, ``random-vit-b-16``),
            a local Hugging Face CLIP directory, an OpenAI CLIP file, or a hub id such as
            ``openai/clip-vit-base-patch32``. null: ``tiny``, or the CLIP that ``official_checkpoint`` /
            ``clip_config`` describe; given together with ``official_checkpoint``, its sizes must be the
            checkpoint's (only its config is read).
        clip_config: CLIP sizes as a ``CLIPConfig`` dict, built with random weights: what ``xclip-pl convert``
            writes into its checkpoint so that it loads on any machine (the checkpoint's weights replace them).
            Needs ``clip: null`` and ``official_checkpoint: null``.
        max_words: caption length in tokens (linked from ``data.max_words``).
        max_frames: frames per video (linked from ``data.max_frames``).
        temporal_layers: temporal transformer blocks (paper: 4). null: 4, or the checkpoint's number with
            ``official_checkpoint`` (an explicit value must equal it).
        temporal_layer_norm_eps: LayerNorm epsilon of the temporal blocks (reference: 1e-12).
        temporal_init: ``clip_text`` copies CLIP text blocks and positions into the temporal encoder
            (reference); ``random`` starts it fresh. null: ``clip_text``; must be null with
            ``official_checkpoint``, which holds the temporal weights.
        temperature: AOSM softmax temperature (paper: 0.01).
        mask_padding: mask pad tokens and padded frames in AOSM (reference: false).
        frame_features: frames entering AOSM: ``clip`` (before the temporal encoder, reference) or
            ``temporal`` (after it, the paper's figure).
        text_padding_mask: give the text transformer a padding mask (reference: false).
        official_checkpoint: optional reference X-CLIP ``pytorch_model.bin.N`` to initialise every weight from;
            the CLIP sizes and temporal depth are read from its tensors (no pretrained weights are loaded).
        lr: learning rate of the new modules (temporal encoder, AOSM matrices).
        backbone_lr_scale: CLIP learning rate = ``lr * backbone_lr_scale`` (paper: 1e-3).
        weight_decay: decoupled weight decay (no decay on biases, norms and embeddings).
        betas: Adam betas (paper: 0.9, 0.98).
        eps: Adam epsilon (paper: 1e-6).
        warmup_ratio: fraction of the steps with linear warmup before the cosine decay (paper: 0.1); 0 = no
            warmup, the first step at the full lr.
        max_logit_scale: ``logit_scale`` is clamped to this after every step (ln 100).
        local_loss: each rank scores only its own rows and columns of the global logits (same gradients,
            ~2/W of the AOSM work); false computes the full global matrix on every rank, as the reference.
        false_negative_mask: leave a pair's other captions of the same video (and those captions' copies of
            the video) out of its softmax denominators. Multi-caption datasets (MSR-VTT, MSVD) put several
            pairs of one video in a batch, which the reference contrasts as negatives (false: reference).
        log_examples: captions per validation / test whose right video and three best videos are logged to
            W&B as frame thumbnails with their scores (images ``<stage>/examples``; rank 0, W&B logger
            only; 0 = none).
        eval_chunk_size: texts and videos per similarity block at evaluation (None: automatic, bounded memory).
        eval_dtype: dtype of the features in the evaluation similarity (``bf16``/``fp16`` halve memory and
            time on GPUs; softmax statistics and sums stay fp32).
        eval_compile: run the evaluation similarity blocks through ``torch.compile`` (CUDA only).
        eval_kernel: AOSM implementation at evaluation: ``auto`` = the fused C++ kernel on CPU (built on
            first use, ~20 s once per machine; falls back to torch ops with a warning if it cannot be
            built) and tensor ops on GPUs, ``torch`` = tensor ops everywhere, ``fused`` = the CPU kernel on
            CPU and the Triton kernels on GPUs (not yet timed on a GPU), or an error. Same values.
        ties: how a ground-truth score tied with others is ranked (``pessimistic``, ``optimistic``, ``mean``).
        encode_padded_frames: run CLIP on padded frame slots as mean-colour images (reference: true);
            false skips them (zero features; meant for ``mask_padding: true``).
        clip_dtype: ``fp16`` = the reference's pure-fp16 CLIP towers (fp16 weights, gradients and
            optimiser state; LayerNorms in fp32; needs ``trainer.precision: 32-true``); ``fp32`` = fp32
            master weights, combine with ``trainer.precision: bf16-mixed`` (retune the CLIP lr).
        freeze_layers: freeze the CLIP embedding stage and encoder layers below this index (reference: 0,
            which still freezes the embeddings, patch projection, class token and pre-LN); -1 freezes nothing.
        optimizer: ``bertadam`` = the reference's Adam (no bias correction, state in the parameter dtype,
            per-tensor clip to 1); ``adamw`` = ``torch.optim.AdamW``.
        lr_schedule: ``reference`` = warmup then cosine over global progress, not renormalised, first step
            at lr 0; ``hf`` = warmup then a cosine renormalised to the remaining steps.
        no_decay: parameters without weight decay: ``bias`` (reference: LayerNorm weights, logit_scale and
            the AOSM matrices are decayed) or ``bias_norm_embedding`` (biases, norms, embeddings, scalars).
        gather_grad: backward of the feature all-gather: ``sum`` (exact full-batch gradients) or
            ``local_slice`` (reference: this rank's slice only, so encoder gradients are 1/W of the head's;
            requires ``local_loss: false``). Under ``local_slice`` the GPU count is part of the recipe: it sets
            the encoders' gradient scale, hence the effective CLIP learning rate, the global clip and which
            fp16 weights move.
        gather_grad_devices: with ``local_slice``: the GPU count whose gradient scale to reproduce (the paper
            recipes write the reference's, e.g. 4): each rank's slice is scaled by W / this, so on any W GPUs
            the encoders get 1/this of the head's gradient. None: 1/W of this run's W GPUs (the reference
            code as it would run here).
        v2t_multi_caption: which multi-caption video-to-text convention is logged as ``v2t/*`` (the other
            one goes to ``v2t_standard/*`` or ``v2t_group_max/*``): ``standard`` (best caption among all
            captions) or ``group_max`` (the reference's, used by the paper's MSVD numbers).
        test_time: test-time re-scorings evaluated beside the raw metrics at ``test`` only (never at validation)
            and logged under their own names (``test/dsl/t2v/R@1``): ``dsl`` (dual softmax; sees all test
            queries), ``qb_norm`` (QB-Norm with a bank of training captions; t2v only), ``sinkhorn``
            (doubly-stochastic normalisation). None: off.
        test_time_temperature: temperature of DSL / QB-Norm / Sinkhorn, in logit units (logits carry the logit
            scale, ~100, so 1.0 here is 0.01 on cosine similarities).
        qb_norm_bank_size: number of training captions in the QB-Norm query bank.
        qb_norm_k: QB-Norm: a video is normalised when it is in the top-k of some bank query.
        qb_norm_beta: QB-Norm inverse temperature of the dynamic inverted softmax.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
    """

    def __init__(
        self,
        clip: str | None = None,
        max_words: int = 32,
        max_frames: int = 12,
        temporal_layers: int | None = None,
        temporal_layer_norm_eps: float = 1e-12,
        temporal_init: TemporalInit | None = None,
        temperature: float = 0.01,
        mask_padding: bool = False,
        frame_features: Literal["clip", "temporal"] = "clip",
        text_padding_mask: bool = False,
        official_checkpoint: str | None = None,
        clip_config: dict | None = None,
        lr: float = 1e-4,
        backbone_lr_scale: float = 1e-3,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_ratio: float = 0.1,
        max_logit_scale: float = math.log(100.0),
        local_loss: bool = True,
        false_negative_mask: bool = False,
        log_examples: int = 8,
        eval_chunk_size: int | None = None,
        eval_dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
        eval_compile: bool = False,
        eval_kernel: Kernel = "auto",
        ties: TieRule = "pessimistic",
        encode_padded_frames: bool = True,
        clip_dtype: ClipDtype = "fp32",
        freeze_layers: int = -1,
        optimizer: OptimizerName = "adamw",
        lr_schedule: LrSchedule = "hf",
        no_decay: NoDecay = "bias_norm_embedding",
        gather_grad: GatherGrad = "sum",
        gather_grad_devices: int | None = None,
        v2t_multi_caption: Literal["standard", "group_max"] = "standard",
        test_time: list[TestTimeOption] | None = None,
        test_time_temperature: float = 1.0,
        qb_norm_bank_size: int = 5000,
        qb_norm_k: int = 1,
        qb_norm_beta: float = 20.0,
        sinkhorn_iterations: int = 50,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if gather_grad == "local_slice" and local_loss:
            raise ValueError("model.gather_grad=local_slice reproduces the reference only with the full N x N loss: "
                             "set model.local_loss: false (or gather_grad: sum)")
        if gather_grad_devices is not None and (gather_grad != "local_slice" or gather_grad_devices < 1):
            raise ValueError(f"model.gather_grad_devices={gather_grad_devices} applies to model.gather_grad: local_slice "
                             f"(got {gather_grad!r}) and must be >= 1: set it to the recipe's GPU count or null")
        self.model = self._build_model()
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.eval_buffer = EvalBuffer()
        self.metrics = RetrievalMetrics(ties=ties)

    def _build_model(self) -> XCLIP:
        """The X-CLIP model the hyperparameters describe: from an official checkpoint or a CLIP, cast and
        frozen as asked."""
        hp = self.hparams
        model_args = dict(max_words=hp.max_words, max_frames=hp.max_frames, temporal_layer_norm_eps=hp.temporal_layer_norm_eps,
                          temperature=hp.temperature, mask_padding=hp.mask_padding, frame_features=hp.frame_features,
                          text_padding_mask=hp.text_padding_mask, encode_padded_frames=hp.encode_padded_frames)
        if hp.official_checkpoint:
            if hp.clip_config is not None:
                raise ValueError("model.official_checkpoint and model.clip_config both describe the CLIP: set "
                                 "model.clip_config: null (the checkpoint's sizes are used)")
            model = XCLIP.from_official_checkpoint(hp.official_checkpoint, clip=hp.clip, temporal_layers=hp.temporal_layers,
                                                   temporal_init=hp.temporal_init, **model_args)
        else:
            model = XCLIP(self._clip_source(), temporal_layers=_default(hp.temporal_layers, DEFAULT_TEMPORAL_LAYERS),
                          temporal_init=_default(hp.temporal_init, DEFAULT_TEMPORAL_INIT), **model_args)
        if hp.clip_dtype == "fp16":
            cast_towers_fp16(model.towers.clip)  # after the temporal encoder copied the fp32 text blocks
        freeze_clip_layers(model.towers.clip, hp.freeze_layers)
        return model

    def _clip_source(self) -> str | CLIPConfig:
        """What builds the CLIP without an official checkpoint: ``clip_config``, else ``clip``, else the default."""
        hp = self.hparams
        if hp.clip_config is None:
            return _default(hp.clip, DEFAULT_CLIP)
        if hp.clip is not None:
            raise ValueError(f"model.clip={hp.clip!r} and model.clip_config both describe the CLIP: set one of them "
                             "to null (clip_config comes with checkpoints written by `xclip-pl convert`)")
        return CLIPConfig.from_dict(hp.clip_config)

    @property
    def image_size(self) -> int:
        """Frame size the CLIP vision tower expects (linked into ``data.image_size``)."""
        return self.model.towers.image_size

    @property
    def vocab_size(self) -> int:
        return self.model.towers.clip.config.text_config.vocab_size

    def setup(self, stage: str) -> None:
        """Once per stage (the datamodule is set up first): its tokenizer must fit the text tower."""
        tokens = getattr(self.trainer.datamodule, "vocab_size", None) if self._trainer is not None else None
        if tokens is not None and tokens > self.vocab_size:
            raise ValueError(f"the tokenizer has {tokens} ids but the text tower's vocabulary has {self.vocab_size}: "
                             "the tokenizer does not belong to this CLIP (check data.tokenizer / model.clip)")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint trained with other ``max_words``/``max_frames`` is a clear error, not a size mismatch."""
        state = checkpoint.get("state_dict", {})
        for key, what, ours in (("model.similarity_head.word_logit_weight", "max_words", self.model.max_words),
                                ("model.similarity_head.frame_logit_weight", "max_frames", self.model.max_frames)):
            if key in state and state[key].shape[0] != ours:
                raise ValueError(f"the checkpoint was trained with {what}={state[key].shape[0]} (its AOSM matrices are "
                                 f"{tuple(state[key].shape)}) but this run uses {what}={ours}: set data.init_args.{what}="
                                 f"{state[key].shape[0]}")

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
        return self.model.encode_text(batch["input_ids"], batch["attention_mask"])

    # ----------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        """Check the precision setting; keep a copy of the tokenizer beside the checkpoints (``<run>/tokenizer``)."""
        precision = str(self.trainer.precision)
        if self.hparams.clip_dtype == "fp16" and precision != "32-true":
            raise ValueError(f"model.clip_dtype=fp16 casts the CLIP towers itself (the reference's pure fp16); "
                             f"trainer.precision={precision} would cast or autocast them again: set trainer.precision: 32-true")
        datamodule, checkpoint = self.trainer.datamodule, self.trainer.checkpoint_callback
        if (self.trainer.is_global_zero and getattr(datamodule, "tokenizer", None) is not None
                and checkpoint is not None and checkpoint.dirpath):
            datamodule.save_tokenizer(Path(checkpoint.dirpath).parent / "tokenizer")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        text, video = self.encode_text_batch(batch), self.encode_video_batch(batch)
        rank, world_size = world()
        gather = feature_gather(self.hparams.gather_grad, self.hparams.gather_grad_devices)
        video_ids = batch["video_index"] if self.hparams.false_negative_mask else None
        loss = contrastive_loss(self.model.similarity, text, video, gather, rank, world_size, self.hparams.local_loss,
                                video_ids=video_ids, gather_ids=all_gather_no_grad)
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
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.hparams.eval_dtype]
        text, video = text.to(dtype), video.to(dtype)
        with torch.no_grad():
            rows = self.model.similarity(text[mine], video, self.hparams.eval_chunk_size,
                                         compile=self.hparams.eval_compile, kernel=self.hparams.eval_kernel).float()
        self.metrics.update(rows, caption_index[mine], caption_video[mine])
        self.metrics.missing_videos = ~video_ok
        metrics = _name_v2t(self.metrics.compute(), self.hparams.v2t_multi_caption)
        self.metrics.reset()
        self.eval_buffer.clear()
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=False, rank_zero_only=False)
        self.log(f"{stage}/num_captions", float(len(text)))
        self.log(f"{stage}/num_videos", float(len(video)))
        self.log(f"{stage}/num_undecodable_videos", float((~video_ok).sum()))
        if self.hparams.test_time and stage == "test":  # re-scorings are test-time only: never at validation
            self._log_test_time(rows, caption_index[mine], caption_video, text, video, ~video_ok)
        self._log_examples(stage, rows, caption_index[mine], caption_video[mine])
        return metrics

    def _log_examples(self, stage: str, rows: Tensor, caption_index: Tensor, caption_video: Tensor) -> None:
        """Rank 0's first ``log_examples`` captions and their best videos, as W&B images with thumbnails."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if (self.hparams.log_examples <= 0 or not self.trainer.is_global_zero or not isinstance(self.logger, WandbLogger)
                or not hasattr(datamodule, "eval_video_frames")):
            return
        retrievals = top_retrievals(rows, caption_index, caption_video, self.hparams.log_examples)
        log_retrieval_examples(self.logger, datamodule, stage, retrievals)

    def _log_test_time(self, rows: Tensor, row_index: Tensor, caption_video: Tensor,
                       text: TextFeatures, video: VideoFeatures, missing: Tensor) -> None:
        """At ``test`` only: every rank assembles the full matrix and scores each test-time option (identical on
        all ranks), logged as ``test/<option>/*``."""
        hp = self.hparams
        index = all_gather_uneven(row_index)
        sim = all_gather_uneven(rows)[torch.argsort(index)]  # [captions, videos] in caption order
        bank_sim = self._qb_norm_bank(video) if "qb_norm" in hp.test_time else None
        for option in hp.test_time:
            metrics = rescored_metrics(sim, caption_video, option, hp.ties, missing, temperature=hp.test_time_temperature,
                                       bank_sim=bank_sim, qb_norm_k=hp.qb_norm_k, qb_norm_beta=hp.qb_norm_beta,
                                       sinkhorn_iterations=hp.sinkhorn_iterations)
            metrics = _name_v2t(metrics, hp.v2t_multi_caption)
            self.log_dict({f"test/{option}/{k}": v for k, v in metrics.items()}, sync_dist=False)
            rank_zero_info(format_metric_table(metrics, title=f"test retrieval with {option} (test-time re-scoring)"))

    @torch.no_grad()
    def _qb_norm_bank(self, video: VideoFeatures) -> Tensor:
        """Similarities [bank, videos] of training captions (the QB-Norm query bank) to the test videos."""
        ids, mask = self.trainer.datamodule.caption_bank(self.hparams.qb_norm_bank_size)
        step = self.trainer.datamodule.eval_batch_size
        bank = TextFeatures.cat([self.model.encode_text(ids[i : i + step].to(self.device), mask[i : i + step].to(self.device))
                                 for i in range(0, len(ids), step)])
        return self.model.similarity(bank.to(video.video_emb.dtype), video, self.hparams.eval_chunk_size,
                                     kernel=self.hparams.eval_kernel).float()

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
        make_groups = reference_parameter_groups if hp.no_decay == "bias" else parameter_groups
        groups = make_groups(self.model, self.model.towers, hp.lr, hp.backbone_lr_scale, hp.weight_decay)
        if hp.optimizer == "bertadam":
            optimizer = BertAdam(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, max_grad_norm=1.0)
        else:
            optimizer = build_optimizer(groups, tuple(hp.betas), hp.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = reference_warmup_cosine if hp.lr_schedule == "reference" else warmup_cosine
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total, hp.warmup_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _default(value, default):
    """``value``, or ``default`` where it is None (arguments whose None means "the usual value")."""
    return default if value is None else value


def _name_v2t(metrics: dict[str, float], headline: str) -> dict[str, float]:
    """Multi-caption data: put the chosen video-to-text convention under ``v2t/*`` and the other beside it."""
    if headline == "standard" or not any(k.startswith("v2t_group_max/") for k in metrics):
        return metrics
    renamed = {}
    for key, value in metrics.items():
        direction, name = key.split("/", 1)
        direction = {"v2t": "v2t_standard", "v2t_group_max": "v2t"}.get(direction, direction)
        renamed[f"{direction}/{name}"] = value
    return renamed
