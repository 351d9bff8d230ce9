"""Small figures drawn with Pillow (no plotting library): a heatmap of a score block and a grouped bar chart.

Both return uint8 [h, w, 3] arrays, which ``wandb.Image`` and :func:`~xclip_pl.callbacks.run_files.write_png`
take as they are.
"""
from __future__ import annotations

import numpy as np

#: viridis at five stops (low -> high), linearly interpolated
VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
BAR_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def colormap(values: np.ndarray) -> np.ndarray:
    """Values [...] scaled to their own min..max, as viridis colours uint8 [..., 3] (a constant block: the middle)."""
    low, high = float(np.min(values)), float(np.max(values))
    scaled = (values - low) / (high - low) if high > low else np.full(values.shape, 0.5)
    position = scaled * (len(VIRIDIS) - 1)
    left = np.clip(np.floor(position).astype(int), 0, len(VIRIDIS) - 2)
    frac = (position - left)[..., None]
    return np.round(VIRIDIS[left] * (1 - frac) + VIRIDIS[left + 1] * frac).astype(np.uint8)


def heatmap(matrix: np.ndarray, cell: int = 8, mark_diagonal: bool = True) -> np.ndarray:
    """``matrix`` [r, c] as an image of ``cell`` x ``cell`` pixel squares (viridis, its own range); with
    ``mark_diagonal`` a white dot in the middle of every diagonal cell (the ground truth of a block whose
    row i is a caption of column i's video)."""
    image = np.repeat(np.repeat(colormap(np.asarray(matrix, np.float64)), cell, axis=0), cell, axis=1)
    if mark_diagonal and cell >= 3:
        middle = slice(cell // 2 - 1, cell // 2 + 1)
        for i in range(min(matrix.shape)):
            image[i * cell : (i + 1) * cell, i * cell : (i + 1) * cell][middle, middle] = 255
    return image


def bar_chart(labels: list[str], series: dict[str, list[float]], title: str = "", width: int = 640,
              height: int = 320) -> np.ndarray:
    """Grouped bars: one group per label, one bar per series (legend top right), counts above the bars."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    left, right, top, bottom = 40, 10, 30, 40
    draw.text((left, 5), title, fill="black", font=font)
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([max(v) for v in series.values() if v] + [1.0])
    group = plot_w / max(1, len(labels))
    bar = group * 0.8 / max(1, len(series))
    draw.line([(left, top + plot_h), (width - right, top + plot_h)], fill="black")
    for k, (name, values) in enumerate(series.items()):
        colour = BAR_COLOURS[k % len(BAR_COLOURS)]
        draw.rectangle([width - right - 90, 5 + 12 * k, width - right - 80, 14 + 12 * k], fill=colour)
        draw.text((width - right - 75, 3 + 12 * k), name, fill="black", font=font)
        for i, value in enumerate(values):
            x0 = left + i * group + group * 0.1 + k * bar
            y0 = top + plot_h - plot_h * value / peak
            draw.rectangle([x0, y0, x0 + bar - 1, top + plot_h], fill=colour)
            if value:
                draw.text((x0, y0 - 11), f"{value:g}", fill="black", font=font)
    for i, label in enumerate(labels):
        draw.text((left + i * group + 2, top + plot_h + 4 + 10 * (i % 2)), label, fill="black", font=font)
    return np.asarray(image)
