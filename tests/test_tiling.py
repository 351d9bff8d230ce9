"""The tiling loop: block sizes, the grid of blocks handed to a backend, the coarse chunks' rows."""
import math

import pytest
import torch
from helpers_model import random_features
from test_similarity import make_head

from xclip_pl.model.similarity import (
    SIMILARITY_BACKENDS,
    MultiGrainedSimilarity,
    block_sizes,
    choose_block_sizes,
    plan_blocks,
    tiled_logits,
)
from xclip_pl.model.similarity.backends import TorchBackend


def test_memory_budget_bounds_the_blocks():
    for a, b, words, frames, budget in [(1000, 1000, 32, 12, 10**6), (4917, 4917, 64, 64, 2**25), (3, 5000, 32, 12, 10**5), (7, 3, 32, 12, 10**9)]:
        ta, tb = block_sizes(a, b, words, frames, budget)
        assert 1 <= ta <= a and 1 <= tb <= b
        assert ta * tb * words * frames <= max(budget, words * frames), (a, b, ta, tb)
    assert block_sizes(7, 3, 32, 12, 10**9) == (7, 3)  # everything fits: one block
    per_element = SIMILARITY_BACKENDS["torch"].bytes_per_element(torch.float32, mask_padding=False)
    ta, tb = choose_block_sizes(1000, 1000, 32, 12, None, 64, per_element, 1)
    assert ta * tb * 32 * 12 * per_element <= 64 * 2**20
    assert choose_block_sizes(1000, 1000, 32, 12, 5, 64, per_element, 1) == (5, 5)  # chunk_size wins
    with pytest.raises(ValueError, match="chunk_size"):
        choose_block_sizes(10, 10, 32, 12, 0, None, per_element, 1)


def test_bytes_per_element_of_each_backend():
    torch_backend = SIMILARITY_BACKENDS["torch"]
    assert torch_backend.bytes_per_element(torch.float32, False) == 4 + 4 + 4  # scores, mixed scores, fp32 weights
    assert torch_backend.bytes_per_element(torch.bfloat16, True) == 2 + 2 + 4 + 2 * 2  # + two masked copies
    assert SIMILARITY_BACKENDS["cpu"].bytes_per_element(torch.bfloat16, True) == 2  # the scores only
    assert SIMILARITY_BACKENDS["triton"].bytes_per_element(torch.float32, False) == 4


def test_plan_blocks_uses_the_backends_default_budget():
    head = MultiGrainedSimilarity(8, 32, 12)
    text, video = random_features(3000, 3000, 32, 12, 8)
    assert plan_blocks(head, SIMILARITY_BACKENDS["torch"], text, video) == block_sizes(3000, 3000, 32, 12, 2**20)
    assert plan_blocks(head, SIMILARITY_BACKENDS["cpu"], text, video) == block_sizes(3000, 3000, 32, 12, 2**23)
    assert plan_blocks(head, SIMILARITY_BACKENDS["torch"], text, video, chunk_size=7) == (7, 7)


class Recording(TorchBackend):
    """The torch backend, recording the (texts, videos) of every block it computes."""

    def __init__(self, coarse_factor: int = 1):
        super().__init__()
        self.blocks, self.coarse_calls, self.coarse_factor = [], [], coarse_factor

    def coarse_texts(self, block_texts, frames):
        return block_texts * self.coarse_factor

    def coarse(self, text, video, mix, temperature):
        self.coarse_calls.append((len(text), len(video)))
        return None

    def block_logits(self, coarse, text, video, mix, logit_scale, temperature, fast):
        self.blocks.append((len(text), len(video)))
        return super().block_logits(coarse, text, video, mix, logit_scale, temperature, fast)


@pytest.mark.parametrize("grad", [False, True])
def test_the_loop_covers_the_matrix_block_by_block(grad):
    head = make_head(6, 4, 8, mask_padding=True, tau=0.05).float()
    text, video = random_features(5, 7, 6, 4, 8)
    scale = torch.tensor(math.log(20.0))
    backend = Recording(coarse_factor=2)
    with torch.set_grad_enabled(grad):
        got = tiled_logits(head, text, video, scale, 2, 3, backend)
    with torch.no_grad():
        whole = tiled_logits(head, text, video, scale, 5, 7, SIMILARITY_BACKENDS["torch"])
    # videos outside (3, 3, 1), texts inside (2, 2, 1); coarse chunks of 2 blocks: 4 texts, then 1
    assert backend.blocks == [(ta, tb) for tb in (3, 3, 1) for ta in (2, 2, 1)]
    assert backend.coarse_calls == [(ta, tb) for tb in (3, 3, 1) for ta in (4, 1)]
    assert got.requires_grad == grad
    torch.testing.assert_close(got.detach(), whole, rtol=1e-5, atol=1e-5)


class RowIndex(TorchBackend):
    """Coarse 'terms' that are the text index; each block returns the rows it was handed."""

    def coarse_texts(self, block_texts, frames):
        return block_texts * frames

    def coarse(self, text, video, mix, temperature):
        first = int(text.sentence[0, 0].item())
        return torch.arange(first, first + len(text), dtype=torch.float32)[:, None].expand(-1, len(video)).clone()

    def block_logits(self, coarse, text, video, mix, logit_scale, temperature, fast):
        assert coarse.shape == (len(text), len(video))
        return coarse


def test_each_block_gets_its_own_rows_of_the_coarse_chunk():
    a, b = 11, 5
    text, video = random_features(a, b, 3, 2, 4)
    sentence = torch.arange(a, dtype=torch.float32)[:, None].expand(a, 4).clone()  # text i carries i
    text = type(text)(sentence, text.word_emb, text.word_mask)
    head = MultiGrainedSimilarity(4, 3, 2)
    with torch.no_grad():
        got = tiled_logits(head, text, video, torch.tensor(0.0), 2, 2, RowIndex())  # chunks of 4 texts
    assert torch.equal(got, torch.arange(a, dtype=torch.float32)[:, None].expand(a, b))


def test_empty_inputs_give_an_empty_matrix():
    head = MultiGrainedSimilarity(8, 6, 4)
    text, video = random_features(0, 3, 6, 4, 8)
    got = tiled_logits(head, text, video, torch.tensor(0.0), 2, 2, SIMILARITY_BACKENDS["torch"])
    assert got.shape == (0, 3) and got.dtype == torch.float32
