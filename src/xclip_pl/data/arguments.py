"""Up-front checks of the datamodule's numeric arguments: one message naming ``data.init_args.<key>``, before
anything is built or decoded (rather than a deep error from torch's DataLoader or the decoder)."""
from __future__ import annotations

import math

#: ``argument -> (smallest allowed value, what it is)`` of the numeric datamodule arguments; ``fps`` must be above 0.
NUMBER_LIMITS: dict[str, tuple[float, str]] = {
    "max_words": (3, "token slots per caption, SOT and EOT included (reference: 32)"),
    "max_frames": (1, "frames per clip (reference: 12)"),
    "image_size": (1, "frame side in pixels (the vision tower's, e.g. 224)"),
    "batch_size": (1, "training pairs per device and step"),
    "eval_batch_size": (1, "videos or captions per device and evaluation step"),
    "num_workers": (0, "DataLoader worker processes per device (0: decode in the main process)"),
    "tokenizer_vocab_size": (514, "largest vocabulary of the offline BPE, specials included"),
    "pad_token_id": (0, "token id written after EOT (reference: 0)"),
}


def check_data_numbers(**values: float) -> None:
    """A ValueError naming ``data.init_args.<key>`` for the first value out of range (see ``NUMBER_LIMITS``;
    ``fps`` must be a finite number above 0), before anything is built or decoded."""
    for key, value in values.items():
        if key == "fps":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            need, what = "a number > 0", "candidate frames per second (reference: 1)"
        else:
            low, what = NUMBER_LIMITS[key]
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
            need = f"a whole number >= {low}"
        if not ok:
            raise ValueError(f"data.init_args.{key}: got {value!r}; it is the {what} and must be {need}. Set it in the "
                             f"config or with --data.init_args.{key} <value>")
