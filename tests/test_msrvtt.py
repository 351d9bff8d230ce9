"""MSR-VTT parsing, the base datamodule's validation and its dataloaders, on files written here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_media import write_video

from datamodules.msrvtt import MSRVTTDataModule
from datamodules.synthetic import SyntheticDataModule

TRAIN = [f"video{i}" for i in range(6)]
TEST = [f"video{i}" for i in range(6, 10)]
CAPTIONS_PER_VIDEO = 3
WEBM = "video3"


def caption(video_id: str, k: int) -> str:
    return f"clip {video_id} shows a red circle number {k}"


def write_msrvtt(root: Path, train=TRAIN, test=TEST) -> Path:
    """A miniature MSR-VTT: JSON with every caption, the 9k train CSV, the JSFusion test CSV, videos."""
    sentences = [{"video_id": v, "caption": caption(v, k), "sen_id": len(train) * k + i}
                 for k in range(CAPTIONS_PER_VIDEO) for i, v in enumerate([*train, *test])]
    data = {"videos": [{"video_id": v, "url": "", "split": "train"} for v in [*train, *test]], "sentences": sentences}
    root.mkdir(parents=True, exist_ok=True)
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    pd.DataFrame({"video_id": train}).to_csv(root / "MSRVTT_train.9k.csv", index=False)
    pd.DataFrame({"key": [f"ret{i}" for i in range(len(test))], "vid_key": [f"msr{v[5:]}" for v in test],
                  "video_id": test, "sentence": [f"the test sentence of {v}" for v in test]}
                 ).to_csv(root / "MSRVTT_JSFUSION_test.csv", index=False)
    for i, v in enumerate([*train, *test]):
        write_video(root / "videos" / "all" / f"{v}{'.webm' if v == WEBM else '.mp4'}", num_frames=24, seed=i)
    return root


@pytest.fixture(scope="module")
def msrvtt_root(tmp_path_factory) -> Path:
    return write_msrvtt(tmp_path_factory.mktemp("msrvtt"))


def make_dm(root: Path, tmp_path: Path, cls=MSRVTTDataModule, **kwargs):
    args = dict(max_frames=4, image_size=32, batch_size=4, eval_batch_size=3, num_workers=0,
                tokenizer_dir=str(tmp_path / "tok"), tokenizer_vocab_size=600)
    return cls(root=str(root), **{**args, **kwargs})


def test_train_pairs_expand_every_json_caption(msrvtt_root, tmp_path):
    dm = make_dm(msrvtt_root, tmp_path)
    records = dm.load_records("train")
    assert [r.video_id for r in records] == TRAIN
    assert records[1].captions == [caption("video1", k) for k in range(CAPTIONS_PER_VIDEO)]
    dm.setup("fit")
    records = dm.records["train"]  # the base class found the files
    assert records[3].path.name == "video3.webm" and records[0].path.name == "video0.mp4"  # webm fallback
    assert len(dm._datasets["train"]) == len(TRAIN) * CAPTIONS_PER_VIDEO  # 18 pairs


def test_val_and_test_come_from_the_jsfusion_csv(msrvtt_root, tmp_path):
    dm = make_dm(msrvtt_root, tmp_path)
    test = dm.load_records("test")
    assert [r.video_id for r in test] == TEST
    assert all(r.captions == [f"the test sentence of {r.video_id}"] for r in test)
    assert [(r.video_id, r.captions) for r in dm.load_records("val")] == [(r.video_id, r.captions) for r in test]


def test_train_csv_argument_selects_the_7k_list(msrvtt_root, tmp_path):
    root = tmp_path / "seven"
    root.mkdir()
    for name in ("MSRVTT_data.json", "MSRVTT_JSFUSION_test.csv", "videos"):
        (root / name).symlink_to(msrvtt_root / name)
    pd.DataFrame({"video_id": TRAIN[:2]}).to_csv(root / "MSRVTT_train.7k.csv", index=False)
    dm = make_dm(root, tmp_path, train_csv="MSRVTT_train.7k.csv", batch_size=2)
    dm.setup("fit")
    assert [r.video_id for r in dm.records["train"]] == TRAIN[:2] and len(dm._datasets["train"]) == 6


def test_dataloaders_yield_documented_keys_shapes_and_dtypes(msrvtt_root, tmp_path):
    dm = make_dm(msrvtt_root, tmp_path)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 18 // 4  # drop_last
    batch = train[0]
    assert set(batch) == {"frames", "frame_mask", "input_ids", "attention_mask", "index", "video_index", "video_ok"}
    assert batch["frames"].shape == (4, 4, 32, 32, 3) and batch["frames"].dtype == torch.uint8
    assert batch["frame_mask"].dtype == torch.bool and batch["frame_mask"].sum(1).tolist() == [3] * 4  # 3 s of video
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 32)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["video_ok"].all() and batch["index"].dtype == torch.long
    assert (batch["input_ids"].argmax(1) == batch["attention_mask"].sum(1) - 1).all()
    videos, captions = dm.val_dataloader()
    vb = next(iter(videos))
    assert set(vb) == {"frames", "frame_mask", "video_index", "video_ok"} and vb["video_index"].tolist() == [0, 1, 2]
    cb = [b for b in captions]
    assert set(cb[0]) == {"input_ids", "attention_mask", "text_index", "video_index"}
    assert torch.cat([b["text_index"] for b in cb]).tolist() == [0, 1, 2, 3]  # no drop_last, no shuffle
    assert torch.cat([b["video_index"] for b in cb]).tolist() == [0, 1, 2, 3]


def test_test_stage_reuses_the_offline_tokenizer_and_saves_it(msrvtt_root, tmp_path):
    fit = make_dm(msrvtt_root, tmp_path)
    fit.setup("fit")
    test = make_dm(msrvtt_root, tmp_path)
    test.setup("test")
    assert test.tokenizer.get_vocab() == fit.tokenizer.get_vocab() and len(test.test_dataloader()) == 2
    assert [r.video_id for r in test.predict_records] == TEST and len(test.predict_dataloader()) == 2
    assert list((tmp_path / "tok").iterdir()) == [fit.offline_tokenizer_dir(
        [c for r in fit.records["train"] for c in r.captions])]
    saved = fit.save_tokenizer(tmp_path / "run" / "tokenizer")
    again = make_dm(msrvtt_root, tmp_path, tokenizer=str(saved))
    again.setup("validate")
    assert again.tokenizer.get_vocab() == fit.tokenizer.get_vocab() and "train" not in again.records


def copy_root(src: Path, dst: Path) -> Path:
    """A writable copy of the annotation files with the videos linked one by one."""
    dst.mkdir()
    for name in ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv"):
        (dst / name).write_bytes((src / name).read_bytes())
    (dst / "videos" / "all").mkdir(parents=True)
    for video in (src / "videos" / "all").iterdir():
        (dst / "videos" / "all" / video.name).symlink_to(video)
    return dst


def test_error_missing_annotation_file(msrvtt_root, tmp_path):
    root = copy_root(msrvtt_root, tmp_path / "d")
    (root / "MSRVTT_data.json").unlink()
    with pytest.raises(ValueError) as err:
        make_dm(root, tmp_path).setup("fit")
    assert "annotation file (data_json) not found" in str(err.value) and str(root / "MSRVTT_data.json") in str(err.value)


def test_error_missing_video_directory_is_reported_once_for_all_splits(msrvtt_root, tmp_path):
    root = copy_root(msrvtt_root, tmp_path / "d")
    (root / "videos" / "all").rename(root / "videos" / "elsewhere")
    with pytest.raises(ValueError) as err:
        make_dm(root, tmp_path).setup("fit")
    message = str(err.value)
    assert "1 problem(s)" in message and "[train, val] video directory (video_dir) not found" in message
    assert str(root / "videos" / "all") in message


def test_error_lists_missing_videos_and_empty_captions_in_one_message(msrvtt_root, tmp_path):
    root = copy_root(msrvtt_root, tmp_path / "d")
    for v in ("video1.mp4", "video4.mp4", "video7.mp4"):
        (root / "videos" / "all" / v).unlink()
    data = json.loads((root / "MSRVTT_data.json").read_text())
    data["sentences"][0]["caption"] = "   "  # video0, its first caption
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        make_dm(root, tmp_path).setup("fit")
    message = str(err.value)
    assert "[train] 2 of 6 videos named in the annotations are missing on disk: 'video1', 'video4'" in message
    assert "[val] 1 of 4 videos" in message and "'video7'" in message
    assert f"1 empty caption(s): {root / 'MSRVTT_data.json'}, sentences[0] (video 'video0')" in message


def test_error_empty_split_and_video_without_captions(msrvtt_root, tmp_path):
    root = copy_root(msrvtt_root, tmp_path / "d")
    pd.DataFrame({"video_id": []}).to_csv(root / "MSRVTT_train.9k.csv", index=False)
    with pytest.raises(ValueError, match=r"\[train\] the split is empty"):
        make_dm(root, tmp_path).setup("fit")
    pd.DataFrame({"video_id": ["video0", "video99"]}).to_csv(root / "MSRVTT_train.9k.csv", index=False)
    write_video(root / "videos" / "all" / "video99.mp4", num_frames=8)
    dm = make_dm(root, tmp_path)  # a listed video without captions is left out, as the reference's pairs do
    with pytest.warns(UserWarning, match=r"\[train\]: 1 of 2 videos have no caption in the annotations and are left "
                                         r"out: 'video99'"):
        dm.setup("fit")
    assert [r.video_id for r in dm.records["train"]] == ["video0"]
    pd.DataFrame({"vid": ["video0"]}).to_csv(root / "MSRVTT_train.9k.csv", index=False)
    with pytest.raises(ValueError, match=r"MSRVTT_train.9k.csv, line 1: missing column\(s\) \['video_id'\]"):
        make_dm(root, tmp_path).setup("fit")


def test_bad_video_gives_an_empty_clip_and_a_warning(msrvtt_root, tmp_path):
    root = copy_root(msrvtt_root, tmp_path / "d")
    (root / "videos" / "all" / "video6.mp4").unlink()
    (root / "videos" / "all" / "video6.mp4").write_bytes(b"not a video")
    dm = make_dm(root, tmp_path)
    dm.setup("test")
    with pytest.warns(RuntimeWarning, match="video6"):
        item = dm._datasets["test"][0][0]
    assert not item["video_ok"] and not item["frame_mask"].any() and not item["frames"].any()
    assert item["frames"].shape == (4, 32, 32, 3)


def test_frame_cache_is_written_and_reused(msrvtt_root, tmp_path, monkeypatch):
    dm = make_dm(msrvtt_root, tmp_path, frame_cache=True, frame_cache_dir=str(tmp_path / "frames"))
    dm.setup("test")
    videos = dm._datasets["test"][0]
    first = videos[1]
    assert len(list((tmp_path / "frames").glob("*.npy"))) == 2 and not list((tmp_path / "frames").glob("*.tmp"))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr("xclip_pl.data.video.decode_clip", no_decode)
    second = videos[1]
    assert torch.equal(first["frames"], second["frames"]) and torch.equal(first["frame_mask"], second["frame_mask"])


def test_loader_options(msrvtt_root, tmp_path):
    dm = make_dm(msrvtt_root, tmp_path, num_workers=2, batch_size=32)
    dm.setup("fit")
    videos, captions = dm.val_dataloader()
    assert videos.persistent_workers and videos.num_workers == 2 and captions.num_workers == 1
    assert videos.drop_last is False and captions.persistent_workers
    with pytest.raises(ValueError, match="fewer than batch_size=32"):
        dm.train_dataloader()
    with pytest.raises(RuntimeError, match=r"call setup\('test'\)"):
        dm.test_dataloader()


def test_synthetic_datamodule_generates_then_reads_msrvtt(tmp_path, monkeypatch):
    import xclip_pl.data.synthetic as synthetic

    calls = []

    def fake_ensure(root, **kwargs):
        calls.append(kwargs)
        if not (Path(root) / "MSRVTT_data.json").exists():
            write_msrvtt(Path(root), train=TRAIN[:2], test=TEST[:2])
        return Path(root)

    monkeypatch.setattr(synthetic, "ensure_synthetic_msrvtt", fake_ensure, raising=False)
    dm = make_dm(tmp_path / "syn", tmp_path, cls=SyntheticDataModule, num_train=2, num_test=2, synthetic_seed=3,
                 batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert calls[0] == {"num_train": 2, "num_test": 2, "seed": 3} and len(dm._datasets["train"]) == 6
    assert dm.hparams["num_train"] == 2 and dm.hparams["image_size"] == 32 and dm.hparams["video_dir"] == "videos/all"
    assert np.array_equal(next(iter(dm.train_dataloader()))["input_ids"].shape, (2, 32))


def test_test_stage_needs_train_captions_only_but_fit_still_checks_train_videos(msrvtt_root, tmp_path):
    root = copy_root(msrvtt_root, tmp_path / "d")
    (root / "videos" / "all" / "video2.mp4").unlink()
    dm = make_dm(root, tmp_path)
    dm.setup("test")  # the offline tokenizer reads the training captions; their videos are not needed
    assert "train" in dm.records and dm.tokenizer is not None
    with pytest.raises(ValueError, match=r"\[train\] 1 of 6 videos .* 'video2'"):
        dm.setup("fit")
