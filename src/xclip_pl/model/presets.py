"""Build the Hugging Face CLIP backbone from a hub id, a local directory, or a named random preset."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

# Small randomly initialised CLIPs: used by the tests and by the embedded offline default.
# Widths are multiples of 64 so that the OpenAI rule heads = width // 64 holds (checkpoint round trips).
PRESETS: dict[str, dict] = {
    "tiny": dict(
        text=dict(vocab_size=1024, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=1, max_position_embeddings=77),
        vision=dict(image_size=32, patch_size=16, hidden_size=64, intermediate_size=256,
                    num_hidden_layers=2, num_attention_heads=1),
        projection_dim=64,
    ),
    "small": dict(
        text=dict(vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=77),
        vision=dict(image_size=64, patch_size=16, hidden_size=128, intermediate_size=512,
                    num_hidden_layers=2, num_attention_heads=2),
        projection_dim=128,
    ),
    # Random-weight replicas of the paper backbones (benchmarks without downloading weights).
    "random-vit-b-32": dict(text={}, vision=dict(patch_size=32), projection_dim=512),
    "random-vit-b-16": dict(text={}, vision=dict(patch_size=16), projection_dim=512),
    "random-vit-l-14": dict(text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
                            vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                        num_attention_heads=16, patch_size=14), projection_dim=768),
}


def preset_config(name: str) -> CLIPConfig:
    """The ``CLIPConfig`` of a named preset (eos id = vocab - 1, the reference's argmax rule)."""
    spec = copy.deepcopy(PRESETS[name])
    vocab = spec["text"].get("vocab_size", 49408)
    text = dict(bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0, **spec["text"])
    return CLIPConfig(text_config=text, vision_config=spec["vision"], projection_dim=spec["projection_dim"])


def build_clip(clip: str | CLIPModel | CLIPConfig) -> CLIPModel:
    """A ``CLIPModel`` in fp32 with SDPA attention.

    ``clip`` is a preset name (random weights), an OpenAI checkpoint file (``ViT-B-32.pt``: TorchScript
    archive or state dict, converted in memory), a local directory or a hub id (pretrained weights, via
    ``CLIPModel.from_pretrained``), or an already built model / config.
    """
    if isinstance(clip, CLIPModel):
        return clip
    if isinstance(clip, CLIPConfig):
        return CLIPModel(copy.deepcopy(clip))
    if clip in PRESETS:
        return CLIPModel(preset_config(clip))
    from xclip_pl.model.openai_clip import clip_from_openai, is_openai_checkpoint  # noqa: PLC0415

    if is_openai_checkpoint(clip):
        return clip_from_openai(clip)
    _check_local_path(clip)
    try:
        return CLIPModel.from_pretrained(clip, dtype=torch.float32, attn_implementation="sdpa")
    except OSError as err:
        hint = "a local directory" if Path(clip).exists() else "a preset name, a local Hugging Face directory or a hub id"
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ValueError(
            f"clip={clip!r}: could not load a CLIP model{offline}: {err}. Expected {hint}. "
            f"Presets: {sorted(PRESETS)}. Without network, download the model elsewhere "
            f"(e.g. `huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR`) and set clip: DIR."
        ) from err


def _check_local_path(clip: str) -> None:
    """A ``clip`` that can only be a path (absolute, ``./``, ``../``, ``~``, or more than one ``/``, which no hub
    id has) and does not exist: say so, rather than the hub client's "Repo id must be in the form ..."."""
    path = Path(clip).expanduser()
    looks_like_path = clip.startswith(("/", ".", "~")) or clip.count("/") > 1 or "\\" in clip
    if looks_like_path and not path.exists():
        raise ValueError(f"clip={clip!r}: no such directory ({path.resolve()}). Give a CLIP directory saved with "
                         "`save_pretrained` (config.json + weights), an OpenAI checkpoint file, a hub id such as "
                         f"openai/clip-vit-base-patch32, or a preset: {sorted(PRESETS)}")
