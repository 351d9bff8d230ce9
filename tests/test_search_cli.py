"""`xclip-pl predict` then `xclip-pl search` on a tiny trained run: coarse-to-fine equals the exact ranking."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import yaml

from xclip_pl.cli import build_cli
from xclip_pl.module import XCLIPRetrieval
from xclip_pl.tools.search import load_embeddings, rank_videos
from xclip_pl.tools.search_cli import search


def test_predict_then_search(tmp_path):
    config = {"seed_everything": 0,
              "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_progress_bar": False,
                          "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run"),
                          "callbacks": [{"class_path": "xclip_pl.callbacks.tokenizer.TokenizerCopy"}]},
              "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}}},
              "data": {"class_path": "datamodules.synthetic.SyntheticDataModule",
                       "init_args": {"root": str(tmp_path / "data"), "num_train": 12, "num_test": 8, "max_words": 16,
                                     "max_frames": 3, "image_size": 32, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    fit = build_cli(["fit", "--config", str(path), "--test_after_fit", "false"])
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    assert (Path(ckpt).parent.parent / "tokenizer" / "vocab.json").is_file()  # the run's tokenizer, beside it
    emb = tmp_path / "emb"
    build_cli(["predict", "--config", str(path), "--ckpt_path", ckpt, "--prediction_writer.output_dir", str(emb)])
    texts = pd.read_csv(emb / "texts.csv")
    assert len(texts) == 8 and {"video_id", "path"} <= set(pd.read_csv(emb / "videos.csv").columns)

    model = XCLIPRetrieval.load_from_checkpoint(ckpt, map_location="cpu").eval().model
    text, video, videos_df, _ = load_embeddings(emb)
    exact, _ = rank_videos(model, text, video, k=None)
    for row in range(3):
        coarse_to_fine = search(str(emb), ckpt, query=texts.caption[row], top=3, shortlist=5)[0]
        assert [r["video_index"] for r in coarse_to_fine] == exact[row, :3].tolist()
    by_video = search(str(emb), ckpt, video_id="video12", top=2, shortlist=None)[0]
    assert len(by_video) == 2 and all("caption" in r for r in by_video)
    torch.testing.assert_close(torch.tensor([r["score"] for r in by_video]).sort(descending=True).values,
                               torch.tensor([r["score"] for r in by_video]))
