"""The MSVD, LSMDC, DiDeMo, ActivityNet and folder datamodules on miniature trees in the real formats, and what
the base class does the same way for every plugin (video lookup, videos without captions, missing videos)."""
from __future__ import annotations

import inspect
import json
import pickle
from pathlib import Path

import pytest
from helpers_media import write_video

from datamodules.activitynet import ActivityNetDataModule
from datamodules.didemo import DiDeMoDataModule
from datamodules.folder import FolderDataModule
from datamodules.lsmdc import LSMDCDataModule
from datamodules.msrvtt import MSRVTTDataModule
from datamodules.msvd import MSVDDataModule
from datamodules.synthetic import SyntheticDataModule
from xclip_pl.data.datamodule import VideoTextDataModule
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.synthetic_formats import write_synthetic


def make_dm(cls, root: Path, tmp_path: Path, **kwargs):
    args = dict(max_frames=4, image_size=32, batch_size=2, eval_batch_size=3, num_workers=0,
                tokenizer_dir=str(tmp_path / "tok"), tokenizer_vocab_size=600)
    return cls(root=str(root), **{**args, **kwargs})


def setup_all(dm) -> dict:
    """Set up every stage; the datasets of all of them, ``split -> dataset(s)`` (a later setup may rebuild them)."""
    datasets = {}
    for stage in ("fit", "validate", "test"):
        dm.setup(stage)
        datasets.update(dm._datasets)
    return datasets


def ids(dm, split: str) -> list[str]:
    return [r.video_id for r in dm.records[split]]


def caption_videos(datasets: dict, split: str) -> list[int]:
    """The video index of every evaluation caption, in order (each caption a query)."""
    captions = datasets[split][1]
    return [captions[i]["video_index"] for i in range(len(captions))]


def setup_error(dm, stage: str = "fit") -> str:
    with pytest.raises(ValueError) as err:
        dm.setup(stage)
    return str(err.value)


# ---- MSVD -----------------------------------------------------------------------------------------
MSVD_SPLITS = {"train": ["-4wsuPCjDBc_5_15", "b_1_2", "c_0_4"], "val": ["d_3_9"], "test": ["e_1_5", "f_0_2"]}
MSVD_COUNTS = {"-4wsuPCjDBc_5_15": 3, "b_1_2": 2, "c_0_4": 1, "d_3_9": 2, "e_1_5": 3, "f_0_2": 1}
MSVD_FILES = {"-4wsuPCjDBc_5_15": "a/-4wsuPCjDBc_5_15.avi", "b_1_2": "b_1_2.avi", "c_0_4": "deep/er/c_0_4.mp4",
              "d_3_9": "d_3_9.avi", "e_1_5": "e_1_5.mp4", "f_0_2": "f_0_2.avi"}


def msvd_tokens(video_id: str, k: int) -> list[str]:
    return ["a", "man", "plays", "clip", video_id.split("_")[0].lower(), "take", str(k)]


def write_msvd(root: Path) -> Path:
    for split, split_ids in MSVD_SPLITS.items():
        (root / f"{split}_list.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}_list.txt").write_text("\n".join(split_ids) + "\n\n")
    captions = {v: [msvd_tokens(v, k) for k in range(n)] for v, n in MSVD_COUNTS.items()}
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    for i, (video_id, file) in enumerate(MSVD_FILES.items()):
        write_video(root / "YouTubeClips" / file, num_frames=16, seed=i)
    (root / "YouTubeClips" / "a" / "-4wsuPCjDBc_5_15.txt").write_text("not the video")  # same stem: ignored
    return root


@pytest.fixture(scope="module")
def msvd_root(tmp_path_factory) -> Path:
    return write_msvd(tmp_path_factory.mktemp("msvd"))


def test_msvd_multi_caption_records_for_every_split(msvd_root, tmp_path):
    dm = make_dm(MSVDDataModule, msvd_root, tmp_path)
    data = setup_all(dm)
    assert {s: ids(dm, s) for s in ("train", "val", "test")} == MSVD_SPLITS
    first = dm.records["train"][0]
    assert first.captions == [" ".join(msvd_tokens(first.video_id, k)) for k in range(3)]
    assert first.path == msvd_root / "YouTubeClips" / "a" / "-4wsuPCjDBc_5_15.avi"
    assert dm.records["train"][2].path.name == "c_0_4.mp4" and first.start is first.end is None
    assert len(data["train"]) == 6  # one training pair per caption
    videos, _ = data["test"]
    assert len(videos) == 2 and caption_videos(data, "test") == [0, 0, 0, 1]  # 4 queries, 2 videos
    assert caption_videos(data, "val") == [0, 0] and videos[1]["frame_mask"].sum() == 2


def test_msvd_errors_name_the_file(msvd_root, tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    for name in ("train_list.txt", "val_list.txt", "test_list.txt", "YouTubeClips"):
        (root / name).symlink_to(msvd_root / name)
    (root / "raw-captions.pkl").write_bytes(pickle.dumps([["a", "b"]]))
    message = setup_error(make_dm(MSVDDataModule, root, tmp_path), "validate")
    assert f"{root / 'raw-captions.pkl'}: expected a pickled dict" in message
    (root / "raw-captions.pkl").write_text("garbage")
    assert "not a readable pickle" in setup_error(make_dm(MSVDDataModule, root, tmp_path), "validate")
    (root / "raw-captions.pkl").write_bytes(pickle.dumps({"d_3_9": [["x"]]}))
    message = setup_error(make_dm(MSVDDataModule, root, tmp_path), "test")
    assert "[test] 2 videos have no caption: 'e_1_5', 'f_0_2'" in message


def test_msvd_missing_videos_error_or_skip(msvd_root, tmp_path):
    root = tmp_path / "m"
    (root / "YouTubeClips").mkdir(parents=True)
    for name in ("train_list.txt", "val_list.txt", "test_list.txt", "raw-captions.pkl"):
        (root / name).symlink_to(msvd_root / name)
    for video_id, file in MSVD_FILES.items():
        if video_id != "e_1_5":
            (root / "YouTubeClips" / Path(file).name).symlink_to(msvd_root / "YouTubeClips" / file)
    message = setup_error(make_dm(MSVDDataModule, root, tmp_path), "test")
    assert "[test] 1 of 2 videos named in the annotations are missing on disk: 'e_1_5'" in message
    assert str(root / "YouTubeClips" / "e_1_5.avi") in message
    dm = make_dm(MSVDDataModule, root, tmp_path, missing_videos="skip")
    with pytest.warns(UserWarning, match=r"skipping 1 of 2 records whose video is missing.*'e_1_5'"):
        dm.setup("test")
    assert ids(dm, "test") == ["f_0_2"]


# ---- LSMDC ----------------------------------------------------------------------------------------
TIMES = "00.00.51.926\t00.00.54.129\t00.00.51.000\t00.00.55.000"
LSMDC_LINES = {
    "LSMDC16_annos_training.csv": [
        ("0001_Movie_A_00.00.01.000-00.00.03.000", "SOMEONE opens the door."),
        ("0001_Movie_A_00.00.04.000-00.00.06.000", 'He says, "hello, there" and leaves.'),
        ("0001_Movie_A_00.00.01.000-00.00.03.000", "SOMEONE looks around, then smiles."),
        ("0002_Movie_B_00.01.00.000-00.01.02.000", "The car drives off."),
    ],
    "LSMDC16_annos_val.csv": [("0003_Movie_C_00.00.10.000-00.00.12.000", "Rain falls."),
                              ("0003_Movie_C_00.00.20.000-00.00.22.000", "'Quiet,' she whispers.")],
    "LSMDC16_challenge_1000_publictect.csv": [("0004_Movie_D_00.00.05.000-00.00.08.000", "A dog barks.")],
}


def write_lsmdc(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for name, lines in LSMDC_LINES.items():
        text = "".join(f"{clip}\t{TIMES}\t{sentence}\r\n" for clip, sentence in lines)
        (root / name).write_text(text + "\n", encoding="utf-8", newline="")
        clips += [clip for clip, _ in lines if clip not in clips]
    for i, clip in enumerate(clips):
        write_video(root / "videos" / clip[:12] / f"{clip}{'.avi' if i % 2 else '.mp4'}", num_frames=16, seed=i)
    return root


@pytest.fixture(scope="module")
def lsmdc_root(tmp_path_factory) -> Path:
    return write_lsmdc(tmp_path_factory.mktemp("lsmdc"))


def test_lsmdc_one_record_per_line_in_every_split(lsmdc_root, tmp_path):
    dm = make_dm(LSMDCDataModule, lsmdc_root, tmp_path)
    data = setup_all(dm)
    train = dm.records["train"]
    clip = LSMDC_LINES["LSMDC16_annos_training.csv"][0][0]
    assert [r.video_id for r in train] == [clip, LSMDC_LINES["LSMDC16_annos_training.csv"][1][0], f"{clip}#2",
                                           "0002_Movie_B_00.01.00.000-00.01.02.000"]
    assert [r.captions for r in train][1:3] == [['He says, "hello, there" and leaves.'],
                                                 ["SOMEONE looks around, then smiles."]]
    assert train[0].path == train[2].path == lsmdc_root / "videos" / "0001_Movie_A" / f"{clip}.mp4"
    assert train[1].path.suffix == ".avi" and train[0].start is None
    assert len(dm.records["val"]) == 2 and dm.records["val"][1].captions == ["'Quiet,' she whispers."]
    assert ids(dm, "test") == ["0004_Movie_D_00.00.05.000-00.00.08.000"]
    assert caption_videos(data, "val") == [0, 1] and len(data["train"]) == 4


@pytest.mark.parametrize("line, expected", [
    ("clip_x\t00.00.01.000\t00.00.02.000\t00.00.01.000\tonly five fields", "line 2: expected 6 tab-separated fields"),
    (f"clip_x\t{TIMES}\t   ", "line 2: empty sentence"),
    (f"clip_x\t{TIMES}\ta sentence\twith a tab", "line 2: expected 6 tab-separated fields"),
])
def test_lsmdc_malformed_line_names_file_and_line(lsmdc_root, tmp_path, line, expected):
    root = tmp_path / "l"
    root.mkdir()
    for name in ("LSMDC16_annos_val.csv", "LSMDC16_challenge_1000_publictect.csv", "videos"):
        (root / name).symlink_to(lsmdc_root / name)
    good = f"0002_Movie_B_00.01.00.000-00.01.02.000\t{TIMES}\tThe car drives off.\n"
    (root / "LSMDC16_annos_training.csv").write_text(good + line + "\n" + good)
    message = setup_error(make_dm(LSMDCDataModule, root, tmp_path))
    assert f"{root / 'LSMDC16_annos_training.csv'}, {expected}" in message and "[train]" in message


# ---- DiDeMo ---------------------------------------------------------------------------------------
DIDEMO_SPLITS = {"train": ["v1.mov", "v2.mp4", "v3.avi", "v4.m4v", "nojson.mov"], "val": ["v5.mov"],
                 "test": ["v6.3gp", "v7.mov"]}
DIDEMO_FILES = {"v1.mov": ["v1.mov.mp4", "v1.mp4"], "v2.mp4": ["v2.mp4"], "v3.avi": ["sub/v3.mp4"],
                "v4.m4v": ["v4.m4v.mp4"], "v5.mov": ["v5.mov.mp4"], "v6.3gp": ["v6.3gp"], "v7.mov": ["v7.mov.mp4"]}


def didemo_descriptions(video: str) -> list[str]:
    return [f"  the first moment of {video} ", f"then {video} changes", f"finally {video} ends"]


def write_didemo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, videos in DIDEMO_SPLITS.items():
        (root / f"{split}_list.txt").write_text("\n".join(videos) + "\n")
        described = [v for v in videos if v != "nojson.mov"]
        entries = [{"description": didemo_descriptions(v)[k], "times": [[k, k], [k, k + 1]], "video": v,
                    "annotation_id": k, "dl_link": ""} for k in range(3) for v in described]  # interleaved
        (root / f"{split}_data.json").write_text(json.dumps(entries))
    for i, files in enumerate(DIDEMO_FILES.values()):
        for file in files:
            write_video(root / "videos" / file, num_frames=32, seed=i, codec="libx264")  # 4 s
    return root


@pytest.fixture(scope="module")
def didemo_root(tmp_path_factory) -> Path:
    return write_didemo(tmp_path_factory.mktemp("didemo"))


def test_didemo_paragraphs_windows_and_file_names(didemo_root, tmp_path):
    dm = make_dm(DiDeMoDataModule, didemo_root, tmp_path)
    data = setup_all(dm)
    assert ids(dm, "train") == ["v1.mov", "v2.mp4", "v3.avi", "v4.m4v"]  # list ∩ JSON
    assert ids(dm, "val") == ["v5.mov"] and ids(dm, "test") == ["v6.3gp", "v7.mov"]
    record = dm.records["train"][0]
    assert record.captions == ["the first moment of v1.mov then v1.mov changes finally v1.mov ends"]
    assert (record.start, record.end) == (0.0, 31.0) and len(data["train"]) == 4
    names = {r.video_id: r.path.relative_to(didemo_root / "videos").as_posix() for s in dm.records.values() for r in s}
    assert names == {"v1.mov": "v1.mov.mp4", "v2.mp4": "v2.mp4", "v3.avi": "sub/v3.mp4", "v4.m4v": "v4.m4v.mp4",
                     "v5.mov": "v5.mov.mp4", "v6.3gp": "v6.3gp", "v7.mov": "v7.mov.mp4"}
    assert caption_videos(data, "test") == [0, 1] and data["test"][0][0]["frame_mask"].sum() == 4


def test_didemo_window_end(didemo_root, tmp_path):
    short = make_dm(DiDeMoDataModule, didemo_root, tmp_path, window_end=1.0)
    short.setup("validate")
    assert (short.records["val"][0].start, short.records["val"][0].end) == (0.0, 1.0)
    assert short._datasets["val"][0][0]["frame_mask"].tolist() == [True, True, False, False]  # seconds 0 and 1
    whole = make_dm(DiDeMoDataModule, didemo_root, tmp_path, window_end=None)
    whole.setup("validate")
    assert whole.records["val"][0].start is whole.records["val"][0].end is None


def test_didemo_errors(didemo_root, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for name in ("train_list.txt", "train_data.json", "val_list.txt", "test_list.txt", "test_data.json", "videos"):
        (root / name).symlink_to(didemo_root / name)
    (root / "val_data.json").write_text(json.dumps([{"description": "x", "video": "v5.mov"}, {"video": "v5.mov"}]))
    message = setup_error(make_dm(DiDeMoDataModule, root, tmp_path))
    assert f"{root / 'val_data.json'}: entry [1] lacks 'video' or 'description'" in message
    (root / "val_data.json").write_text(json.dumps([{"description": "x", "video": "v8.mov"}]))
    (root / "val_list.txt").unlink()
    (root / "val_list.txt").write_text("v8.mov\n")
    message = setup_error(make_dm(DiDeMoDataModule, root, tmp_path), "validate")
    assert "'v8.mov'" in message and str(root / "videos" / "v8.mov.mp4") in message


def delete_videos(root: Path, split: str, count: int) -> list[str]:
    """Delete the files of the first ``count`` ids of a DiDeMo ``<split>_list.txt`` (``<id>.mp4`` or
    ``<id without extension>.mp4`` under ``videos/``); the ids."""
    gone = (root / f"{split}_list.txt").read_text().split()[:count]
    for video_id in gone:
        files = [root / "videos" / f"{video_id}.mp4", root / "videos" / f"{Path(video_id).stem}.mp4"]
        assert sum(f.is_file() for f in files) == 1
        next(f for f in files if f.is_file()).unlink()
    return gone


def test_missing_videos_error_counts_them_and_names_the_skip_key(tmp_path):
    root = write_synthetic(tmp_path / "didemo", "didemo", num_train=4, num_val=2, num_test=2, captions_per_video=2,
                           seconds=1.0, width=32, height=32)
    gone = delete_videos(root, "train", 2) + delete_videos(root, "val", 1)
    message = setup_error(make_dm(DiDeMoDataModule, root, tmp_path))
    assert "[train] 2 of 4 videos named in the annotations are missing on disk" in message
    assert "[val] 1 of 2 videos named in the annotations are missing on disk" in message
    assert all(repr(video_id) in message for video_id in gone)
    assert "3 videos are missing (train: 2, val: 1)" in message
    assert "set `data.init_args.missing_videos: skip`" in message and "as the reference does" in message
    dm = make_dm(DiDeMoDataModule, root, tmp_path, missing_videos="skip")  # what the message says works
    with pytest.warns(UserWarning, match="skipping 2 of 4 records whose video is missing"):
        dm.setup("fit")
    assert len(dm.records["train"]) == 2 and len(dm.records["val"]) == 1


def test_missing_videos_is_a_setting_of_every_datamodule_folder_included(tmp_path):
    root = write_synthetic(tmp_path / "folder", "folder", num_train=3, num_val=2, num_test=2, captions_per_video=1,
                           seconds=2.0, width=32, height=32)
    (root / "videos" / "train" / "clip0000.mp4").unlink()
    message = setup_error(make_dm(FolderDataModule, root, tmp_path))
    assert "[train] 1 of 3 videos named in the annotations are missing on disk" in message
    assert "1 video is missing (train: 1): add the file(s) or remove them from the annotations" in message
    assert "set `data.init_args.missing_videos: skip`" in message
    dm = make_dm(FolderDataModule, root, tmp_path, missing_videos="skip")  # what the message says works
    with pytest.warns(UserWarning, match=r"FolderDataModule \[train\]: skipping 1 of 3 records whose video is missing"):
        dm.setup("fit")
    assert len(dm.records["train"]) == 2 and len(dm.records["val"]) == 2


# ---- ActivityNet ----------------------------------------------------------------------------------
ANET = {"train": {"v_QOlSCBRmfWY": ["  A man stands.", "He waves.  "], "v_ehGHCYKzyZ8": ["Kids play ball."]},
        "val": {"v_nwznKOuZM7w": ["A dog runs.", " It jumps."], "v_ogQozSI5V8U": ["Rain, then sun."]}}


def write_activitynet(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = (("train", "train_ids.json", "train.json"), ("val", "val_ids.json", "val_1.json"))
    for split, ids_name, json_name in files:
        (root / ids_name).write_text(json.dumps(list(ANET[split])))
        data = {k: {"duration": 2.0, "timestamps": [[0, 1]] * len(s), "sentences": s} for k, s in ANET[split].items()}
        (root / json_name).write_text(json.dumps(data))
    files = ["v_QOlSCBRmfWY.mp4", "x/ehGHCYKzyZ8.avi", "v_nwznKOuZM7w.mp4", "ogQozSI5V8U.mp4"]
    for i, file in enumerate(files):
        write_video(root / "videos" / file, num_frames=16, seed=i)
    return root


@pytest.fixture(scope="module")
def anet_root(tmp_path_factory) -> Path:
    return write_activitynet(tmp_path_factory.mktemp("anet"))


def test_activitynet_paragraphs_and_val_is_test(anet_root, tmp_path):
    dm = make_dm(ActivityNetDataModule, anet_root, tmp_path)
    data = setup_all(dm)
    assert ids(dm, "train") == list(ANET["train"]) and ids(dm, "val") == ids(dm, "test") == list(ANET["val"])
    assert [r.captions for r in dm.records["train"]] == [["A man stands. He waves."], ["Kids play ball."]]
    assert dm.records["val"][0].captions == ["A dog runs. It jumps."]
    assert [r.path.name for r in dm.records["train"]] == ["v_QOlSCBRmfWY.mp4", "ehGHCYKzyZ8.avi"]
    assert dm.records["test"][1].path.name == "ogQozSI5V8U.mp4"
    assert all(r.start is None and r.end is None for s in dm.records.values() for r in s)
    assert caption_videos(data, "test") == [0, 1] and len(data["train"]) == 2


def test_activitynet_errors(anet_root, tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    for name in ("train_ids.json", "train.json", "val_ids.json", "videos"):
        (root / name).symlink_to(anet_root / name)
    (root / "val_1.json").write_text(json.dumps({"v_nwznKOuZM7w": {"duration": 2.0, "timestamps": []}}))
    message = setup_error(make_dm(ActivityNetDataModule, root, tmp_path), "test")
    assert f"{root / 'val_1.json'}: entry 'v_nwznKOuZM7w' lacks a 'sentences' list" in message
    (root / "val_1.json").write_text(json.dumps({"v_nwznKOuZM7w": {"sentences": ["x"]}}))
    dm = make_dm(ActivityNetDataModule, root, tmp_path)  # a listed video without sentences: left out, as the reference
    with pytest.warns(UserWarning, match=r"\[test\]: 1 of 2 videos have no caption in the annotations and are left "
                                         r"out: 'v_ogQozSI5V8U'"):
        dm.setup("test")
    assert ids(dm, "test") == ["v_nwznKOuZM7w"]
    (root / "val_1.json").write_text(json.dumps({"v_nwznKOuZM7w": {"sentences": [" "]}}))
    assert "2 videos have no caption: 'v_nwznKOuZM7w', 'v_ogQozSI5V8U'" in setup_error(
        make_dm(ActivityNetDataModule, root, tmp_path), "test")  # none has one: an error, not an empty split


# ---- folder ---------------------------------------------------------------------------------------
FOLDER_CSV = """video,caption,split,start,end
clips/a.mp4,a red ball rolls,train,,
clips/b.mp4,"a cat, then a dog",train,0.5,2
clips/a.mp4,the ball rolls away,train,,
clips/b.mp4,two animals,train,0.5,2.0
clips/c.avi,someone waves,val,,
clips/c.avi,a hand moves,val,,
clips/d.mp4,a bird flies,test,,1
"""


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    for i, name in enumerate(("a.mp4", "b.mp4", "c.avi", "d.mp4")):
        write_video(root / "clips" / name, num_frames=24, seed=i)  # 3 s
    (root / "captions.csv").write_text(FOLDER_CSV)
    return root


def test_folder_csv_groups_captions_and_windows(folder_root, tmp_path):
    dm = make_dm(FolderDataModule, folder_root, tmp_path, annotations="captions.csv")
    data = setup_all(dm)
    assert ids(dm, "train") == ["clips/a.mp4", "clips/b.mp4"] and ids(dm, "val") == ["clips/c.avi"]
    a, b = dm.records["train"]
    assert a.captions == ["a red ball rolls", "the ball rolls away"] and (a.start, a.end) == (None, None)
    assert b.captions == ["a cat, then a dog", "two animals"] and (b.start, b.end) == (0.5, 2.0)
    assert b.path == folder_root / "clips" / "b.mp4" and len(data["train"]) == 4
    test = dm.records["test"][0]
    assert caption_videos(data, "val") == [0, 0] and (test.start, test.end) == (None, 1.0)
    assert data["test"][0][0]["frame_mask"].sum() == 2  # seconds 0 and 1 of 3


def test_folder_jsonl_without_split_holds_out_val(folder_root, tmp_path):
    rows = [{"video": f"{v}", "caption": f"caption {k} of {v}"} for v in ("a.mp4", "b.mp4", "c.avi", "d.mp4")
            for k in range(2)]
    path = tmp_path / "ann.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    dm = make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path), video_dir="clips", val_fraction=0.25)
    setup_all(dm)
    assert len(dm.records["train"]) == 3 and ids(dm, "val") == ids(dm, "test") and len(dm.records["val"]) == 1
    assert sorted(ids(dm, "train") + ids(dm, "val")) == ["a.mp4", "b.mp4", "c.avi", "d.mp4"]
    path.write_text("\n".join(json.dumps(r) for r in reversed(rows)))  # same holdout whatever the row order
    again = make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path), video_dir="clips",
                    val_fraction=0.25)
    again.setup("validate")
    assert ids(again, "val") == ids(dm, "val")
    everything = make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path), video_dir="clips",
                         val_fraction=0.0)
    everything.setup("test")
    assert len(everything.records["test"]) == 4


def test_folder_missing_test_rows_fall_back_to_val(folder_root, tmp_path):
    path = tmp_path / "no_test.csv"
    path.write_text("\n".join(line for line in FOLDER_CSV.splitlines() if not line.endswith("test,,1")))
    dm = make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path))
    dm.setup("test")
    assert ids(dm, "test") == ["clips/c.avi"]


@pytest.mark.parametrize("replace, expected", [
    ("clips/c.avi,someone waves,val,,", "line 6: unknown split 'dev'"),
    ("clips/c.avi,a hand moves,val,,", "line 7: empty caption"),
    ("clips/b.mp4,two animals,train,0.5,2.0", "line 5: video 'clips/b.mp4' has end=3.0 but 2.0 on line 3"),
    ("clips/a.mp4,the ball rolls away,train,,", "line 4: video 'clips/a.mp4' has split='val' but 'train' on line 2"),
    ("clips/d.mp4,a bird flies,test,,1", "line 8: start='soon' is not a number of seconds"),
    ("video,caption,split,start,end", "line 1: missing column(s) ['caption']"),
])
def test_folder_errors_name_file_and_line(folder_root, tmp_path, replace, expected):
    bad = {"clips/c.avi,someone waves,val,,": "clips/c.avi,someone waves,dev,,",
           "clips/c.avi,a hand moves,val,,": "clips/c.avi,  ,val,,",
           "clips/b.mp4,two animals,train,0.5,2.0": "clips/b.mp4,two animals,train,0.5,3",
           "clips/a.mp4,the ball rolls away,train,,": "clips/a.mp4,the ball rolls away,val,,",
           "clips/d.mp4,a bird flies,test,,1": "clips/d.mp4,a bird flies,test,soon,1",
           "video,caption,split,start,end": "video,text,split,start,end"}[replace]
    path = tmp_path / "bad.csv"
    path.write_text(FOLDER_CSV.replace(replace, bad))
    message = setup_error(make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path)), "test")
    assert f"{path}, {expected}" in message


def test_folder_jsonl_errors(folder_root, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"video": "clips/a.mp4", "caption": "x", "split": "train"}\n'
                    '{"video": "clips/b.mp4", "caption": "y"}\n')
    assert f"{path}, line 2: unknown split ''" in setup_error(
        make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path)))
    path.write_text('{"video": "clips/a.mp4", "caption": "x"}\n{"video": "clips/b.mp4", caption: "y"}\n')
    assert f"{path}, line 2: not valid JSON" in setup_error(
        make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path)))
    path.write_text('{"video": "clips/a.mp4", "caption": "x"}\n{"video": "clips/b.mp4"}\n')
    assert f"{path}, line 2: missing ['caption']" in setup_error(
        make_dm(FolderDataModule, folder_root, tmp_path, annotations=str(path)))


def test_offline_tokenizer_cache_key_covers_the_caption_cleaning(tmp_path, monkeypatch):
    """A tokenizer trained before a change in caption cleaning (ftfy) is not reused after it."""
    import xclip_pl.data.datamodule as datamodule_module  # noqa: PLC0415

    dm = FolderDataModule(root=tmp_path, annotations="captions.csv", tokenizer_dir=str(tmp_path / "tok"))
    captions = ["a cat", "a dog"]
    before = dm.offline_tokenizer_dir(captions)
    assert dm.offline_tokenizer_dir(captions) == before and dm.offline_tokenizer_dir(["a cat"]) != before
    monkeypatch.setattr(datamodule_module, "CLEANING_VERSION", "another cleaning")
    assert dm.offline_tokenizer_dir(captions) != before


# ---- what the base class does for every plugin --------------------------------------------------
class ToyDataModule(VideoTextDataModule):
    """Records as a plugin gives them: relative paths, ``search`` names, one absolute path, one without captions."""

    video_dir = "clips"

    def load_records(self, split):
        return [VideoRecord("a", Path("a.avi"), ["cap a"], search=("a.mp4", "a.*")),
                VideoRecord("b", Path("sub/b.mp4"), ["cap b"]), VideoRecord("c", Path("c.mp4"), []),
                VideoRecord("d", self.root / "elsewhere" / "d.mp4", ["cap d"])]


def test_the_base_finds_videos_leaves_out_captionless_ones_and_applies_missing_videos(tmp_path):
    root = tmp_path / "toy"
    for name in ("clips/x/a.webm", "clips/sub/b.mp4", "clips/c.mp4"):
        write_video(root / name, num_frames=8)
    dm = make_dm(ToyDataModule, root, tmp_path, tokenizer_vocab_size=514)
    located = [dm.locate_video(r) for r in dm.load_records("test")]
    assert [r.path for r in located] == [root / "clips/x/a.webm", root / "clips/sub/b.mp4", root / "clips/c.mp4",
                                         root / "elsewhere/d.mp4"]
    message = setup_error(dm, "test")
    assert "[test] 1 of 3 videos named in the annotations are missing on disk: 'd'" in message
    assert "set `data.init_args.missing_videos: skip`" in message
    dm = make_dm(ToyDataModule, root, tmp_path, missing_videos="skip")
    with pytest.warns(UserWarning) as warned:
        dm.setup("test")
    assert [str(w.message) for w in warned if "ToyDataModule [test]" in str(w.message)] == [
        "ToyDataModule [test]: 1 of 4 videos have no caption in the annotations and are left out: 'c'",
        "ToyDataModule [test]: skipping 1 of 3 records whose video is missing (missing_videos='skip'): 'd'"]
    assert ids(dm, "test") == ["a", "b"]


@pytest.mark.parametrize("cls", [ActivityNetDataModule, DiDeMoDataModule, FolderDataModule, LSMDCDataModule,
                                 MSVDDataModule, MSRVTTDataModule, SyntheticDataModule])
def test_every_plugin_gets_missing_videos_from_the_base(cls, tmp_path):
    assert "missing_videos" not in inspect.signature(cls.__init__).parameters  # one place: the base class
    assert inspect.signature(VideoTextDataModule.__init__).parameters["missing_videos"].default == "error"
    assert cls(root=str(tmp_path), missing_videos="skip").missing_videos == "skip"
    assert cls(root=str(tmp_path)).hparams["missing_videos"] == "error"
