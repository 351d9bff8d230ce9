"""OpenAI CLIP checkpoint files (TorchScript archive or plain state dict) -> HF CLIPModel with equal embeddings."""
from pathlib import Path

import pytest
import torch
from helpers_model import random_ids
from reference_xclip import ReferenceCLIP
from torch import nn
from transformers import CLIPModel

from xclip_pl.model.official import hf_clip_to_openai
from xclip_pl.model.openai_clip import (
    clip_from_openai,
    is_openai_checkpoint,
    load_openai_state_dict,
    tokenizer_hint,
)
from xclip_pl.model.presets import preset_config

VOCAB, IMAGE = 1024, 32
SCALARS = {"input_resolution": IMAGE, "context_length": 77, "vocab_size": VOCAB}
HALF_SUFFIXES = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias", "c_fc.weight", "c_fc.bias",
                 "c_proj.weight", "c_proj.bias", "conv1.weight", "text_projection", "visual.proj")


def openai_state() -> dict[str, torch.Tensor]:
    """A tiny CLIP in OpenAI naming, stored as OpenAI stores it (convert_weights: fp16 Linear/Conv/projections)."""
    torch.manual_seed(3)
    clip = CLIPModel(preset_config("tiny"))
    with torch.no_grad():
        clip.logit_scale.fill_(4.6)
        for name, p in clip.named_parameters():
            if "norm" in name and name.endswith("bias"):
                p.normal_(0, 0.1)  # LayerNorm biases are 0 at init: make them matter
    state = hf_clip_to_openai(clip.state_dict())
    return {k: (v.half() if k.endswith(HALF_SUFFIXES) else v.float()).clone() for k, v in state.items()}


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive whose ``state_dict()`` is ``state`` (dotted names as nested modules), like ViT-B-32.pt."""
    root = _Holder()
    for key, tensor in state.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if part not in module._modules:
                module.add_module(part, nn.Module())
            module = module._modules[part]
        if tensor.is_floating_point():
            module.register_parameter(leaf, nn.Parameter(tensor.clone(), requires_grad=False))
        else:
            module.register_buffer(leaf, tensor.clone())
    torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def stored() -> dict[str, torch.Tensor]:
    return openai_state()


@pytest.fixture(scope="module")
def reference(stored) -> ReferenceCLIP:
    ref = ReferenceCLIP(stored)
    ref.load_state_dict({k: v.float() for k, v in stored.items()}, strict=True)
    return ref.eval()


def with_scalars(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**state, **{k: torch.tensor(v) for k, v in SCALARS.items()}}


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_embeddings_equal_the_openai_forward(stored, reference, tmp_path, fmt):
    path = tmp_path / "ViT-tiny.pt"
    save_torchscript(with_scalars(stored), path) if fmt == "torchscript" else torch.save(with_scalars(stored), path)
    loaded = load_openai_state_dict(path)
    assert loaded.keys() == stored.keys()  # scalars dropped
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in stored.items())

    model = clip_from_openai(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"
    assert model.config.text_config.eos_token_id == VOCAB - 1
    torch.manual_seed(4)
    ids, _ = random_ids(5, 12, lengths=[3, 12, 7], vocab=VOCAB)
    pixels = torch.randn(3, 3, IMAGE, IMAGE)
    with torch.no_grad():
        ref_image = reference.encode_image(pixels)
        ref_sentence, ref_words = reference.encode_text(ids)
        image = model.get_image_features(pixel_values=pixels).pooler_output
        sentence = model.get_text_features(input_ids=ids).pooler_output  # HF's own EOS pooling
        words = model.text_projection(model.text_model(input_ids=ids).last_hidden_state)
    torch.testing.assert_close(image, ref_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sentence, ref_sentence, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(words, ref_words, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.logit_scale.detach(), torch.tensor(4.6))


def test_bad_files_are_clear_errors(stored, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        clip_from_openai(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pt: not a PyTorch checkpoint"):
        load_openai_state_dict(garbage)
    cases = {
        "resnet.pt": ({"visual.conv1.weight": torch.zeros(32, 3, 3, 3), "visual.layer1.0.conv1.weight": torch.zeros(1),
                       "visual.attnpool.positional_embedding": torch.zeros(50, 64)}, "ResNet"),
        "list.pt": ([torch.zeros(1)], "expected a state dict"),
        "hf.bin": (CLIPModel(preset_config("tiny")).state_dict(), "Hugging Face CLIP state dict"),
        "xclip.bin": ({f"clip.{k}": v for k, v in stored.items()}, "from_official_checkpoint"),
        "other.pth": ({"encoder.weight": torch.zeros(2)}, "not an OpenAI CLIP ViT"),
        "extra.pt": ({**stored, "visual.extra": torch.zeros(1)}, r"unexpected \['visual.extra'\]"),
        "short.pt": ({k: v for k, v in stored.items() if k != "transformer.resblocks.1.ln_2.weight"},
                     r"missing \['transformer.resblocks.1.ln_2.weight'\]"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=message):
            clip_from_openai(tmp_path / name)


def test_resnet_torchscript_is_rejected(tmp_path):
    path = tmp_path / "RN50.pt"
    save_torchscript({"visual.layer1.0.conv1.weight": torch.zeros(2, 2), **{k: torch.tensor(v) for k, v in SCALARS.items()}}, path)
    with pytest.raises(ValueError, match="RN50.pt: a ResNet OpenAI CLIP"):
        load_openai_state_dict(path)


def test_source_kinds_and_tokenizer_hint(tmp_path):
    (tmp_path / "model.bin").mkdir()
    assert is_openai_checkpoint("/models/ViT-B-32.pt") and is_openai_checkpoint("ViT-B-16.PTH") and is_openai_checkpoint("w.bin")
    assert not is_openai_checkpoint(str(tmp_path / "model.bin"))  # a directory
    assert not any(is_openai_checkpoint(s) for s in ("tiny", "openai/clip-vit-base-patch32", str(tmp_path)))
    hint = tokenizer_hint("/models/ViT-B-32.pt")
    assert "/models/ViT-B-32.pt" in hint and "data.tokenizer" in hint and "openai/clip-vit-base-patch32" in hint
