"""Switch ``clip_dtype``: the reference's pure-fp16 CLIP towers (xclip-method.md 3)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from transformers import CLIPModel

ClipDtype = Literal["fp16", "fp32"]

class FP32LayerNorm(nn.LayerNorm):
    """OpenAI's ``LayerNorm``: fp32 parameters, computed in fp32 on the upcast input, cast back to its dtype.

    Same state-dict keys as ``nn.LayerNorm``; :func:`cast_towers_fp16` swaps the class of HF's LayerNorms in place.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def _output_to_fp16(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    """Forward hook: OpenAI casts embeddings to the tower dtype (``.type(self.dtype)``) before the blocks."""
    return output.to(torch.float16)


def _half_(module: nn.Module) -> None:
    """Weight and bias of a Linear / Conv to fp16, keeping the ``Parameter`` objects (optimisers may hold them)."""
    for param in (module.weight, getattr(module, "bias", None)):
        if param is not None:
            param.data = param.data.half()


def cast_towers_fp16(clip: CLIPModel) -> None:
    """Switch ``clip_dtype: Literal["fp16", "fp32"]`` (reference "fp16"; improved "fp32" with Lightning
    ``precision="bf16-mixed"`` / ``"16-mixed"``, which needs a re-tuned CLIP lr, ArrowLuo/CLIP4Clip#96).

    The reference's pure-fp16 pattern (OpenAI ``convert_weights``, xclip-method.md 3 and 14), in place:
    every Linear / Conv weight and bias of both towers and the two projections become fp16; LayerNorm
    parameters, the token / position / class embeddings and ``logit_scale`` stay fp32. LayerNorms compute in
    fp32 and cast back (:class:`FP32LayerNorm`); the embedding outputs are cast to fp16 (token and position
    lookups first, so the text sum is OpenAI's fp16 add), so activations, gradients and (with
    :class:`BertAdam`) optimiser state of the fp16 tensors are fp16: no AMP, no loss scaling, no master
    weights. The tower outputs are fp16; the head must cast them to fp32 (``XCLIP`` does). Use with
    Lightning ``precision="32-true"``; "16-true" would cast the fp32 parts too. Idempotent.
    """
    if getattr(clip, "_xclip_pure_fp16", False):
        return
    for tower in (clip.text_model, clip.vision_model):
        for module in tower.modules():
            if type(module) is nn.LayerNorm:
                module.__class__ = FP32LayerNorm
            elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                _half_(module)
    _half_(clip.text_projection)
    _half_(clip.visual_projection)
    text, vision = clip.text_model.embeddings, clip.vision_model.embeddings
    for module in (text.token_embedding, text.position_embedding, text, vision.position_embedding, vision):
        module.register_forward_hook(_output_to_fp16)
    clip._xclip_pure_fp16 = True
