"""Zero-shot cross-lingual transfer: fine-tune on English, test on every language.

For every (model, task, seed): a fresh copy of the pretrained encoder gets a task
head and is fine-tuned on the task's English training set; after every epoch
it is scored on the English dev set and the best epoch is kept (selection uses
English only); that checkpoint is then scored on the test set of every
language. Seeds change the head's initialisation, dropout and the order of
the training examples; a seed gives the same scores every time on a machine.

Heads: every model, encoder-only or the encoder of an encoder-decoder, is read
the same way, from its last layer (`last_hidden_state`, final layer norm
included for mBART/NLLB, as a head on the encoder would see it), pooled by the
mean over real tokens (`Encoder.pool_mask`: no padding, special or
language-code tokens); only the lab's pair head reads every layer:
* classification: dropout and a linear layer on the pooled vector;
* pairs (and ranking), two heads (`FinetuneParams.pair_head`):
  ``cross`` (XGLUE's, the paper preset's): the two texts joined by the
  tokenizer's separator token (`A </s> B`) into one sequence, the same for
  every model (mBART's tokenizer has no pair template; BERT's segment ids stay
  0), pooled, linear;
  ``match`` (the lab's, `MatchHead`): late interaction between the token
  states of the two texts, each encoded on its own: every token's best cosine
  match in the other text, averaged with learned token weights, on a learned
  mix of all layers. The lab models' cross-reference pairs are mostly told
  apart by the words they share (the word-overlap baseline,
  `xl.data.overlap.overlap_baseline`, scores 0.68 in English), which a linear head on
  pooled vectors reads badly from tiny encoders: on 360 English test pairs
  (400 training pairs, seed 0) the match
  head scored 0.56-0.66 on the six lab models where a linear head on
  [u, v, |u - v|, u * v] of the pooled vectors scored 0.52-0.58 (the joined
  sequence: 0.50-0.54 on 150 pairs);
* ranking (WPR): pair classification over the relevance labels; candidates are
  ranked by the expected label under the head's softmax;
* token tagging: linear on every token, trained and read at each word's first
  sub-word; words are tokenized one by one (`is_split_into_words`) between the
  model's own special tokens; words cut by `max_length` get the most frequent
  training tag;
* retrieval: no fine-tuning and no seed: cosine nearest neighbour of mean-pooled
  representations (`Encoder.encode`), accuracy@1 (metric ``acc@1``) at the last
  layer (the headline row, its `layer` empty) and at every layer (`layer` N,
  0 = embeddings); `report.main_rows` keeps the headline rows.
`FinetuneParams.head_norm` standardises the pooled vector (BatchNorm) before the
classification head: the weakly trained lab models give sentence vectors that
all point nearly the same way (pairwise cosine above 0.99), which a plain
linear head reads badly; the lab presets use it, the paper preset not.

Optimisation: AdamW (weight decay 0.01), linear warm-up over the first 10% of
steps then linear decay, gradient clipping at 1, dropout 0.1 on the pooled
vector. Sizes, epochs, learning rate, batch, max length and heads come from
the preset (`transfer_*` keys). On CPU every fine-tuning runs on one thread, so
scores do not depend on the machine's core count; `run` spreads jobs over
worker processes instead.

Results of every (model, task, seed, parameters) are cached on disk
(`cache_dir("transfer")`, one JSON file each, written atomically by `xl.core.memo`), keyed by the
model's fingerprint and weights checksum, the task's content fingerprint and
the parameters, so a re-run reuses them and any change re-runs only what it
touches.

Modules, in import order (each imports only those before it):
* `params`: `FinetuneParams`, the fine-tuning hyper-parameters (from a preset's `transfer_*` keys);
* `batching`: model inputs (joined pairs, special tokens, `_TagBatcher`), evaluation order, `max_length`;
* `heads`: `TaskModel` and `MatchHead`;
* `finetuning`: `finetune`, `predict`, the training loop and the cache keys of fine-tuning;
* `retrieval`: `retrieve`;
* `chance`: the chance table (chance level and test-set size n per task and language), scores
  normalised by chance, binomial tests against chance, the tasks at floor and the narrow decisions;
* `report`: tables of results (`main_rows`, `summary`, `table1`, `normalised_table1`, `above_chance`,
  `beside_paper`), `transfer_estimates` (bootstrap over seeds and test examples) and `agreement`
  (the verdict through `xl.analysis.verdict`);
* `jobs`: `run_job`, `evaluate`, `run` and its worker processes;
* `relation`: `relate`, transfer against the similarity and separability chapters.
The names below are re-exported so that `from xl import transfer; transfer.run(cfg)` works.
"""
from __future__ import annotations

from xl.transfer.batching import max_length
from xl.transfer.finetuning import CACHE_VERSION, finetune, model_fingerprint, predict
from xl.transfer.heads import MatchHead, TaskModel
from xl.transfer.jobs import (COLUMNS, build_tasks, default_workers, evaluate, model_label, run, run_job,
                              supported_languages)
from xl.transfer.params import FinetuneParams
from xl.transfer.relation import BASELINE_SUFFIXES, relate
from xl.transfer.chance import (PROPORTIONS, above_chance_sentence, at_floor, chance_table, floor_sentence,
                                narrow_floor, normalise, normalised)
from xl.transfer.report import (PAPER, above_chance, agreement, beside_overlap, beside_paper, layer_rows, main_rows,
                                normalised_table1, paper_table1, seed_spread, summary, table1, transfer_estimates,
                                with_layer)
from xl.transfer.retrieval import retrieve

__all__ = [
    "BASELINE_SUFFIXES", "CACHE_VERSION", "COLUMNS", "PAPER", "PROPORTIONS", "FinetuneParams", "MatchHead",
    "TaskModel", "above_chance", "above_chance_sentence", "agreement", "at_floor", "beside_overlap",
    "beside_paper", "build_tasks", "chance_table", "default_workers", "evaluate", "finetune", "floor_sentence",
    "layer_rows", "main_rows", "max_length", "model_fingerprint", "model_label", "narrow_floor", "normalise",
    "normalised",
    "normalised_table1", "paper_table1", "predict", "relate", "retrieve", "run", "run_job", "seed_spread",
    "summary", "supported_languages", "table1", "transfer_estimates", "with_layer",
]
