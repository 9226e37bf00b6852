"""Stop strings (`SamplingParams.stop`): the shared cutting rule `cut_at_stop`, and both backends honouring it.

The rule: the text ends before the earliest occurrence of any stop string, the token in which it begins is
dropped with everything after it, and text == decode(kept ids); log-probs are summed over the kept ids.
"""

from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from alignment.errors import RecipeError
from alignment.recipe.load import recipe_from_dict
from alignment.sampling import SamplingParams, sampling_params_from_config
from alignment.sampling.base import cut_at_stop, prompt_token_ids
from alignment.sampling.hf import TransformersSampler


def ids_of(tok, tokens: list[str]) -> list[int]:
    ids = tok.convert_tokens_to_ids(tokens)
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    return ids


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------------- the rule, on hand-made ids
def test_cut_at_a_token_boundary(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = ids_of(tok, ["Ġthe", "Ġ", "cat", ".", "Ġ", "dog", "</s>"])
    assert decode(tok, ids) == " the cat. dog"
    kept, text = cut_at_stop(ids, tok, (".",))
    assert kept == ids[:3] and text == " the cat"
    kept, text = cut_at_stop(ids, tok, ("cat. d",))  # spans tokens; begins where 'cat' begins
    assert kept == ids[:2] and text == " the "


def test_cut_when_the_stop_string_begins_mid_token(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = ids_of(tok, ["Ġ", "sees", "Ġ", "cat", "</s>"])
    kept, text = cut_at_stop(ids, tok, ("es c",))  # begins inside 'sees': that token goes, "se" is lost
    assert kept == ids[:1] and text == " "
    kept, text = cut_at_stop(ids, tok, ("Ġ",))  # not in the text (a token name, not text): unchanged
    assert kept == ids and text == " sees cat"
    kept, text = cut_at_stop(ids, tok, (" s",))  # at the very start: nothing is kept
    assert kept == [] and text == ""


def test_cut_inside_a_multibyte_character(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = ids_of(tok, ["a", "Ã", "©", "Ġb"])  # byte-level: 'é' is two byte tokens
    assert decode(tok, ids) == "aé b"
    assert cut_at_stop(ids, tok, (" b",)) == (ids[:3], "aé")  # the half character 'a\ufffd' is no prefix
    assert cut_at_stop(ids, tok, ("é",)) == (ids[:1], "a")


def test_absent_stop_string_changes_nothing(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = ids_of(tok, ["Ġthe", "Ġ", "cat", ".", "</s>"])
    assert cut_at_stop(ids, tok, ("dog", "!")) == (ids, " the cat.")  # EOS kept: it stopped on EOS
    assert cut_at_stop(ids, tok, ()) == (ids, " the cat.")


def test_the_earliest_occurrence_wins_whatever_the_order(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = ids_of(tok, ["Ġthe", "Ġ", "cat", ".", "Ġ", "dog", ".", "</s>"])
    for stop in (("dog", "."), (".", "dog"), ("dog", "cat")):
        kept, text = cut_at_stop(ids, tok, stop)
        want = 3 if "." in stop else 2
        assert kept == ids[:want], stop
        assert text == decode(tok, kept) and not any(s in text for s in stop)


def test_logprob_sum_runs_over_the_kept_ids(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = ids_of(tok, ["Ġthe", "Ġ", "cat", ".", "Ġ", "dog", "</s>"])
    per_token = [-0.5, -1.0, -2.0, -4.0, -8.0, -16.0, -32.0]
    kept, _ = cut_at_stop(ids, tok, ("dog",))
    assert kept == ids[: len(kept)]  # always a prefix, so per-token log-probs stay aligned
    assert sum(per_token[: len(kept)]) == -15.5


# ---------------------------------------------------------------------- recipe -> SamplingParams
def test_recipe_stop_reaches_sampling_params_and_empty_strings_are_rejected():
    raw = {"method": "dpo", "data": {"train": "toy-paired"}}
    assert sampling_params_from_config(recipe_from_dict(raw).sampling).stop == ()
    recipe = recipe_from_dict({**raw, "sampling": {"stop": ["\n\n", "Question:"]}})
    assert recipe.sampling.stop == ["\n\n", "Question:"]
    assert sampling_params_from_config(recipe.sampling).stop == ("\n\n", "Question:")
    assert sampling_params_from_config(SimpleNamespace(n=2), stop=["x"]).stop == ("x",)
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({**raw, "sampling": {"stop": ["\n", ""]}})
    assert (err.value.path, err.value.message) == ("sampling.stop[1]", "must not be empty")


# ---------------------------------------------------------------------- backends
def frequent_substring(texts: list[str], width: int = 2) -> str:
    """The `width`-character string found in the most texts (ties: smallest), but not in all of them."""
    counts = Counter(s for t in texts for s in {t[i : i + width] for i in range(len(t) - width + 1)})
    candidates = [(-c, s) for s, c in counts.items() if c < len(texts)]
    return min(candidates)[1]


def check_stop_run(free, cut, params, tok, eos):
    """`cut` (sampled with params.stop) against `free` (same seed, no stop): the rule, row by row."""
    stop = params.stop
    hit = 0
    for f_ids, f_text, c_ids, c_text in zip(
        free.flat_token_ids(), free.flat_texts(), cut.flat_token_ids(), cut.flat_texts()
    ):
        assert not any(s in c_text for s in stop)
        assert c_text == decode(tok, c_ids)
        assert (c_ids, c_text) == cut_at_stop(f_ids, tok, stop)  # same stream, then the shared rule
        if any(s in f_text for s in stop):
            hit += 1
            assert c_ids == f_ids[: len(c_ids)] and len(c_ids) < len(f_ids)
            assert eos not in c_ids  # cut at a stop string: no EOS appended
        else:
            assert (c_ids, c_text) == (f_ids, f_text)  # untouched rows are identical
    return hit


@pytest.fixture
def stop_case(tiny_model, tiny_tokenizer, prompts_for):
    """Seeded samples without stop strings, and a stop string found in many (not all) of them."""
    prompts = prompts_for(8, seed=5)
    params = SamplingParams(n=4, max_new_tokens=20, seed=3, logprobs=True)
    free = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=8).generate(prompts, params)
    return prompts, params, free, frequent_substring(free.flat_texts())


def test_transformers_sampler_honours_stop(tiny_model, tiny_tokenizer, stop_case, completion_logps):
    prompts, params, free, marker = stop_case
    params = replace(params, stop=(marker, "zz"))
    cut = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=8).generate(prompts, params)
    hit = check_stop_run(free, cut, params, tiny_tokenizer, tiny_tokenizer.eos_token_id)
    assert 8 <= hit < 32, (marker, hit)
    free_lp, cut_lp = free.flat_logprobs(), cut.flat_logprobs()
    untouched = [i for i, t in enumerate(free.flat_texts()) if marker not in t]
    assert [cut_lp[i] for i in untouched] == [free_lp[i] for i in untouched]  # bit for bit
    want = completion_logps(
        tiny_model, prompt_token_ids(tiny_tokenizer, cut.flat_prompts()), cut.flat_token_ids()
    )
    torch.testing.assert_close(
        torch.tensor(cut_lp, dtype=torch.float64), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-4
    )
    assert sum(map(len, cut.flat_token_ids())) < sum(map(len, free.flat_token_ids()))


def test_transformers_sampler_stop_rows_do_not_move_other_rows(tiny_model, tiny_tokenizer, prompts_for):
    """Batches mixing prompts (batch_size 5), truncated sampling, a one-character stop string."""
    sampler = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=5)
    params = SamplingParams(n=5, temperature=0.8, top_k=20, max_new_tokens=24, seed=8)
    prompts = prompts_for(6, seed=9)
    free = sampler.generate(prompts, params)
    params = replace(params, stop=(frequent_substring(free.flat_texts(), width=1),))
    cut = sampler.generate(prompts, params)
    assert check_stop_run(free, cut, params, tiny_tokenizer, tiny_tokenizer.eos_token_id) >= 6


# ---------------------------------------------------------------------- vLLM
@pytest.mark.vllm
def test_vllm_sampler_honours_stop(vllm_sampler, tiny_model, prompts_for, completion_logps):
    tok = vllm_sampler.tokenizer
    prompts = prompts_for(8, seed=5)
    params = SamplingParams(n=4, max_new_tokens=20, seed=3, logprobs=True)
    free = vllm_sampler.generate(prompts, params)
    marker = frequent_substring(free.flat_texts())
    params = replace(params, stop=(marker, "zz"))
    cut = vllm_sampler.generate(prompts, params)
    hit = check_stop_run(free, cut, params, tok, tok.eos_token_id)
    assert 8 <= hit < 32, (marker, hit)
    free_lp, cut_lp = free.flat_logprobs(), cut.flat_logprobs()
    untouched = [i for i, t in enumerate(free.flat_texts()) if marker not in t]
    assert [cut_lp[i] for i in untouched] == [free_lp[i] for i in untouched]
    want = completion_logps(tiny_model, prompt_token_ids(tok, cut.flat_prompts()), cut.flat_token_ids())
    torch.testing.assert_close(
        torch.tensor(cut_lp, dtype=torch.float64), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-4
    )


@pytest.mark.vllm
@pytest.mark.parametrize(
    ("stop", "text"),
    [
        (("r o",), " "),  # begins inside 'over': the text keeps only the space before it
        (("over over o", "zz"), " "),  # begins at a token boundary
        (("ver o", " over ov"), ""),  # the second occurs earlier (at 0): nothing is kept
    ],
)
def test_vllm_and_transformers_cut_alike(vllm_sampler, tiny_model, tiny_tokenizer, prompts_for, stop, text):
    """Greedy decoding gives both backends the same ids (the fixture model repeats ' over'); vLLM ends the
    request at the stop string itself, the transformers backend cuts a full-length row: same result."""
    prompts = prompts_for(12, seed=3)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24, logprobs=True)
    hf = TransformersSampler(tiny_model, tiny_tokenizer)
    free = hf.generate(prompts, params)
    params = replace(params, stop=stop)
    h = hf.generate(prompts, params)
    v = vllm_sampler.generate(prompts, params)
    assert check_stop_run(free, h, params, tiny_tokenizer, tiny_tokenizer.eos_token_id) == 12
    assert h.flat_texts() == [text] * 12
    assert v.token_ids == h.token_ids
    assert v.texts == h.texts
    assert all(not any(s in t for s in stop) for t in v.flat_texts())
    torch.testing.assert_close(
        torch.tensor(v.flat_logprobs(), dtype=torch.float64),
        torch.tensor(h.flat_logprobs(), dtype=torch.float64),
        rtol=0,
        atol=1e-4,
    )
