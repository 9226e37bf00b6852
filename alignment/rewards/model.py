"""A trained reward model (one-logit sequence classifier) as a Reward, scored in batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignment.errors import DataError, RecipeError
from alignment.models import load_reward_model, load_tokenizer
from alignment.policy.batching import right_pad
from alignment.sampling.base import PROGRESS_MIN_BATCHES


def require_eos(tokenizer) -> None:
    if tokenizer.eos_token is None:
        raise DataError("the tokenizer has no eos_token; reward-model text ends with EOS, so set one")


def reward_input_ids(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[list[int]]:
    """The token ids a reward model scores: ``prompt + completion + EOS`` tokenized as one text, so BPE
    merges across the prompt/completion boundary alike in training (`reward_model.tokenize_pairs`) and
    scoring; the EOS marks where the last-token score head reads."""
    require_eos(tokenizer)
    texts = [p + c + tokenizer.eos_token for p, c in zip(prompts, completions, strict=True)]
    return tokenizer(texts)["input_ids"] if texts else []


class RewardModelScorer:
    def __init__(self, model, tokenizer, *, batch_size: int = 64, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> RewardModelScorer:
        try:
            model, tokenizer = load_reward_model(name_or_path), load_tokenizer(name_or_path)
        except OSError as err:
            raise RecipeError(
                "reward.name_or_path",
                f"cannot load reward model '{name_or_path}': it is not a local model directory and could not "
                f"be fetched from the hub ({type(err).__name__}). Train one first, e.g. "
                "`alignment recipes/reward_model.yaml` writes runs/reward_model.",
            ) from None
        return cls(model, tokenizer, **kwargs)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """Scores `reward_input_ids` (as in training), right-padded, in batches."""
        from tqdm.auto import tqdm

        ids = reward_input_ids(self.tokenizer, prompts, completions)
        out = []
        starts = range(0, len(ids), self.batch_size)
        for start in tqdm(starts, desc="scoring", unit="batch", disable=len(starts) < PROGRESS_MIN_BATCHES):
            input_ids, attention_mask = right_pad(
                ids[start : start + self.batch_size], self.tokenizer.pad_token_id
            )
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
            ).logits
            out.append(logits[:, 0].double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
