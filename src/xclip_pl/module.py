"""XCLIPRetrieval: the LightningModule (training, distributed evaluation, prediction, optimisation).

Batches (see ``xclip_pl.data.dataset``): training pairs carry ``frames`` uint8 [b, f, h, w, 3],
``frame_mask`` [b, f], ``input_ids``/``attention_mask`` [b, w]; evaluation uses two loaders, unique videos
(dataloader 0) and captions (dataloader 1), with global ``video_index`` / ``text_index``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from xclip_pl.evaluate.evaluation import EvalBuffer, format_metric_table
from xclip_pl.evaluate.result import RetrievalResult, name_v2t
from xclip_pl.evaluate.retrieval import RetrievalMetrics, TieRule
from xclip_pl.model import XCLIP, TextFeatures, VideoFeatures
from xclip_pl.model.similarity import Kernel
from xclip_pl.train.distributed import GatherGrad, all_gather_no_grad, all_gather_uneven, feature_gather, world
from xclip_pl.train.loss import contrastive_loss
from xclip_pl.train.optim import AdamW, NoDecay, OptimizerCallable, make_parameter_groups
from xclip_pl.train.schedules import SchedulerCallable, WarmupCosine

#: what ``load_from_checkpoint`` calls to rebuild the module from the nested config in its hyper-parameters
INSTANTIATOR = "pytorch_lightning.cli.instantiate_module"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class XCLIPRetrieval(pl.LightningModule):
    """X-CLIP text-video retrieval.

    Args:
        model: the X-CLIP network, configured as ``class_path: xclip_pl.model.xclip.XCLIP`` with its ``init_args``
            (CLIP backbone, temporal encoder, AOSM and fidelity switches; ``--model.model.help XCLIP`` lists them).
        optimizer: optimizer class, called with the parameter groups (each sets its lr and weight decay):
            ``xclip_pl.train.optim.AdamW`` (default: ``torch.optim.AdamW`` with betas 0.9/0.98, eps 1e-6) or
            ``xclip_pl.train.bertadam.BertAdam`` (the reference's Adam: no bias correction, state in the
            parameter dtype, per-tensor clip to ``max_grad_norm``), or any ``torch.optim`` optimizer.
        scheduler: LR scheduler class, stepped every optimiser step and given ``total_steps`` (the run's
            optimiser steps): ``xclip_pl.train.schedules.WarmupCosine`` (default: warmup then a cosine
            renormalised to the remaining steps) or ``xclip_pl.train.schedules.ReferenceWarmupCosine`` (the
            reference's: cosine over global progress, not renormalised, first step at lr 0), with
            ``init_args.warmup_ratio`` (paper: 0.1). null: a constant lr.
        lr: learning rate of the new modules (temporal encoder, AOSM matrices).
        backbone_lr_scale: CLIP learning rate = ``lr * backbone_lr_scale`` (paper: 1e-3).
        weight_decay: decoupled weight decay of the decayed groups (see ``no_decay``).
        no_decay: parameters without weight decay: ``bias`` (reference: LayerNorm weights, logit_scale and
            the AOSM matrices are decayed) or ``bias_norm_embedding`` (biases, norms, embeddings, scalars).
        max_logit_scale: ``logit_scale`` is clamped to this after every step (ln 100).
        local_loss: each rank scores only its own rows and columns of the global logits (same gradients,
            ~2/W of the AOSM work); false computes the full global matrix on every rank, as the reference.
        false_negative_mask: leave a pair's other captions of the same video (and those captions' copies of
            the video) out of its softmax denominators. Multi-caption datasets (MSR-VTT, MSVD) put several
            pairs of one video in a batch, which the reference contrasts as negatives (false: reference).
        eval_chunk_size: texts and videos per similarity block at evaluation (None: automatic, bounded memory).
        eval_dtype: dtype of the features in the evaluation similarity (``bf16``/``fp16`` halve memory and
            time on GPUs; softmax statistics and sums stay fp32).
        eval_compile: run the evaluation similarity blocks through ``torch.compile`` (CUDA only).
        compile: run the text and video encoders (every stage) and the training similarity through
            ``torch.compile`` (inductor), set up in ``configure_model``; parameters and checkpoint keys are
            unchanged, so checkpoints load into compiled and uncompiled modules alike. The first batches of
            each stage and shape compile (about a minute on CPU for the tiny preset, less from the cache).
        eval_kernel: AOSM implementation at evaluation: ``auto`` = the fused C++ kernel on CPU (built on
            first use, ~20 s once per machine; falls back to torch ops with a warning if it cannot be
            built) and tensor ops on GPUs, ``torch`` = tensor ops everywhere, ``fused`` = the CPU kernel on
            CPU and the Triton kernels on GPUs (not yet timed on a GPU), or an error. Same values.
        ties: how a ground-truth score tied with others is ranked (``pessimistic``, ``optimistic``, ``mean``).
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

    What observes a run is a callback in ``trainer.callbacks`` (``xclip_pl.callbacks``): W&B retrieval examples
    (``RetrievalExamples``), test-time re-scorings (``TestTimeRescoring``), the tokenizer copy beside the
    checkpoints (``TokenizerCopy``), the list of undecodable videos (``BadVideoReport``), the similarity heatmap,
    rank histogram and per-term diagnostics (``RetrievalDiagnostics``), clips/s and peak GPU memory (``Throughput``),
    the data summary and summary screen (``RunSummary``), progress (``XCLIPProgressBar``). Callbacks with ``on_retrieval_end`` get each evaluation's
    :class:`~xclip_pl.evaluate.result.RetrievalResult`.
    """

    def __init__(
        self,
        model: XCLIP,
        optimizer: OptimizerCallable = AdamW,
        scheduler: SchedulerCallable | None = WarmupCosine,
        lr: float = 1e-4,
        backbone_lr_scale: float = 1e-3,
        weight_decay: float = 0.2,
        no_decay: NoDecay = "bias_norm_embedding",
        max_logit_scale: float = math.log(100.0),
        local_loss: bool = True,
        false_negative_mask: bool = False,
        eval_chunk_size: int | None = None,
        eval_dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
        eval_compile: bool = False,
        compile: bool = False,
        eval_kernel: Kernel = "auto",
        ties: TieRule = "pessimistic",
        gather_grad: GatherGrad = "sum",
        gather_grad_devices: int | None = None,
        v2t_multi_caption: Literal["standard", "group_max"] = "standard",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])  # built by LightningCLI: its config of this module; else the arguments
        self.save_hyperparameters(_primitive_hparams(dict(self.hparams), model))
        if gather_grad == "local_slice" and local_loss:
            raise ValueError("model.gather_grad=local_slice reproduces the reference only with the full N x N loss: "
                             "set model.local_loss: false (or gather_grad: sum)")
        if gather_grad_devices is not None and (gather_grad != "local_slice" or gather_grad_devices < 1):
            raise ValueError(f"model.gather_grad_devices={gather_grad_devices} applies to model.gather_grad: local_slice "
                             f"(got {gather_grad!r}) and must be >= 1: set it to the recipe's GPU count or null")
        self.model = model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.eval_buffer = EvalBuffer()
        self.metrics = RetrievalMetrics(ties=ties)
        self._compiled: dict[str, Callable] = {}  # ``compile``: the network's hot functions, see configure_model

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
                             "the tokenizer does not belong to this CLIP (check data.tokenizer / model.model.init_args.clip)")

    def configure_model(self) -> None:
        """With ``compile``: ``torch.compile`` the network's bound ``encode_text`` / ``encode_video`` /
        ``similarity`` and keep them beside it. Compiling these functions, not ``self.model`` itself, keeps the
        module tree and its state-dict keys (no ``_orig_mod.``), so checkpoints stay interchangeable, and DDP
        still wraps this module (its gradient hooks fire after each compiled backward). Lightning calls this
        in every stage; it compiles once."""
        if self.hparams.compile and not self._compiled:
            self._compiled = {name: torch.compile(getattr(self.model, name))
                              for name in ("encode_text", "encode_video", "similarity")}

    def _network(self, name: str) -> Callable:
        """``self.model.<name>``, compiled when ``configure_model`` compiled it."""
        return self._compiled.get(name) or getattr(self.model, name)

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
        pixels = self.normalize_frames(batch["frames"], batch["frame_mask"])
        return self._network("encode_video")(pixels, batch["frame_mask"])

    def encode_text_batch(self, batch: dict) -> TextFeatures:
        return self._network("encode_text")(batch["input_ids"], batch["attention_mask"])

    # ----------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        """Check the precision setting."""
        precision = str(self.trainer.precision)
        if self.model.clip_dtype == "fp16" and precision != "32-true":
            raise ValueError(f"model.model.init_args.clip_dtype=fp16 casts the CLIP towers itself (the reference's pure fp16); "
                             f"trainer.precision={precision} would cast or autocast them again: set trainer.precision: 32-true")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        text, video = self.encode_text_batch(batch), self.encode_video_batch(batch)
        rank, world_size = world()
        gather = feature_gather(self.hparams.gather_grad, self.hparams.gather_grad_devices)
        video_ids = batch["video_index"] if self.hparams.false_negative_mask else None
        loss = contrastive_loss(self._network("similarity"), text, video, gather, rank, world_size, self.hparams.local_loss,
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
        metrics = name_v2t(self.metrics.compute(), self.hparams.v2t_multi_caption)
        self.metrics.reset()
        self.eval_buffer.clear()
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=False, rank_zero_only=False)
        self.log(f"{stage}/num_captions", float(len(text)))
        self.log(f"{stage}/num_videos", float(len(video)))
        self.log(f"{stage}/num_undecodable_videos", float((~video_ok).sum()))
        self._publish(RetrievalResult(stage=stage, rows=rows, row_positions=mine, caption_index=caption_index,
                                      caption_video=caption_video, text=text, video=video, missing_videos=~video_ok,
                                      metrics=metrics, ties=self.hparams.ties,
                                      v2t_multi_caption=self.hparams.v2t_multi_caption))
        return metrics

    def _publish(self, result: RetrievalResult) -> None:
        """Hand ``result`` to every callback with ``on_retrieval_end`` (examples, re-scorings: ``xclip_pl.callbacks``).
        Lightning runs the callbacks' epoch-end hooks before this module's, which computes the result."""
        for callback in self.trainer.callbacks:
            hook = getattr(callback, "on_retrieval_end", None)
            if callable(hook):
                hook(self.trainer, self, result)

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
        """Parameter groups (``no_decay`` policy; lr and ``lr * backbone_lr_scale``), the configured optimizer over
        them and, unless null, the configured scheduler over the run's optimiser steps, stepped every step."""
        hp = self.hparams
        groups = make_parameter_groups(self.model, self.model.towers, hp.lr, hp.backbone_lr_scale, hp.weight_decay,
                                       hp.no_decay)
        optimizer = self.optimizer(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer, total_steps=max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _primitive_hparams(hparams: dict[str, Any], model: XCLIP) -> dict[str, Any]:
    """The hyper-parameters as plain data, the network and the callables as ``class_path`` / ``init_args`` (the
    LightningCLI config format), with Lightning's instantiator: checkpoints load with ``torch.load(weights_only=True)``
    and ``load_from_checkpoint`` / ``xclip-pl test --ckpt_path`` rebuild the module from them."""
    spec = {"class_path": _class_path(type(model)), "init_args": dict(model.init_args)}
    rest = {k: _callable_spec(k, v) if k in ("optimizer", "scheduler") else v for k, v in hparams.items()}
    return {"model": spec, **rest, "_instantiator": hparams.get("_instantiator", INSTANTIATOR)}


def _callable_spec(name: str, value: Any) -> dict | None:
    """``optimizer`` / ``scheduler`` as a config: already one (LightningCLI's), a class, or a ``functools.partial``
    holding one class and its keyword arguments: ``partial(cls, **init_args)``, or jsonargparse's
    ``partial(instantiator, cls, **init_args)`` (what ``load_from_checkpoint`` passes)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, type):
        return {"class_path": _class_path(value)}
    classes = [a for a in (value.func, *value.args) if isinstance(a, type)] if isinstance(value, functools.partial) else []
    if len(classes) == 1:
        return {"class_path": _class_path(classes[0]), "init_args": dict(value.keywords)}
    raise ValueError(f"model.{name}={value!r}: give a class or functools.partial(class, **init_args), which a "
                     "checkpoint can record and rebuild")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


