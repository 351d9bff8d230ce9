"""The embedded default dataset: small synthetic clips written in the MSR-VTT on-disk format.

Each clip shows two objects on a dark, slightly tinted and noisy background. An object has a colour
(8), a shape (4) and a motion (5); the pair of objects is close to unique per clip, and every caption
names colour, shape and motion of both objects, in varying templates, synonyms and order, so that a
caption identifies its clip. The files are real MSR-VTT annotation files and H.264 mp4 videos:

    root/MSRVTT_data.json          {"videos": [{"video_id", "split", ...}],
                                    "sentences": [{"video_id", "caption", "sen_id"}]}
    root/MSRVTT_train.9k.csv       video_id                          (training videos)
    root/MSRVTT_JSFUSION_test.csv  key,vid_key,video_id,sentence     (one caption per test video, like 1k-A)
    root/videos/all/video{i}.mp4
    root/.complete                 written last; JSON of the generator's arguments
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

Motion = Literal["left", "right", "up", "down", "still"]
ObjectKind = tuple[str, str, Motion]  # colour, shape, motion

GENERATOR_VERSION = 1
MARKER_NAME = ".complete"
VIDEO_SUBDIR = Path("videos") / "all"
GOP_SIZE = 8

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 35, 35), "green": (40, 200, 60), "blue": (45, 85, 240), "yellow": (240, 225, 40),
    "white": (245, 245, 245), "purple": (160, 60, 210), "orange": (250, 140, 20), "cyan": (40, 225, 225),
}
COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red"], "green": ["green"], "blue": ["blue"], "yellow": ["yellow"], "white": ["white"],
    "purple": ["purple", "violet"], "orange": ["orange"], "cyan": ["cyan", "turquoise"],
}
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "ball", "disc"], "square": ["square", "box", "block"],
    "triangle": ["triangle"], "cross": ["cross", "plus sign"],
}
MOTIONS: tuple[Motion, ...] = ("left", "right", "up", "down", "still")
MOTION_VERBS: dict[str, list[str]] = {  # "a red circle ..."
    "left": ["moves to the left", "slides left", "goes left", "travels to the left", "drifts left"],
    "right": ["moves to the right", "slides right", "goes right", "travels to the right", "drifts right"],
    "up": ["moves up", "rises", "goes up", "floats upward", "climbs up"],
    "down": ["moves down", "falls", "goes down", "drops down", "sinks"],
    "still": ["stays still", "does not move", "sits still", "remains in place", "stays put"],
}
MOTION_PARTICIPLES: dict[str, list[str]] = {  # "there is a red circle ..."
    "left": ["moving left", "sliding to the left", "going left", "heading left"],
    "right": ["moving right", "sliding to the right", "going right", "heading right"],
    "up": ["moving up", "rising", "going up", "floating upward"],
    "down": ["moving down", "falling", "going down", "dropping"],
    "still": ["standing still", "not moving", "staying in place", "resting motionless"],
}
VERB_TEMPLATES = [
    "{a} {va} while {b} {vb}",
    "{a} {va} and {b} {vb}",
    "in this video {a} {va} as {b} {vb}",
    "on a dark background {a} {va} and {b} {vb}",
    "there are two shapes {a} that {va} and {b} that {vb}",
    "{a} {va} at the same time {b} {vb}",
]
PARTICIPLE_TEMPLATES = [
    "there is {a} {pa} and {b} {pb}",
    "{a} {pa} next to {b} {pb}",
    "we see {a} {pa} and {b} {pb}",
    "a clip of {a} {pa} together with {b} {pb}",
    "an animation showing {a} {pa} and {b} {pb}",
]


@dataclass(frozen=True)
class SceneObject:
    """One object of a clip: attributes and its top-left pixel position at the first and last frame."""

    colour: str
    shape: str
    motion: Motion
    size: int
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]

    def position(self, progress: float) -> tuple[int, int]:
        """Top-left (x, y) at ``progress`` in [0, 1] of the clip."""
        x = self.start_xy[0] + progress * (self.end_xy[0] - self.start_xy[0])
        y = self.start_xy[1] + progress * (self.end_xy[1] - self.start_xy[1])
        return int(round(x)), int(round(y))


@lru_cache(maxsize=None)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean [size, size] sprite of a shape filling most of its box."""
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    if shape == "circle":
        return (xs - centre) ** 2 + (ys - centre) ** 2 <= (size / 2.0) ** 2
    if shape == "square":
        inset = max(1, size // 10)
        mask = np.zeros((size, size), dtype=bool)
        mask[inset:size - inset, inset:size - inset] = True
        return mask
    if shape == "triangle":  # apex up, base at the bottom
        return np.abs(xs - centre) <= (ys + 1) / 2.0
    if shape == "cross":
        bar = max(2, size // 3)
        low = (size - bar) // 2
        band = (xs >= low) & (xs < low + bar), (ys >= low) & (ys < low + bar)
        return band[0] | band[1]
    raise ValueError(f"unknown shape {shape!r}")


def _motion_path(motion: Motion, size: int, width: int, height: int, rng: np.random.Generator
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Random start and end top-left positions of a motion that stays inside the central square of the
    frame (the part a CLIP-style short-side resize + centre crop keeps)."""
    side = min(width, height)
    offset_x, offset_y = (width - side) / 2.0, (height - side) / 2.0
    span, shift = side - size, 0.6 * (side - size)
    x, y = rng.uniform(0, span), rng.uniform(0, span)
    if motion in ("left", "right"):
        x = rng.uniform(0, span - shift)
        ends = ((x + shift, y), (x, y)) if motion == "left" else ((x, y), (x + shift, y))
    elif motion in ("up", "down"):
        y = rng.uniform(0, span - shift)
        ends = ((x, y + shift), (x, y)) if motion == "up" else ((x, y), (x, y + shift))
    else:
        ends = ((x, y), (x, y))
    (x0, y0), (x1, y1) = ends
    return (x0 + offset_x, y0 + offset_y), (x1 + offset_x, y1 + offset_y)


def _centres(obj: SceneObject, num_frames: int) -> np.ndarray:
    """Box centres [num_frames, 2] (x, y) over the clip."""
    progress = np.linspace(0.0, 1.0, num_frames)[:, None]
    start, end = np.asarray(obj.start_xy), np.asarray(obj.end_xy)
    return start + progress * (end - start) + obj.size / 2.0


def _min_gap(first: SceneObject, second: SceneObject, num_frames: int) -> float:
    """Smallest Chebyshev gap between the two boxes over the clip (negative when they overlap)."""
    distance = np.abs(_centres(first, num_frames) - _centres(second, num_frames))
    gaps = distance.max(axis=1) - (first.size + second.size) / 2.0
    return float(gaps.min())


def scene_kinds(seed: int, count: int) -> list[tuple[ObjectKind, ObjectKind]]:
    """The two objects' (colour, shape, motion) for ``count`` clips: a seeded permutation of all pairs
    with different colours, so no two clips share a description while count <= 28 * 20 * 20 = 11200."""
    kinds = [(c, s, m) for c in COLOURS for s in SHAPE_WORDS for m in MOTIONS]
    pairs = [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1:] if a[0] != b[0]]
    order = np.random.default_rng([seed, 1_000_003]).permutation(len(pairs))
    return [pairs[order[k % len(pairs)]] for k in range(count)]


def _place_object(kind: ObjectKind, rng: np.random.Generator, width: int, height: int) -> SceneObject:
    """An object of the given kind with a random size and path."""
    colour, shape, motion = kind
    size = int(rng.integers(18, 23)) * min(width, height) // 64
    start_xy, end_xy = _motion_path(motion, size, width, height, rng)
    return SceneObject(colour, shape, motion, size, start_xy, end_xy)


def place_scene(kinds: tuple[ObjectKind, ObjectKind], rng: np.random.Generator, width: int, height: int,
                num_frames: int, attempts: int = 30) -> tuple[SceneObject, SceneObject]:
    """Random paths for the two objects, retried so that they overlap as little as possible."""
    best, best_gap = None, -np.inf
    for _ in range(attempts):
        pair = (_place_object(kinds[0], rng, width, height), _place_object(kinds[1], rng, width, height))
        gap = _min_gap(pair[0], pair[1], num_frames)
        if gap > best_gap:
            best, best_gap = pair, gap
        if gap >= 1:
            break
    assert best is not None
    return best


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Dark, slightly tinted uint8 [height, width, 3] background with static noise."""
    tint = rng.integers(10, 60, size=3)
    noise = rng.integers(-6, 7, size=(height, width, 3))
    return np.clip(tint + noise, 0, 255).astype(np.uint8)


def _paint(frame: np.ndarray, obj: SceneObject, colour: np.ndarray, progress: float) -> None:
    """Draw ``obj`` in place at its position for ``progress``, clipped to the frame."""
    mask = shape_mask(obj.shape, obj.size)
    x, y = obj.position(progress)
    height, width = frame.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + obj.size, height), min(x + obj.size, width)
    if bottom <= top or right <= left:
        return
    sprite = mask[top - y:bottom - y, left - x:right - x]
    frame[top:bottom, left:right][sprite] = colour


def render_frames(scene: tuple[SceneObject, SceneObject], background: np.ndarray, num_frames: int,
                  colours: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """uint8 frames [num_frames, height, width, 3] of the two objects moving over the background."""
    frames = np.repeat(background[None], num_frames, axis=0)
    for index, frame in enumerate(frames):
        progress = index / max(num_frames - 1, 1)
        for obj, colour in zip(scene, colours):
            _paint(frame, obj, colour, progress)
    return frames


CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast", "crf": "20", "threads": "1"},
    "mpeg4": {"threads": "1"},  # MPEG-4 Part 2 (default bit rate), e.g. in an .avi container (MSVD)
}


def write_mp4(path: Path, frames: np.ndarray, rate: int, codec: str = "libx264") -> None:
    """Encode uint8 RGB frames [n, h, w, 3] (even h, w) as yuv420p with a short GOP: H.264 by default,
    ``codec="mpeg4"`` for an ``.avi`` file (the container follows the file suffix)."""
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=dict(CODEC_OPTIONS.get(codec, {"threads": "1"})))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP_SIZE
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush, or the last frames are lost
            container.mux(packet)


def _with_article(phrase: str) -> str:
    """Prefix 'a' or 'an'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _caption(scene: tuple[SceneObject, SceneObject], template_index: int, rng: np.random.Generator) -> str:
    """One caption naming colour, shape and motion of both objects; random order and synonyms."""
    order = list(scene) if rng.random() < 0.5 else list(scene)[::-1]
    nouns = [_with_article(f"{rng.choice(COLOUR_WORDS[o.colour])} {rng.choice(SHAPE_WORDS[o.shape])}") for o in order]
    if template_index < len(VERB_TEMPLATES):
        verbs = [str(rng.choice(MOTION_VERBS[o.motion])) for o in order]
        return VERB_TEMPLATES[template_index].format(a=nouns[0], b=nouns[1], va=verbs[0], vb=verbs[1])
    template = PARTICIPLE_TEMPLATES[template_index - len(VERB_TEMPLATES)]
    participles = [str(rng.choice(MOTION_PARTICIPLES[o.motion])) for o in order]
    return template.format(a=nouns[0], b=nouns[1], pa=participles[0], pb=participles[1])


def make_captions(scene: tuple[SceneObject, SceneObject], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` captions of a clip; distinct templates while there are enough of them."""
    num_templates = len(VERB_TEMPLATES) + len(PARTICIPLE_TEMPLATES)
    templates = np.concatenate([rng.permutation(num_templates) for _ in range(count // num_templates + 1)])
    return [_caption(scene, int(t), rng) for t in templates[:count]]


def _object_colour(name: str, rng: np.random.Generator) -> np.ndarray:
    """The named colour with a small per-clip jitter, uint8 [3]."""
    return np.clip(np.asarray(COLOURS[name]) + rng.integers(-12, 13, size=3), 0, 255).astype(np.uint8)


def _object_record(obj: SceneObject) -> dict[str, Any]:
    """JSON-able description of an object (kept in MSRVTT_data.json for analysis)."""
    return {"colour": obj.colour, "shape": obj.shape, "motion": obj.motion, "size": obj.size}


def _write_clip(video_path: Path, kinds: tuple[ObjectKind, ObjectKind], clip_seed: list[int], width: int,
                height: int, num_frames: int, rate: int, captions_per_video: int
                ) -> tuple[list[str], list[dict[str, Any]]]:
    """Render and encode one clip; return its captions and object records. Deterministic by clip_seed."""
    frames, scene, rng = render_clip(kinds, clip_seed, width, height, num_frames)
    write_mp4(video_path, frames, rate)
    return make_captions(scene, captions_per_video, rng), [_object_record(o) for o in scene]


def render_clip(kinds: tuple[ObjectKind, ObjectKind], clip_seed: list[int], width: int, height: int,
                num_frames: int) -> tuple[np.ndarray, tuple[SceneObject, SceneObject], np.random.Generator]:
    """The frames uint8 [num_frames, height, width, 3] and scene of one clip, and the clip's generator in
    the state that ``make_captions(scene, count, rng)`` continues from. Deterministic by clip_seed."""
    rng = np.random.default_rng(clip_seed)
    scene = place_scene(kinds, rng, width, height, num_frames)
    background = _background(rng, width, height)
    colours = (_object_colour(scene[0].colour, rng), _object_colour(scene[1].colour, rng))
    return render_frames(scene, background, num_frames, colours), scene, rng


def _check_sizes(width: int, height: int, seconds: float, rate: int) -> int:
    """Validate the clip geometry; return the number of frames."""
    if width % 2 or height % 2 or min(width, height) < 32:
        raise ValueError(f"width and height must be even and >= 32 (libx264 yuv420p), got {width}x{height}")
    num_frames = int(round(seconds * rate))
    if num_frames < 1:
        raise ValueError(f"seconds * rate must give at least one frame, got {seconds} * {rate}")
    return num_frames


def _write_annotations(root: Path, videos: list[dict[str, Any]], sentences: list[dict[str, Any]]) -> None:
    """MSRVTT_data.json, MSRVTT_train.9k.csv and MSRVTT_JSFUSION_test.csv (first caption of each test video)."""
    with open(root / "MSRVTT_data.json", "w") as handle:
        json.dump({"info": {"description": "xclip-pl synthetic MSR-VTT"}, "videos": videos,
                   "sentences": sentences}, handle)
    train_ids = [v["video_id"] for v in videos if v["split"] == "train"]
    pd.DataFrame({"video_id": train_ids}).to_csv(root / "MSRVTT_train.9k.csv", index=False)
    first_caption: dict[str, str] = {}
    for sentence in sentences:
        first_caption.setdefault(sentence["video_id"], sentence["caption"])
    test = [v for v in videos if v["split"] == "test"]
    pd.DataFrame({
        "key": [f"ret{k}" for k in range(len(test))],
        "vid_key": [f"msr{v['id']}" for v in test],
        "video_id": [v["video_id"] for v in test],
        "sentence": [first_caption[v["video_id"]] for v in test],
    }).to_csv(root / "MSRVTT_JSFUSION_test.csv", index=False)


def _generator_params(**kwargs: Any) -> dict[str, Any]:
    """All arguments of write_synthetic_msrvtt that change the data (defaults filled in, no root/progress)."""
    bound = inspect.signature(write_synthetic_msrvtt).bind(root=".", **kwargs)
    bound.apply_defaults()
    params = dict(bound.arguments)
    params.pop("root"), params.pop("progress")
    return {"version": GENERATOR_VERSION, **params}


def write_synthetic_msrvtt(root: str | Path, num_train: int = 1000, num_test: int = 250, captions_per_video: int = 5,
                           seed: int = 0, width: int = 80, height: int = 64, seconds: float = 6.0, rate: int = 8,
                           progress: bool = True) -> Path:
    """Write the dataset under ``root`` and return ``root``. Deterministic by ``seed``.

    Training videos are ``video0 .. video{num_train - 1}``, test videos follow. ``root/.complete``
    (the arguments as JSON) is written last, so a crashed half-written dataset is detected.
    """
    num_frames = _check_sizes(width, height, seconds, rate)
    if num_train < 0 or num_test < 0 or num_train + num_test < 1 or captions_per_video < 1:
        raise ValueError("need num_train, num_test >= 0 (not both 0) and captions_per_video >= 1")
    root = Path(root)
    video_dir = root / VIDEO_SUBDIR
    video_dir.mkdir(parents=True, exist_ok=True)
    (root / MARKER_NAME).unlink(missing_ok=True)
    videos: list[dict[str, Any]] = []
    sentences: list[dict[str, Any]] = []
    total = num_train + num_test
    all_kinds = scene_kinds(seed, total)
    for index in tqdm(range(total), desc=f"synthetic MSR-VTT -> {root}", disable=not progress, unit="clip"):
        video_id = f"video{index}"
        captions, objects = _write_clip(video_dir / f"{video_id}.mp4", all_kinds[index], [seed, index],
                                        width, height, num_frames, rate, captions_per_video)
        videos.append({"category": 0, "url": "", "video_id": video_id, "start time": 0.0, "end time": seconds,
                       "split": "train" if index < num_train else "test", "id": index, "objects": objects})
        first_sen_id = len(sentences)
        sentences.extend({"caption": c, "video_id": video_id, "sen_id": first_sen_id + k}
                         for k, c in enumerate(captions))
    _write_annotations(root, videos, sentences)
    params = _generator_params(num_train=num_train, num_test=num_test, captions_per_video=captions_per_video,
                               seed=seed, width=width, height=height, seconds=seconds, rate=rate)
    (root / MARKER_NAME).write_text(json.dumps(params, sort_keys=True))
    return root


def ensure_synthetic_msrvtt(root: str | Path, **kwargs: Any) -> Path:
    """Generate once: do nothing if ``root/.complete`` records the same arguments, else (re)write."""
    root = Path(root)
    wanted = _generator_params(**kwargs)
    marker = root / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == json.loads(json.dumps(wanted, sort_keys=True)):
        return root
    return write_synthetic_msrvtt(root, **kwargs)
