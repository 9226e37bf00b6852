"""Sampling with Hugging Face `generate`: the backend that always works (CPU, GPU, peft, ZeRO-less).

The sampler usually wraps the *live* policy the trainer optimises, so there is nothing to push after an
optimizer step (see `TransformersSampler.load_weights`). Prompts are left-padded so every row's new
tokens start at the same column; each (prompt, sample) pair is its own row, so greedy decoding with n > 1
needs no beam search and a batch of `batch_size` rows may hold samples of several prompts.

Log-probs come from `output_logits` (the raw logits *before* temperature/top-p/top-k), so they are
those of the unmodified model distribution, as the Sampler contract requires.

Stop strings: each generated row is cut by `base.cut_at_stop` (the rule shared with the vLLM backend),
and its log-prob summed over the kept ids only. Generation itself is not stopped early at a stop string:
a batch that ended sooner would draw fewer random numbers and shift the seeded stream of every later
batch, so rows without a stop string would no longer match a run without stop strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from alignment.policy.prefix import prefix_cache, reusable_prefix_length
from alignment.sampling.base import (
    PROGRESS_MIN_BATCHES,
    Completions,
    SamplingParams,
    cut_at_stop,
    prompt_token_ids,
    stop_token_ids,
)


class TransformersSampler:
    """`Sampler` over `model.generate`; `model` may be a transformers causal LM or a peft model."""

    def __init__(self, model, tokenizer, *, batch_size: int = 64, progress: bool | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # rows (prompt x sample pairs) per generate() call
        self.progress = progress  # None: only for runs of PROGRESS_MIN_BATCHES batches or more
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.stop_token_ids = stop_token_ids(tokenizer, gen_eos)

    # ------------------------------------------------------------------ generate
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Completions:
        prompts = list(prompts)
        prompt_ids = prompt_token_ids(self.tokenizer, prompts)
        rows = [(p, prompt_ids[p]) for p in range(len(prompts)) for _ in range(params.n)]
        batches = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        show = self.progress if self.progress is not None else len(batches) >= PROGRESS_MIN_BATCHES

        shared = reusable_prefix_length(prompt_ids)  # an in-context template's prefix: encoded once per batch
        token_ids: list[list[list[int]]] = [[] for _ in prompts]
        logprobs: list[list[float]] | None = [[] for _ in prompts] if params.logprobs else None
        was_training = self.model.training
        device = next(self.model.parameters()).device
        self.model.eval()
        try:
            # fork_rng: seeding must not disturb the trainer's global RNG stream.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                from tqdm.auto import tqdm

                for batch in tqdm(batches, desc="sampling", unit="batch", disable=not show):
                    ids, lps = self._generate_batch([r[1] for r in batch], params, device, shared)
                    for (p, _), seq, lp in zip(batch, ids, lps):
                        token_ids[p].append(seq)
                        if logprobs is not None:
                            logprobs[p].append(lp)
        finally:
            self.model.train(was_training)
        texts = [[self.tokenizer.decode(s, skip_special_tokens=True) for s in per_p] for per_p in token_ids]
        return Completions(prompts=prompts, texts=texts, token_ids=token_ids, logprobs=logprobs)

    def _generate_batch(
        self, prompt_ids: list[list[int]], params: SamplingParams, device: torch.device, shared: int = 0
    ) -> tuple[list[list[int]], list[float]]:
        """One left-padded generate() call; returns per-row generated ids (cut after the first EOS, or by
        `cut_at_stop` at a stop string) and summed untempered log-probs of those ids (zeros when not
        asked for).

        With `shared` > 0 every row starts with the same `shared` tokens: they are encoded once
        (`alignment.policy.prefix`) and stay in the first columns, the padding goes between them and each
        row's own tokens (generate's positions count attended tokens only, so every row's continue the
        prefix's)."""
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for i, ids in enumerate(prompt_ids):
            input_ids[i, width - len(ids) + shared :] = torch.tensor(ids[shared:], dtype=torch.long)
            attention_mask[i, width - len(ids) + shared :] = 1
            input_ids[i, :shared] = torch.tensor(ids[:shared], dtype=torch.long)
            attention_mask[i, :shared] = 1
        cache = {}
        if shared:
            cache["past_key_values"] = prefix_cache(self.model, prompt_ids[0][:shared], len(prompt_ids))
        sampling = params.temperature > 0
        knobs = (
            dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
            if sampling
            else dict(do_sample=False)
        )
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            repetition_penalty=1.0,  # explicit neutral values: the model's generation_config must not
            num_beams=1,  # silently change what is sampled
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=params.logprobs,
            **knobs,
            **cache,
        )
        new = out.sequences[:, width:].cpu()  # (B, T) generated ids, pad after EOS
        lengths = [_length_through_first_stop(row, self.stop_token_ids) for row in new.tolist()]
        seqs = [row[:n] for row, n in zip(new.tolist(), lengths)]
        if params.stop:
            seqs = [cut_at_stop(seq, self.tokenizer, params.stop)[0] for seq in seqs]
            lengths = [len(seq) for seq in seqs]  # prefixes of the rows: the log-prob mask below follows
        if not params.logprobs:
            return seqs, [0.0] * len(seqs)
        # raw logits per step: (B, T, V) -> log-softmax at temperature 1, gather the sampled ids
        logits = torch.stack(out.logits, dim=1).float()
        token_lp = (
            torch.log_softmax(logits, dim=-1).gather(-1, new.to(logits.device).unsqueeze(-1)).squeeze(-1)
        )
        mask = torch.arange(new.shape[1]).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
        summed = (token_lp.cpu().double() * mask).sum(-1)
        return seqs, summed.tolist()

    # ------------------------------------------------------------------ weights
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy full Hugging Face-named weights into the wrapped model.

        Usually a no-op in practice: this sampler normally wraps the live policy, so the trainer's
        updates are already what `generate` uses. Tensors that *are* the model's parameters (same
        storage) are skipped. A peft model is never written to: its weights are base + adapter, and
        merged weights (from `model_state_for_sync`) copied into the base layers would count the
        adapter twice; wrapping a peft model means wrapping the live policy.
        """
        if hasattr(self.model, "peft_config"):
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in params:
                    raise KeyError(f"load_weights: the model has no parameter named {name!r}")
                target = params[name]
                if target.data_ptr() != tensor.data_ptr():
                    target.copy_(tensor)


def _length_through_first_stop(row: list[int], stop_ids: list[int]) -> int:
    """Tokens up to and including the first stop id (the rest is generate()'s padding)."""
    hits = [i for i, tok in enumerate(row) if tok in stop_ids]
    return hits[0] + 1 if hits else len(row)
