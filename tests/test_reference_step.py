"""With the reference switches on, training steps change the weights exactly as the reference optimiser
(BertAdam after a global grad-norm clip, warmup-cosine over global progress) would."""
from __future__ import annotations

from functools import partial

import pytorch_lightning as pl
import torch
from helpers_model import make_module
from torch.utils.data import DataLoader

from xclip_pl.train.bertadam import BertAdam
from xclip_pl.train.schedules import ReferenceWarmupCosine

B, F, L = 4, 3, 8
BETAS, EPS, WD, LR, SCALE = (0.9, 0.98), 1e-6, 0.2, 1e-3, 0.1


def batches(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        ids = torch.randint(1, 1000, (B, L), generator=g)
        ids[:, 0], ids[:, L - 2], ids[:, L - 1] = 1022, 1023, 0
        items.append({"frames": torch.randint(0, 256, (B, F, 32, 32, 3), generator=g, dtype=torch.uint8),
                      "frame_mask": torch.ones(B, F, dtype=torch.bool), "input_ids": ids,
                      "attention_mask": (ids != 0).long(), "index": torch.arange(B), "video_index": torch.arange(B),
                      "video_ok": torch.ones(B, dtype=torch.bool)})
    return items


class Recorder(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        named = dict(pl_module.named_parameters())
        ids = {id(p): n for n, p in named.items()}
        state = {ids[id(p)]: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()} for p in optimizer.state if id(p) in ids}
        lrs = {ids[id(p)]: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
        self.steps.append({"params": {n: p.detach().clone() for n, p in named.items()},
                           "grads": {n: p.grad.clone() for n, p in named.items() if p.grad is not None},
                           "state": state, "lr": lrs})

    def on_train_end(self, trainer, pl_module) -> None:
        self.final = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def reference_update(step: dict, after: dict, max_norm: float = 1.0) -> None:
    """Apply, by hand, global clip -> per-tensor clip -> BertAdam, and compare with the trainer's result."""
    grads = step["grads"]
    total = torch.norm(torch.stack([g.norm() for g in grads.values()]))
    coef = min(1.0, max_norm / (float(total) + 1e-6))
    checked = 0
    for name, grad in grads.items():
        g = grad * coef
        g = g * min(1.0, max_norm / (float(g.norm()) + 1e-6))  # BertAdam's per-tensor clip
        state = step["state"].get(name, {})
        m = state.get("next_m", torch.zeros_like(g)) * BETAS[0] + (1 - BETAS[0]) * g
        v = state.get("next_v", torch.zeros_like(g)) * BETAS[1] + (1 - BETAS[1]) * g * g
        lr, wd = step["lr"][name]
        p = step["params"][name]
        update = m / (v.sqrt() + EPS) + (wd * p if wd > 0 else 0)
        torch.testing.assert_close(after[name], p - lr * update, rtol=1e-5, atol=1e-7, msg=name)
        checked += 1
    assert checked > 20


def test_two_reference_steps_match_a_hand_written_bertadam():
    module = make_module(clip="tiny", max_words=L, max_frames=F, temporal_layers=1, lr=LR, backbone_lr_scale=SCALE,
                         weight_decay=WD, optimizer=partial(BertAdam, betas=BETAS, eps=EPS, max_grad_norm=1.0),
                         scheduler=partial(ReferenceWarmupCosine, warmup_ratio=0.1), no_decay="bias", freeze_layers=0,
                         gather_grad="local_slice", local_loss=False)
    recorder = Recorder()
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, DataLoader(batches(2), batch_size=None))
    first, second = recorder.steps
    # the reference schedule: the first update has lr 0, the second 0.5 * lr (x = 1/2 is past warmup)
    assert all(lr == 0.0 for lr, _ in first["lr"].values())
    backbone = "model.towers.clip.text_model.encoder.layers.0.mlp.fc1.weight"
    head = "model.similarity_head.word_mat_weight"
    assert second["lr"][backbone][0] == LR * SCALE * 0.5 and second["lr"][head][0] == LR * 0.5
    # reference groups: LayerNorm weights and the AOSM matrices are decayed, biases are not
    assert second["lr"]["model.temporal.blocks.0.layer_norm1.weight"][1] == WD and second["lr"][head][1] == WD
    assert second["lr"]["model.temporal.blocks.0.mlp.fc1.bias"][1] == 0.0
    for name, value in first["params"].items():  # lr 0: nothing moved, but the moments were filled
        torch.testing.assert_close(second["params"][name], value, rtol=0, atol=0)
    reference_update(second, recorder.final)
    # freeze_layers = 0 froze the embedding stage
    frozen = "model.towers.clip.text_model.embeddings.token_embedding.weight"
    assert frozen not in second["grads"]
    torch.testing.assert_close(recorder.final[frozen], first["params"][frozen], rtol=0, atol=0)
