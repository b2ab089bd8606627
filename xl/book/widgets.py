"""Offline explorers: dropdowns that switch between pre-rendered figures in the browser.

Every combination of the options is rendered once, in Python, to a small PNG held by
an `ipywidgets.Image`. The images sit in nested `Stack`s (one nesting level per
option dimension) and each `Dropdown` is linked with `jslink` to the `selected_index`
of every Stack of its level. Switching is therefore done by the widget front end
alone: it works in a live kernel (Jupyter, Colab) and in the built book, where the
widget state saved in the executed notebook is rendered by the ipywidgets HTML
manager with no kernel and no network.

Sizes grow with the product of the option counts: keep figures small (dpi ~80).
"""
from __future__ import annotations

import html
import io
import sys
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from xl.core.errors import XLError

DPI = 80
MAX_IMAGES = 2000  # beyond this the executed notebook (and the page) gets too heavy


def to_png(figure, dpi: int = DPI) -> bytes:
    """PNG bytes of a matplotlib Figure (closed afterwards) or PNG bytes as they are."""
    if isinstance(figure, (bytes, bytearray, memoryview)):
        return bytes(figure)
    savefig = getattr(figure, "savefig", None)
    if savefig is None:
        raise XLError(f"the render function must return a matplotlib Figure or PNG bytes, "
                      f"got {type(figure).__name__}")
    buffer = io.BytesIO()
    try:
        savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        _close(figure)
    return buffer.getvalue()


def _close(figure) -> None:
    """Close a pyplot-managed figure so that it is neither kept nor displayed again."""
    pyplot = sys.modules.get("matplotlib.pyplot")  # only if the caller uses pyplot
    if pyplot is not None:
        pyplot.close(figure)


def _label(value) -> str:
    return str(value.item() if isinstance(value, np.generic) else value)


def explorer(render: Callable[..., object], options: Mapping[str, Sequence], title: str | None = None,
             dpi: int = DPI):
    """A VBox of one Dropdown per option dimension above the image of the selected combination.

    render(**selection) is called once per combination (keys = the option names) and
    returns a matplotlib Figure or PNG bytes. Dropdowns are jslinked to the Stacks, so
    the explorer needs no kernel once displayed. Options keep their order; the first
    value of each dimension is shown first.
    """

    names = list(options)
    values = [list(options[name]) for name in names]
    if not names:
        raise XLError("explorer needs at least one option dimension")
    for name, vals in zip(names, values):
        if not vals:
            raise XLError(f"option {name!r} has no values")
    n_images = int(np.prod([len(v) for v in values]))
    if n_images > MAX_IMAGES:
        raise XLError(f"{n_images} combinations of {dict(zip(names, map(len, values)))} is too many "
                      f"to pre-render (at most {MAX_IMAGES}): fix some options first")

    stacks_by_level: list[list] = [[] for _ in names]

    def build(level: int, chosen: tuple):
        if level == len(names):
            png = to_png(render(**dict(zip(names, chosen))), dpi=dpi)
            return widgets.Image(value=png, format="png")
        stack = widgets.Stack([build(level + 1, chosen + (v,)) for v in values[level]], selected_index=0)
        stacks_by_level[level].append(stack)
        return stack

    root = build(0, ())
    dropdowns = []
    links = []
    for level, (name, vals) in enumerate(zip(names, values)):
        dropdown = widgets.Dropdown(options=[(_label(v), v) for v in vals], index=0, description=name,
                                    style={"description_width": "initial"},
                                    layout=widgets.Layout(width="auto"))
        dropdowns.append(dropdown)
        links += [widgets.jslink((dropdown, "index"), (stack, "selected_index"))
                  for stack in stacks_by_level[level]]
    children = [widgets.HBox(dropdowns), root]
    if title:
        children.insert(0, widgets.HTML(f"<b>{_escape(title)}</b>"))
    box = widgets.VBox(children)
    box.add_class("xl-explorer")
    box._xl_links = links  # the jslinks, kept with the explorer (and inspected by the tests)
    return box


def _escape(text: str) -> str:
    return html.escape(str(text))


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise XLError(f"{what} needs columns {list(columns)}; missing {missing} "
                      f"(has {list(df.columns)})")
    if df.empty:
        raise XLError(f"{what}: the table is empty")


def _unique(series: pd.Series) -> list:
    """Values in order of first appearance (numbers sorted)."""
    values = [v.item() if isinstance(v, np.generic) else v for v in pd.unique(series)]
    if all(isinstance(v, (int, float)) for v in values):
        values.sort()
    return values


def similarity_explorer(similarity_df: pd.DataFrame, title: str | None = "Cross-lingual similarity",
                        dpi: int = DPI):
    """Choose model, layer and metric; see the language x language similarity heatmap.

    similarity_df: long form with columns model, layer, metric, lang_a, lang_b, value. A
    pair given in one direction only is mirrored. Each metric has one colour scale across
    models and layers, so that switching the model or layer compares like with like.
    """

    columns = ["model", "layer", "metric", "lang_a", "lang_b", "value"]
    _require_columns(similarity_df, columns, "similarity_explorer")
    df = similarity_df[columns]
    languages = list(pd.unique(pd.concat([df["lang_a"], df["lang_b"]], ignore_index=True)))
    ranges = {metric: (float(np.nanmin(g["value"])), float(np.nanmax(g["value"])))
              for metric, g in df.groupby("metric", sort=False)}
    groups = {key: g for key, g in df.groupby(["model", "layer", "metric"], sort=False)}

    def matrix(model, layer, metric) -> pd.DataFrame:
        g = groups.get((model, layer, metric))
        m = pd.DataFrame(np.nan, index=languages, columns=languages)
        if g is None:
            return m
        for a, b, v in zip(g["lang_a"], g["lang_b"], g["value"]):
            m.loc[a, b] = v
        mirrored = m.T
        return m.where(m.notna(), mirrored)

    size = min(7.0, max(3.0, 0.3 * len(languages) + 1.5))  # inches; ~560 px at most

    def render(model, layer, metric):
        fig = Figure(figsize=(size + 0.8, size))
        ax = fig.subplots()
        m = matrix(model, layer, metric)
        lo, hi = ranges[metric]
        if m.isna().all().all():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            sns.heatmap(m.astype(float), ax=ax, vmin=lo, vmax=hi, cmap="viridis", square=True,
                        annot=len(languages) <= 8, fmt=".2f", annot_kws={"fontsize": 7},
                        cbar_kws={"shrink": 0.8, "label": str(metric)})
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(labelsize=7 if len(languages) > 12 else 9)
        ax.set_title(f"{model} · layer {_label(layer)} · {metric}", fontsize=9)
        return fig

    options = {name: _unique(df[name]) for name in ["model", "layer", "metric"]}
    return explorer(render, options, title=title, dpi=dpi)


def spectrum_distance(sigma, base_sigma) -> float:
    """L2 distance between two sets of singular values, both sorted descending (shorter one zero-padded)."""
    a = np.sort(np.asarray(sigma, dtype=float))[::-1]
    b = np.sort(np.asarray(base_sigma, dtype=float))[::-1]
    n = max(len(a), len(b))
    a = np.pad(a, (0, n - len(a)))
    b = np.pad(b, (0, n - len(b)))
    return float(np.linalg.norm(a - b))


def svd_explorer(spectra_df: pd.DataFrame, base: str, title: str | None = "Singular value spectra",
                 dpi: int = DPI):
    """Choose model, matrix and layer; see its singular values beside the base model's.

    spectra_df: long form with columns model, layer, matrix, index, sigma (one row per
    singular value), including the base model's rows. The title gives d, the L2
    distance between the model's and the base's sorted singular values (as in Table 2).
    """

    columns = ["model", "layer", "matrix", "index", "sigma"]
    _require_columns(spectra_df, columns, "svd_explorer")
    df = spectra_df[columns]
    models = list(pd.unique(df["model"]))
    if base not in models:
        raise XLError(f"base model {base!r} is not in the spectra; models: {models}")
    others = [m for m in models if m != base] or [base]
    spectra = {key: np.sort(g["sigma"].to_numpy(dtype=float))[::-1]
               for key, g in df.groupby(["model", "matrix", "layer"], sort=False)}

    def render(model, matrix, layer):
        fig = Figure(figsize=(7.5, 3.0))
        left, right = fig.subplots(1, 2, sharey=True)
        ref = spectra.get((base, matrix, layer))
        own = spectra.get((model, matrix, layer))
        for ax, label, s in [(left, base, ref), (right, model, own)]:
            if s is None:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            else:
                if ax is right and ref is not None and model != base:
                    ax.plot(np.arange(1, len(ref) + 1), ref, color="0.6", lw=1, ls="--", label=base)
                ax.plot(np.arange(1, len(s) + 1), s, lw=1.5, label=label,
                        color="C0" if ax is left else "C1")
                ax.legend(fontsize=7, loc="upper right")
            ax.set_title(str(label), fontsize=9)
            ax.set_xlabel("index (1 = largest)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        left.set_ylabel("singular value σ", fontsize=8)
        d = spectrum_distance(own, ref) if own is not None and ref is not None else float("nan")
        fig.suptitle(f"{model} vs {base}, {matrix}, layer {_label(layer)}: d = {d:.3g}", fontsize=10)
        return fig

    options = {"model": others, "matrix": _unique(df["matrix"]), "layer": _unique(df["layer"])}
    return explorer(render, options, title=title, dpi=dpi)
