"""The "Method" cell of each experiment chapter: its numpy and the library give the same number.

Each chapter has one code cell tagged `method`, self-contained, defining `ours` (numpy) and
`library` (the xl function the chapter calls). It is run here in a fresh namespace, as a
reader would run it, so the formula shown in the book is checked against the code that
computes the chapter's tables.
"""
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# float64 throughout, except the match head, which computes in float32
RTOL = {"similarity": 1e-9, "weights": 1e-9, "transfer": 1e-5}


def method_namespace(chapter: str) -> dict:
    """Run the chapter's `method` cell in a fresh namespace and return it."""
    cells = [c for c in jupytext.read(REPO / "notebooks" / f"{chapter}.md").cells
             if c.cell_type == "code" and "method" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"notebooks/{chapter}.md needs exactly one code cell tagged 'method'"
    namespace = {}
    exec(compile(cells[0].source, f"{chapter}.md:method", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module", params=sorted(RTOL))
def chapter(request):
    return request.param, method_namespace(request.param)


def test_numpy_and_library_agree(chapter):
    name, ns = chapter
    ours, library = np.asarray(ns["ours"], dtype=float), np.asarray(ns["library"], dtype=float)
    assert ours.shape == library.shape
    assert np.allclose(ours, library, rtol=RTOL[name], atol=0), (name, ours, library)


def test_cka_is_not_trivial_and_invariant_to_rotation():
    ns = method_namespace("similarity")
    assert 0.1 < ns["ours"] < 0.99  # rotated plus noise: related, not identical
    X, rotation = ns["X"], ns["rotation"]
    assert np.isclose(ns["linear_cka"](X, 3.0 * X @ rotation), 1.0, rtol=1e-12)  # rotation and scale
    unrelated = np.random.default_rng(1).normal(size=X.shape)
    assert ns["linear_cka"](X, unrelated) < ns["ours"]


def test_sigma_norm_is_the_frobenius_norm():
    ns = method_namespace("weights")
    sigma_norm, d = ns["ours"]
    assert np.isclose(sigma_norm, np.linalg.norm(ns["W_cp"]), rtol=1e-12)
    assert d > 0.1
    base_row = ns["toy_table"].query("model == 'base' and matrix == 'K'").iloc[0]
    assert np.isclose(base_row.sigma_norm, np.linalg.norm(ns["W_base"]), rtol=1e-12)
    assert np.isnan(base_row.d)  # the base is not compared with itself


def test_match_similarity_of_a_verse_with_itself_is_one_and_symmetric():
    ns = method_namespace("transfer")
    assert np.all((ns["ours"] > -1) & (ns["ours"] < 0.99))
    states, mask, match = ns["states"], ns["mask"], ns["match_similarity"]
    half = len(mask) // 2
    swapped = np.concatenate([states[:, half:], states[:, :half]], axis=1)
    swapped_mask = np.concatenate([mask[half:], mask[:half]])
    assert np.allclose(match(swapped, swapped_mask), ns["ours"], rtol=1e-6)
    same = np.concatenate([states[:, :half]] * 2, axis=1)
    same_mask = np.concatenate([mask[:half]] * 2)
    assert np.allclose(match(same, same_mask), 1.0, rtol=1e-6)
    with torch.no_grad():
        library = ns["head"].similarity(tuple(torch.from_numpy(same)), torch.from_numpy(same_mask)).numpy()
    assert np.allclose(library, 1.0, rtol=1e-5)
