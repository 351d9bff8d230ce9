"""FSDP for X-CLIP: Lightning's ``FSDPStrategy`` that shards the transformer layers, replicates the rest, runs
on CPUs (gloo) too and clips gradients by the global norm.

``conf/msrvtt_vit_l14_fsdp.yaml`` names :class:`XCLIPFSDPStrategy` as ``trainer.strategy``. Its
``auto_wrap_policy`` lists the layer classes that become FSDP units (:data:`XCLIP_LAYERS`: the CLIP encoder
layer of both towers and the temporal encoder's block, ~90 % of a ViT-L/14 X-CLIP's parameters): each of the W
ranks keeps 1/W of every such layer's parameters, gradients and optimizer state, and all-gathers one layer at a
time in the forward and the backward. What it changes in Lightning's ``FSDPStrategy``, and nothing else:

* **Everything outside the units is replicated**, as under DDP: embeddings, projections, final norms,
  ``logit_scale``, the temporal position table and the AOSM matrices are left out of FSDP (``ignored_states``),
  kept whole on every rank, and a gradient hook averages each one's gradient over the ranks (DDP's
  gradient), so the optimizer moves them identically everywhere. torch's FSDP refuses 0-dim parameters
  (``logit_scale``), and a sharded root unit would leave the AOSM matrices as 1/W slices outside the forward,
  where the evaluation's similarity (``on_validation_epoch_end``) and the checkpoint checks read them.
* **CPU processes.** Lightning refuses ``strategy: fsdp`` without a GPU (``The strategy fsdp requires a GPU
  accelerator``; it checks the name ``fsdp`` and instances of exactly ``FSDPStrategy``, so a subclass passes)
  and gives FSDP ``device_id=None`` on CPU, for which torch's FSDP looks for an accelerator. torch's FSDP
  shards CPU modules over gloo when given ``device_id=cpu``; this subclass passes it, so the same recipe runs
  as 2 CPU processes in the tests (``tests/test_fsdp.py``). On CPU the full state dicts are taken without
  ``offload_to_cpu`` (Lightning always asks for it; torch 2.13's FSDP then frees the CPU-resident unsharded
  parameters under the state dict and the copy segfaults).
* **Gradient clipping by norm** (``trainer.gradient_clip_val``). Lightning's ``FSDPPrecision`` raises for
  ``gradient_clip_algorithm='norm'`` since it holds no reference to the root FSDP module (Lightning #19235);
  :class:`XCLIPFSDPPrecision` gets it from the strategy and calls the root's ``clip_grad_norm_``, which sums
  the squared norms of every shard over the ranks and counts each replicated parameter once.

Precision: ``bf16-mixed`` (the recipe's) is Lightning's FSDP mixed precision (bf16 parameters, reductions and
buffers inside the units, under CUDA autocast); the CPU tests run ``32-true`` (on CPU, autocast runs layer norms
in fp32 against FSDP's bf16 weights, which torch refuses).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any

import pytorch_lightning.strategies.fsdp as lightning_fsdp
import torch
import torch.distributed as dist
from pytorch_lightning.plugins.precision import FSDPPrecision, Precision
from pytorch_lightning.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp import (
    FullStateDictConfig,
    FullyShardedDataParallel,
    StateDictType,
)
from torch.distributed.fsdp.api import FullOptimStateDictConfig
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from xclip_pl.model.temporal import TemporalBlock

#: the layer classes the recipe shards (``auto_wrap_policy``) and may checkpoint (``activation_checkpointing_policy``)
XCLIP_LAYERS: frozenset[type[nn.Module]] = frozenset({CLIPEncoderLayer, TemporalBlock})


class XCLIPFSDPPrecision(FSDPPrecision):
    """``FSDPPrecision`` that clips by the global norm through the root FSDP module (``root``, set by
    :class:`XCLIPFSDPStrategy` when it wraps the model)."""

    root: FullyShardedDataParallel | None = None

    def clip_grad_by_norm(self, optimizer: Any, clip_val: float) -> None:
        """Scale every gradient so that the norm over all shards of all ranks is at most ``clip_val``."""
        if self.root is None:
            raise RuntimeError("gradient clipping by norm under FSDP before the model was wrapped")
        self.root.clip_grad_norm_(float(clip_val))


class XCLIPFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` (same arguments; ``--trainer.strategy.help XCLIPFSDPStrategy`` lists them)
    that shards only the layers of ``auto_wrap_policy`` (a list of layer classes) and replicates the rest, runs
    on CPU processes over gloo, and clips gradients by norm. Keep ``use_orig_params: true`` (Lightning's
    default): the module's parameter groups and the checkpoint keys stay those of the unsharded module."""

    @property
    def precision_plugin(self) -> XCLIPFSDPPrecision:
        return FSDPStrategy.precision_plugin.fget(self)

    @precision_plugin.setter
    def precision_plugin(self, plugin: Precision | None) -> None:
        """Lightning hands every FSDP strategy an ``FSDPPrecision``: keep its settings in :class:`XCLIPFSDPPrecision`."""
        if isinstance(plugin, FSDPPrecision) and not isinstance(plugin, XCLIPFSDPPrecision):
            scaler, plugin = plugin.scaler, XCLIPFSDPPrecision(plugin.precision)
            plugin.scaler = scaler  # (FSDPPrecision's own check of a given scaler reads an unset attribute)
        FSDPStrategy.precision_plugin.fset(self, plugin)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        """Wrap as Lightning does, with the parameters outside the units replicated; on CPU with ``device_id=cpu``."""
        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            replicated = replicate_outside_units(model, unit_classes(self.kwargs.get("auto_wrap_policy")))
            self.kwargs["ignored_states"] = [*self.kwargs.get("ignored_states", ()), *replicated]
            if self.root_device.type == "cpu":
                model = self._wrap_on_cpu(model)
        model = super()._setup_model(model)
        plugin = self.precision_plugin
        if isinstance(plugin, XCLIPFSDPPrecision):
            plugin.root = model
        return model

    def _wrap_on_cpu(self, model: nn.Module) -> FullyShardedDataParallel:
        """What ``FSDPStrategy._setup_model`` does, with ``device_id=cpu`` (Lightning passes none: FSDP then wants a
        GPU). Lightning then takes its already-wrapped path; the policy, used, leaves ``kwargs`` (it would warn)."""
        return FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                        mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                        auto_wrap_policy=self.kwargs.pop("auto_wrap_policy", None), **self.kwargs)

    # ---------------------------------------------------------------- full state dicts of CPU processes
    def lightning_module_state_dict(self) -> dict[str, Any]:
        with self._full_state_dicts_on_cpu():
            return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        with self._full_state_dicts_on_cpu():
            return super().optimizer_state(optimizer)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        with self._full_state_dicts_on_cpu():
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)

    @contextmanager
    def _full_state_dicts_on_cpu(self) -> Iterator[None]:
        """On CPU: Lightning's full-state-dict context without ``offload_to_cpu`` (see the module docstring)."""
        if self.root_device.type != "cpu":
            yield
            return
        original = lightning_fsdp._get_full_state_dict_context
        lightning_fsdp._get_full_state_dict_context = partial(_full_state_dict_context, offload_to_cpu=False)
        try:
            yield
        finally:
            lightning_fsdp._get_full_state_dict_context = original


def _full_state_dict_context(module: nn.Module, world_size: int, rank0_only: bool = True,
                             offload_to_cpu: bool = True) -> AbstractContextManager:
    """Lightning's ``_get_full_state_dict_context`` with ``offload_to_cpu`` as an argument."""
    return FullyShardedDataParallel.state_dict_type(
        module=module, state_dict_type=StateDictType.FULL_STATE_DICT,
        state_dict_config=FullStateDictConfig(offload_to_cpu=offload_to_cpu, rank0_only=rank0_only),
        optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=offload_to_cpu, rank0_only=rank0_only))


def unit_classes(policy: Any) -> tuple[type[nn.Module], ...]:
    """The layer classes of an ``auto_wrap_policy`` (Lightning turns a list of classes into a ``ModuleWrapPolicy``)."""
    if isinstance(policy, ModuleWrapPolicy):
        return tuple(policy._module_classes)
    raise ValueError(f"trainer.strategy.init_args.auto_wrap_policy={policy!r}: XCLIPFSDPStrategy shards the layers of a "
                     "list of layer classes (e.g. [transformers.models.clip.modeling_clip.CLIPEncoderLayer, "
                     "xclip_pl.model.temporal.TemporalBlock]) and replicates the rest")


def replicate_outside_units(model: nn.Module, classes: tuple[type[nn.Module], ...]) -> list[nn.Parameter]:
    """The trainable parameters of ``model`` outside every module of ``classes``, each given (once) a gradient
    hook that averages its gradient over the ranks."""
    inside = {id(p) for m in model.modules() if isinstance(m, classes) for p in m.parameters()}
    replicated = [p for p in model.parameters() if id(p) not in inside]
    for param in replicated:
        if param.requires_grad and not getattr(param, "_xclip_grad_averaged", False):
            param.register_hook(_average_over_ranks)
            param._xclip_grad_averaged = True
    return replicated


def _average_over_ranks(grad: torch.Tensor) -> torch.Tensor:
    """The mean of ``grad`` over the ranks (a replicated parameter's gradient, as DDP computes it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return grad
    grad = grad.clone()
    dist.all_reduce(grad, op=dist.ReduceOp.SUM)
    return grad / dist.get_world_size()
