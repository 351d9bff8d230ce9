"""Key mapping between the reference code's state dicts (OpenAI CLIP naming) and ours (Hugging Face naming).

Reference X-CLIP checkpoints (``pytorch_model.bin.N``) hold ``clip.*`` (an OpenAI CLIP state dict),
``transformerClip.resblocks.*`` (temporal blocks), ``frame_position_embeddings.weight`` and the eight AOSM
matrices. See ``shared/reference/official-xclip-state-dict.tsv`` and xclip-method.md section 14.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import CLIPConfig

from xclip_pl.model.presets import PRESETS, preset_config

#: where the X-CLIP arguments sit in an ``xclip-pl`` config (``XCLIPRetrieval(model: XCLIP)``), for error messages
KEYS = "model.model.init_args"


AOSM_MATRICES = (
    "global_mat_weight", "word_logit_weight", "frame_logit_weight", "local_mat_weight",
    "frame_mat_weight", "word_mat_weight", "frame_mat_weight2", "word_mat_weight2",
)
_RESBLOCK = {  # OpenAI residual block -> HF CLIPEncoderLayer (and our TemporalBlock)
    "attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_QKV = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}  # fused q/k/v -> three Linears


def count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in state if (m := pattern.match(k))})


def infer_clip_config(openai_state: dict[str, Tensor]) -> CLIPConfig:
    """CLIP sizes from the shapes of an OpenAI-format state dict (ViT backbones only)."""
    if "visual.conv1.weight" not in openai_state:
        raise ValueError("not an OpenAI ViT CLIP state dict: 'visual.conv1.weight' is missing (ResNet CLIPs are not supported)")
    conv = openai_state["visual.conv1.weight"]
    vision_width, patch = conv.shape[0], conv.shape[-1]
    grid = int(math.isqrt(openai_state["visual.positional_embedding"].shape[0] - 1))
    text_width = openai_state["ln_final.weight"].shape[0]
    vocab = openai_state["token_embedding.weight"].shape[0]
    text = dict(
        vocab_size=vocab, hidden_size=text_width, num_attention_heads=max(1, text_width // 64),
        intermediate_size=openai_state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=count_blocks(openai_state, "transformer.resblocks."),
        max_position_embeddings=openai_state["positional_embedding"].shape[0],
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0,
    )
    vision = dict(
        hidden_size=vision_width, num_attention_heads=max(1, vision_width // 64), patch_size=patch,
        image_size=patch * grid, num_hidden_layers=count_blocks(openai_state, "visual.transformer.resblocks."),
        intermediate_size=openai_state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=openai_state["text_projection"].shape[1])


def resblock_to_hf(state: dict[str, Tensor], src: str, dst: str, n_blocks: int) -> dict[str, Tensor]:
    """Residual blocks ``{src}{i}.*`` (OpenAI names) -> ``{dst}{i}.*`` (HF names)."""
    out = {}
    for i in range(n_blocks):
        s, d = f"{src}{i}.", f"{dst}{i}."
        out.update({d + hf: state[s + off] for off, hf in _RESBLOCK.items()})
        for off, kind in _QKV.items():
            q, k, v = state[s + off].chunk(3, dim=0)
            out.update({f"{d}self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v))})
    return out


def resblock_to_openai(state: dict[str, Tensor], src: str, dst: str, n_blocks: int) -> dict[str, Tensor]:
    """Inverse of :func:`resblock_to_hf`."""
    out = {}
    for i in range(n_blocks):
        s, d = f"{src}{i}.", f"{dst}{i}."
        out.update({d + off: state[s + hf] for off, hf in _RESBLOCK.items()})
        for off, kind in _QKV.items():
            out[d + off] = torch.cat([state[f"{s}self_attn.{n}_proj.{kind}"] for n in "qkv"], 0)
    return out


_CLIP_DIRECT = {  # OpenAI key -> HF CLIPModel key (tensors copied as they are)
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight", "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
_CLIP_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}  # x @ W vs Linear


def openai_clip_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An OpenAI CLIP state dict -> ``CLIPModel`` state dict (fp32)."""
    out = {hf: state[off] for off, hf in _CLIP_DIRECT.items()}
    out.update({hf: state[off].t() for off, hf in _CLIP_TRANSPOSED.items()})
    out.update(resblock_to_hf(state, "transformer.resblocks.", "text_model.encoder.layers.", count_blocks(state, "transformer.resblocks.")))
    out.update(resblock_to_hf(state, "visual.transformer.resblocks.", "vision_model.encoder.layers.",
                              count_blocks(state, "visual.transformer.resblocks.")))
    return {k: v.float().contiguous() for k, v in out.items()}


def hf_clip_to_openai(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ``CLIPModel`` state dict -> OpenAI CLIP naming."""
    out = {off: state[hf] for off, hf in _CLIP_DIRECT.items()}
    out.update({off: state[hf].t() for off, hf in _CLIP_TRANSPOSED.items()})
    out.update(resblock_to_openai(state, "text_model.encoder.layers.", "transformer.resblocks.", count_blocks(state, "text_model.encoder.layers.")))
    out.update(resblock_to_openai(state, "vision_model.encoder.layers.", "visual.transformer.resblocks.",
                                  count_blocks(state, "vision_model.encoder.layers.")))
    return {k: v.contiguous() for k, v in out.items()}


def xclip_to_official(model) -> dict[str, Tensor]:
    """Our ``XCLIP`` weights under the reference code's key names."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    clip = {k[len("towers.clip."):]: v for k, v in state.items() if k.startswith("towers.clip.")}
    out = {f"clip.{k}": v for k, v in hf_clip_to_openai(clip).items()}
    out.update({name: state[f"similarity_head.{name}"] for name in AOSM_MATRICES})
    out["frame_position_embeddings.weight"] = state["temporal.frame_position.weight"]
    out.update(resblock_to_openai(state, "temporal.blocks.", "transformerClip.resblocks.", len(model.temporal.blocks)))
    return out


def official_to_xclip(official: dict[str, Tensor]) -> dict[str, Tensor]:
    """A reference X-CLIP state dict -> our ``XCLIP`` key names (fp32)."""
    clip = {k[len("clip."):]: v for k, v in official.items() if k.startswith("clip.")}
    out = {f"towers.clip.{k}": v for k, v in openai_clip_to_hf(clip).items()}
    out.update({f"similarity_head.{name}": official[name] for name in AOSM_MATRICES})
    out["temporal.frame_position.weight"] = official["frame_position_embeddings.weight"]
    out.update(resblock_to_hf(official, "transformerClip.resblocks.", "temporal.blocks.", count_blocks(official, "transformerClip.resblocks.")))
    return {k: v.float().contiguous() for k, v in out.items()}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a reference state dict; strips a DataParallel ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (pytorch_model.bin.N), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_official_keys(official: dict[str, Tensor], path: str | Path, max_words: int, max_frames: int) -> None:
    missing = [k for k in (*AOSM_MATRICES, "frame_position_embeddings.weight", "clip.visual.conv1.weight") if k not in official]
    if missing:
        raise ValueError(f"{path}: not a reference X-CLIP checkpoint, missing keys: {missing}")
    words, frames = official["word_logit_weight"].shape[0], official["frame_logit_weight"].shape[0]
    if (words, frames) != (max_words, max_frames):
        raise ValueError(
            f"{path}: checkpoint was trained with max_words={words}, max_frames={frames} but "
            f"max_words={max_words}, max_frames={max_frames} were requested; use the checkpoint's sizes"
        )


CLIP_SIZES = (  # (config part, field): what fixes the shapes of the CLIP weights
    ("text", "vocab_size"), ("text", "hidden_size"), ("text", "intermediate_size"), ("text", "num_hidden_layers"),
    ("text", "num_attention_heads"), ("text", "max_position_embeddings"),
    ("vision", "hidden_size"), ("vision", "intermediate_size"), ("vision", "num_hidden_layers"),
    ("vision", "num_attention_heads"), ("vision", "patch_size"), ("vision", "image_size"), ("", "projection_dim"),
)


def clip_sizes(config: CLIPConfig) -> dict[str, int]:
    """``{"text.hidden_size": 512, ..., "projection_dim": 512}``: the sizes that shape a CLIP's weights."""
    parts = {"text": config.text_config, "vision": config.vision_config, "": config}
    return {f"{part}.{field}".lstrip("."): getattr(parts[part], field) for part, field in CLIP_SIZES}


def named_clip_config(clip: str) -> CLIPConfig:
    """The config of what ``clip`` names, without loading weights: a preset, an OpenAI checkpoint file
    (its tensors' shapes), or a Hugging Face directory / hub id (its ``config.json`` only)."""
    from xclip_pl.model.openai_clip import is_openai_checkpoint, load_openai_state_dict  # noqa: PLC0415 (it imports this module)

    if clip in PRESETS:
        return preset_config(clip)
    if is_openai_checkpoint(clip):
        return infer_clip_config(load_openai_state_dict(clip))
    try:
        return CLIPConfig.from_pretrained(clip)
    except OSError as err:
        raise ValueError(f"{KEYS}.clip={clip!r}: could not read its config to compare it with {KEYS}.official_checkpoint "
                         f"({err}); set {KEYS}.clip: null, the CLIP sizes come from the checkpoint") from err


@dataclass
class OfficialCheckpoint:
    """A reference state dict with what its tensors say about the model: the CLIP sizes and the temporal depth."""

    path: str
    state: dict[str, Tensor]
    clip_config: CLIPConfig
    temporal_layers: int


def read_official_checkpoint(path: str | Path, max_words: int, max_frames: int) -> OfficialCheckpoint:
    """Read a reference ``pytorch_model.bin.N``, check its keys and AOSM sizes, infer the CLIP config and depth."""
    official = read_state_dict(path)
    check_official_keys(official, path, max_words, max_frames)
    config = infer_clip_config({k[len("clip."):]: v for k, v in official.items() if k.startswith("clip.")})
    return OfficialCheckpoint(str(path), official, config, count_blocks(official, "transformerClip.resblocks."))


def check_explicit_arguments(path: str | Path, config: CLIPConfig, layers: int, clip: str | None,
                             temporal_layers: int | None, temporal_init: str | None) -> None:
    """With an official checkpoint, the CLIP sizes and the temporal encoder come from its tensors. Arguments
    given explicitly (not None) must agree with them; ``temporal_init`` has nothing to initialise."""
    if clip is not None:
        ours, theirs = clip_sizes(named_clip_config(clip)), clip_sizes(config)
        differ = [k for k in theirs if ours[k] != theirs[k]]
        if differ:
            raise ValueError(f"{KEYS}.clip={clip!r} has {_sizes(ours, differ)} but the checkpoint {path} has "
                             f"{_sizes(theirs, differ)}: set {KEYS}.clip: null (the CLIP comes from the checkpoint)")
    if temporal_layers is not None and temporal_layers != layers:
        raise ValueError(f"{KEYS}.temporal_layers={temporal_layers} but the checkpoint {path} has {layers} temporal "
                         f"blocks: set {KEYS}.temporal_layers: null (or {layers})")
    if temporal_init is not None:
        raise ValueError(f"{KEYS}.temporal_init={temporal_init!r} has no effect with {KEYS}.official_checkpoint (every "
                         f"temporal weight comes from the checkpoint): set {KEYS}.temporal_init: null")


def _sizes(sizes: dict[str, int], keys: list[str]) -> str:
    return ", ".join(f"{k}={sizes[k]}" for k in keys)


def load_official_weights(model, checkpoint: OfficialCheckpoint) -> None:
    """Load every weight of ``checkpoint`` into ``model`` (an ``XCLIP`` built with its sizes); mismatched keys raise."""
    official, path = checkpoint.state, checkpoint.path
    expected = xclip_to_official(model).keys()
    ignored = {"clip.input_resolution", "clip.context_length", "clip.vocab_size"}
    missing, unexpected = sorted(expected - official.keys()), sorted(official.keys() - expected - ignored)
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match the model: missing {missing[:10]}, unexpected {unexpected[:10]}")
    model.load_state_dict(official_to_xclip(official), strict=False)
