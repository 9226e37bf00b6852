"""`alignment eval MODEL`: gold evaluation of any saved model against a reference (writes eval.json)."""

from __future__ import annotations

import argparse

from alignment.eval.gold import EvalSettings, evaluate, write_eval
from alignment.eval.run import eval_prompts, harmful_fn_for


def main(argv: list[str]) -> int:
    """`alignment eval MODEL [--reference REF] [--output-dir DIR] ...`: evaluate any saved model."""
    from alignment.models import load_causal_lm, load_tokenizer
    from alignment.recipe.schema import DatasetSpec
    from alignment.rewards.base import build_reward, reward_config_from_cli

    parser = argparse.ArgumentParser(prog="alignment eval", description=main.__doc__)
    parser.add_argument("model", help="model directory, alias (toy-base) or hub id")
    parser.add_argument("--reference", default="toy-base", help="reference model (default: toy-base)")
    parser.add_argument(
        "--output-dir", default=None, help="where eval.json goes (default: the model directory)"
    )
    parser.add_argument("--prompts", default="toy-prompts", help="prompt dataset (builder, file or hub id)")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--samples-per-prompt", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--best-of-n", type=int, nargs="*", default=[])
    parser.add_argument("--reward", default="gold", help="gold, or module:function")
    args = parser.parse_args(argv)
    reward_config = reward_config_from_cli(args.reward)
    reward = build_reward(reward_config)
    tokenizer = load_tokenizer(args.model)
    settings = EvalSettings(
        num_prompts=args.num_prompts,
        samples_per_prompt=args.samples_per_prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        best_of_n=args.best_of_n,
    )
    prompts = eval_prompts(DatasetSpec(name=args.prompts, split=args.split), args.seed, key="--prompts")
    result = evaluate(
        load_causal_lm(args.model),
        load_causal_lm(args.reference),
        tokenizer,
        prompts,
        reward,
        settings,
        harmful_fn=harmful_fn_for(reward_config.kind),
    )
    path = write_eval(result, args.output_dir or args.model)
    shown = {k: v for k, v in result.items() if isinstance(v, float)}
    for key, value in shown.items():
        print(f"{key:>24}: {value:.4f}")
    print(f"wrote {path}")
    return 0
