"""Figures shared by the chapters (seaborn on matplotlib), one look across the book."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown
from matplotlib.ticker import MaxNLocator


def theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 90, "savefig.bbox": "tight"})


def bars(df, x, y, hue=None, title=None, xlabel=None, ylabel=None, ax=None, height=3.2):
    """A bar chart of tidy data; returns the figure."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5, 0.45 * df[x].nunique() * (1 + (hue is not None))), height))
    sns.barplot(data=df, x=x, y=y, hue=hue, ax=ax)
    ax.set(title=title or "", xlabel=xlabel if xlabel is not None else x, ylabel=ylabel if ylabel is not None else y)
    if hue is not None:
        ax.legend(title=hue, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    return ax.figure


def heatmap(matrix, labels, title=None, ax=None, vmin=0, vmax=1, cmap="viridis", annot=False):
    """A square heatmap (language x language or model x model)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * len(labels) + 2, 0.45 * len(labels) + 1.5))
    sns.heatmap(matrix, xticklabels=labels, yticklabels=labels, vmin=vmin, vmax=vmax, cmap=cmap,
                square=True, annot=annot, fmt=".2f", cbar_kws={"shrink": 0.7}, ax=ax)
    ax.set_title(title or "")
    return ax.figure


def integer_ticks(*axes) -> None:
    """Layers and steps are whole numbers: no 0.25 ticks."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def markdown(text: str) -> Markdown:
    """A sentence computed from results, shown as prose (wrapped) rather than a printed line."""
    return Markdown(text)
