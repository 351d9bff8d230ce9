"""OpenAI CLIP checkpoint files (``ViT-B-32.pt``, ``ViT-B-16.pt``) -> a Hugging Face ``CLIPModel`` in memory.

The reference X-CLIP code builds its backbone from these files (xclip-method.md 1.2): the TorchScript
archive is loaded and its ``state_dict()`` taken, falling back to ``torch.load``. The key mapping lives in
:mod:`xclip_pl.model.official`; this module only reads the file, checks it and loads every tensor.
"""
from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import torch
from torch import Tensor
from transformers import CLIPModel

from xclip_pl.model.official import hf_clip_to_openai, infer_clip_config, openai_clip_to_hf

OPENAI_SUFFIXES = (".pt", ".pth", ".bin")
OPENAI_SCALARS = ("input_resolution", "context_length", "vocab_size")  # ints in the archive, not weights
_HF_MARKERS = ("text_model.", "vision_model.")


def is_openai_checkpoint(source: str | Path) -> bool:
    """True when ``source`` names a checkpoint file (``.pt`` / ``.pth`` / ``.bin``), not a HF directory.

    The file need not exist yet: :func:`load_openai_state_dict` then raises a clear ``FileNotFoundError``
    instead of a confusing hub lookup.
    """
    path = Path(str(source))
    return path.suffix.lower() in OPENAI_SUFFIXES and not path.is_dir()


def tokenizer_hint(source: str | Path) -> str:
    """The message telling the user which tokenizer to pair with an OpenAI checkpoint file."""
    return (
        f"clip={str(source)!r} is an OpenAI checkpoint file, which carries no tokenizer; set data.tokenizer to a "
        f"Hugging Face CLIP tokenizer directory, e.g. a local copy of openai/clip-vit-base-patch32 "
        f"(`huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR` on a machine with network; "
        f"vocab.json + merges.txt are enough). All OpenAI CLIP ViTs share that vocabulary (49408 tokens)."
    )


def _is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``<name>/constants.pkl`` and ``<name>/code/``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """The raw ``{name: tensor}`` of a TorchScript archive or a plain (weights-only) state dict."""
    if _is_torchscript_archive(path):
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except RuntimeError as err:
            raise ValueError(f"{path}: a TorchScript archive that torch.jit.load cannot read ({err}); "
                             f"re-download the OpenAI checkpoint or pass a plain state dict saved with torch.save") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / weights-only errors all mean "not a checkpoint we can read"
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither a TorchScript archive nor a torch.save state "
                         f"dict): {type(err).__name__}: {str(err)[:200]}. Pass an OpenAI CLIP ViT file such as "
                         f"ViT-B-32.pt, or a Hugging Face CLIP directory") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (OpenAI CLIP naming), got "
                         f"{type(state).__name__}; pass an OpenAI CLIP ViT checkpoint such as ViT-B-32.pt")
    return state


def _check_openai_vit(state: dict[str, Tensor], path: Path) -> None:
    """Reject ResNet CLIPs, HF state dicts, reference X-CLIP checkpoints and anything else, naming the fix."""
    keys = state.keys()
    if any(k.startswith("visual.layer1.") or k.startswith("visual.attnpool.") for k in keys):
        raise ValueError(f"{path}: a ResNet OpenAI CLIP (RN50/RN101/RN50x4...): only ViT backbones are supported, "
                         f"as in the reference code; use ViT-B-32.pt or ViT-B-16.pt")
    if any(k.startswith(_HF_MARKERS) for k in keys):
        raise ValueError(f"{path}: a Hugging Face CLIP state dict, not an OpenAI one; set clip to the directory "
                         f"holding it (with its config.json) instead of the file")
    if "clip.visual.conv1.weight" in keys:
        raise ValueError(f"{path}: a reference X-CLIP checkpoint (clip.* keys); load it with "
                         f"XCLIP.from_official_checkpoint(path, max_words, max_frames) instead")
    if "visual.conv1.weight" not in keys or "visual.proj" not in keys:
        raise ValueError(f"{path}: not an OpenAI CLIP ViT checkpoint ('visual.conv1.weight' / 'visual.proj' missing; "
                         f"first keys: {sorted(keys)[:5]}); pass ViT-B-32.pt, ViT-B-16.pt or a HF CLIP directory")


def load_openai_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The OpenAI-named CLIP state dict of a checkpoint file, as stored (fp16 Linear/Conv weights).

    Reads the TorchScript archive OpenAI distributes (``torch.jit.load(...).state_dict()``) or a plain
    ``torch.save`` state dict (``weights_only=True``). The scalars ``input_resolution``, ``context_length``
    and ``vocab_size`` are dropped, as the reference does. ResNet CLIPs and other files raise ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OpenAI CLIP checkpoint not found: {path} (expected a file such as ViT-B-32.pt)")
    state = {k: v for k, v in _read_tensors(path).items() if k not in OPENAI_SCALARS}
    _check_openai_vit(state, path)
    return state


def _strict_load(model: CLIPModel, state: dict[str, Tensor], path: Path) -> None:
    """Load with every OpenAI key consumed and every model tensor provided (non-persistent buffers aside)."""
    expected = set(hf_clip_to_openai(model.state_dict()))
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match an OpenAI CLIP ViT of the inferred size: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}; the file may be truncated or from another model family")
    hf_state = openai_clip_to_hf(state)
    try:
        model.load_state_dict(hf_state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: tensors do not fit the inferred CLIP config: {err}") from err


def clip_from_openai(path: str | Path) -> CLIPModel:
    """A Hugging Face ``CLIPModel`` (fp32, SDPA attention) with the weights of an OpenAI CLIP ViT file.

    Sizes come from the tensor shapes (:func:`~xclip_pl.model.official.infer_clip_config`): heads = width // 64,
    QuickGELU, LayerNorm eps 1e-5, as OpenAI's ``build_model``. ``eos_token_id`` = vocab - 1 (49407 for real
    CLIP), so HF's own pooling (first EOS position) finds the same EOT as X-CLIP's argmax(input_ids).
    Image and text embeddings equal OpenAI's fp32 forward (``model.float()``) up to float rounding.
    """
    path = Path(path)
    state = load_openai_state_dict(path)
    config = infer_clip_config(state)
    model = CLIPModel._from_config(copy.deepcopy(config), attn_implementation="sdpa", dtype=torch.float32)
    _strict_load(model, state, path)
    return model.eval()
