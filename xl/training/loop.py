"""The training loop shared by every model trained here: `fit` (AdamW, linear schedule, checkpoints,
resume, out-of-memory halving, `accelerate` for several GPUs) and `finish`, which saves the result."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm
from transformers import MBartForConditionalGeneration, XLMRobertaForMaskedLM, get_linear_schedule_with_warmup

from xl.models import store
from xl.training.objectives import IGNORE

# Part of every trained model's digest (xl.training.lab.digest_of, continued.continue_pretraining):
# changing it retrains every model.
VERSION = "lab-train-v3"  # v3: the head at labelled positions only (TargetPositionsOnly)


class HeadAtLabels(torch.nn.Module):
    """A language model seen for training: its LM head applied at the labelled positions only.

    transformers' models project every position onto the vocabulary and then ignore the unlabelled
    ones; the projection is most of a small model's compute. Same loss, same gradients. `inner` is
    the model; a subclass says how it reaches its last hidden states and its head.
    """

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.hidden(input_ids, attention_mask, labels)
        chosen = labels != IGNORE
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(self.head(hidden[chosen]), labels[chosen]))


class MaskedPositionsOnly(HeadAtLabels):
    """An XLM-R masked LM, its head at the masked positions (40% of the pieces)."""

    def hidden(self, input_ids, attention_mask, labels):
        return self.inner.roberta(input_ids, attention_mask=attention_mask).last_hidden_state

    def head(self, hidden):
        return self.inner.lm_head(hidden)


class TargetPositionsOnly(HeadAtLabels):
    """An mBART, its head at the target's pieces, not its padding (14% of a lab translation batch's
    target positions: 10% of a step's time)."""

    def hidden(self, input_ids, attention_mask, labels):
        decoder_input_ids = self.inner.prepare_decoder_input_ids_from_labels(labels=labels)
        return self.inner.model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                                use_cache=False).last_hidden_state

    def head(self, hidden):
        return self.inner.lm_head(hidden) + self.inner.final_logits_bias


def at_labels(model):
    """`model` as `fit` trains it: its head at the labelled positions where it is an XLM-R masked LM or an
    mBART (every lab model), else as it is. `unwrap` gives the model back."""
    if isinstance(model, XLMRobertaForMaskedLM):
        return MaskedPositionsOnly(model)
    return TargetPositionsOnly(model) if isinstance(model, MBartForConditionalGeneration) else model


def unwrap(model):
    """The model inside an `at_labels` view (or `model` itself)."""
    return model.inner if isinstance(model, HeadAtLabels) else model


def set_generation(model, tok, max_length: int) -> None:
    """Greedy decoding that starts and ends with </s>, as a trained encoder-decoder is evaluated."""
    g = model.generation_config
    g.decoder_start_token_id = tok.eos_token_id
    g.forced_eos_token_id = tok.eos_token_id
    g.bos_token_id, g.eos_token_id, g.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    g.max_length, g.num_beams, g.do_sample = max_length, 1, False


def _shard(batch: dict, accelerator) -> dict:
    """This process's share of a global batch (all of it on one process)."""
    n, i = accelerator.num_processes, accelerator.process_index
    return {k: (v if n == 1 else v[i::n]).to(accelerator.device) for k, v in batch.items()}


def _rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


def _targets(batch: dict) -> int:
    """What the loss averages over: label tokens (every lab objective), else rows."""
    labels = batch.get("labels")
    return int((labels != IGNORE).sum()) if labels is not None else _rows(batch)


def _backward(model, batch: dict, parts: int, accelerator) -> torch.Tensor:
    """Forward and backward of `batch` in `parts` pieces of consecutive rows; returns the batch's loss.

    The models' losses are means over label tokens, so each piece's loss is weighted by its
    share of the batch's label tokens: the accumulated gradient is the whole batch's.
    """
    total, loss = _targets(batch), 0.0
    for values in zip(*(torch.tensor_split(v, parts) for v in batch.values())):
        piece = dict(zip(batch, values))
        weight = _targets(piece) / total
        if weight:  # a piece without targets has no (NaN) loss and no gradient
            piece_loss = model(**piece).loss * weight
            accelerator.backward(piece_loss)
            loss = loss + piece_loss.detach()
    return loss


def _backward_within_memory(model, batch: dict, parts: int, accelerator, optimizer, where: str):
    """`_backward` in `parts` pieces, twice as many after every out-of-memory error; returns (loss, parts)."""
    while True:
        try:
            return _backward(model, batch, parts, accelerator), parts
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)  # the pieces that fitted start again
            if parts >= _rows(batch):
                raise
            parts *= 2
            if accelerator.device.type == "cuda":
                torch.cuda.empty_cache()
            tqdm.write(f"{where}: out of memory, batch size halved to {-(-_rows(batch) // parts)} "
                       f"(gradients of {parts} pieces accumulated: still a batch of {_rows(batch)})")


def _resume(state, digest: str, steps: int, model, optimizer, scheduler, device):
    """Load a checkpoint of this run (same digest, unfinished) into the training state; returns
    (first step, log, losses since the last log entry): (0, [], []) without one."""
    if state is None or state.get("digest") != digest or state["step"] >= steps:
        return 0, [], []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"], [tuple(x) for x in state["log"]], [x.to(device) for x in state.get("running", [])]


def fit(model, task, steps: int, *, lr: float, warmup: float, seed: int, digest: str, checkpoint: Path,
        checkpoint_every: int = 0, log_every: int = 10, clip: float = 1.0, desc: str = "training"):
    """Train `model` on `task.batch(step)` for steps 0..steps-1; returns (model, [(step, loss)]).

    AdamW, linear warmup (a fraction `warmup` of the steps) then linear decay to 0, gradient
    clipping, loss logged every `log_every` steps (mean since the last log). Every
    `checkpoint_every` steps model, optimizer, schedule, step, log and random state go to
    `checkpoint` (atomically); a checkpoint with the same `digest` is resumed from, an
    unreadable one ignored with a warning. Out of memory, each batch is cut into halves,
    quarters, ... whose gradients are accumulated: the updates stay those of the whole batch.
    """
    accelerator = Accelerator()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup * steps), steps)
    torch.manual_seed(seed)
    start, log, running = _resume(store.load_checkpoint(checkpoint), digest, steps, model, optimizer, scheduler,
                                  accelerator.device)  # running: losses since the last log entry
    if start:
        tqdm.write(f"{desc}: resuming from the checkpoint at step {start}")
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, leave=False,
               disable=not accelerator.is_local_main_process)
    parts = 1  # pieces each batch is cut into: doubles at every out-of-memory error
    for step in bar:
        batch = _shard(task.batch(step), accelerator)
        loss, parts = _backward_within_memory(model, batch, parts, accelerator, optimizer, f"{desc} step {step}")
        accelerator.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running.append(loss.detach())
        done = step + 1
        if done % log_every == 0 or done == steps:
            value = accelerator.reduce(torch.stack(running).mean(), "mean").item()
            log.append((done, value))
            running = []
            bar.set_postfix(loss=f"{value:.3f}")
        if checkpoint_every and done % checkpoint_every == 0 and done < steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                store.save_checkpoint(checkpoint, {
                    "digest": digest, "step": done, "log": log, "running": running, "rng": torch.get_rng_state(),
                    "model": accelerator.unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    bar.close()
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), log


def finish(model, tok, out_dir: Path, digest: str, log, seconds: float, extra: dict) -> Path:
    """Save a trained model once (main process) with its digest, loss log, time, size and `extra`."""
    state = PartialState()
    if state.is_main_process:
        info = {"digest": digest, "log": log, "seconds": round(seconds, 1),
                "parameters": sum(p.numel() for p in model.parameters()), **extra}
        store.save_trained(model, tok, out_dir, info)
    state.wait_for_everyone()
    return out_dir
