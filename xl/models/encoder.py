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

`encode(..., final_norm=True)` makes the last entry the final layer norm's
output instead: what transformers returns as `last_hidden_state`, and what the
transfer heads (xl.transfer.heads.TaskModel) read. The other layers do not
change, nor does anything for post-LN encoders. One forward pass caches both
readings, under keys of their own (the default one as before).

`common_languages(models, languages)` gives the languages that every model can
encode (mBART-50 has no code for el, bg), from tokenizers only, no weights.
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
FINAL_NORM_KEY = "final-norm"  # appended to the cache key of final_norm=True (default keys unchanged)
SCHEME_OF_ARCH = {"mbart": "mbart", "m2m100": "nllb"}  # registry arch -> language codes (bert, xlmr: none)


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


def _scheme_code(lang: str, scheme: str) -> str | None:
    """`lang`'s code in `scheme` ('mbart', 'nllb'), None where data/languages.csv has none (mBART-50: el, bg)."""
    try:
        return langs.code(lang, scheme)
    except XLError:
        return None


def _tokenizer_readable(tokenizer, languages) -> list[str]:
    """Those of `languages` whose code the tokenizer has (all of them for a tokenizer without codes)."""
    scheme = langs.scheme(tokenizer)
    if scheme is None:
        return list(languages)
    vocab = set(tokenizer.get_vocab())
    return [lang for lang in languages if _scheme_code(lang, scheme) in vocab]


def readable_languages(model, languages, preset: str | None = None) -> list[str]:
    """Those of `languages` that `model` (an Encoder, a lab name, a folder or a hub id) can encode, in
    their order, without loading weights: from its tokenizer's language codes. Lab models need no
    files: their tokenizer has every mBART-50 code (lab-mlm's has none, and reads every language)."""
    languages = langs.check(languages)
    if isinstance(model, Encoder):
        return _tokenizer_readable(model.tokenizer, languages)
    if registry.is_lab(model):
        scheme = SCHEME_OF_ARCH.get(registry.MODELS[model].arch)
        return [lang for lang in languages if scheme is None or _scheme_code(lang, scheme)]
    quiet_transformers()
    source, _, local_only = locate(model, preset)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except OSError as err:
        raise XLError(f"cannot load the tokenizer of {model!r}: {err}. {_download_hint(model)}") from err
    return _tokenizer_readable(tokenizer, languages)


def common_languages(models, languages, preset: str | None = None) -> list[str]:
    """Those of `languages` that every one of `models` can encode, in their order: family averages
    over the same languages for every model (with mBART-50 among them, el and bg go for all)."""
    keep = langs.check(languages)
    for model in models:
        readable = set(readable_languages(model, keep, preset))
        keep = [lang for lang in keep if lang in readable]
        if not keep:
            raise XLError(f"no language of {list(languages)} that every model of {list(models)} can encode")
    return keep


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
        self.lang_scheme = langs.scheme(tokenizer)
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

    @property
    def has_final_norm(self) -> bool:
        """Whether the encoder is pre-LN with a final layer norm (mBART, NLLB), i.e. whether final_norm matters."""
        return self._final_norm is not None

    def _set_language(self, lang: str) -> None:
        """Point an mBART/NLLB tokenizer at `lang`'s code, checking that the model has it."""
        langs.check([lang])
        if self.lang_scheme is None:
            return
        if self._vocab is None:
            self._vocab = set(self.tokenizer.get_vocab())
        code = _scheme_code(lang, self.lang_scheme)
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

    def _all_states(self, batch) -> list[torch.Tensor]:
        """Token states: embeddings, every layer's raw stream, then, for a pre-LN encoder only, the
        last layer after the final norm (both readings of the last layer from one forward pass)."""
        captured = []
        hook = None
        if self.has_final_norm:
            hook = self._final_norm.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
        try:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True)
        finally:
            if hook is not None:
                hook.remove()
        states = list(out.hidden_states)
        if captured:
            states[-1] = captured[-1]  # the raw stream going into the final norm
            states.append(out.last_hidden_state)  # the model's own output, after it
        return states

    def _reading(self, layers, final_norm: bool):
        """One reading of `_all_states`-like layers (a list or an array, layers first): the last layer
        raw (default) or after the final norm; the layers of a post-LN encoder as they are."""
        if not self.has_final_norm:
            return layers
        if not final_norm:
            return layers[:-1]
        return layers[:-2] + layers[-1:] if isinstance(layers, list) else np.concatenate([layers[:-2], layers[-1:]])

    def hidden_states(self, batch, final_norm: bool = False) -> list[torch.Tensor]:
        """Every layer's token states, embeddings first; the final layer norm applied to the last one
        only with `final_norm` (see module doc)."""
        return self._reading(self._all_states(batch), final_norm)

    def _pooled(self, batch) -> torch.Tensor:
        """(layers + 1, or + 2 for both readings of a pre-LN encoder, batch, hidden) float32 means over real tokens."""
        mask = self.pool_mask(batch)
        count = mask.sum(1).clamp(min=1)[:, None]
        return torch.stack([(h.float() * mask[..., None]).sum(1) / count for h in self._all_states(batch)])

    def _cache_key(self, texts, lang, max_length, final_norm: bool = False) -> str:
        precision = "bf16" if self.device.type == "cuda" else "fp32"
        # final_norm changes nothing without a final norm (BERT, XLM-R): one cache entry for both
        variant = (FINAL_NORM_KEY,) if final_norm and self.has_final_norm else ()
        return io.digest(CACHE_VERSION, self.fingerprint, lang, max_length, precision, texts, *variant)

    def encode(self, texts, lang: str, batch_size: int = 64, cache: bool = True,
               max_length: int = 256, final_norm: bool = False) -> np.ndarray:
        """Mean-pooled representations, float32 (layers + 1, len(texts), hidden), cached on disk.

        final_norm: the last layer after the encoder's final layer norm (mBART, NLLB), as the
        transfer heads read it; default the raw residual stream (see module doc). A miss computes
        and caches both readings: asking for the other one later costs no forward pass."""
        texts = [str(t) for t in texts]
        self._set_language(lang)
        shape = (self.num_layers + 1, len(texts), self.hidden_size)

        def wrong_shape(a):
            return None if a.shape == shape else f"shape {a.shape}, expected {shape}"

        hit = memo.read("reps", self._cache_key(texts, lang, max_length, final_norm), "npy", wrong_shape) if cache else None
        if hit is not None:
            return hit
        every = self._encode(texts, batch_size, min(max_length, self.max_length))
        if cache:  # one key for both readings of a post-LN encoder
            for key, reading in {self._cache_key(texts, lang, max_length, r): r for r in (False, True)}.items():
                memo.write("reps", key, self._reading(every, reading), "npy")
        return np.array(self._reading(every, final_norm))  # a copy, not a view holding the other reading

    def _encode(self, texts, batch_size, max_length) -> np.ndarray:
        """Every reading (`_all_states`), pooled. Batches of similar length (longest first), each padded
        to its own longest; original order restored."""
        ids = self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        readings = self.num_layers + 1 + int(self.has_final_norm)
        out = np.zeros((readings, len(texts), self.hidden_size), dtype=np.float32)
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
