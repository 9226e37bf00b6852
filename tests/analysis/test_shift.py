"""Token-distribution shift (`alignment.analysis.shift`, `alignment shift`).

The core is checked against a naive loop that shares no code with it: one unpadded forward per sample and
side, the base rank read off a full sort of the base logits, the KL summed over the vocabulary in plain
Python. Base and aligned are two differently perturbed copies of the tiny model, chosen so that the decodes
have varied lengths and all three classes occur (the check is not 1 == 1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from alignment import cli
from alignment.analysis.shift import ShiftResult, score_shift, shift_class, token_shift, write_shift
from alignment.eval.policy import Policy, make_policy
from alignment.sampling.base import Completions, SamplingParams

KL_ATOL = 1e-5
TEMPLATE = "Q: {prompt} A:"
SHIFT_KEYS = {
    "base",
    "aligned",
    "aligned_model",
    "template",
    "backend",
    "prompts",
    "split",
    "unshifted",
    "marginal",
    "shifted",
    "counts",
    "kl",
    "num_prompts",
    "num_tokens",
    "max_new_tokens",
    "stop",
    "positions",
    "top_shifted",
    "top_unshifted",
    "examples",
}


def noisy_copy(model_dir: Path, *, scale: float, seed: int):
    """The tiny model with seeded Gaussian noise of std `scale` added to every weight (0: unchanged)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if scale:
        flat = parameters_to_vector(model.parameters())
        noise = torch.randn(flat.shape, generator=torch.Generator().manual_seed(seed))
        vector_to_parameters(flat + scale * noise, model.parameters())
    return model


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    """(base, aligned) models: different perturbations, so base ≠ aligned at every position."""
    return noisy_copy(tiny_model_dir, scale=0.05, seed=1), noisy_copy(tiny_model_dir, scale=0.02, seed=0)


@pytest.fixture(scope="module")
def aligned_dir(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    """A saved checkpoint of a perturbed tiny model (the CLI loads models by name)."""
    path = tmp_path_factory.mktemp("aligned")
    noisy_copy(tiny_model_dir, scale=0.02, seed=0).save_pretrained(path, safe_serialization=True)
    tiny_tokenizer.save_pretrained(path)
    return path


@torch.no_grad()
def naive_ranks_and_kl(base: Policy, aligned: Policy, prompt: str, completion: list[int]):
    """Per-token base rank (by sorting the whole base distribution) and KL(P_base ‖ P_aligned) (plain Python),
    each side's context read from one unpadded forward of its own rendered prompt + the completion."""

    def next_token_logits(side: Policy) -> torch.Tensor:
        """(T, V): by causality, row len(prompt)+t-1 of the forward sees exactly prompt + o_<t."""
        prompt_ids = side.prompt_ids([prompt])[0]
        logits = side.scorer(torch.tensor([prompt_ids + completion])).logits[0]
        return logits[len(prompt_ids) - 1 : -1]

    base_logits = next_token_logits(base)
    base_logp = torch.log_softmax(base_logits.double(), dim=-1)
    aligned_logp = torch.log_softmax(next_token_logits(aligned).double(), dim=-1)
    ranks, kls = [], []
    for t, token in enumerate(completion):
        ordered = sorted(base_logits[t].tolist(), reverse=True)
        # the first of equal values: 1 + the number of strictly greater logits
        ranks.append(ordered.index(base_logits[t, token].item()) + 1)
        p, q = base_logp[t].tolist(), aligned_logp[t].tolist()
        kls.append(sum(math.exp(a) * (a - b) for a, b in zip(p, q)))
    return ranks, kls


@pytest.mark.parametrize("template", [None, TEMPLATE], ids=["plain", "aligned-template"])
def test_ranks_and_kl_match_a_naive_loop(pair, tiny_tokenizer, prompts_for, template):
    base = make_policy(pair[0], tiny_tokenizer)
    aligned = make_policy(pair[1], tiny_tokenizer, template=template)
    prompts = prompts_for(8, seed=1)  # decodes of lengths 2, 3 and 12, every rank class, with and without template

    result = token_shift(base, aligned, prompts, max_new_tokens=12, batch_size=3)

    lengths = [len(ids) for ids in result.token_ids]
    assert len(set(lengths)) > 1 and max(lengths) == 12  # varied lengths: padding and the length split matter
    for prompt, ids, ranks, kls in zip(prompts, result.token_ids, result.ranks, result.kls):
        want_ranks, want_kls = naive_ranks_and_kl(base, aligned, prompt, ids)
        assert ranks == want_ranks
        assert kls == pytest.approx(want_kls, abs=KL_ATOL, rel=0)
    assert all(result.counts[name] > 0 for name in ("unshifted", "marginal", "shifted"))
    assert min(kl for row in result.kls for kl in row) > 100 * KL_ATOL
    # greedy: the aligned model ranks each of its own tokens first
    self_ranks, _ = score_shift(aligned, aligned, prompts, result.token_ids)
    assert {rank for row in self_ranks for rank in row} == {1}


def test_a_model_against_itself_is_unshifted(tiny_model_dir, tiny_tokenizer, prompts_for):
    """Two separately loaded copies of one checkpoint: every rank 1, every KL exactly 0."""
    base = make_policy(noisy_copy(tiny_model_dir, scale=0, seed=0), tiny_tokenizer)
    aligned = make_policy(noisy_copy(tiny_model_dir, scale=0, seed=0), tiny_tokenizer)

    result = token_shift(base, aligned, prompts_for(8, seed=2), max_new_tokens=10, batch_size=3)

    assert result.num_tokens > 8
    assert {rank for row in result.ranks for rank in row} == {1}
    assert {kl for row in result.kls for kl in row} == {0.0}
    assert (result.unshifted, result.marginal, result.shifted) == (1.0, 0.0, 0.0)
    assert result.mean_kl == 0.0 and result.top_tokens("shifted") == []
    assert all(stats.unshifted == 1.0 and stats.kl == 0.0 for stats in result.profile())


def test_an_aligned_template_changes_the_aligned_context_only(pair, tiny_tokenizer, prompts_for):
    """Same tokens scored with and without a template on the aligned side: the base's ranks (plain prompt)
    stay, the KL (which reads the aligned distribution in its context) moves."""
    base = make_policy(pair[0], tiny_tokenizer)
    plain = make_policy(pair[1], tiny_tokenizer)
    templated = make_policy(pair[1], tiny_tokenizer, template=TEMPLATE)
    prompts = prompts_for(6, seed=5)
    tokens = token_shift(base, plain, prompts, max_new_tokens=8).token_ids

    plain_ranks, plain_kls = score_shift(base, plain, prompts, tokens, batch_size=4)
    templated_ranks, templated_kls = score_shift(base, templated, prompts, tokens, batch_size=4)

    assert templated_ranks == plain_ranks
    gap = max(abs(a - b) for p, t in zip(plain_kls, templated_kls) for a, b in zip(p, t))
    assert gap > 1e-3
    assert templated.render(prompts)[0] == f"Q: {prompts[0]} A:" and base.render(prompts) == prompts


class ScriptedSampler:
    """A sampler that returns fixed completions and records the params it was asked with."""

    def __init__(self, tokenizer, token_ids: list[list[int]]):
        self.tokenizer, self.token_ids, self.params = tokenizer, token_ids, []

    def generate(self, prompts, params: SamplingParams) -> Completions:
        self.params.append(params)
        ids = self.token_ids[: len(prompts)]
        texts = [[self.tokenizer.decode(row, skip_special_tokens=True)] for row in ids]
        return Completions(list(prompts), texts, [[row] for row in ids], None)

    def load_weights(self, named_tensors) -> None:
        pass


def test_the_decode_is_greedy_with_the_stop_strings_and_every_kept_token_counts(tiny_model, tiny_tokenizer):
    """What the sampler returns is what is counted: a stop-string cut keeps its tokens, EOS counts, an empty
    completion counts nothing."""
    eos = tiny_tokenizer.eos_token_id
    words = tiny_tokenizer(" the cat", add_special_tokens=False)["input_ids"]
    scripted = ScriptedSampler(tiny_tokenizer, [words, [*words, eos], []])
    aligned = Policy(scripted, tiny_model, tiny_tokenizer)
    base = make_policy(tiny_model, tiny_tokenizer)

    result = token_shift(base, aligned, ["a", "b", "c"], max_new_tokens=7, stop=["\nQ:"], batch_size=2)

    assert scripted.params == [SamplingParams(n=1, temperature=0.0, max_new_tokens=7, stop=("\nQ:",))]
    assert [len(row) for row in result.ranks] == [len(words), len(words) + 1, 0]
    assert result.num_tokens == 2 * len(words) + 1 and result.token_texts[1][-1] == tiny_tokenizer.eos_token
    assert result.to_json()["stop"] == ["\nQ:"]


def test_summaries_by_hand():
    """Ranks (1, 5, 2) and (1, 1): fractions 3/5, 1/5, 1/5; position 0 both unshifted, position 1 one
    shifted and one unshifted, position 2 one marginal."""
    result = ShiftResult(
        prompts=["p", "q"],
        completions=["a b c", "a d"],
        token_ids=[[7, 8, 9], [7, 10]],
        token_texts=[["a", " b", " c"], ["a", " d"]],
        ranks=[[1, 5, 2], [1, 1]],
        kls=[[0.0, 1.0, 0.5], [0.2, 0.3]],
        max_new_tokens=3,
    )
    assert [shift_class(r) for r in (1, 2, 3, 4)] == ["unshifted", "marginal", "marginal", "shifted"]
    assert result.counts == {"unshifted": 3, "marginal": 1, "shifted": 1}
    assert (result.unshifted, result.marginal, result.shifted) == (0.6, 0.2, 0.2)
    assert result.mean_kl == pytest.approx(2.0 / 5)
    profile = [vars(stats) for stats in result.profile()]
    assert profile[0] == {
        "position": 0,
        "count": 2,
        "unshifted": 1.0,
        "marginal": 0.0,
        "shifted": 0.0,
        "kl": 0.1,
    }
    assert profile[1] == {
        "position": 1,
        "count": 2,
        "unshifted": 0.5,
        "marginal": 0.0,
        "shifted": 0.5,
        "kl": 0.65,
    }
    assert profile[2] == {
        "position": 2,
        "count": 1,
        "unshifted": 0.0,
        "marginal": 1.0,
        "shifted": 0.0,
        "kl": 0.5,
    }
    assert [vars(tc) for tc in result.top_tokens("unshifted")] == [
        {"token": "a", "id": 7, "count": 2, "share": 2 / 3},
        {"token": " d", "id": 10, "count": 1, "share": 1 / 3},
    ]
    assert [vars(tc) for tc in result.top_tokens("shifted")] == [
        {"token": " b", "id": 8, "count": 1, "share": 1.0}
    ]
    example = result.examples(1)
    assert len(example) == 1 and [tok["rank"] for tok in example[0]["tokens"]] == [1, 5, 2]


def test_write_shift_writes_json_and_png(tmp_path):
    result = ShiftResult(["p"], ["a"], [[7]], [["a"]], [[4]], [[0.5]], max_new_tokens=1)
    json_path, png_path = write_shift(result, tmp_path / "out", {"base": "b"})
    payload = json.loads(json_path.read_text())
    assert payload["base"] == "b" and payload["shifted"] == 1.0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_end_to_end(tiny_model_dir, aligned_dir, tmp_path, capsys):
    out = tmp_path / "shift"
    code = cli.main(
        ["shift", str(tiny_model_dir), str(aligned_dir), "--num-prompts", "6", "--max-new-tokens", "8"]
        + ["--output-dir", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    payload = json.loads((out / "shift.json").read_text())
    assert set(payload) == SHIFT_KEYS
    assert payload["num_prompts"] == 6 and 0 < payload["num_tokens"] <= 48
    assert payload["unshifted"] + payload["marginal"] + payload["shifted"] == pytest.approx(1.0)
    assert sum(payload["counts"].values()) == payload["num_tokens"]
    assert set(payload["positions"][0]) == {"position", "count", "unshifted", "marginal", "shifted", "kl"}
    assert payload["template"] is None and payload["stop"] == []
    assert (out / "shift.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out / 'shift.json'}" in printed and "unshifted:" in printed


@pytest.mark.parametrize(
    ("method", "stop"),
    [
        ('{name: urial, stop: ["# Query:"]}', ["# Query:"]),
        ("{name: urial, query_marker: 'Q:', answer_marker: 'A:', stop: null}", ["\nQ:", "Q:"]),
    ],
    ids=["method.stop", "default-stop"],
)
def test_cli_urial_run_directory(tiny_model_dir, tmp_path, method, stop):
    """ALIGNED holding urial_prompt.txt: the recipe's model inside that template, with the stop strings the
    run sampled with (method.stop, or the method's default: the next query marker); the output goes to the
    run directory."""
    run = tmp_path / "urial"
    run.mkdir()
    (run / "urial_prompt.txt").write_text("# Query:\n{prompt}\n# Answer:\n")
    (run / "recipe.yaml").write_text(f"method: {method}\nmodel: {{name_or_path: {tiny_model_dir}}}\n")
    code = cli.main(["shift", str(tiny_model_dir), str(run), "--num-prompts", "3", "--max-new-tokens", "5"])
    assert code == 0
    payload = json.loads((run / "shift.json").read_text())
    assert payload["aligned_model"] == str(tiny_model_dir)
    assert payload["template"] == str(run / "urial_prompt.txt") and payload["stop"] == stop
    assert (run / "shift.png").is_file()


def urial_run(tmp_path: Path, template: str, recipe: str | None) -> str:
    """A URIAL run directory: urial_prompt.txt and, unless None, recipe.yaml."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "urial_prompt.txt").write_text(template)
    if recipe is not None:
        (run / "recipe.yaml").write_text(recipe)
    return str(run)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, t: [d, d, "--template", "no placeholder"], "--template: a prompt template must contain"),
        (lambda d, t: [d, d, "--template-file", str(t / "missing.txt")], "--template-file: cannot read"),
        (lambda d, t: [str(t / "nope"), d], "BASE: model directory"),
        (lambda d, t: [d, str(t / "nope")], "ALIGNED: model directory"),
        (lambda d, t: [d, "runs/no-such-run"], "ALIGNED: model directory 'runs/no-such-run' does not exist"),
        (
            lambda d, t: [
                d,
                urial_run(t, "no placeholder", f"method: urial\nmodel: {{name_or_path: {d}}}\n"),
            ],
            "a prompt template must contain",
        ),
        (
            lambda d, t: [
                d,
                urial_run(t, "{prompt}", f"method: urial\nmodel: {{name_or_path: {t / 'gone'}}}\n"),
            ],
            "model.name_or_path)",
        ),
        (
            lambda d, t: [
                d,
                urial_run(t, "{prompt}", f"method: {{name: urial, stop: 3}}\nmodel: {{name_or_path: {d}}}\n"),
            ],
            "recipe error at 'method.stop'",
        ),
        (lambda d, t: [d, urial_run(t, "{prompt}", None)], "has urial_prompt.txt but no recipe.yaml"),
    ],
    ids=[
        "template",
        "template-file",
        "base",
        "aligned",
        "aligned-relative",
        "urial-template",
        "urial-model",
        "urial-stop",
        "urial-no-recipe",
    ],
)
def test_cli_bad_input_exits_2_before_loading(
    forbid_model_loading, monkeypatch, tiny_model_dir, tmp_path, capsys, make_args, message
):
    monkeypatch.chdir(tmp_path)  # `runs/` exists here, so `runs/no-such-run` reads as a local path
    (tmp_path / "runs").mkdir()
    code = cli.main(["shift", *make_args(str(tiny_model_dir), tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_template_and_template_file_are_exclusive(forbid_model_loading, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["shift", "toy-base", "toy-base", "--template", "{prompt}", "--template-file", "t.txt"])
    assert exit_.value.code == 2
