"""PNG plots of a boundary analysis, drawn with matplotlib's object API and the Agg renderer.

The functions build `matplotlib.figure.Figure` objects directly instead of using pyplot, so they
change no global backend and work without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mosr.analysis.statistics import GROUPS, LayerStatistics

GROUP_COLORS = {"benign": "#2a9d8f", "pseudo_malicious": "#e9c46a", "malicious": "#e76f51"}
GROUP_LABELS = {"benign": "benign", "pseudo_malicious": "pseudo-malicious", "malicious": "malicious"}


def _new_figure(columns: int, rows: int = 1, width: float = 4.2, height: float = 3.6) -> Figure:
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_pca(states: dict[str, np.ndarray], layers: Sequence[int], layer_axis: Sequence[int], path: Path) -> Path:
    """Scatter the three groups on the first two principal components, one panel per layer in `layers`.

    `states` maps each group to [n, len(layer_axis), hidden] states, and `layer_axis` names their
    second axis. PCA is fitted per layer on all three groups together.
    """
    from sklearn.decomposition import PCA

    figure = _new_figure(len(layers))
    axes = figure.subplots(1, len(layers), squeeze=False)[0]
    for axis, layer in zip(axes, layers):
        column = list(layer_axis).index(layer)
        per_group = {group: np.asarray(states[group][:, column, :], dtype=np.float64) for group in GROUPS}
        stacked = np.concatenate([per_group[group] for group in GROUPS])
        if np.ptp(stacked, axis=0).max() == 0:
            axis.text(0.5, 0.5, "all states identical", ha="center", va="center", transform=axis.transAxes)
        else:
            pca = PCA(n_components=2).fit(stacked)
            for group in GROUPS:
                projected = pca.transform(per_group[group])
                axis.scatter(projected[:, 0], projected[:, 1], s=10, alpha=0.7, color=GROUP_COLORS[group],
                             label=GROUP_LABELS[group])
            ratios = pca.explained_variance_ratio_
            axis.set_xlabel(f"PC1 ({ratios[0]:.0%} of variance)")
            axis.set_ylabel(f"PC2 ({ratios[1]:.0%} of variance)")
        axis.set_title(f"layer {layer}")
    axes[0].legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=110)
    return path


def plot_layer_curves(statistics: list[LayerStatistics], path: Path, refusal: dict | None = None) -> Path:
    """Plot probe accuracy, the share of pseudo-malicious prompts the probe calls malicious, and median positions, across layers.

    With `refusal` (the output of `refusal_aurocs`), a third panel shows the refusal AUROCs.
    """
    layers = [item.layer for item in statistics]
    show_refusal = bool(refusal and refusal.get("layers"))
    figure = _new_figure(3 if show_refusal else 2, width=4.6)
    axes = figure.subplots(1, 3 if show_refusal else 2, squeeze=False)[0]

    axes[0].plot(layers, [item.probe_accuracy for item in statistics], marker="o", ms=3,
                 label="probe held-out accuracy")
    axes[0].plot(layers, [item.pseudo_called_malicious for item in statistics], marker="o", ms=3,
                 color=GROUP_COLORS["pseudo_malicious"], label="pseudo-malicious called malicious")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_xlabel("layer")
    axes[0].set_title("benign vs malicious probe")
    axes[0].legend(loc="best", fontsize="small")

    for group in GROUPS:
        medians = [item.median_positions[group] for item in statistics]
        axes[1].plot(layers, [np.nan if value is None else value for value in medians], marker="o", ms=3,
                     color=GROUP_COLORS[group], label=GROUP_LABELS[group])
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("median position")
    axes[1].set_title("position (benign mean 0, malicious mean 1)")
    axes[1].legend(loc="best", fontsize="small")

    if show_refusal:
        for key, label in (("boundary_auroc", "boundary score"), ("position_auroc", "position"),
                           ("probe_auroc", "probe probability")):
            values = [np.nan if row[key] is None else row[key] for row in refusal["layers"]]
            axes[2].plot([row["layer"] for row in refusal["layers"]], values, marker="o", ms=3, label=label)
        axes[2].axhline(0.5, color="grey", lw=0.8, ls="--")
        axes[2].set_ylim(-0.02, 1.02)
        axes[2].set_xlabel("layer")
        axes[2].set_title(f"AUROC for refusal ({refusal['refused']}/{refusal['matched']} refused)")
        axes[2].legend(loc="best", fontsize="small")

    figure.savefig(path, dpi=110)
    return path


def plot_position_histograms(statistics: list[LayerStatistics], layers: Sequence[int], path: Path) -> Path:
    """Plot histograms of the three groups' positions, one panel per layer in `layers`."""
    by_layer = {item.layer: item for item in statistics}
    figure = _new_figure(len(layers))
    axes = figure.subplots(1, len(layers), squeeze=False)[0]
    for axis, layer in zip(axes, layers):
        positions = by_layer[layer].positions
        finite = np.concatenate([values[np.isfinite(values)] for values in positions.values()])
        if finite.size == 0:
            axis.text(0.5, 0.5, "positions undefined", ha="center", va="center", transform=axis.transAxes)
        else:
            low, high = np.percentile(finite, [1, 99])
            bins = np.linspace(min(low, -0.25), max(high, 1.25), 40)
            for group in GROUPS:
                values = positions[group][np.isfinite(positions[group])]
                axis.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.55, color=GROUP_COLORS[group],
                          label=GROUP_LABELS[group], density=True)
            for mark in (0.0, 0.5, 1.0):
                axis.axvline(mark, color="grey", lw=0.8, ls="--" if mark == 0.5 else ":")
        axis.set_xlabel("position (benign mean 0, malicious mean 1)")
        axis.set_title(f"layer {layer}")
    axes[0].set_ylabel("density")
    axes[0].legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=110)
    return path
