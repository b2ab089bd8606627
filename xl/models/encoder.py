"""One encoder interface for every model: the paper's hub models, lab models, any saved folder.

`load_encoder(name)` gives an `Encoder` whose `encode(texts, lang)` returns the
mean-pooled representation of every sentence at every layer (embeddings
first), as a float32 array (layers + 1, sentences, hidden), cached on disk.

Encoder-decoders (mBART, M2M100/NLLB) keep only their encoder. Their encoders
are pre-LN: each layer adds to a residual stream and a final layer norm
normalises the last one; transformers puts that normalised output as the last
entry of `hidden_states`, the other entries being the raw stream. We take the
raw stream at every layer, the last one included (captured with a hook on the
final layer norm), so that every layer is measured the same way; the final
norm is applied to no layer. (Post-LN encoders, BERT and XLM-R, normalise
every layer's output themselves: nothing to do.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import try_to_load_from_cache
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from xl.core import hub, io, memo, paths, presets
from xl.core.errors import XLError
from xl.core.tensors import max_positions
from xl.data import languages as langs
from xl.models import registry

CACHE_VERSION = "reps-v1"


def quiet_transformers() -> None:
    """Keep load reports and weight-loading bars out of the book's pages (errors still show)."""
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


LAB_HINT = "train it first with the models chapter: xl run models --preset {preset}"


def _download_hint(name: str) -> str:
    folder = f"models/{name.rsplit('/', 1)[-1]}"  # a folder so named is that model to xl.models.registry
    return (f"On a machine with internet run `huggingface-cli download {name} --local-dir {folder}`, "
            f"copy that folder here and use its path instead of {name!r}.")


def _resolve(name: str, preset: str | None) -> tuple[str, Path | None]:
    """(what to pass to from_pretrained, local folder or None for a hub id)."""
    if name in registry.LAB_MODELS:
        preset = presets.config(preset or "lab")["preset"]
        folder = paths.model_dir(preset, name)
        if not (folder / "config.json").is_file():
            raise XLError(f"lab model {name!r} of preset {preset!r} is not trained yet ({folder}): "
                          + LAB_HINT.format(preset=preset))
        return str(folder), folder
    folder = Path(name).expanduser()
    if registry.is_local(name) or folder.exists():
        if not folder.is_dir():
            raise XLError(f"no such model folder: {folder}")
        if not (folder / "config.json").is_file():
            raise XLError(f"not a model folder: no config.json in {folder} (save models with save_pretrained)")
        return str(folder), folder
    meant = registry.misspelt_lab_model(name)  # a misspelt lab model, not a hub id to look for online
    if meant:
        raise XLError(f"unknown model {name!r}; did you mean {meant!r}?")
    if name.startswith("lab-"):
        raise XLError(f"unknown lab model {name!r}; choose one of {', '.join(registry.LAB_MODELS)}")
    return name, None


def locate(name: str, preset: str | None = None) -> tuple[str, Path | None, bool]:
    """Where a lab model name, a saved folder or a hub id loads from: (what to pass to
    from_pretrained, the local folder or None, local_files_only). A hub id loads from the local
    Hugging Face cache when it is there; otherwise the hub must be reachable (fails fast)."""
    source, folder = _resolve(name, preset)
    if folder is not None:
        return source, folder, True
    if _hub_snapshot(name) is not None:
        return source, None, True
    hub.require(f"model {name!r}", _download_hint(name))
    return source, None, False


def _hub_snapshot(name: str) -> Path | None:
    """The hub model's folder in the local Hugging Face cache, if it was downloaded before."""
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids are simply not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def _folder_fingerprint(folder: Path) -> dict:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {"config": (folder / "config.json").read_text(),
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def _load_model(source: str, local_only: bool):
    """The torch encoder module, with SDPA attention where the architecture has it."""
    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    try:
        model = AutoModel.from_pretrained(source, config=config, local_files_only=local_only,
                                          attn_implementation="sdpa")
    except (ValueError, ImportError):  # architecture without SDPA
        model = AutoModel.from_pretrained(source, config=config, local_files_only=local_only)
    if config.is_encoder_decoder:
        model = model.get_encoder()  # the decoder is garbage-collected with the wrapper
    return model


def load_encoder(name: str, preset: str | None = None, device=None) -> "Encoder":
    """An `Encoder` for a hub id, a folder saved with save_pretrained, or a lab model name.

    Lab names (lab-mlm, lab-dae, lab-m2m, lab-m2o, lab-o2m, lab-mt) are looked up
    in the models of `preset` (default: lab).
    """
    quiet_transformers()
    source, folder, local_only = locate(name, preset)
    try:
        model = _load_model(source, local_only)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except OSError as err:
        raise XLError(f"cannot load model {name!r}: {err}. {_download_hint(name)}") from err
    if folder is not None:
        fingerprint = _folder_fingerprint(folder)
    else:
        snapshot = _hub_snapshot(name)
        fingerprint = {"hub": name, "revision": snapshot.name if snapshot else getattr(model.config, "_commit_hash", None)}
    return Encoder(name, model, tokenizer, device, fingerprint)


def weights_checksum(model, skip=()) -> list[str]:
    """Sums of the floating-point weights, one per tensor (names starting with `skip` left out):
    a cheap identity of the weights a model has now, for cache keys."""
    return [f"{p.detach().double().sum().item():.6e}" for name, p in model.state_dict().items()
            if torch.is_tensor(p) and p.is_floating_point() and not name.startswith(tuple(skip))]


def _default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Encoder:
    """A multilingual encoder with its tokenizer: tokenize, pool, encode every layer."""

    def __init__(self, name, model, tokenizer, device=None, fingerprint=None):
        self.name = name
        self.device = torch.device(device) if device is not None else _default_device()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        config = model.config
        self.num_layers = config.encoder_layers if config.is_encoder_decoder else config.num_hidden_layers
        self.hidden_size = config.hidden_size
        kind = type(tokenizer).__name__.lower()
        self.lang_scheme = "mbart" if "mbart" in kind else "nllb" if "nllb" in kind else None
        norm = getattr(model, "layer_norm", None) if config.is_encoder_decoder else None
        self._final_norm = norm if isinstance(norm, nn.LayerNorm) else None
        # Special tokens (language codes included) are not pooled; <unk> stands for real text and is.
        special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
        self._special_ids = torch.tensor(sorted(special), dtype=torch.long)
        self._vocab = None
        self.fingerprint = fingerprint if fingerprint is not None else {"name": name}
        self.max_length = min(tokenizer.model_max_length, max_positions(config) or 10**9)

    def __repr__(self):
        return (f"Encoder({self.name!r}, {type(self.model).__name__}, layers={self.num_layers}, "
                f"hidden={self.hidden_size}, device={self.device})")

    def _set_language(self, lang: str) -> None:
        """Point an mBART/NLLB tokenizer at `lang`'s code, checking that the model has it."""
        langs.check([lang])
        if self.lang_scheme is None:
            return
        try:
            code = langs.code(lang, self.lang_scheme)
        except XLError:
            code = None
        if self._vocab is None:
            self._vocab = set(self.tokenizer.get_vocab())
        if code not in self._vocab:
            raise XLError(f"model {self.name!r} has no language code for {lang!r} "
                          f"({self.lang_scheme} code: {code or 'none'})")
        self.tokenizer.src_lang = code

    def tokenize(self, texts, lang: str, max_length: int = 256):
        """A padded BatchEncoding of `texts` on the model's device, with `lang`'s code where the model uses one."""
        self._set_language(lang)
        max_length = min(max_length, self.max_length)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt")
        return batch.to(self.device)

    def pool_mask(self, batch) -> torch.Tensor:
        """Float mask (batch, tokens): 1 on real tokens, 0 on padding, special and language-code tokens."""
        ids = batch["input_ids"]
        special = torch.isin(ids, self._special_ids.to(ids.device))
        return (batch["attention_mask"].bool() & ~special).float()

    def hidden_states(self, batch) -> list[torch.Tensor]:
        """Every layer's token states, embeddings first, none with the final layer norm (see module doc)."""
        captured = []
        hook = None
        if self._final_norm is not None:
            hook = self._final_norm.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
        try:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True)
        finally:
            if hook is not None:
                hook.remove()
        states = list(out.hidden_states)
        if captured:
            states[-1] = captured[-1]
        return states

    def _pooled(self, batch) -> torch.Tensor:
        """(layers + 1, batch, hidden) float32 means over real tokens."""
        mask = self.pool_mask(batch)
        count = mask.sum(1).clamp(min=1)[:, None]
        return torch.stack([(h.float() * mask[..., None]).sum(1) / count for h in self.hidden_states(batch)])

    def _cache_key(self, texts, lang, max_length) -> str:
        precision = "bf16" if self.device.type == "cuda" else "fp32"
        return io.digest(CACHE_VERSION, self.fingerprint, lang, max_length, precision, texts)

    def encode(self, texts, lang: str, batch_size: int = 64, cache: bool = True,
               max_length: int = 256) -> np.ndarray:
        """Mean-pooled representations, float32 (layers + 1, len(texts), hidden), cached on disk."""
        texts = [str(t) for t in texts]
        self._set_language(lang)
        shape = (self.num_layers + 1, len(texts), self.hidden_size)
        return memo.memo("reps", self._cache_key(texts, lang, max_length),
                         lambda: self._encode(texts, batch_size, min(max_length, self.max_length)), fmt="npy",
                         enabled=cache, check=lambda a: None if a.shape == shape else f"shape {a.shape}, expected {shape}")

    def _encode(self, texts, batch_size, max_length) -> np.ndarray:
        """Batches of similar length (longest first), each padded to its own longest; original order restored."""
        ids = self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = np.zeros((self.num_layers + 1, len(texts), self.hidden_size), dtype=np.float32)
        start = 0
        while start < len(order):
            chunk = order[start:start + batch_size]
            try:
                out[:, chunk] = self._forward(ids, chunk)
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                print(f"{self.name}: out of memory, batch size halved to {batch_size}", flush=True)
                continue
            start += len(chunk)
        return out

    def _forward(self, ids, chunk) -> np.ndarray:
        longest = max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), longest), dtype=torch.long)
        for row, i in enumerate(chunk):  # right padding: positions of real tokens do not move
            input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
            attention_mask[row, :len(ids[i])] = 1
        batch = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16,
                                                    enabled=self.device.type == "cuda"):
            return self._pooled(batch).cpu().numpy()
