"""Switch ``freeze_layers``: the reference's layer freezing of the CLIP towers (xclip-method.md 5.5)."""
from __future__ import annotations

import re

from transformers import CLIPModel

ALWAYS_TRAINABLE = (  # the reference's "top" parameters (official: ln_final, text_projection, logit_scale, visual.ln_post, visual.proj)
    "text_model.final_layer_norm.", "text_projection.", "logit_scale",
    "vision_model.post_layernorm.", "visual_projection.",
)
_LAYER = re.compile(r"^(?:text_model|vision_model)\.encoder\.layers\.(\d+)\.")


def _max_layers(clip: CLIPModel) -> int:
    return max(clip.config.text_config.num_hidden_layers, clip.config.vision_config.num_hidden_layers)


def freeze_clip_layers(clip: CLIPModel, freeze_layers: int) -> list[str]:
    """Switch ``freeze_layers: int`` (reference ``--freeze_layer_num``; reference value 0, improved -1).

    ``-1`` freezes nothing. ``N >= 0`` sets ``requires_grad=False`` on every CLIP parameter except the
    always-trainable top (``final_layer_norm``, ``text_projection``, ``logit_scale``, ``post_layernorm``,
    ``visual_projection``) and the encoder layers with index >= N in both towers. So ``N = 0`` still
    freezes the token and text position embeddings, the patch, class and vision position embeddings and
    ``pre_layrnorm`` (xclip-method.md 5.5). Parameters are only frozen, never unfrozen.
    Returns the names (``CLIPModel`` naming) of the parameters frozen.
    """
    if freeze_layers < -1 or freeze_layers > _max_layers(clip):
        raise ValueError(f"freeze_layers={freeze_layers}: expected -1 (freeze nothing) or 0..{_max_layers(clip)} "
                         f"(freeze the embedding stage and the encoder layers below that index)")
    if freeze_layers == -1:
        return []
    frozen = []
    for name, param in clip.named_parameters():
        if name.startswith(ALWAYS_TRAINABLE):
            continue
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= freeze_layers:
            continue
        param.requires_grad_(False)
        frozen.append(name)
    return frozen
