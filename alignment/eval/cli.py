"""`alignment eval MODEL`: evaluation of any saved model against a reference policy (writes eval.json).

alignment eval runs/dpo                                   # against toy-base, gold judge
alignment eval runs/dpo --backend vllm                    # vLLM samples, transformers log-probs for the KL
alignment eval toy-base --template "$(cat urial.txt)"     # a base model inside a prompt template
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from alignment.eval.gold import EvalSettings, evaluate, note_prompt_count, write_eval
from alignment.eval.policy import evaluation_backend, make_policy
from alignment.eval.run import harmful_fn_for


def positive_float(text: str) -> float:
    """argparse type: a float > 0 (the evaluation KL is that of the sampled, tempered, distributions)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text} (greedy decoding has no finite KL)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignment eval", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--temperature", type=positive_float, default=1.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--best-of-n", type=int, nargs="*", default=[])
    parser.add_argument("--reward", default="gold", help="gold, or module:function")
    parser.add_argument(
        "--backend",
        choices=("auto", "transformers", "vllm"),
        default="auto",
        help="auto: vLLM where installed for models of 20M parameters and more, else transformers",
    )
    parser.add_argument("--template", default=None, help="prompt template of MODEL, with {prompt}")
    parser.add_argument("--reference-template", default=None, help="prompt template of the reference")
    parser.add_argument(
        "--stop", action="append", default=[], help="stop string of MODEL's samples (repeatable)"
    )
    parser.add_argument(
        "--reference-stop", action="append", default=[], help="stop string of the reference's samples"
    )
    return parser


def main(argv: list[str]) -> int:
    """`alignment eval MODEL [--reference REF] [--backend vllm] [--template T] ...`: evaluate any saved model."""
    from alignment.data.prompts import distinct_prompts, template_problem
    from alignment.lifecycle import setup_logging
    from alignment.models import check_model_name, load_causal_lm, load_tokenizer
    from alignment.recipe.schema import DatasetSpec
    from alignment.rewards.base import build_reward, reward_config_from_cli

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    for flag, template in (("--template", args.template), ("--reference-template", args.reference_template)):
        problem = template_problem(template)
        if problem:
            parser.error(f"{flag}: {problem}")
    for flag, stops in (("--stop", args.stop), ("--reference-stop", args.reference_stop)):
        if "" in stops:
            parser.error(f"{flag}: a stop string must not be empty")
    check_model_name(args.model, "MODEL")  # before anything loads, with the argument named
    check_model_name(args.reference, "--reference")
    reward_config = reward_config_from_cli(args.reward)
    reward = build_reward(reward_config)
    settings = EvalSettings(
        num_prompts=args.num_prompts,
        samples_per_prompt=args.samples_per_prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        best_of_n=args.best_of_n,
    )
    prompts = distinct_prompts(DatasetSpec(name=args.prompts, split=args.split), args.seed, key="--prompts")
    note_prompt_count(len(prompts), args.num_prompts, "--num-prompts")
    target = Path(args.output_dir or args.model) / "eval.json"
    replaced = (
        time.strftime("%Y-%m-%d %H:%M", time.localtime(target.stat().st_mtime)) if target.exists() else None
    )
    if replaced:
        print(f"note: {target} (written {replaced}) will be replaced; --output-dir writes elsewhere")
    # One vLLM engine serves both sides (each pushes its weights before sampling): it starts from the
    # reference checkpoint, so the policy must share its architecture (checked by the weight push).
    models = {name: load_causal_lm(name) for name in (args.model, args.reference)}
    backend = evaluation_backend(args.backend, models[args.model])
    policy, reference = (
        make_policy(
            models[name],
            load_tokenizer(name),
            backend=backend,
            model_dir=args.reference,
            template=template,
            stop=stop,
        )
        for name, template, stop in (
            (args.model, args.template, args.stop),
            (args.reference, args.reference_template, args.reference_stop),
        )
    )
    result = evaluate(
        policy, reference, prompts, reward, settings, harmful_fn=harmful_fn_for(reward_config.kind)
    )
    path = write_eval(result, args.output_dir or args.model)
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:>24}: {value:.4f}")
    print(f"wrote {path}" + (f" (replacing the evaluation written {replaced})" if replaced else ""))
    return 0
