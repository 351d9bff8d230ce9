"""``xclip-pl convert``: a reference X-CLIP checkpoint (and/or an OpenAI CLIP file) -> an xclip-pl checkpoint.

The output directory holds ``clip/`` (the CLIP towers as a Hugging Face directory, usable as
``model.model.init_args.clip``, plus the tokenizer files when given) and ``xclip.ckpt`` (a Lightning checkpoint of
:class:`~xclip_pl.module.XCLIPRetrieval` holding every weight, with the CLIP sizes in its hyper-parameters
as ``model.init_args.clip_config`` and no path), which ``xclip-pl test --ckpt_path`` and ``xclip-pl fit --ckpt_path``
accept, and ``XCLIPRetrieval.load_from_checkpoint`` loads, wherever the directory is moved. The CLI takes
the tokenizer from ``clip/`` beside the checkpoint when ``data.tokenizer`` is unset.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

from xclip_pl.model.xclip import XCLIP
from xclip_pl.module import XCLIPRetrieval

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def convert(output_dir: str, reference_checkpoint: str | None = None, openai_clip: str | None = None,
            max_words: int = 32, max_frames: int = 12, tokenizer: str | None = None) -> Path:
    """Convert reference weights into an xclip-pl checkpoint.

    Args:
        output_dir: directory to write ``clip/`` and ``xclip.ckpt`` into.
        reference_checkpoint: a reference X-CLIP ``pytorch_model.bin.N`` (every weight is taken from it).
        openai_clip: an OpenAI CLIP file (``ViT-B-32.pt``); alone, it gives X-CLIP with pretrained CLIP towers and
            the reference's initialisation of the rest; with ``reference_checkpoint`` it is not needed.
        max_words: caption length of the checkpoint (sizes of its L x L AOSM matrices).
        max_frames: frames per video of the checkpoint (sizes of its F x F AOSM matrices).
        tokenizer: a Hugging Face CLIP tokenizer directory to copy into ``clip/`` (then ``xclip-pl test --ckpt_path
            <output_dir>/xclip.ckpt`` takes it from there and ``data.tokenizer`` can be left unset).
    """
    if not reference_checkpoint and not openai_clip:
        raise ValueError("convert needs --reference_checkpoint (pytorch_model.bin.N) and/or --openai_clip (ViT-B-32.pt)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _step(f"reading {reference_checkpoint or openai_clip}"):
        if reference_checkpoint:
            network = XCLIP(official_checkpoint=reference_checkpoint, max_words=max_words, max_frames=max_frames)
        else:
            network = XCLIP(clip=openai_clip, max_words=max_words, max_frames=max_frames)
        module = XCLIPRetrieval(network)
    clip_dir = out / "clip"
    with _step(f"writing the CLIP towers to {clip_dir}"):
        module.model.towers.clip.save_pretrained(clip_dir)
        if tokenizer:
            _copy_tokenizer(Path(tokenizer), clip_dir)
    with _step(f"writing {out / 'xclip.ckpt'}"):
        checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": portable_hparams(module),
                      "pytorch-lightning_version": pl.__version__, "epoch": 0, "global_step": 0}
        torch.save(checkpoint, out / "xclip.ckpt")
    print(f"wrote {out / 'xclip.ckpt'} (CLIP towers in {clip_dir})")
    return out / "xclip.ckpt"


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Progress of one conversion step on stderr, as plain lines (readable in logs): ``convert: <what> ...`` and,
    when it is done, ``convert: <what>: done in <s> s``."""
    print(f"convert: {what} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    yield
    print(f"convert: {what}: done in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)


def portable_hparams(module: XCLIPRetrieval) -> dict:
    """The module's hyper-parameters with the CLIP described by its sizes (``model.init_args.clip_config``), not
    by a path: the checkpoint holds every weight, so it loads on any machine without ``clip/`` or the reference file."""
    config = module.model.towers.clip.config.to_diff_dict()
    config.pop("transformers_version", None)
    network = {**module.hparams["model"]["init_args"], "clip": None, "clip_config": config, "official_checkpoint": None,
               "temporal_layers": len(module.model.temporal.blocks), "temporal_init": None}
    return {**dict(module.hparams), "model": {**module.hparams["model"], "init_args": network}}


def converted_tokenizer(checkpoint: str | None) -> str | None:
    """``clip/`` beside a checkpoint written by ``convert`` when it holds tokenizer files (``--tokenizer``), else None."""
    if not checkpoint:
        return None
    clip_dir = Path(checkpoint).parent / "clip"
    return str(clip_dir) if any((clip_dir / name).is_file() for name in TOKENIZER_FILES) else None


def _copy_tokenizer(source: Path, clip_dir: Path) -> None:
    found = [source / n for n in TOKENIZER_FILES if (source / n).is_file()]
    if not found:
        raise ValueError(f"--tokenizer {source}: no vocab.json/merges.txt or tokenizer.json there")
    for path in found:
        shutil.copy2(path, clip_dir / path.name)

