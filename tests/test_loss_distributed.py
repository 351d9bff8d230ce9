"""Symmetric InfoNCE, and a 2-process gloo run equal to one process on the same global batch."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from helpers_model import free_port, seeded_case
from xclip_pl.distributed import gather_features
from xclip_pl.loss import contrastive_loss, symmetric_infonce

WORDS, FRAMES, BATCH = 8, 3, 3  # per-rank batch; the global batch is 2 x 3


def test_symmetric_infonce_by_hand():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    rows = -(torch.log_softmax(logits, 1).diagonal()).mean()
    cols = -(torch.log_softmax(logits.t(), 1).diagonal()).mean()
    torch.testing.assert_close(symmetric_infonce(logits), 0.5 * (rows + cols))
    torch.testing.assert_close(symmetric_infonce(logits), 0.5 * (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.t(), torch.arange(2))))


def build():
    return seeded_case(WORDS, FRAMES, 2 * BATCH)


def step(model, batch, rank, world, local_loss):
    ids, mask, pixels, frame_mask = (t[rank * BATCH : (rank + 1) * BATCH] if world > 1 else t for t in batch)
    text, video = model.encode_text(ids, mask), model.encode_video(pixels, frame_mask)
    loss = contrastive_loss(model.similarity, text, video, gather_features, rank, world, local_loss)
    loss.backward()
    return loss.detach()


def worker(rank, port, out_path, local_loss):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model, batch = build()
    loss = step(model, batch, rank, 2, local_loss)
    dist.all_reduce(loss)
    grads = {}
    for name, p in model.named_parameters():  # DDP averages gradients over ranks
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(g)
        grads[name] = g / 2
    if rank == 0:
        torch.save({"loss": loss / 2, "grads": grads}, out_path)
    dist.destroy_process_group()


@pytest.mark.parametrize("local_loss", [True, False])
def test_two_process_gloo_equals_single_process(tmp_path, local_loss):
    out = tmp_path / "dist.pt"
    mp.spawn(worker, args=(free_port(), str(out), local_loss), nprocs=2, join=True)
    result = torch.load(out)
    model, batch = build()
    loss = step(model, batch, 0, 1, local_loss)
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
