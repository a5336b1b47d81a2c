"""Figures for the report, drawn with matplotlib and inlined as SVG (text kept as text, no external assets)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "evalkit", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})
PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16"]


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def dot_ci(labels: list[str], series: dict[str, list[tuple[float | None, float | None, float | None]]],
           value_range: tuple[float, float] | None = None, title: str = "") -> str:
    """Horizontal dots with CI bars; one row per label, one colour per run."""
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(labels) + 0.9))
    y = np.arange(len(labels))
    offsets = np.linspace(-0.18, 0.18, len(series)) if len(series) > 1 else [0.0]
    for (name, points), offset, colour in zip(series.items(), offsets, PALETTE * 10, strict=False):
        labelled = False
        for yi, (mean, low, high) in zip(y, points, strict=True):
            if mean is None:
                continue
            if low is not None and high is not None:
                ax.plot([low, high], [yi + offset] * 2, color=colour, lw=1.5)
            ax.plot(mean, yi + offset, "o", color=colour, ms=4.5, label=None if labelled else name)
            labelled = True
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    if value_range:
        ax.set_xlim(*value_range)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, loc="left", fontsize=10)
    if len(series) > 1 and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _svg(fig)


def histograms(values: dict[str, list[float]], value_range: tuple[float, float], title: str) -> str:
    """One small histogram per run on a shared axis (several runs overlaid would hide each other)."""
    fig, axes = plt.subplots(len(values), 1, figsize=(7.5, 1.3 + 1.1 * len(values)), sharex=True, squeeze=False)
    bins = np.linspace(value_range[0], value_range[1], 25)
    for ax, ((name, data), colour) in zip(axes[:, 0], zip(values.items(), PALETTE * 10, strict=False), strict=True):
        ax.hist(data, bins=bins, color=colour)
        ax.set_ylabel("sessions", fontsize=8)
        ax.text(0.01, 0.85, f"{name} (n = {len(data)})", transform=ax.transAxes, fontsize=8)
    axes[0, 0].set_title(title, loc="left", fontsize=10)
    axes[-1, 0].set_xlim(*value_range)
    return _svg(fig)


def heatmap(rows: list[str], columns: list[str], goodness: np.ndarray, title: str) -> str:
    """`goodness`: 0 (worst) .. 1 (best) per cell, so one colour scale means the same for every item."""
    fig, ax = plt.subplots(figsize=(min(16, 4 + 0.3 * len(columns)), 2.2 + 0.22 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(goodness), aspect="auto", cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    bar = fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, ticks=[0, 1])
    bar.ax.set_yticklabels(["worse", "better"], fontsize=7)
    ax.set_title(title, loc="left", fontsize=10)
    return _svg(fig)


def forest(rows: list[tuple[str, float, float, float]], title: str, reference: float = 0.0, xlabel: str = "") -> str:
    """rows: (label, estimate, low, high)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.0))
    for i, (_, estimate, low, high) in enumerate(rows):
        ax.plot([low, high], [i, i], color=PALETTE[0], lw=1.5)
        ax.plot(estimate, i, "s", color=PALETTE[0], ms=5)
    ax.axvline(reference, color="#718096", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left", fontsize=10)
    return _svg(fig)
