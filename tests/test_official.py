"""Reference checkpoints: key mapping, loading, and logits equal to a transcription of the reference code."""
import re
from pathlib import Path

import pytest
import torch
from helpers_model import random_ids, random_video, randomize_matrices
from reference_xclip import ReferenceXCLIP

from xclip_pl import XCLIP
from xclip_pl.model.official import xclip_to_official

WORDS, FRAMES = 12, 5
KEY_LIST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official-xclip-state-dict.tsv"


def _pattern(key: str) -> str:
    return re.sub(r"resblocks\.\d+\.", "resblocks.N.", key)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = XCLIP("tiny", max_words=WORDS, max_frames=FRAMES).eval()
    randomize_matrices(m)
    with torch.no_grad():
        m.temporal.frame_position.weight.add_(0.1 * torch.randn_like(m.temporal.frame_position.weight))
        m.logit_scale.fill_(4.0)
    return m


def inputs():
    ids, mask = random_ids(4, WORDS, lengths=[5, 12, 8])
    pixels, frame_mask = random_video(3, FRAMES, valid=[5, 2, 3])
    return ids, mask, pixels, frame_mask


def test_reference_naming_matches_the_recorded_key_list(model, tmp_path):
    official = xclip_to_official(model)
    if not KEY_LIST.exists():
        pytest.skip("shared/reference is not beside the checkout")
    recorded = [line.split("\t")[0] for line in KEY_LIST.read_text().splitlines() if line and not line.startswith("#")]
    # the recorded checkpoint has 12-layer towers and ours 2: compare the key patterns
    assert {_pattern(k) for k in official} == {_pattern(k) for k in recorded}


def test_logits_equal_the_reference_code(model):
    ids, mask, pixels, frame_mask = inputs()
    reference = ReferenceXCLIP(xclip_to_official(model)).eval()
    with torch.no_grad():
        ours = model(ids, mask, pixels, frame_mask)
        theirs = reference(ids, pixels, frame_mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_round_trip_through_a_reference_checkpoint(model, tmp_path):
    official = xclip_to_official(model)
    half = {k: (v.half() if k.startswith("clip.") and v.ndim == 2 and "embedding" not in k else v) for k, v in official.items()}
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(official, path)
    loaded = XCLIP.from_official_checkpoint(path, max_words=WORDS, max_frames=FRAMES).eval()
    ids, mask, pixels, frame_mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, pixels, frame_mask), model(ids, mask, pixels, frame_mask), rtol=0, atol=0)
    torch.save(half, path)  # fp16 tensors as the reference saves them are accepted
    loaded_half = XCLIP.from_official_checkpoint(path, max_words=WORDS, max_frames=FRAMES)
    assert all(p.dtype == torch.float32 for p in loaded_half.parameters())


def test_bad_checkpoints_are_clear_errors(model, tmp_path):
    official = xclip_to_official(model)
    path = tmp_path / "ckpt.bin"
    with pytest.raises(FileNotFoundError, match="ckpt.bin"):
        XCLIP.from_official_checkpoint(path, max_words=WORDS, max_frames=FRAMES)
    torch.save(official, path)
    with pytest.raises(ValueError, match=r"max_words=12, max_frames=5.*max_words=32, max_frames=12"):
        XCLIP.from_official_checkpoint(path, max_words=32, max_frames=12)
    torch.save({**official, "clip.extra.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="unexpected.*clip.extra.weight"):
        XCLIP.from_official_checkpoint(path, max_words=WORDS, max_frames=FRAMES)
    broken = dict(official)
    del broken["clip.ln_final.bias"]
    torch.save(broken, path)
    with pytest.raises(ValueError, match="missing.*clip.ln_final.bias"):
        XCLIP.from_official_checkpoint(path, max_words=WORDS, max_frames=FRAMES)


def test_module_prefix_from_data_parallel_is_accepted(model, tmp_path):
    path = tmp_path / "pytorch_model.bin.0"
    torch.save({f"module.{k}": v for k, v in xclip_to_official(model).items()}, path)
    XCLIP.from_official_checkpoint(path, max_words=WORDS, max_frames=FRAMES)


# ---------------------------------------------------- model.official_checkpoint with clip / temporal_* given
def _official_file(model, tmp_path):
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(xclip_to_official(model), path)
    return path


def _no_pretrained(monkeypatch):
    """Any attempt to load a pretrained CLIP (network, hub cache or directory) fails the test."""
    from transformers import CLIPModel

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was called")

    monkeypatch.setattr(CLIPModel, "from_pretrained", refuse)


def test_official_checkpoint_sizes_come_from_the_checkpoint(model, tmp_path, monkeypatch):
    _no_pretrained(monkeypatch)
    path = _official_file(model, tmp_path)
    expected = model.state_dict()
    for explicit in ({}, {"clip": "tiny", "temporal_layers": 4}):  # nothing given, or sizes that agree
        network = XCLIP(official_checkpoint=str(path), max_words=WORDS, max_frames=FRAMES, **explicit)
        state = network.state_dict()
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_official_checkpoint_conflicting_arguments_are_clear_errors(model, tmp_path, monkeypatch):
    _no_pretrained(monkeypatch)
    path = str(_official_file(model, tmp_path))
    sizes = dict(official_checkpoint=path, max_words=WORDS, max_frames=FRAMES)
    # "small" is 128 wide with 64 px frames; the checkpoint's CLIP is "tiny": 64 wide, 32 px
    with pytest.raises(ValueError, match=r"model.model.init_args.clip='small'.*text.hidden_size=128.*checkpoint.*text.hidden_size=64"):
        XCLIP(clip="small", **sizes)
    with pytest.raises(ValueError, match=r"model.model.init_args.temporal_layers=2.*checkpoint.*has 4"):
        XCLIP(temporal_layers=2, **sizes)
    with pytest.raises(ValueError, match=r"model.model.init_args.temporal_init='clip_text'.*official_checkpoint"):
        XCLIP(temporal_init="clip_text", **sizes)


def test_clip_config_is_exclusive_with_clip_and_official_checkpoint(model, tmp_path):
    from xclip_pl.model.presets import preset_config

    config = preset_config("tiny").to_diff_dict()
    built = XCLIP(clip_config=config, max_words=WORDS, max_frames=FRAMES, temporal_layers=1)
    assert built.towers.clip.config.text_config.hidden_size == 64 and len(built.temporal.blocks) == 1
    with pytest.raises(ValueError, match=r"model.model.init_args.clip='small' and model.model.init_args.clip_config"):
        XCLIP(clip="small", clip_config=config, max_words=WORDS, max_frames=FRAMES)
    path = _official_file(model, tmp_path)
    with pytest.raises(ValueError, match=r"model.model.init_args.official_checkpoint and model.model.init_args.clip_config"):
        XCLIP(official_checkpoint=str(path), clip_config=config, max_words=WORDS, max_frames=FRAMES)
