"""CLIP sources: presets, local Hugging Face directories, and a clear error when nothing can be loaded."""
import pytest
import torch
from transformers import CLIPModel

from xclip_pl.model.presets import PRESETS, build_clip, preset_config


def test_presets_build_and_eot_is_the_largest_id():
    for name in ("tiny", "small"):
        model = build_clip(name)
        text = model.config.text_config
        assert text.eos_token_id == text.vocab_size - 1 and name in PRESETS


def test_local_directory_round_trip(tmp_path):
    model = CLIPModel(preset_config("tiny"))
    model.save_pretrained(tmp_path / "clip")
    loaded = build_clip(str(tmp_path / "clip"))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_unreachable_hub_id_says_how_to_point_at_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as error:
        build_clip("no-such-org/no-such-clip")
    message = str(error.value)
    assert "no-such-org/no-such-clip" in message and "local" in message and "--local-dir" in message
