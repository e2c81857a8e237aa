"""The report's plots, drawn with matplotlib on an Agg canvas (no pyplot state, so a user's backend
is never touched): the confusion matrix, training curves, per-class accuracy and the reliability
diagram. Plot functions return PNG bytes. Pictures drawn on images are in :mod:`fgvc.viz.draw`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = ["confusion_order", "plot_confusion", "plot_training_curves", "plot_per_class_accuracy",
           "plot_reliability"]


class ReliabilityBins(Protocol):
    """What a reliability diagram draws (:class:`fgvc.engine.calibration.Reliability` has it)."""

    edges: Sequence[float]
    counts: Sequence[int]
    confidence: Sequence[float | None]
    accuracy: Sequence[float | None]
    ece: float


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def confusion_order(confusion: np.ndarray | Sequence[Sequence[int]]) -> list[int]:
    """A class order in which classes that are confused with each other sit next to each other.

    Single-linkage chaining: the symmetrised, row-normalised off-diagonal confusion is visited
    pair by pair from the most confused; each pair joins the two chains its classes belong to,
    oriented so that the pair ends up as close as possible. Chains holding confusions come
    first (most confusion first), never-confused classes follow in index order. O(n²) for n
    classes, deterministic (ties by index).
    """
    c = np.asarray(confusion, dtype=np.float64)
    n = c.shape[0]
    totals = c.sum(axis=1, keepdims=True)
    rates = np.divide(c, totals, out=np.zeros_like(c), where=totals > 0)
    similarity = rates + rates.T
    np.fill_diagonal(similarity, 0.0)
    chains: dict[int, list[int]] = {i: [i] for i in range(n)}
    chain_of = list(range(n))
    weight = dict.fromkeys(range(n), 0.0)
    rows, cols = np.triu_indices(n, k=1)
    values = similarity[rows, cols]
    for e in np.lexsort((cols, rows, -values)):
        if values[e] <= 0:
            break
        i, j = int(rows[e]), int(cols[e])
        a, b = chain_of[i], chain_of[j]
        if a == b:
            weight[a] += values[e]
            continue
        chain_a, chain_b = chains.pop(a), chains.pop(b)
        best = None
        for first in (chain_a, chain_a[::-1]):
            for second in (chain_b, chain_b[::-1]):
                gap = (len(first) - 1 - first.index(i)) + second.index(j)
                if best is None or gap < best[0]:
                    best = (gap, first + second)
        merged = best[1]
        chains[a] = merged
        weight[a] += weight.pop(b) + values[e]
        for k in chain_b:
            chain_of[k] = a
    ordered = sorted(chains, key=lambda key: (len(chains[key]) == 1, -weight[key], min(chains[key])))
    return [k for key in ordered for k in chains[key]]


def _thinned_ticks(axis, labels: Sequence[str], max_labels: int, **text) -> None:
    """Label every k-th tick of a matplotlib ``axis`` so that at most ``max_labels`` are shown."""
    step = max(1, math.ceil(len(labels) / max_labels))
    positions = list(range(0, len(labels), step))
    axis.set_ticks(positions, [labels[p] for p in positions], **text)


def plot_confusion(confusion: np.ndarray | Sequence[Sequence[int]], labels: Sequence[str],
                   order: Sequence[int] | None = None, max_labels: int = 50, annotate_up_to: int = 25) -> bytes:
    """The confusion matrix (rows: true class, columns: predicted) as a PNG, each row divided by
    its class's image count, in ``order`` (default :func:`confusion_order`). A square-root colour
    scale keeps rare confusions visible next to the diagonal; counts are written into the cells
    only up to ``annotate_up_to`` classes and at most ``max_labels`` tick labels are shown."""
    from matplotlib.colors import PowerNorm

    c = np.asarray(confusion, dtype=np.float64)
    n = c.shape[0]
    if len(labels) != n:
        raise ValueError(f"{n} x {n} confusion matrix but {len(labels)} labels")
    order = list(confusion_order(c) if order is None else order)
    c = c[np.ix_(order, order)]
    names = [labels[i] for i in order]
    totals = c.sum(axis=1, keepdims=True)
    rates = np.divide(c, totals, out=np.zeros_like(c), where=totals > 0)
    side = float(np.clip(3.5 + 0.05 * n, 6.0, 14.0))
    fig = _figure(side + 1.4, side)
    ax = fig.add_subplot()
    shown = ax.imshow(rates, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class's images")
    size = 8 if n <= 15 else 6
    _thinned_ticks(ax.xaxis, names, max_labels, rotation=90, fontsize=size)
    _thinned_ticks(ax.yaxis, names, max_labels, fontsize=size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, {n} classes (ordered so that confused classes sit together)", fontsize=10)
    if n <= annotate_up_to:
        for r, q in zip(*np.nonzero(c), strict=True):
            ax.text(q, r, str(int(c[r, q])), ha="center", va="center", fontsize=7,
                    color="white" if rates[r, q] > 0.45 else "black")
    return _figure_png(fig)


def _series(rows: Sequence[Mapping[str, float | None]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None and r.get("step") is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(rows: Sequence[Mapping[str, float | None]]) -> bytes | None:
    """Loss, accuracy (train, validation and each branch), learning rate per parameter group and,
    when logged, localisation per epoch, from ``read_metrics_csv`` rows. None when there are none."""
    if not rows:
        return None
    from matplotlib.ticker import MaxNLocator

    keys = list(dict.fromkeys(k for r in rows for k in r))
    branches = [k for k in keys if k.startswith("val/acc_")]
    panels = [
        ("loss", [("train/loss", "train", "-"), ("val/loss", "validation", "-")]),
        ("accuracy", [("train/acc", "train", "-"), ("val/top1", "validation top-1", "-"),
                      ("val/mean_class_accuracy", "validation mean class", ":")]
         + [(k, f"val {k[8:]} branch", "--") for k in branches]),
        ("learning rate", [(k, k[3:], "-") for k in keys if k.startswith("lr/")]),
        ("localisation (val)", [("val/localisation_accuracy", "accuracy (IoU ≥ 0.5)", "-"),
                                ("val/mean_iou", "mean IoU", "--")]),
    ]
    panels = [(title, [s for s in series if s[0] in keys]) for title, series in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = _figure(4.2 * len(panels), 3.4)
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, label, style in series:
            x, y = _series(rows, key)
            ax.plot(x, y, style, marker="o" if len(x) < 30 else None, markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if title.startswith(("accuracy", "localisation")):
            ax.set_ylim(-0.02, 1.02)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.legend(fontsize=7)
    return _figure_png(fig)


def plot_per_class_accuracy(labels: Sequence[str], accuracies: Sequence[float], max_labels: int = 60) -> bytes:
    """Per-class accuracy as bars, worst first, with the mean as a dashed line."""
    from matplotlib import colormaps

    order = sorted(range(len(labels)), key=lambda i: (accuracies[i], labels[i]))
    values = [accuracies[i] for i in order]
    names = [labels[i] for i in order]
    n = len(values)
    fig = _figure(float(np.clip(2.5 + 0.12 * n, 6.0, 14.0)), 3.8)
    ax = fig.add_subplot()
    ax.bar(range(n), values, width=0.85, color=colormaps["RdYlGn"](np.asarray(values)))
    if n:
        mean = float(np.mean(values))
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        ax.legend(fontsize=8, loc="lower right")
    size = 8 if n <= 30 else 6
    _thinned_ticks(ax.xaxis, names, max_labels, rotation=90, fontsize=size)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.7, max(n, 1) - 0.3)
    ax.set_ylabel("accuracy")
    ax.set_title(f"per-class accuracy, {n} classes, worst first", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def plot_reliability(diagrams: Mapping[str, ReliabilityBins]) -> bytes:
    """One reliability diagram per entry (Guo et al. 2017, Fig. 1): per confidence bin the accuracy as
    a bar, the gap to the bin's mean confidence in red, the diagonal of perfect calibration and the ECE
    in the title; below each, how many images fall in each bin."""
    fig = _figure(4.2 * len(diagrams), 5.2)
    grid = fig.add_gridspec(2, len(diagrams), height_ratios=(3, 1))
    for i, (title, bins) in enumerate(diagrams.items()):
        edges = np.asarray(bins.edges, dtype=np.float64)
        width, left = np.diff(edges), edges[:-1]
        filled = np.asarray([n > 0 for n in bins.counts])
        accuracy = np.asarray([a if a is not None else 0.0 for a in bins.accuracy])
        confidence = np.asarray([c if c is not None else 0.0 for c in bins.confidence])
        ax = fig.add_subplot(grid[0, i])
        ax.bar(left[filled], accuracy[filled], width[filled], align="edge", color="#2b6cb0", edgecolor="#1a3f66",
               label="accuracy")
        ax.bar(left[filled], (confidence - accuracy)[filled], width[filled], bottom=accuracy[filled], align="edge",
               color="#e53e3e", alpha=0.35, edgecolor="#b00020", hatch="//", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE {100 * bins.ece:.2f}%", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        counts = fig.add_subplot(grid[1, i], sharex=ax)
        counts.bar(left, np.asarray(bins.counts), width, align="edge", color="#718096")
        counts.set_xlabel("confidence (top class probability)")
        counts.set_ylabel("images")
    return _figure_png(fig)
