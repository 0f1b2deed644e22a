"""PNG plots of a comparison, drawn with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from k210tool.fileio import atomic_open

COLOURS = {"original float": "#7f7f7f", "rewritten float": "#1f77b4", "float": "#1f77b4", "kmodel": "#d62728"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return path


def _bins(arrays: Any, count: int = 40) -> np.ndarray:
    """Shared bin edges over the range of all ``arrays`` (so overlaid histograms compare)."""
    values = np.concatenate([np.ravel(a) for a in arrays])
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = max((hi - lo) * 0.02, 1e-6)
    return np.linspace(lo - pad, hi + pad, count + 1)


def plot_roc(roc: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """ROC of every column on a log FAR axis (where face verification is judged)."""
    fig = _figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    floor = 1.0
    for name, (fpr, tpr) in roc.items():
        positive = fpr[fpr > 0]
        floor = min(floor, float(positive.min()) if len(positive) else 1.0)
        ax.step(np.maximum(fpr, 1e-6), tpr, where="post", label=name, color=COLOURS.get(name),
                linestyle="--" if name == "kmodel" else "-")
    ax.set_xscale("log")
    ax.set_xlim(max(floor / 2, 1e-6), 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("ROC: float vs kmodel")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_cosine_histogram(cosines: dict[str, np.ndarray], path: Path) -> Path:
    """Per-image cosine between outputs, one panel per comparison (kmodel vs float, ...), each on its own
    range: quantization drift (near 1) and a rewrite's change (anywhere) do not share a useful scale."""
    fig = _figure(4.2 * len(cosines), 3.8)
    for i, (label, cos) in enumerate(cosines.items()):
        ax = fig.add_subplot(1, len(cosines), i + 1)
        ax.hist(cos, bins=_bins([cos]), color="#d62728" if label.startswith("kmodel") else "#1f77b4", alpha=0.8)
        ax.axvline(float(np.mean(cos)), color="black", linestyle=":", label=f"mean {np.mean(cos):.4f}")
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("cosine per image")
        if i == 0:
            ax.set_ylabel("images")
        ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_score_distributions(scores: dict[str, np.ndarray], issame: np.ndarray, thresholds: dict[str, float],
                             path: Path) -> Path:
    """Genuine vs impostor pair scores per column, with each column's best threshold."""
    fig = _figure(4.2 * len(scores), 3.8)
    bins = _bins(scores.values())
    for i, (name, s) in enumerate(scores.items()):
        ax = fig.add_subplot(1, len(scores), i + 1)
        ax.hist(s[issame], bins=bins, alpha=0.6, color="#2ca02c", label="genuine")
        ax.hist(s[~issame], bins=bins, alpha=0.6, color="#9467bd", label="impostor")
        if name in thresholds:
            ax.axvline(thresholds[name], color="black", linestyle=":", label=f"threshold {thresholds[name]:.3f}")
        ax.set_title(name)
        ax.set_xlabel("cosine score")
        if i == 0:
            ax.set_ylabel("pairs")
        ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)
