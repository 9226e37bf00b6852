"""Model loading shared by trainers, samplers, rewards and evaluation.

Names in recipes resolve in this order: a registered alias (``toy-base``, the embedded toy model; ``toy-rm``,
the toy proxy reward model, built on first use), a local
directory, then a Hugging Face hub id (the loading code is the same; this machine simply cannot reach a
hub). Weights are loaded from safetensors only and ``trust_remote_code`` stays off unless the recipe asks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

TOY_ASSETS = Path(__file__).resolve().parent / "toy" / "assets"


def _toy_rm_dir() -> Path:
    from alignment.toy.reward_model import toy_rm_dir

    return toy_rm_dir()


#: alias -> its directory: toy-base is packaged; toy-rm is built on first use (`build_aliases`) and cached
MODEL_ALIASES: dict[str, Callable[[], Path]] = {
    "toy-base": lambda: TOY_ASSETS / "base",
    "toy-rm": _toy_rm_dir,
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name_or_path: str) -> str:
    """Alias -> embedded directory; anything else is passed through to transformers unchanged."""
    alias = MODEL_ALIASES.get(name_or_path)
    return str(alias()) if alias is not None else name_or_path


def build_aliases(names: list[str], *, dry_run: bool) -> None:
    """Build the built-on-first-use aliases among `names` (toy-rm), or, in a dry run, say that a run will."""
    from alignment.toy import reward_model

    if reward_model.ALIAS not in names:
        return
    if dry_run:
        if not reward_model.is_built(reward_model.toy_rm_dir()):
            print(f"note: {reward_model.ALIAS} is not built yet; the run builds it first (about "
                  f"{reward_model.BUILD_MINUTES} min, once)")  # fmt: skip
        return
    reward_model.ensure_toy_rm()


def weights_sha256(name_or_path: str) -> str:
    """sha256 of the model's weights (the name itself for a model without a local safetensors file)."""
    from alignment.files import sha256_file

    weights = Path(resolve_model_path(name_or_path)) / "model.safetensors"
    return sha256_file(weights) if weights.exists() else name_or_path


def hub_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection within `timeout` s (False under HF_HUB_OFFLINE): checked
    before a hub lookup, which otherwise retries for half a minute on a machine without internet."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((hub_host(), 443), timeout=timeout).close()
    except OSError:
        return False
    return True


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "tokenizer_config.json")


def check_model_name(name: str, what: str, *, trust_remote_code: bool = False) -> None:
    """Fail with a DataError naming `what` (a recipe key or an argument) unless `name` resolves to a model
    this tool can load.

    Aliases pass. A local directory needs config.json, a tokenizer and safetensors weights (pickle
    checkpoints are refused), and custom model code only with `trust_remote_code`; a missing local path
    (explicit, ``a/b/c``, or ``runs/typo`` whose first part exists) is named as such instead of surfacing as
    a hub lookup error deep in transformers; anything else must give a config (a hub id this machine can
    reach). Reads no weights, so callers check every model before loading any.
    """
    from alignment.errors import DataError

    if name in MODEL_ALIASES:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        check_model_directory(path, name, what, trust_remote_code=trust_remote_code)
        return
    if path.exists():
        raise DataError(f"{what}: '{name}' is a file; give a model directory, an alias or a hub id")
    parts = name.split("/")
    explicit = name.startswith(("/", "./", "../", "~"))
    if explicit or len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir()):
        raise DataError(f"{what}: model directory '{name}' does not exist (looked for {path.resolve()})")
    from transformers import AutoConfig

    offline = not hub_reachable()  # then only the local hub cache can answer: ask it, without retries
    try:
        AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, local_files_only=offline)
    except (OSError, ValueError) as err:
        if offline:
            raise DataError(
                f"{what}: '{name}' is neither a local directory (looked for {path.resolve()}) nor in the hub cache, "
                f"and the hub ({hub_host()}) cannot be reached from this machine; give a model directory or an "
                "alias (toy-base, toy-rm)"
            ) from None
        raise DataError(
            f"{what}: cannot load '{name}' ({type(err).__name__}: {str(err).splitlines()[0]}); give a model "
            "directory, an alias (toy-base) or a hub id this machine can reach"
        ) from None


def check_model_directory(path: Path, name: str, what: str, *, trust_remote_code: bool) -> None:
    """A saved model directory: config.json, a tokenizer, safetensors weights, and no custom code unless
    trusted; each missing piece named with what to do."""
    import json

    from alignment.errors import DataError

    config_file = path / "config.json"
    if not config_file.is_file():
        raise DataError(f"{what}: '{name}' is a directory without config.json, not a saved model")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise DataError(
            f"{what}: '{name}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save it beside the "
            "model with tokenizer.save_pretrained(directory)"
        )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        if pickles:
            raise DataError(
                f"{what}: '{name}' holds only pickle weights ({', '.join(pickles[:3])}), and weights are loaded "
                "from safetensors only (a pickle can run code); in an environment you trust, re-save it: "
                "AutoModelForCausalLM.from_pretrained(directory).save_pretrained(directory, safe_serialization=True)"
            )
        raise DataError(f"{what}: '{name}' has no weights (no *.safetensors file)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{what}: {config_file} is not valid JSON ({err})") from None
    if "auto_map" in config and not trust_remote_code:
        from transformers import CONFIG_MAPPING

        if config.get("model_type") not in CONFIG_MAPPING:
            raise DataError(
                f"{what}: '{name}' needs its own model code (config.json auto_map, model_type "
                f"{config.get('model_type')!r} unknown to transformers); set model.trust_remote_code: true only "
                "if you trust that code"
            )
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{what}: cannot read the config of '{name}' ({type(err).__name__}: {err})") from None


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer with a pad token (EOS when the model has none; padding side right for training)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(name_or_path), revision=revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    attn_implementation: str | None = None,
):
    """A causal LM from safetensors weights (``use_safetensors=True`` refuses pickle checkpoints)."""
    from transformers import AutoModelForCausalLM

    if attn_implementation == "varlen_sdpa":
        from alignment.policy.varlen import register

        register()
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path),
        revision=revision,
        trust_remote_code=trust_remote_code,
        dtype=DTYPES.get(dtype, "auto"),
        use_safetensors=True,
        **kwargs,
    )


def load_reward_model(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """A one-logit sequence classifier; from a causal LM checkpoint the score head starts fresh."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(name_or_path),
        revision=revision,
        trust_remote_code=trust_remote_code,
        num_labels=1,
        use_safetensors=True,
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model
