"""The per-block inputs and the score GEMMs every backend shares, against einsum in float64."""
import pytest
import torch
from helpers_model import random_features
from test_similarity import make_head

from xclip_pl.model.similarity.prepared import PreparedText, coarse_scores, frame_word_scores


@pytest.mark.parametrize("local_on_video", [False, True])
@pytest.mark.parametrize("layout", ["frames_first", "videos_first"])
def test_scores_equal_einsum_in_either_layout(layout, local_on_video):
    a, b, words, frames, dim = 3, 5, 6, 4, 8
    head = make_head(words, frames, dim, mask_padding=True, tau=0.05)
    text, video = (x.to(torch.float64) for x in random_features(a, b, words, frames, dim))
    text_in = head.prepare_text(text, local=not local_on_video)
    video_in = head.prepare_video(video, local=local_on_video, layout=layout)
    t, w, v, f = text.sentence_emb, text.word_emb, video.video_emb, video.frame_emb
    coarse = coarse_scores(text_in, video_in)
    torch.testing.assert_close(coarse.video_sentence, torch.einsum("ad,de,be->ab", t, head.global_mat_weight, v))
    torch.testing.assert_close(coarse.word_video, torch.einsum("awd,bd->awb", w, v))
    torch.testing.assert_close(coarse.sentence_frame, torch.einsum("ad,bfd->afb", t, f))
    fine = torch.einsum("awd,de,bfe->awfb", w, head.local_mat_weight, f) / 0.05  # w W_loc f^T / tau
    got = frame_word_scores(text_in, video_in)
    torch.testing.assert_close(got, fine if layout == "frames_first" else fine.permute(0, 1, 3, 2))
    assert torch.equal(video_in.frame_mask, video.frame_mask.t()) and video_in.frames == frames


def test_pad_to_adds_zero_texts_with_kept_masks():
    sentence, word = torch.randn(3, 4), torch.randn(3, 5, 4)
    mask = torch.rand(3, 5) > 0.5
    text = PreparedText(sentence, 2 * sentence, word, 3 * word, mask)
    padded = text.pad_to(5)
    assert len(padded) == 5 and torch.equal(padded.word_local[:3], 3 * word)
    assert padded.sentence[3:].abs().sum() == 0 and padded.word[3:].abs().sum() == 0
    assert torch.equal(padded.word_mask[:3], mask) and padded.word_mask[3:].all()
    assert text.pad_to(2) is text
    assert PreparedText(sentence, sentence, word, word, None).pad_to(4).word_mask is None
