"""Names of the models in the book: short labels, families, and the paper row each lab model stands for."""
from __future__ import annotations

from xl.presets import LAB_MODELS, PAPER_MODELS

# family: LM = language-model objective, MT = translation from scratch, CP = LM model continued with MT
FAMILY = {"mBERT": "LM", "XLM-R": "LM", "mBART": "LM", "NLLB 600M": "MT",
          "mBART m2m": "CP", "mBART m2o": "CP", "mBART o2m": "CP",
          "lab-mlm": "LM", "lab-dae": "LM", "lab-mt": "MT", "lab-m2m": "CP", "lab-m2o": "CP", "lab-o2m": "CP"}
# the paper's model that each lab model is an analogue of
PAPER_ANALOGUE = {"lab-mlm": "XLM-R", "lab-dae": "mBART", "lab-mt": "NLLB 600M",
                  "lab-m2m": "mBART m2m", "lab-m2o": "mBART m2o", "lab-o2m": "mBART o2m"}
_LABEL_OF_ID = {hub_id: label for label, hub_id in PAPER_MODELS.items()}


def label(name: str) -> str:
    """'facebook/mbart-large-50' -> 'mBART'; lab names and unknown ids stay as they are."""
    return _LABEL_OF_ID.get(name, name)


def family(name: str) -> str:
    return FAMILY.get(label(name), "?")


def is_lab(name: str) -> bool:
    return name in LAB_MODELS


def base_of(names) -> str | None:
    """The base model the CP models continue from: lab-dae or mBART, if among `names`."""
    labels = {label(n): n for n in names}
    for base in ("lab-dae", "mBART"):
        if base in labels:
            return labels[base]
    return None
