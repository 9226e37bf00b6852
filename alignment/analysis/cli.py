"""`alignment shift BASE ALIGNED`: the token-distribution shift from a base model to an aligned one.

alignment shift toy-base runs/dpo                           # a trained checkpoint against its base
alignment shift toy-base runs/urial                         # a URIAL run: the base model in its prompt
alignment shift toy-base toy-base --template-file urial.txt # any model inside any template

ALIGNED is a model (directory, alias or hub id), or a URIAL run directory: one holding `urial_prompt.txt`
(a full template with a literal {prompt}) and `recipe.yaml`, whose `model.name_or_path` is then decoded
inside that template with the stop strings the run sampled with (`evaluation.stop` and the method's). --template / --template-file set the aligned
side's template explicitly. The base model always scores the plain prompt. Writes shift.json and shift.png
(alignment.analysis.shift says exactly what is counted).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import DataError
from alignment.methods.urial import PROMPT_FILE as URIAL_PROMPT
from alignment.models import check_model_name

RUN_RECIPE = "recipe.yaml"
DEFAULT_OUTPUT_DIR = "runs/shift"


@dataclass
class AlignedSide:
    """What the aligned side is, resolved from the command line before any model loads."""

    model: str  # the model to load (for a URIAL run: the recipe's model.name_or_path)
    template: str | None = None
    template_source: str | None = None  # where the template came from (a file, --template), for shift.json
    stop: tuple[str, ...] = ()


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignment shift", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="base model: directory, alias (toy-base) or hub id")
    parser.add_argument("aligned", help="aligned model (directory, alias, hub id) or a URIAL run directory")
    parser.add_argument("--prompts", default="toy-prompts", help="prompt dataset (builder, file or hub id)")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--num-prompts", type=positive_int, default=147)
    parser.add_argument("--max-new-tokens", type=positive_int, default=48)
    parser.add_argument("--seed", type=int, default=1234, help="seed of a prompt builder (eval's default)")
    template = parser.add_mutually_exclusive_group()
    template.add_argument("--template", default=None, help="prompt template of ALIGNED, with {prompt}")
    template.add_argument("--template-file", default=None, help="file holding the template of ALIGNED")
    parser.add_argument(
        "--output-dir",
        default=None,
        help=f"where shift.json/png go (default: ALIGNED if it is a directory, else {DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument(
        "--backend", choices=("transformers", "vllm"), default="transformers", help="decodes ALIGNED"
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="prompts per scoring forward")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    return parser


def read_template(path: str | Path, what: str) -> str:
    """The text of a template file, checked to hold {prompt}."""
    from alignment.data.prompts import template_problem

    try:
        text = Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise DataError(f"{what}: cannot read template file '{path}': {reason}") from None
    problem = template_problem(text)
    if problem:
        raise DataError(f"{what}: {problem}")
    return text


def urial_side(run_dir: Path) -> AlignedSide:
    """The aligned side of a URIAL run directory: its recipe's model inside its prompt, with its stop strings.

    The stop strings are those the run sampled with (`alignment.kinds.in_context.policy_stop`); without them
    the templated base model writes the next in-context query itself, and those tokens would be counted as
    the answer's. The recipe is validated by `load_recipe`, so a broken one fails here, before any model
    loads.
    """
    from alignment.kinds.in_context import policy_stop
    from alignment.recipe.load import load_recipe

    template = read_template(run_dir / URIAL_PROMPT, f"ALIGNED ({run_dir / URIAL_PROMPT})")
    recipe_path = run_dir / RUN_RECIPE
    if not recipe_path.is_file():
        raise DataError(f"ALIGNED: URIAL run '{run_dir}' has {URIAL_PROMPT} but no {RUN_RECIPE}")
    recipe = load_recipe(recipe_path)
    stop = policy_stop(recipe)
    return AlignedSide(
        model=recipe.model.name_or_path,
        template=template,
        template_source=str(run_dir / URIAL_PROMPT),
        stop=stop,
    )


def resolve_aligned(args: argparse.Namespace) -> AlignedSide:
    """ALIGNED as a model or a URIAL run, then the explicit template, if any, in place of the run's."""
    from alignment.data.prompts import template_problem

    run_dir = Path(args.aligned).expanduser()
    if (run_dir / URIAL_PROMPT).is_file():
        side = urial_side(run_dir)
        check_model_name(side.model, f"ALIGNED ({run_dir / RUN_RECIPE} model.name_or_path)")
    else:
        side = AlignedSide(model=args.aligned)
        check_model_name(side.model, "ALIGNED")
    if args.template is not None:
        problem = template_problem(args.template)
        if problem:
            raise DataError(f"--template: {problem}")
        side.template, side.template_source = args.template, "--template"
    elif args.template_file is not None:
        side.template = read_template(args.template_file, "--template-file")
        side.template_source = str(args.template_file)
    return side


def load_models(names: list[str], dtype: str) -> dict[str, tuple[Any, Any]]:
    """Each distinct model once (a URIAL run's aligned side is usually the base model itself), on the GPU
    when there is one: scoring is a forward over every prompt, twice."""
    import torch

    from alignment.models import load_causal_lm, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        name: (load_causal_lm(name, dtype=dtype).to(device), load_tokenizer(name))
        for name in dict.fromkeys(names)
    }


def main(argv: list[str]) -> int:
    """`alignment shift BASE ALIGNED [...]`: every input is checked before a model loads (exit 2 otherwise)."""
    from alignment.analysis.shift import TOP_TOKENS, token_shift, write_shift
    from alignment.data.prompts import distinct_prompts
    from alignment.eval.policy import make_policy
    from alignment.recipe.schema import DatasetSpec

    args = build_parser().parse_args(argv)
    check_model_name(args.base, "BASE")
    side = resolve_aligned(args)
    prompts = distinct_prompts(DatasetSpec(name=args.prompts, split=args.split), args.seed, key="--prompts")
    prompts = prompts[: args.num_prompts]
    output_dir = args.output_dir or (args.aligned if Path(args.aligned).is_dir() else DEFAULT_OUTPUT_DIR)

    models = load_models([args.base, side.model], args.dtype)
    # The base side only scores, so it never needs a vLLM engine: its transformers sampler goes unused.
    base = make_policy(*models[args.base])
    aligned = make_policy(
        *models[side.model],
        backend=args.backend,
        model_dir=side.model,
        template=side.template,
    )
    result = token_shift(
        base, aligned, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=side.stop
    )
    meta = {
        "base": args.base,
        "aligned": args.aligned,
        "aligned_model": side.model,
        "template": side.template_source,
        "backend": args.backend,
        "prompts": args.prompts,
        "split": args.split,
    }
    json_path, png_path = write_shift(result, output_dir, meta)
    print(f"{result.num_tokens} tokens of {result.num_prompts} greedy completions of {side.model}")
    for name in ("unshifted", "marginal", "shifted"):
        print(f"{name:>10}: {result.fraction(name):.4f}  ({result.counts[name]} tokens)")
    print(f"{'mean KL':>10}: {result.mean_kl:.4f}  (KL(P_base ‖ P_aligned) per position)")
    top = result.top_tokens("shifted", TOP_TOKENS)
    if top:
        print("top shifted tokens: " + ", ".join(f"{tc.token!r} {tc.count}" for tc in top))
    else:
        print("top shifted tokens: none")
    print(f"wrote {json_path}")
    print(f"wrote {png_path}")
    return 0
