"""Names of the models in the book: short labels, families, translation directions, and the paper
row each lab model stands for.

A paper model is named by its hub id or by a local folder (for machines without the hub) named
after the last part of its hub id: `models/mbart-large-50-many-to-many-mmt` is 'mBART m2m', as
`facebook/mbart-large-50-many-to-many-mmt` is (`huggingface-cli download ID --local-dir
models/<last part of ID>`).
"""
from __future__ import annotations

from pathlib import Path

from xl.presets import LAB_MODELS, PAPER_MODELS

# family: LM = language-model objective, MT = translation from scratch, CP = LM model continued with MT
FAMILY = {"mBERT": "LM", "XLM-R": "LM", "mBART": "LM", "NLLB 600M": "MT",
          "mBART m2m": "CP", "mBART m2o": "CP", "mBART o2m": "CP",
          "lab-mlm": "LM", "lab-dae": "LM", "lab-mt": "MT", "lab-m2m": "CP", "lab-m2o": "CP", "lab-o2m": "CP"}
# the translation directions each translation model was trained on (xl.objectives.directions)
DIRECTIONS = {"NLLB 600M": "m2m", "mBART m2m": "m2m", "mBART m2o": "m2o", "mBART o2m": "o2m",
              "lab-mt": "m2m", "lab-m2m": "m2m", "lab-m2o": "m2o", "lab-o2m": "o2m"}
# the paper's model that each lab model is an analogue of
PAPER_ANALOGUE = {"lab-mlm": "XLM-R", "lab-dae": "mBART", "lab-mt": "NLLB 600M",
                  "lab-m2m": "mBART m2m", "lab-m2o": "mBART m2o", "lab-o2m": "mBART o2m"}
_LABEL_OF_ID = {hub_id: label for label, hub_id in PAPER_MODELS.items()}
_LABEL_OF_FOLDER = {hub_id.rsplit("/", 1)[-1]: label for label, hub_id in PAPER_MODELS.items()}


def is_local(name: str) -> bool:
    """Whether `name` is a folder rather than a hub id or lab name (xl.models loads it as one)."""
    name = str(name)
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).expanduser().is_dir()


def label(name: str) -> str:
    """'facebook/mbart-large-50' -> 'mBART', and so is a folder '.../mbart-large-50';
    lab names, other ids and other folders stay as they are."""
    name = str(name)
    if name in _LABEL_OF_ID:
        return _LABEL_OF_ID[name]
    if is_local(name):
        return _LABEL_OF_FOLDER.get(Path(name).expanduser().name, name)
    return name


def family(name: str) -> str:
    return FAMILY.get(label(name), "?")


def directions(name: str) -> str | None:
    """'m2m', 'm2o' or 'o2m' for a translation model (MT or CP), None for the others."""
    return DIRECTIONS.get(label(name))


def is_lab(name: str) -> bool:
    return name in LAB_MODELS


def base_of(names) -> str | None:
    """The base model the CP models continue from: lab-dae or mBART, if among `names`."""
    labels = {label(n): n for n in names}
    for base in ("lab-dae", "mBART"):
        if base in labels:
            return labels[base]
    return None
