"""XGLUE: release-format loading from a local sample, the hub loader offline, and XGLUE's metrics."""
import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest

from xl.core import hub
from xl.core.errors import XLError
from xl.data import metrics, tasks, xglue


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return xglue.write_sample(tmp_path_factory.mktemp("xglue_full_dataset"), n=6)


@pytest.mark.parametrize("name", xglue.TASKS)
def test_load_every_task_from_release_files(sample, name):
    task = xglue.load(name, local_dir=sample)
    spec = xglue.spec(name)
    assert task.kind == spec["kind"] and task.metric == spec["metric"]
    assert task.languages == spec["languages"] and len(task.train) == 6 and len(task.dev) == 6
    for lang, df in task.test.items():
        assert len(df) == 6
        if task.kind == "tagging":
            assert all(len(w) == len(t) for w, t in zip(df.words, df.tags))
            assert all(0 <= t < len(task.labels) for s in df.tags for t in s)
        else:
            assert df.label.between(0, len(task.labels) - 1).all()
            assert {"text", "text_b"} <= set(df.columns) or task.kind == "classification"
    assert set(task.chance()) == set(spec["languages"])


def test_release_labels_are_mapped(sample):
    xnli = xglue.load("XNLI", ["en", "de"], local_dir=sample)
    assert sorted(xnli.train.label.unique()) == [0, 1, 2]  # 'contradictory' is read as contradiction
    paws = xglue.load("PAWS-X", local_dir=sample)
    assert set(paws.test["fr"].label) == {0, 1}
    wpr = xglue.load("WPR", local_dir=sample)
    assert wpr.test["zh"].group.nunique() == 2 and sorted(wpr.train.label.unique()) == [0, 1, 2, 3, 4]
    ner = xglue.load("NER", local_dir=sample)
    assert [ner.labels[t] for t in ner.test["nl"].tags.iloc[0]] == ["B-PER", "I-PER", "O", "B-LOC"]


def test_test_split_without_labels_falls_back_to_validation(sample):
    path = sample / "QAM" / "xglue.qam.de.test"
    original = path.read_text()
    path.write_text("\n".join(line.rsplit("\t", 1)[0] for line in original.splitlines()) + "\n")
    try:
        with pytest.warns(UserWarning, match="no labels"):
            task = xglue.load("QAM", ["de"], local_dir=sample)
        assert (task.test["de"].label >= 0).all()
    finally:
        path.write_text(original)


@pytest.mark.fault
def test_missing_file_and_unknown_names(sample, tmp_path):
    with pytest.raises(XLError, match="missing"):
        xglue.load("NC", local_dir=tmp_path)
    with pytest.raises(XLError, match="unknown XGLUE task"):
        xglue.load("SQuAD", local_dir=sample)
    with pytest.raises(XLError, match="unknown language"):
        xglue.load("NER", ["en", "fr"], local_dir=sample)


@pytest.mark.fault
def test_hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reachable.cache_clear()
    try:
        start = time.time()
        with pytest.raises(XLError, match="Hugging Face Hub"):
            xglue.load("PAWS-X")
        assert time.time() - start < 5
    finally:
        hub.reachable.cache_clear()


def test_hub_url_uses_the_parquet_conversion():
    url = xglue.hub_url("PAWS-X", "validation", "de")
    assert url == "hf://datasets/microsoft/xglue@refs%2Fconvert%2Fparquet/paws-x/validation.de/*.parquet"
    assert xglue.hub_url("NER", "train", "en").endswith("/ner/train/*.parquet")


def test_subsampling_keeps_whole_queries(sample):
    wpr = xglue.load("WPR", local_dir=sample, eval_size=2)
    for df in wpr.test.values():
        assert df.groupby("group").size().eq(3).all()


# ---------------------------------------------------------------- metrics

def test_accuracy():
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75


def test_span_f1_seqeval_style():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O"]]
    # gold spans: PER(0,2) LOC(3,4) ORG(0,3); predicted: PER(0,2) ORG(3,4) ORG(0,2); 1 hit
    assert metrics.span_f1(gold, pred) == pytest.approx(2 * (1 / 3) * (1 / 3) / (2 / 3))
    assert metrics.span_f1(gold, gold) == 1.0
    # I- after O opens a span (conlleval/seqeval), a type change closes one
    assert metrics.spans(["O", "I-PER", "I-PER", "I-LOC"]) == {("PER", 1, 3), ("LOC", 3, 4)}
    assert metrics.span_f1([["O", "O"]], [["O", "O"]]) == 0.0


def test_ndcg_against_hand_computed_value():
    labels = [3, 2, 0, 1]
    scores = [0.1, 0.9, 0.5, 0.2]
    # ranking by score: labels 2, 0, 1, 3; ideal: 3, 2, 1, 0
    dcg = 2 / math.log2(2) + 0 / math.log2(3) + 1 / math.log2(4) + 3 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4) + 0 / math.log2(5)
    assert metrics.ndcg(["q"] * 4, labels, scores) == pytest.approx(dcg / idcg)
    assert dcg / idcg == pytest.approx(0.79634, abs=1e-5)
    # mean over queries; a query with a single candidate is skipped, as in XGLUE
    both = metrics.ndcg(["q"] * 4 + ["r", "r", "s"], labels + [0, 2, 1], scores + [0.3, 0.1, 0.5])
    assert both == pytest.approx((dcg / idcg + (2 / math.log2(3)) / 2) / 2)


def test_ranking_chance_is_random_order():
    labels = [3, 2, 0, 1, 0]
    df = pd.DataFrame({"group": ["q"] * 5, "label": labels})
    task = tasks.Task("r", "ranking", "ndcg", list("abcd"), df, None, {"en": df})
    discount = 1 / np.log2(np.arange(2, 7))
    idcg = (np.sort(labels)[::-1] * discount).sum()
    exact = np.mean([(np.array(order) * discount).sum() / idcg for order in itertools.permutations(labels)])
    assert task.chance()["en"] == pytest.approx(exact)
