"""Symmetric InfoNCE, and a 2-process gloo run equal to one process on the same global batch."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers_model import free_port, seeded_case

from xclip_pl.train.distributed import all_gather_no_grad, gather_features
from xclip_pl.train.loss import contrastive_loss, symmetric_infonce

WORDS, FRAMES, BATCH = 8, 3, 3  # per-rank batch; the global batch is 2 x 3


def test_symmetric_infonce_by_hand():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    rows = -(torch.log_softmax(logits, 1).diagonal()).mean()
    cols = -(torch.log_softmax(logits.t(), 1).diagonal()).mean()
    torch.testing.assert_close(symmetric_infonce(logits), 0.5 * (rows + cols))
    torch.testing.assert_close(symmetric_infonce(logits), 0.5 * (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.t(), torch.arange(2))))


#: the global batch's video of each pair: pairs 0, 2, 5 and 1, 4 share a video across the two ranks' halves
VIDEO_IDS = torch.tensor([7, 3, 7, 9, 3, 7])


def test_false_negative_mask_by_hand():
    """Pairs 0 and 2 show one video: each leaves the other out of both of its softmaxes."""
    logits = torch.tensor([[3.0, 0.5, 2.0], [0.1, 2.5, 0.3], [1.5, 0.2, 2.8]])
    same = torch.tensor([0, 1, 0])[:, None] == torch.tensor([0, 1, 0])[None, :]
    keep = ~same | torch.eye(3, dtype=torch.bool)

    def ce(rows):
        return torch.stack([-(torch.log_softmax(rows[i][keep[i]], 0)[keep[i][: i + 1].sum() - 1]) for i in range(3)]).mean()

    want = 0.5 * (ce(logits) + ce(logits.t()))
    torch.testing.assert_close(symmetric_infonce(logits, same_video=same), want)
    assert symmetric_infonce(logits, same_video=same) < symmetric_infonce(logits)  # 0 and 2 were pushing apart
    no_duplicates = torch.eye(3, dtype=torch.bool)
    torch.testing.assert_close(symmetric_infonce(logits, same_video=no_duplicates), symmetric_infonce(logits))


def build():
    return seeded_case(WORDS, FRAMES, 2 * BATCH)


def step(model, batch, rank, world, local_loss, mask_false_negatives=False):
    ids, mask, pixels, frame_mask = (t[rank * BATCH : (rank + 1) * BATCH] if world > 1 else t for t in batch)
    video_ids = (VIDEO_IDS[rank * BATCH : (rank + 1) * BATCH] if world > 1 else VIDEO_IDS) if mask_false_negatives else None
    text, video = model.encode_text(ids, mask), model.encode_video(pixels, frame_mask)
    loss = contrastive_loss(model.similarity, text, video, gather_features, rank, world, local_loss,
                            video_ids=video_ids, gather_ids=all_gather_no_grad)
    loss.backward()
    return loss.detach()


def worker(rank, port, out_path, local_loss, mask_false_negatives=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model, batch = build()
    loss = step(model, batch, rank, 2, local_loss, mask_false_negatives)
    dist.all_reduce(loss)
    grads = {}
    for name, p in model.named_parameters():  # DDP averages gradients over ranks
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(g)
        grads[name] = g / 2
    if rank == 0:
        torch.save({"loss": loss / 2, "grads": grads}, out_path)
    dist.destroy_process_group()


@pytest.mark.parametrize("local_loss,mask_false_negatives", [(True, False), (False, False), (True, True)])
def test_two_process_gloo_equals_single_process(tmp_path, local_loss, mask_false_negatives):
    out = tmp_path / "dist.pt"
    mp.spawn(worker, args=(free_port(), str(out), local_loss, mask_false_negatives), nprocs=2, join=True)
    result = torch.load(out)
    model, batch = build()
    loss = step(model, batch, 0, 1, local_loss, mask_false_negatives)
    torch.testing.assert_close(result["loss"], loss, rtol=1e-5, atol=1e-6)
    checked = 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        # float32 summation order differs between 1 and 2 processes: tolerance relative to the tensor's scale
        scale = float(p.grad.abs().max()) + 1e-12
        torch.testing.assert_close(result["grads"][name], p.grad, rtol=1e-4, atol=1e-6 + 1e-5 * scale, msg=name)
        checked += 1
    assert checked > 50


def masked_infonce_by_loops(logits: torch.Tensor, video_ids: list[int]) -> float:
    """Symmetric InfoNCE with the false-negative mask, pair by pair: row i's softmax keeps column i and
    every column of another video; likewise for column i over the rows. Float64, plain Python sums."""
    n = len(video_ids)
    s = logits.double().tolist()

    def one_side(score) -> float:
        total = 0.0
        for i in range(n):
            kept = [j for j in range(n) if j == i or video_ids[j] != video_ids[i]]
            total += -score(i, i) + math.log(sum(math.exp(score(i, j)) for j in kept))
        return total / n

    return 0.5 * (one_side(lambda i, j: s[i][j]) + one_side(lambda i, j: s[j][i]))


def test_module_switch_masks_same_video_pairs():
    """``model.false_negative_mask`` hands the batch's ``video_index`` to the loss, which leaves the other
    pairs of a pair's video out of both of its softmaxes (checked against a per-pair loop)."""
    from helpers_model import make_module
    from test_reference_step import batches

    batch = batches(1)[0]
    batch["video_index"] = torch.tensor([5, 1, 5, 2])  # pairs 0 and 2: two captions of video 5
    module = make_module(clip="tiny", max_words=batch["input_ids"].shape[1], max_frames=batch["frame_mask"].shape[1],
                         temporal_layers=1, false_negative_mask=True)
    with torch.no_grad():
        masked = module.training_step(batch, 0)
        logits = module.model.similarity(module.encode_text_batch(batch), module.encode_video_batch(batch))
        module.hparams.false_negative_mask = False
        plain = module.training_step(batch, 0)
    assert masked.item() == pytest.approx(masked_infonce_by_loops(logits, [5, 1, 5, 2]), rel=1e-5)
    assert plain.item() == pytest.approx(masked_infonce_by_loops(logits, [0, 1, 2, 3]), rel=1e-5)  # nothing masked
    assert masked < plain
