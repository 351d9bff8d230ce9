"""Small builders shared by the model tests."""
import inspect

import torch

from xclip_pl import XCLIP
from xclip_pl.model.features import TextFeatures, VideoFeatures

XCLIP_ARGS = frozenset(inspect.signature(XCLIP.__init__).parameters) - {"self"}


def make_module(**kwargs):
    """``XCLIPRetrieval(XCLIP(**network), **rest)``: the keyword arguments of :class:`XCLIP` (clip, max_words,
    temporal_layers, clip_dtype, freeze_layers, ...) build the network, the others go to the module."""
    from xclip_pl.module import XCLIPRetrieval  # noqa: PLC0415

    network = {k: kwargs.pop(k) for k in list(kwargs) if k in XCLIP_ARGS}
    return XCLIPRetrieval(XCLIP(**network), **kwargs)


def random_ids(n: int, words: int, lengths: list[int], vocab: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference-layout token ids: SOT (vocab-2), tokens, EOT (vocab-1), pad 0; and the attention mask."""
    ids = torch.zeros(n, words, dtype=torch.long)
    mask = torch.zeros(n, words, dtype=torch.long)
    for i in range(n):
        length = lengths[i % len(lengths)]
        ids[i, 0] = vocab - 2
        ids[i, 1 : length - 1] = torch.randint(1, vocab - 2, (length - 2,))
        ids[i, length - 1] = vocab - 1
        mask[i, :length] = 1
    return ids, mask


def random_video(n: int, frames: int, valid: list[int], size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised pixels [n, f, 3, s, s] with zero (mean-colour) padded slots, and the frame mask."""
    mask = torch.zeros(n, frames, dtype=torch.bool)
    for i in range(n):
        mask[i, : valid[i % len(valid)]] = True
    pixels = torch.randn(n, frames, 3, size, size) * mask[:, :, None, None, None]
    return pixels, mask


def randomize_matrices(model: XCLIP, scale: float = 0.3) -> None:
    """Move the AOSM matrices away from identity so their orientation matters."""
    with torch.no_grad():
        for p in model.similarity_head.parameters():
            p.add_(scale * torch.randn_like(p))


def random_features(a: int, b: int, words: int, frames: int, dim: int, masks: bool = True) -> tuple[TextFeatures, VideoFeatures]:
    norm = torch.nn.functional.normalize
    word_mask = torch.ones(a, words, dtype=torch.bool)
    frame_mask = torch.ones(b, frames, dtype=torch.bool)
    if masks:
        for i in range(a):
            word_mask[i, 2 + i % (words - 2) :] = False
        for j in range(b):
            frame_mask[j, 1 + j % frames :] = False
    text = TextFeatures(norm(torch.randn(a, dim), dim=-1), norm(torch.randn(a, words, dim), dim=-1), word_mask)
    video = VideoFeatures(norm(torch.randn(b, dim), dim=-1), norm(torch.randn(b, frames, dim), dim=-1), frame_mask)
    return text, video


def free_port() -> int:
    """A free TCP port on the loopback interface (for 2-process gloo tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seeded_case(words: int, frames: int, global_batch: int) -> tuple[XCLIP, tuple[torch.Tensor, ...]]:
    """The same tiny model and global batch in every process: (model, (ids, mask, pixels, frame_mask))."""
    torch.manual_seed(0)
    model = XCLIP("tiny", max_words=words, max_frames=frames)
    randomize_matrices(model, 0.05)
    torch.manual_seed(1)
    ids, mask = random_ids(global_batch, words, lengths=[4, 8, 6])
    pixels, frame_mask = random_video(global_batch, frames, valid=[3, 1, 2])
    return model, (ids, mask, pixels, frame_mask)
