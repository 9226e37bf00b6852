"""A trained reward model (one-logit sequence classifier) as a Reward, scored in batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignment.errors import RecipeError
from alignment.models import load_reward_model, load_tokenizer


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
        """Scores prompt+completion text (+EOS, as in training) with right padding."""
        texts = [p + c + self.tokenizer.eos_token for p, c in zip(prompts, completions, strict=True)]
        self.tokenizer.padding_side = "right"
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True)
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            out.append(logits[:, 0].double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
