"""Every model of the book, described once: label, family, objective, translation directions, where
it comes from (hub id or the lab model it continues), the paper model it stands for, its data.

Every other module reads these facts from here. A paper model is named by its hub id or by a local
folder (for machines without the hub) named after the last part of its hub id:
`models/mbart-large-50-many-to-many-mmt` is 'mBART m2m', as `facebook/mbart-large-50-many-to-many-mmt`
is (`huggingface-cli download ID --local-dir models/<last part of ID>`).
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

from xl.core.errors import XLError

# LM = language-model objective, MT = translation from scratch, CP = LM model continued with MT
FAMILIES = ("LM", "MT", "CP")
# what each translation model learned to translate (xl.training.objectives.directions)
DIRECTIONS = {"m2m": "all directions among the languages", "m2o": "every language into English",
              "o2m": "English into every language",
              "en-m2m": "every language into and out of English (English-centric many-to-many)"}
OBJECTIVES = {"mlm": "masked LM", "dae": "denoising (span infilling)",
              "cp": "translation, continued from lab-dae", "mt": "translation from scratch",
              "dae-cont": "denoising, continued from lab-dae (the CP models' steps and verses)"}
# the train_steps entry of each objective: the equal-compute control trains exactly as long as the CP models
STEPS_OF = {"mlm": "mlm", "dae": "dae", "cp": "cp", "mt": "mt", "dae-cont": "cp"}


@dataclasses.dataclass(frozen=True)
class Model:
    label: str  # the name in every table: 'mBART m2o', 'lab-m2o'
    family: str  # one of FAMILIES
    objective: str  # lab: a key of OBJECTIVES; paper: what the model was trained with
    directions: str | None = None  # a key of DIRECTIONS for translation models, else None
    hub_id: str | None = None  # paper models
    base: str | None = None  # the label of the model this one continues
    paper_analogue: str | None = None  # lab models: the label of the paper model it stands for
    arch: str = "mbart"  # the encoder's architecture: bert, xlmr, mbart or m2m100 (NLLB)

    @property
    def is_lab(self) -> bool:
        return self.hub_id is None

    @property
    def data(self) -> str:
        return f"verse pairs, {DIRECTIONS[self.directions]}" if self.directions else "monolingual verses"


MODELS = {m.label: m for m in [
    Model("mBERT", "LM", "masked LM", hub_id="bert-base-multilingual-cased", arch="bert"),
    Model("XLM-R", "LM", "masked LM", hub_id="xlm-roberta-base", arch="xlmr"),
    Model("mBART", "LM", "denoising", hub_id="facebook/mbart-large-50"),
    Model("NLLB 600M", "MT", "translation", "m2m", hub_id="facebook/nllb-200-distilled-600M", arch="m2m100"),
    # mBART-50's many-to-many model was fine-tuned on English-centric pairs (Tang et al. 2020)
    Model("mBART m2m", "CP", "translation", "en-m2m", hub_id="facebook/mbart-large-50-many-to-many-mmt",
          base="mBART"),
    Model("mBART m2o", "CP", "translation", "m2o", hub_id="facebook/mbart-large-50-many-to-one-mmt", base="mBART"),
    Model("mBART o2m", "CP", "translation", "o2m", hub_id="facebook/mbart-large-50-one-to-many-mmt", base="mBART"),
    Model("lab-mlm", "LM", "mlm", paper_analogue="XLM-R", arch="xlmr"),
    Model("lab-dae", "LM", "dae", paper_analogue="mBART"),
    Model("lab-m2m", "CP", "cp", "en-m2m", base="lab-dae", paper_analogue="mBART m2m"),
    Model("lab-m2o", "CP", "cp", "m2o", base="lab-dae", paper_analogue="mBART m2o"),
    Model("lab-o2m", "CP", "cp", "o2m", base="lab-dae", paper_analogue="mBART o2m"),
    Model("lab-mt", "MT", "mt", "m2m", paper_analogue="NLLB 600M"),
    # the equal-compute control: lab-dae trained on as much more, without translation
    Model("lab-dae-cont", "LM", "dae-cont", base="lab-dae", paper_analogue="mBART"),
]}
PAPER_MODELS = {m.label: m.hub_id for m in MODELS.values() if not m.is_lab}  # label -> hub id
LAB_MODELS = [m.label for m in MODELS.values() if m.is_lab]
_LABEL_OF_FOLDER = {hub_id.rsplit("/", 1)[-1]: label for label, hub_id in PAPER_MODELS.items()}
_LABEL_OF_ID = {hub_id: label for label, hub_id in PAPER_MODELS.items()}


def is_local(name: str) -> bool:
    """Whether `name` is a folder rather than a hub id or lab name (xl.models.encoder loads it as one)."""
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


def spec(name: str) -> Model | None:
    """The registry's entry for a lab name, hub id or folder; None for models it does not know."""
    return MODELS.get(label(name))


def family(name: str) -> str:
    """'LM', 'MT' or 'CP'; '?' for a model the registry does not know."""
    entry = spec(name)
    return entry.family if entry else "?"


def directions(name: str) -> str | None:
    """A key of DIRECTIONS ('m2m', 'en-m2m', 'm2o', 'o2m') for a translation model (MT or CP), None for the others."""
    entry = spec(name)
    return entry.directions if entry else None


def paper_analogue(name: str) -> str:
    """The paper row a model is compared with: its analogue for a lab model, else its own label."""
    entry = spec(name)
    return entry.paper_analogue if entry and entry.paper_analogue else label(name)


def is_lab(name: str) -> bool:
    return name in LAB_MODELS


def lab_spec(name: str) -> Model:
    """The entry of lab model `name`, or an XLError naming the lab models."""
    if not is_lab(name):
        raise XLError(f"unknown lab model {name!r}; choose one of {LAB_MODELS}")
    return MODELS[name]


def base_of(names) -> str | None:
    """The base model the CP models continue from: lab-dae or mBART, if among `names`."""
    labels = {label(n): n for n in names}
    bases = sorted({m.base for m in MODELS.values() if m.family == "CP"}, key=lambda b: not is_lab(b))
    return next((labels[b] for b in bases if b in labels), None)


def misspelt_lab_model(name: str) -> str | None:
    """The lab model that `name` (no slash, neither a lab model, a paper hub id nor a folder) is
    probably a typo of: 'lab-mlmm' -> 'lab-mlm'; None when it is close to none (a hub id)."""
    name = str(name)
    if "/" in name or name in LAB_MODELS or name in PAPER_MODELS.values() or is_local(name):
        return None
    close = difflib.get_close_matches(name, LAB_MODELS, n=1, cutoff=0.75)  # hub ids like 'gpt2' stay clear
    return close[0] if close else None
