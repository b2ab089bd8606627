"""The lab models: small analogues of the paper's models, trained here on the Bible corpus.

| lab model | paper analogue | objective | data |
| --- | --- | --- | --- |
| lab-mlm | XLM-R, mBERT | masked LM | monolingual training verses |
| lab-dae | mBART | denoising (span infilling) | monolingual training verses |
| lab-m2m / m2o / o2m | mBART-50 MMT | lab-dae continued with translation | parallel training verses |
| lab-mt | NLLB | translation from scratch, all directions | parallel training verses |
| lab-dae-cont | (control) | lab-dae continued with denoising, the CP models' steps | the CP models' verses |

- `objectives`: the batches of each objective (masked LM, span infilling, translation directions).
- `loop`: `fit`, the training loop, with checkpoints, resume and out-of-memory halving; `finish` saves.
- `lab`: the lab schedule: architectures, data and settings from the preset, `lab_model` (trained
  once, found again by its digest), `train_lab_models` and their loss curves.
- `continued`: `continue_pretraining`, the paper-scale entry point as well: a hub mBART and a hub
  parallel corpus (`hub_parallel`).

Each model is saved by `xl.models.store` (model and tokenizer, atomically, with a marker file
holding its digest) to `xl.core.paths.model_dir(preset, name)`; training writes a checkpoint
beside the folder every `train_checkpoint_every` steps and resumes from it after a crash.
`xl train --preset lab` trains them from the command line; the loop uses `accelerate`, so
`accelerate launch -m xl train --preset lab` spreads each batch over several GPUs unchanged.
"""
# the model classes too: tests build lab models as training.MBartForConditionalGeneration(training.mbart_config(...))
from transformers import MBartForConditionalGeneration, XLMRobertaForMaskedLM

from xl.models.store import MARKER, checkpoint_path, is_trained, leftovers, marker, save
from xl.training.continued import continue_pretraining, hub_parallel
from xl.training.lab import (ARCH_KEYS, DROPOUT, SUMMARY_COLUMNS, TRAIN_KEYS, VERSION, digest_of, lab_model,
                             longer_training, mbart_config, monolingual, parallel_train, steps_of, train_lab_models,
                             training_log, translation_languages, xlmr_config)
from xl.training.loop import MaskedPositionsOnly, TargetPositionsOnly, at_labels, fit, unwrap

__all__ = ["MBartForConditionalGeneration", "XLMRobertaForMaskedLM",
           "MARKER", "checkpoint_path", "is_trained", "leftovers", "marker", "save",
           "continue_pretraining", "hub_parallel",
           "ARCH_KEYS", "DROPOUT", "SUMMARY_COLUMNS", "TRAIN_KEYS", "VERSION", "digest_of", "lab_model",
           "longer_training", "mbart_config", "monolingual", "parallel_train", "steps_of", "train_lab_models",
           "training_log", "translation_languages", "xlmr_config",
           "MaskedPositionsOnly", "TargetPositionsOnly", "at_labels", "fit", "unwrap"]
