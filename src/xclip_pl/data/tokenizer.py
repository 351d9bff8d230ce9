"""CLIP-style BPE tokenizers and the reference's id layout.

Two sources, one class (``transformers.CLIPTokenizer``):

* a pretrained CLIP tokenizer (a local directory or a hub id), and
* the offline default: a small byte-level BPE trained on the training captions with the ``tokenizers``
  library, written in CLIP's own file format (``vocab.json`` + ``merges.txt``). As in CLIP, the vocabulary
  is the 256 byte symbols, the same with ``</w>``, the merges, then ``<|startoftext|>`` and
  ``<|endoftext|>`` as the two largest ids, so ``argmax(input_ids)`` finds EOT.

:func:`tokenize` produces the reference layout: SOT, tokens, EOT, then ``pad_id`` (0) up to ``max_words``.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import ftfy
import torch
from torch import Tensor
from transformers import CLIPTokenizer

from xclip_pl.data.files import atomic_write

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
EOW = "</w>"
#: CLIP's pre-tokenisation pattern (as in ``transformers.CLIPTokenizer``).
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
#: Byte symbols, byte symbols with ``</w>``, and the two special tokens.
MIN_VOCAB_SIZE = 2 * 256 + 2
_MAX_LENGTH = 77
#: Part of the offline tokenizer's cache key: bump it when ``clean_text`` changes (2: ftfy added).
CLEANING_VERSION = "clean-2-ftfy"


def clean_text(text: str) -> str:
    """CLIP's cleaning, as the reference: ``ftfy.fix_text``, HTML unescape (twice), whitespace collapse, lower-case.

    ``ftfy`` repairs mojibake (``"cafÃ©"`` -> ``"café"``) and straightens curly quotes and ligatures, so
    such captions give the reference's tokens.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return re.sub(r"\s+", " ", text).strip().lower()


def bytes_to_unicode() -> list[str]:
    """The 256 printable symbols that stand for the bytes 0..255, in CLIP / GPT-2 order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = {b: b for b in printable}, 0
    for b in range(256):
        if b not in codes:
            codes[b] = 256 + extra
            extra += 1
    return [chr(codes[b]) for b in [*printable, *(b for b in range(256) if b not in printable)]]


def _train_merges(captions: list[str], num_merges: int) -> list[tuple[str, str]]:
    """BPE merges learnt with ``tokenizers`` under CLIP's normaliser and pre-tokeniser (deterministic)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    bpe = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=EOW))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = BpeTrainer(
        vocab_size=2 * 256 + num_merges, show_progress=False, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix=EOW,
    )
    bpe.train_from_iterator([clean_text(c) for c in captions], trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def build_clip_vocab(merges: list[tuple[str, str]], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary order: bytes, bytes + ``</w>``, merge results, SOT, EOT (at most ``vocab_size``)."""
    symbols = bytes_to_unicode()
    tokens = {t: None for t in [*symbols, *(s + EOW for s in symbols)]}  # ordered set
    kept = []
    for left, right in merges:
        if left + right not in tokens and len(tokens) + 2 >= vocab_size:
            break
        tokens.setdefault(left + right)
        kept.append((left, right))
    vocab = {token: i for i, token in enumerate([*tokens, SOT, EOT])}
    return vocab, kept


def train_bpe_tokenizer(captions: list[str], out_dir: str | Path, vocab_size: int = 1000) -> CLIPTokenizer:
    """Train a CLIP-style BPE on ``captions``, write ``out_dir/vocab.json`` + ``merges.txt``, load it.

    Args:
        captions: the training captions (cleaned like CLIP before training).
        out_dir: directory for ``vocab.json`` and ``merges.txt`` (created if needed).
        vocab_size: the largest total vocabulary, special tokens included (at least 514: the byte
            symbols with and without ``</w>`` and the two specials). Fewer when the captions run out of merges.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is too small for a byte-level CLIP BPE: use at least {MIN_VOCAB_SIZE}")
    if not captions:
        raise ValueError("train_bpe_tokenizer: no captions to train on")
    vocab, merges = build_clip_vocab(_train_merges(captions, vocab_size - MIN_VOCAB_SIZE), vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    for name, text in (("merges.txt", "\n".join(lines) + "\n"), ("vocab.json", json.dumps(vocab, ensure_ascii=False))):
        with atomic_write(out / name) as handle:  # several processes may train the same tokenizer at once
            handle.write(text)
    return load_tokenizer(out)


def _check_specials(tokenizer: CLIPTokenizer, source: str | Path) -> CLIPTokenizer:
    """Fail when SOT/EOT are missing or EOT is not the largest id (the EOT-by-argmax rule)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (SOT, EOT) if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer {source}: the vocabulary lacks {missing}; a CLIP vocabulary is expected")
    if vocab[EOT] != max(vocab.values()):
        raise ValueError(
            f"tokenizer {source}: {EOT} has id {vocab[EOT]} but the largest id is {max(vocab.values())}; "
            "the sentence embedding is read at argmax(input_ids), so EOT must be the largest id"
        )
    return tokenizer


def load_tokenizer(source: str | Path) -> CLIPTokenizer:
    """Load a ``CLIPTokenizer`` from a directory or a Hugging Face hub id.

    Args:
        source: a directory with ``tokenizer.json`` (a saved Hugging Face CLIP, loaded with
            ``from_pretrained``) or with ``vocab.json`` + ``merges.txt`` (CLIP format), or a hub id such as
            ``openai/clip-vit-base-patch32`` (needs the files cached when offline).
    """
    path = Path(source)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return _check_specials(CLIPTokenizer.from_pretrained(str(path)), source)
        vocab, merges = path / "vocab.json", path / "merges.txt"
        if vocab.is_file() and merges.is_file():  # positional paths: the keyword form is ignored by v5
            return _check_specials(CLIPTokenizer(str(vocab), str(merges), model_max_length=_MAX_LENGTH), source)
        raise ValueError(f"tokenizer directory {path} holds neither tokenizer.json nor vocab.json + merges.txt")
    if path.exists() or str(source).startswith((".", "/", "~")):
        raise ValueError(f"tokenizer={str(source)!r}: not a directory; pass a CLIP tokenizer directory or a hub id")
    try:
        return _check_specials(CLIPTokenizer.from_pretrained(str(source)), source)
    except OSError as err:
        raise ValueError(
            f"tokenizer={str(source)!r}: could not load a CLIP tokenizer ({err}). Pass a local directory with "
            "vocab.json + merges.txt, a cached hub id, or leave it unset to train the offline BPE"
        ) from err


def save_tokenizer(tokenizer: CLIPTokenizer, out_dir: str | Path) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` (CLIP format; :func:`load_tokenizer` reads them back)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.backend_tokenizer.model.save(str(out))
    return out


def tokenize(tokenizer: CLIPTokenizer, captions: list[str], max_words: int, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Reference-layout ids and mask, both long ``[n, max_words]``.

    Each row is SOT, the caption's tokens (truncated so that EOT always fits), EOT, then ``pad_id``
    (the reference pads with 0) up to ``max_words``; the mask is 1 on SOT..EOT and 0 on padding.
    """
    if max_words < 2:
        raise ValueError(f"max_words={max_words}: need room for at least SOT and EOT")
    texts = [clean_text(c) for c in captions]
    pieces = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_words - 2)["input_ids"]
    ids = torch.full((len(captions), max_words), pad_id, dtype=torch.long)
    mask = torch.zeros((len(captions), max_words), dtype=torch.long)
    for row, tokens in enumerate(pieces):
        seq = [tokenizer.bos_token_id, *tokens, tokenizer.eos_token_id]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
