"""`alignment generate`: sample n completions per prompt, score them, keep the best (or worst, or all).

    alignment generate toy-base --prompts toy-prompts --split eval --n 8 --select best --output bon.jsonl
    alignment generate runs/dpo --backend vllm --n 16 --select worst --reward mypkg.rewards:score

Writes JSON Lines to --output (default ./generations.jsonl; an existing file is replaced, and said so), one
object per prompt, then prints the mean reward of the selection against the mean over all samples:

    --select best|worst   {"prompt", "completion", "reward", "index" (among the n samples), "mean_reward" (of all n)}
    --select all          {"prompt", "completions" (all n), "rewards" (all n)}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignment generate",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="model directory, alias (toy-base) or hub id")
    parser.add_argument(
        "--prompts", default="toy-prompts", help="prompt dataset: builder, local file or hub id"
    )
    parser.add_argument("--split", default="eval")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--select", choices=("best", "worst", "all"), default="best")
    parser.add_argument("--reward", default="gold", help="'gold' (toy world) or module:function")
    parser.add_argument(
        "--reward-model", default=None, help="a trained reward model directory (overrides --reward)"
    )
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="generations.jsonl")
    return parser


def main(argv: list[str]) -> int:
    from alignment.data.prompts import distinct_prompts
    from alignment.models import check_model_name, load_causal_lm, load_tokenizer
    from alignment.recipe.schema import DatasetSpec, SamplingConfig
    from alignment.rewards.base import build_reward, reward_config_from_cli
    from alignment.sampling.best_of_n import best_of_n
    from alignment.sampling.factory import build_sampler, sampling_params_from_config

    args = build_parser().parse_args(argv)
    check_model_name(args.model, "MODEL")  # before anything loads, with the argument named
    reward_config = reward_config_from_cli(args.reward, args.reward_model)
    reward = build_reward(reward_config)  # fails fast on a bad module:function, before any model loads
    spec = DatasetSpec(name=args.prompts, split=args.split, num_samples=args.num_prompts)
    prompts = distinct_prompts(spec, args.seed, key="--prompts")
    config = SamplingConfig(
        backend=args.backend,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        n=args.n,
        seed=args.seed,
    )
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model) if args.backend == "transformers" else None
    sampler = build_sampler(config, model, tokenizer, args.model)
    result = best_of_n(
        sampler, reward, prompts, args.n, sampling_params_from_config(config), worst=args.select == "worst"
    )
    existed = Path(args.output).exists()
    write_generations(Path(args.output), result, select=args.select)
    print(f"{len(prompts)} prompts x {args.n} samples, reward '{getattr(reward, 'name', args.reward)}'")
    print(f"  mean reward, all samples: {float(result.all_rewards.mean()):.4f}")
    if args.select != "all":
        print(f"  mean reward, {args.select}-of-{args.n}: {float(result.rewards.mean()):.4f}")
    print(f"wrote {args.output}" + (" (replacing the file that was there)" if existed else ""))
    return 0


def write_generations(path: Path, result, *, select: str) -> None:
    """One JSON object per prompt; `all` keeps every sample with its reward."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for i, prompt in enumerate(result.prompts):
            row: dict = {"prompt": prompt}
            if select == "all":
                row["completions"] = result.completions.texts[i]
                row["rewards"] = result.all_rewards[i].tolist()
            else:
                row["completion"] = result.texts[i]
                row["reward"] = float(result.rewards[i])
                row["index"] = int(result.chosen[i])
                row["mean_reward"] = float(torch.as_tensor(result.all_rewards[i]).double().mean())
            handle.write(json.dumps(row) + "\n")
