"""The offline CLIP-style BPE, tokenizer loading and the reference id layout."""
from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import CLIPTokenizer

from xclip_pl.data.tokenizer import (
    EOT,
    EOW,
    MIN_VOCAB_SIZE,
    SOT,
    bytes_to_unicode,
    clean_text,
    load_tokenizer,
    save_tokenizer,
    tokenize,
    train_bpe_tokenizer,
)

WORDS = ["a", "man", "woman", "is", "playing", "guitar", "cooking", "pasta", "dog", "runs", "in", "the", "park",
         "red", "circle", "moves", "left", "while", "blue", "square", "rises", "kitchen", "singing", "song"]
CAPTIONS = [" ".join(random.Random(i).choices(WORDS, k=3 + i % 7)) for i in range(300)]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> CLIPTokenizer:
    return train_bpe_tokenizer(CAPTIONS, tmp_path_factory.mktemp("bpe"), vocab_size=600)


def test_offline_bpe_files_and_specials(bpe, tmp_path):
    assert type(bpe) is CLIPTokenizer
    vocab = bpe.get_vocab()
    assert len(vocab) == len(bpe) <= 600
    assert vocab[EOT] == len(vocab) - 1 and vocab[SOT] == len(vocab) - 2  # the two largest ids
    assert bpe.eos_token_id == vocab[EOT] and bpe.bos_token_id == vocab[SOT]
    assert all(s in vocab and s + EOW in vocab for s in bytes_to_unicode())  # any text is representable
    out = train_bpe_tokenizer(CAPTIONS, tmp_path, vocab_size=600)
    assert (tmp_path / "merges.txt").read_text().startswith("#version")
    assert json.loads((tmp_path / "vocab.json").read_text()) == vocab
    assert out.get_vocab() == vocab  # deterministic for the same captions


def test_vocab_size_is_an_upper_bound(tmp_path):
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rich = [" ".join("".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(8)) for _ in range(400)]
    tok = train_bpe_tokenizer(rich, tmp_path, vocab_size=MIN_VOCAB_SIZE + 40)
    assert len(tok) == MIN_VOCAB_SIZE + 40
    with pytest.raises(ValueError, match="at least 514"):
        train_bpe_tokenizer(rich, tmp_path, vocab_size=300)


def test_reference_layout_sot_tokens_eot_then_zero_padding(bpe):
    ids, mask = tokenize(bpe, ["A man is playing guitar", ""], max_words=12)
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (2, 12)
    sot, eot = bpe.bos_token_id, bpe.eos_token_id
    length = int(mask[0].sum())
    assert ids[0, 0] == sot and ids[0, length - 1] == eot and (ids[0, length:] == 0).all()
    assert mask[0, :length].all() and not mask[0, length:].any()
    assert bpe.convert_ids_to_tokens(ids[0, 1 : length - 1].tolist())[:2] == ["a</w>", "man</w>"]
    assert ids[1, :3].tolist() == [sot, eot, 0] and mask[1].tolist() == [1, 1] + [0] * 10
    assert (ids.argmax(dim=1) == mask.sum(1) - 1).all()  # argmax finds EOT


def test_truncation_keeps_eot_and_unseen_text_never_gives_eot(bpe):
    ids, mask = tokenize(bpe, [" ".join(WORDS) * 3, "日本語 çà ÿ"], max_words=8, pad_id=0)
    assert ids[0, 0] == bpe.bos_token_id and ids[0, -1] == bpe.eos_token_id and mask[0].all()
    assert (ids[1] == bpe.eos_token_id).sum() == 1  # unseen characters become byte tokens, not unk (= EOT)
    with pytest.raises(ValueError, match="max_words"):
        tokenize(bpe, ["a"], max_words=1)


def test_cleaning_like_clip(bpe):
    assert clean_text("  A &amp;amp; B\n\tC ") == "a & b c"
    a, _ = tokenize(bpe, ["A  MAN &amp; a DOG"], 16)
    b, _ = tokenize(bpe, ["a man & a dog"], 16)
    assert torch.equal(a, b)


def test_save_load_round_trip_gives_identical_ids(bpe, tmp_path):
    save_tokenizer(bpe, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["merges.txt", "vocab.json"]
    loaded = load_tokenizer(tmp_path / "copy")
    assert type(loaded) is CLIPTokenizer and loaded.get_vocab() == bpe.get_vocab()
    for a, b in zip(tokenize(bpe, CAPTIONS, 32), tokenize(loaded, CAPTIONS, 32)):
        assert torch.equal(a, b)
    bpe.save_pretrained(tmp_path / "hf")  # a Hugging Face directory (tokenizer.json) loads as well
    assert torch.equal(tokenize(load_tokenizer(tmp_path / "hf"), CAPTIONS, 32)[0], tokenize(bpe, CAPTIONS, 32)[0])


def _tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer built directly (v5 form) from a tiny CLIP-layout vocabulary."""
    symbols = bytes_to_unicode()
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "n</w>")]
    tokens = [*symbols, *(s + EOW for s in symbols), *(a + b for a, b in merges), SOT, EOT]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


def test_tokenize_matches_hf_clip_call_with_reference_padding():
    tok = _tiny_clip_tokenizer()
    texts = ["The cat on the mat", "the cat " * 20, "cat"]
    ids, mask = tokenize(tok, texts, max_words=10)
    hf = tok(texts, padding="max_length", max_length=10, truncation=True, return_tensors="pt")
    expected = hf["input_ids"].masked_fill(hf["attention_mask"] == 0, 0)  # the reference pads with 0
    assert torch.equal(ids, expected) and torch.equal(mask, hf["attention_mask"])
    assert tok.convert_ids_to_tokens(ids[0, :4].tolist()) == [SOT, "the</w>", "cat</w>", "on</w>"]


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ValueError, match="vocab.json"):
        load_tokenizer(tmp_path)
    symbols = bytes_to_unicode()
    bad = {t: i for i, t in enumerate([SOT, EOT, *symbols, *(s + EOW for s in symbols)])}
    (tmp_path / "vocab.json").write_text(json.dumps(bad))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="largest id"):
        load_tokenizer(tmp_path)


def _reference_clean(text: str) -> str:
    """Transcription of CLIP's ``SimpleTokenizer`` cleaning (``basic_clean`` + ``whitespace_clean`` + lower)."""
    import html
    import re

    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


ODD_CAPTIONS = [
    "He said \u201chi\u201d and didn\u2019t stop",  # curly quotes -> straight quotes
    "a caf\u00c3\u00a9 on the corner",  # mojibake of "café"
    "tom &amp;amp; jerry &amp;amp;amp; friends",  # doubly / triply escaped HTML
    "  \ufb01ne\tTHE   cat\n",  # ligature, tabs, newlines, upper case
]


def test_cleaning_applies_ftfy_like_the_reference():
    tok = _tiny_clip_tokenizer()
    ids, mask = tokenize(tok, ODD_CAPTIONS, max_words=48)
    for row, caption in enumerate(ODD_CAPTIONS):  # the reference: SOT + BPE(clean(caption)) + EOT, pad 0
        pieces = tok(_reference_clean(caption), add_special_tokens=False)["input_ids"]
        seq = [tok.bos_token_id, *pieces, tok.eos_token_id]
        assert ids[row].tolist() == seq + [0] * (48 - len(seq)) and int(mask[row].sum()) == len(seq)
    assert [clean_text(c) for c in ODD_CAPTIONS] == [_reference_clean(c) for c in ODD_CAPTIONS]
