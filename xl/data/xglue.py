"""XGLUE's eight understanding tasks of Table 1 (paper preset), as `xl.data.tasks.Task`s.

Two sources, same result:
* a local copy of XGLUE's release (`xglue_full_dataset/`, one folder per task:
  NC, XNLI, PAWSX, QAM, QADSM, WPR, NER, POS), read with `local_dir=`;
* the Hugging Face Hub's `microsoft/xglue` through its auto-converted parquet
  files (revision ``refs/convert/parquet``, ``<config>/<split>/*.parquet``):
  the hub copy is a loading script, which `datasets` 4+ no longer runs.
  Another repository with the same layout can be named with `repo=`.

Training is on English train, epoch selection on English validation, and the
test split of every language is scored (``validation`` is used instead where a
test split carries no labels, with a warning). Metrics are XGLUE's: accuracy
(NC, XNLI, PAWS-X, QAM, QADSM, and POS per word), span F1 (NER, CoNLL/seqeval
style, micro over entity types), nDCG (WPR, per query over all its candidates,
gain = relevance label 0-4, averaged over queries; see `xl.data.metrics.ndcg`).
"""
from __future__ import annotations

import urllib.parse
import warnings
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from xl.core import hub
from xl.core.errors import XLError
from xl.data import languages as langs
from xl.data.tasks import Task

HUB_REPO = "microsoft/xglue"
HUB_REVISION = "refs/convert/parquet"

NER_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
POS_TAGS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
            "PUNCT", "SCONJ", "SYM", "VERB", "X"]

# name -> config on the hub, release folder, kind, metric, languages, label names (hub order),
# raw columns (hub names) and release file names (train / dev / test, {lang} filled in).
SPECS = {
    "NC": dict(config="nc", folder="NC", kind="classification", metric="accuracy",
               languages=["en", "de", "es", "fr", "ru"],
               labels=["foodanddrink", "sports", "travel", "finance", "lifestyle", "news", "entertainment",
                       "health", "video", "autos"],
               columns=["news_title", "news_body", "news_category"],
               files=("xglue.nc.en.train", "xglue.nc.{lang}.dev", "xglue.nc.{lang}.test")),
    "XNLI": dict(config="xnli", folder="XNLI", kind="pair", metric="accuracy",
                 languages=["en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"],
                 labels=["entailment", "neutral", "contradiction"],
                 columns=["premise", "hypothesis", "label"],
                 files=("multinli.train.en.tsv", "{lang}.dev", "{lang}.test")),
    "PAWS-X": dict(config="paws-x", folder="PAWSX", kind="pair", metric="accuracy",
                   languages=["en", "de", "es", "fr"], labels=["different", "same"],
                   columns=["sentence1", "sentence2", "label"],
                   files=("en/train.tsv", "{lang}/dev_2k.tsv", "{lang}/test_2k.tsv")),
    "QAM": dict(config="qam", folder="QAM", kind="pair", metric="accuracy", languages=["en", "de", "fr"],
                labels=["False", "True"], columns=["question", "answer", "label"],
                files=("xglue.qam.en.train", "xglue.qam.{lang}.dev", "xglue.qam.{lang}.test")),
    "QADSM": dict(config="qadsm", folder="QADSM", kind="pair", metric="accuracy", languages=["en", "de", "fr"],
                  labels=["Bad", "Good"], columns=["query", "ad_title", "ad_description", "relevance_label"],
                  files=("xglue.qadsm.en.train", "xglue.qadsm.{lang}.dev", "xglue.qadsm.{lang}.test")),
    "WPR": dict(config="wpr", folder="WPR", kind="ranking", metric="ndcg",
                languages=["en", "de", "es", "fr", "it", "pt", "zh"],
                labels=["Bad", "Fair", "Good", "Excellent", "Perfect"],
                columns=["query", "web_page_title", "web_page_snippet", "relavance_label"],
                files=("xglue.wpr.en.train", "xglue.wpr.{lang}.dev", "xglue.wpr.{lang}.test")),
    "NER": dict(config="ner", folder="NER", kind="tagging", metric="f1", languages=["en", "de", "es", "nl"],
                labels=NER_TAGS, columns=["words", "ner"], files=("en.train", "{lang}.dev", "{lang}.test")),
    "POS": dict(config="pos", folder="POS", kind="tagging", metric="accuracy",
                languages=["en", "ar", "bg", "de", "el", "es", "fr", "hi", "it", "nl", "pl", "pt", "ru", "th", "tr",
                           "ur", "vi", "zh"],
                labels=POS_TAGS, columns=["words", "pos"], files=("en.train", "{lang}.dev", "{lang}.test")),
}
TASKS = list(SPECS)
# Label spellings of the release files that differ from the label names.
ALIASES = {"XNLI": {"contradictory": "contradiction"}, "PAWS-X": {"0": "different", "1": "same"},
           "QAM": {"0": "False", "1": "True"}, "WPR": {"0": "Bad", "1": "Fair", "2": "Good", "3": "Excellent",
                                                       "4": "Perfect"}}
SPLITS = {"train": 0, "validation": 1, "test": 2}


def spec(task: str) -> dict:
    if task not in SPECS:
        raise XLError(f"unknown XGLUE task {task!r}; available: {', '.join(TASKS)}")
    return SPECS[task]


def languages(task: str) -> list[str]:
    return list(spec(task)["languages"])


# ---------------------------------------------------------------- reading the release files

def _release_path(task: str, local_dir, split: str, lang: str) -> Path:
    s = spec(task)
    return Path(local_dir) / s["folder"] / s["files"][SPLITS[split]].format(lang=lang)


def _read_tsv(path: Path, task: str) -> pd.DataFrame:
    s = spec(task)
    columns = s["columns"]
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    header = path.suffix == ".tsv"  # PAWS-X files and XNLI's training file start with a header
    for number, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if task == "PAWS-X":
            fields = fields[1:]  # id column
        if len(fields) == len(columns) - 1:
            fields = fields + [None]  # a test file without labels
        if len(fields) < len(columns):
            raise XLError(f"{path}, line {number}: {len(fields)} tab-separated fields, expected {len(columns)} "
                          f"({', '.join(columns)})")
        rows.append(fields[:len(columns)])
    return pd.DataFrame(rows, columns=columns)


def _read_conll(path: Path, task: str) -> pd.DataFrame:
    columns = spec(task)["columns"]
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if words:
                    sentences.append((words, tags))
                    words, tags = [], []
                continue
            parts = line.split("\t") if "\t" in line else line.rsplit(" ", 1)
            if len(parts) < 2:
                raise XLError(f"{path}, line {number}: expected 'word tag', got {line!r}")
            words.append(parts[0])
            tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    return pd.DataFrame(sentences, columns=columns)


def read_release(task: str, local_dir, split: str, lang: str) -> pd.DataFrame:
    """One split of one language from XGLUE's release files, with the hub's column names."""
    s = spec(task)
    if split not in SPLITS:
        raise XLError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    path = _release_path(task, local_dir, split, lang)
    if not path.is_file():
        raise XLError(f"XGLUE file missing: {path} (local_dir should be the unpacked xglue_full_dataset/ folder)")
    return _read_conll(path, task) if s["kind"] == "tagging" else _read_tsv(path, task)


# ---------------------------------------------------------------- the hub's parquet files

def hub_url(task: str, split: str, lang: str, repo: str = HUB_REPO, revision: str = HUB_REVISION) -> str:
    name = "train" if split == "train" else f"{split}.{lang}"
    return f"hf://datasets/{repo}@{urllib.parse.quote(revision, safe='')}/{spec(task)['config']}/{name}/*.parquet"


def read_hub(task: str, split: str, lang: str, repo: str = HUB_REPO, revision: str = HUB_REVISION) -> pd.DataFrame:
    """One split of one language from the hub's auto-converted parquet files (label ids become names)."""
    hub.require(f"XGLUE {task}", "Pass local_dir= (preset key xglue_dir) with XGLUE's release, "
                "xglue_full_dataset/ unpacked, or run where the hub is reachable.")
    url = hub_url(task, split, lang, repo, revision)
    try:
        ds = datasets.load_dataset("parquet", data_files={"data": url}, split="data")
    except Exception as err:  # noqa: BLE001 - any failure here is a missing or unreadable file
        raise XLError(f"cannot read XGLUE {task} {split} {lang} from {url}: {err}") from err
    df = ds.to_pandas()
    names = spec(task)["labels"]
    label_col = spec(task)["columns"][-1]
    if spec(task)["kind"] == "tagging":
        df[label_col] = df[label_col].map(lambda seq: [names[int(t)] if str(t).lstrip("-").isdigit() else str(t)
                                                       for t in seq])
        df["words"] = df["words"].map(list)
    else:
        df[label_col] = df[label_col].map(lambda v: None if v is None or (isinstance(v, (int, np.integer)) and v < 0)
                                          else names[int(v)] if isinstance(v, (int, np.integer)) else str(v))
    return df[spec(task)["columns"]]


# ---------------------------------------------------------------- examples

def examples(task: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Raw rows (hub column names, label names) -> example frame of xl.tasks (label ids)."""
    s = spec(task)
    names = s["labels"]
    alias = ALIASES.get(task, {})
    cols = s["columns"]
    if s["kind"] == "tagging":
        index = {n: i for i, n in enumerate(names)}

        def ids(seq):
            bad = [t for t in seq if t not in index and alias.get(t) not in index]
            if bad:
                raise XLError(f"XGLUE {task}: unknown tag(s) {sorted(set(bad))[:5]}; known: {names}")
            return [index.get(t, index.get(alias.get(t))) for t in seq]

        return pd.DataFrame({"words": raw[cols[0]].map(list), "tags": raw[cols[1]].map(ids)})

    def label_id(v):
        if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
            return -1
        v = alias.get(str(v).strip(), str(v).strip())
        if v not in names:
            raise XLError(f"XGLUE {task}: unknown label {v!r}; known: {names}")
        return names.index(v)

    label = raw[cols[-1]].map(label_id).astype("int64")
    if task == "NC":
        return pd.DataFrame({"text": raw.news_title.astype(str), "text_b": raw.news_body.astype(str), "label": label})
    if task == "QADSM":
        return pd.DataFrame({"text": raw["query"].astype(str),
                             "text_b": raw.ad_title.astype(str) + " " + raw.ad_description.astype(str),
                             "label": label})
    if task == "WPR":
        return pd.DataFrame({"text": raw["query"].astype(str),
                             "text_b": raw.web_page_title.astype(str) + " " + raw.web_page_snippet.astype(str),
                             "label": label, "group": raw["query"].astype(str)})
    return pd.DataFrame({"text": raw[cols[0]].astype(str), "text_b": raw[cols[1]].astype(str), "label": label})


def _has_labels(task: str, df: pd.DataFrame) -> bool:
    if spec(task)["kind"] == "tagging":
        return len(df) > 0
    return len(df) > 0 and bool((df.label >= 0).all())


def _subsample(df: pd.DataFrame, size, rng, task: str) -> pd.DataFrame:
    if size is None or len(df) <= int(size):
        return df.reset_index(drop=True)
    if "group" in df:  # whole queries, so that nDCG stays meaningful
        groups = df.group.unique()
        chosen, total = [], 0
        for g in rng.permutation(groups):
            chosen.append(g)
            total += int((df.group == g).sum())
            if total >= int(size):
                break
        return df[df.group.isin(set(chosen))].reset_index(drop=True)
    return df.iloc[np.sort(rng.choice(len(df), int(size), replace=False))].reset_index(drop=True)


def load(task: str, languages=None, local_dir=None, *, train_size=None, dev_size=None, eval_size=None,
         seed: int = 0, eval_split: str = "test", repo: str = HUB_REPO, revision: str = HUB_REVISION) -> Task:
    """An XGLUE task: English train and validation, `eval_split` of every language.

    local_dir: XGLUE's release folder (xglue_full_dataset/), else the hub (fails fast offline).
    Sizes cap the examples (random, seeded; WPR keeps whole queries); None keeps all.
    """
    s = spec(task)
    chosen = langs.check(languages if languages is not None else s["languages"], s["languages"], f"XGLUE {task}")
    if eval_split not in ("test", "validation"):
        raise XLError(f"eval_split must be 'test' or 'validation', got {eval_split!r}")

    def read(split, lang):
        raw = read_release(task, local_dir, split, lang) if local_dir is not None else \
            read_hub(task, split, lang, repo, revision)
        return examples(task, raw)

    rng = np.random.default_rng(seed)
    train = read("train", "en")
    dev = read("validation", "en")
    if not _has_labels(task, train) or not _has_labels(task, dev):
        raise XLError(f"XGLUE {task}: English train or validation has no labels")
    test = {}
    for lang in chosen:
        df = read(eval_split, lang)
        if not _has_labels(task, df) and eval_split == "test":
            warnings.warn(f"XGLUE {task} {lang}: the test split has no labels; scoring the validation split")
            df = read("validation", lang)
        test[lang] = _subsample(df, eval_size, rng, task)
    return Task(task, s["kind"], s["metric"], list(s["labels"]), _subsample(train, train_size, rng, task),
                _subsample(dev, dev_size, rng, task), test, description=f"XGLUE {task}")


def tasks(cfg: dict, names=None) -> dict[str, Task]:
    """The preset's XGLUE tasks (cfg['transfer_tasks'], sizes and xglue_dir from the preset)."""
    names = list(names if names is not None else cfg["transfer_tasks"])
    for name in names:
        spec(name)
    return {name: load(name, None, cfg["xglue_dir"], train_size=cfg["transfer_train_size"],
                       dev_size=cfg["transfer_dev_size"], eval_size=cfg["transfer_eval_size"],
                       seed=cfg["seed"]) for name in names}


def write_sample(folder, n: int = 6, seed: int = 0) -> Path:
    """A tiny fake XGLUE release in the original file formats (for tests and demos): returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]

    def sentence(k=5):
        return " ".join(rng.choice(words, k))

    for task, s in SPECS.items():
        for split, pattern in zip(SPLITS, s["files"]):
            for lang in (["en"] if split == "train" else s["languages"]):
                path = folder / s["folder"] / pattern.format(lang=lang)
                path.parent.mkdir(parents=True, exist_ok=True)
                lines = []
                if s["kind"] == "tagging":
                    for i in range(n):
                        toks = rng.choice(words, 4)
                        tags = [s["labels"][int(rng.integers(len(s["labels"])))] for _ in toks]
                        if task == "NER":  # valid BIO
                            tags = ["B-PER", "I-PER", "O", "B-LOC"]
                        lines += [f"{w} {t}" for w, t in zip(toks, tags)] + [""]
                    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                    continue
                raw_labels = {"XNLI": ["entailment", "neutral", "contradictory"], "PAWS-X": ["0", "1"],
                              "QAM": ["0", "1"], "WPR": ["0", "1", "2", "3", "4"]}.get(task, s["labels"])
                if path.suffix == ".tsv":
                    lines.append("\t".join((["id"] if task == "PAWS-X" else []) + s["columns"]))
                for i in range(n):
                    fields = [sentence() for _ in s["columns"][:-1]]
                    if task == "WPR":
                        fields[0] = f"query {i // 3}"
                    if task == "PAWS-X":
                        fields = [str(i)] + fields
                    lines.append("\t".join(fields + [raw_labels[i % len(raw_labels)]]))
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder

