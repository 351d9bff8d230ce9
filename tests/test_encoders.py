"""CLIPTowers (src/xclip_pl/model/encoders.py) against what Hugging Face's CLIPModel gives for the same inputs
on a tiny random CLIP: get_text_features / get_image_features and text_model + text_projection."""
import pytest
import torch
from helpers_model import random_ids, random_video

from xclip_pl.model.encoders import CLIPTowers
from xclip_pl.model.presets import build_clip

WORDS, FRAMES = 12, 3


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    model = build_clip("tiny").eval()
    with torch.no_grad():  # the default init gives near-identical projections; spread them
        model.text_projection.weight.normal_(std=0.2)
        model.visual_projection.weight.normal_(std=0.2)
    return model


def projected(out):
    """get_*_features returns a tensor in older transformers, a BaseModelOutputWithPooling in newer ones."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_properties_read_the_config(clip):
    towers = CLIPTowers(clip)
    assert towers.embed_dim == clip.config.projection_dim == 64
    assert towers.image_size == clip.config.vision_config.image_size == 32
    assert towers.clip is clip
    assert towers.text_padding_mask is False  # the reference's default: causal mask only


def test_sentence_embedding_equals_get_text_features(clip):
    torch.manual_seed(1)
    ids, mask = random_ids(4, WORDS, lengths=[4, 12, 7, 2])
    with torch.no_grad():
        sentence, words = CLIPTowers(clip).encode_text(ids, mask)
        expected = projected(clip.get_text_features(input_ids=ids))
    assert sentence.shape == (4, 64) and words.shape == (4, WORDS, 64)
    torch.testing.assert_close(sentence, expected, rtol=1e-5, atol=1e-5)
    # Sanity of the inputs: the rows are different sentences (an index mix-up would show).
    assert not torch.allclose(expected[0], expected[2], atol=1e-3)


def test_word_embeddings_are_projected_final_states(clip):
    torch.manual_seed(2)
    ids, mask = random_ids(3, WORDS, lengths=[5, 12, 3])
    with torch.no_grad():
        _, words = CLIPTowers(clip).encode_text(ids, mask)
        hidden = clip.text_model(input_ids=ids).last_hidden_state  # causal mask only, final LayerNorm applied
        expected = clip.text_projection(hidden)
    torch.testing.assert_close(words, expected, rtol=1e-5, atol=1e-5)


def test_sentence_embedding_is_the_word_embedding_at_the_largest_id(clip):
    torch.manual_seed(3)
    ids, mask = random_ids(3, WORDS, lengths=[6, 9, 4])
    # Put the EOT somewhere that is not length - 1 for one row: the pick follows argmax(ids), not the mask.
    ids[1, 8] = 5
    ids[1, 3] = clip.config.text_config.vocab_size - 1
    with torch.no_grad():
        sentence, words = CLIPTowers(clip).encode_text(ids, mask)
    for i in range(3):
        eot = max(range(WORDS), key=lambda j: ids[i, j].item())
        torch.testing.assert_close(sentence[i], words[i, eot])
    torch.testing.assert_close(sentence[1], words[1, 3])


def test_padding_mask_option_equals_text_model_with_attention_mask(clip):
    torch.manual_seed(4)
    ids, mask = random_ids(3, WORDS, lengths=[4, 12, 7])
    with torch.no_grad():
        sentence, words = CLIPTowers(clip, text_padding_mask=True).encode_text(ids, mask)
        expected_words = clip.text_projection(clip.text_model(input_ids=ids, attention_mask=mask).last_hidden_state)
        expected_sentence = projected(clip.get_text_features(input_ids=ids, attention_mask=mask))
        _, causal_words = CLIPTowers(clip).encode_text(ids, mask)
    torch.testing.assert_close(words, expected_words, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sentence, expected_sentence, rtol=1e-5, atol=1e-5)
    # As documented: only the features at pad positions differ from the causal-only default.
    valid = mask.bool()
    torch.testing.assert_close(words[valid], causal_words[valid], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(words[~valid], causal_words[~valid], atol=1e-4)


def test_frame_embeddings_equal_get_image_features_per_frame(clip):
    torch.manual_seed(5)
    pixels, _ = random_video(2, FRAMES, valid=[3], size=32)
    with torch.no_grad():
        frames = CLIPTowers(clip).encode_frames(pixels)
        per_frame = torch.stack([
            torch.stack([projected(clip.get_image_features(pixel_values=pixels[b, f : f + 1]))[0] for f in range(FRAMES)])
            for b in range(2)
        ])
    assert frames.shape == (2, FRAMES, 64)
    torch.testing.assert_close(frames, per_frame, rtol=1e-5, atol=1e-5)
    # Distinct frames give distinct embeddings, so a (b f) / (f b) mix-up would be caught.
    assert not torch.allclose(per_frame[0, 1], per_frame[1, 0], atol=1e-3)


def test_frame_embeddings_are_projected_pooled_cls(clip):
    torch.manual_seed(6)
    pixels, _ = random_video(3, 2, valid=[2], size=32)
    with torch.no_grad():
        frames = CLIPTowers(clip).encode_frames(pixels)
        flat = pixels.reshape(6, 3, 32, 32)
        out = clip.vision_model(pixel_values=flat)
        cls = clip.vision_model.post_layernorm(out.last_hidden_state[:, 0])  # post-LN CLS token
        expected = clip.visual_projection(cls).reshape(3, 2, 64)
    torch.testing.assert_close(frames, expected, rtol=1e-5, atol=1e-5)


def test_encoders_are_not_normalised(clip):
    # The module docstring: embeddings here are not yet L2-normalised (XCLIP normalises them).
    torch.manual_seed(7)
    ids, mask = random_ids(2, WORDS, lengths=[5])
    pixels, _ = random_video(1, 2, valid=[2])
    with torch.no_grad():
        sentence, _ = CLIPTowers(clip).encode_text(ids, mask)
        frames = CLIPTowers(clip).encode_frames(pixels)
    assert not torch.allclose(sentence.norm(dim=-1), torch.ones(2), atol=1e-3)
    assert not torch.allclose(frames.norm(dim=-1), torch.ones(1, 2), atol=1e-3)


def test_gradients_flow_to_both_towers():
    towers = CLIPTowers(build_clip("tiny"))
    ids, mask = random_ids(2, WORDS, lengths=[5])
    pixels, _ = random_video(1, 2, valid=[2])
    sentence, words = towers.encode_text(ids, mask)
    frames = towers.encode_frames(pixels)
    (sentence.sum() + words.sum() + frames.sum()).backward()
    clip_ = towers.clip
    assert clip_.text_projection.weight.grad.abs().sum() > 0
    assert clip_.visual_projection.weight.grad.abs().sum() > 0
    assert clip_.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0
    assert clip_.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
