"""Writes the embeddings produced by ``xclip-pl predict`` to safetensors files plus CSV indexes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from safetensors.torch import save_file


class EmbeddingWriter(BasePredictionWriter):
    """After ``predict``: ``videos.safetensors`` (video_emb, frame_emb, frame_mask, video_index),
    ``texts.safetensors`` (sentence_emb, word_emb, word_mask, text_index, caption_video) and
    ``videos.csv`` / ``texts.csv`` mapping indices to video ids and captions.

    Args:
        output_dir: directory for the files (with several processes, one file set per rank: ``rank<N>-*``).
    """

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        prefix = f"rank{trainer.global_rank}-" if trainer.world_size > 1 else ""
        if predictions and not isinstance(predictions[0], list):
            predictions = [predictions]
        for name, batches in zip(("videos", "texts"), predictions):
            if batches:
                tensors = {k: torch.cat([b[k] for b in batches]).cpu().contiguous() for k in batches[0]}
                tensors = {k: (v.to(torch.uint8) if v.dtype == torch.bool else v) for k, v in tensors.items()}
                save_file(tensors, str(out / f"{prefix}{name}.safetensors"))
        self._write_indexes(trainer.datamodule, out, prefix)

    @staticmethod
    def _write_indexes(datamodule, out: Path, prefix: str) -> None:
        records = getattr(datamodule, "predict_records", None)
        if not records:
            return
        pd.DataFrame({"video_index": range(len(records)), "video_id": [r.video_id for r in records],
                      "path": [str(r.path) for r in records]}).to_csv(out / f"{prefix}videos.csv", index=False)
        rows = [(vi, c) for vi, r in enumerate(records) for c in r.captions]
        pd.DataFrame({"text_index": range(len(rows)), "video_index": [v for v, _ in rows],
                      "caption": [c for _, c in rows]}).to_csv(out / f"{prefix}texts.csv", index=False)
