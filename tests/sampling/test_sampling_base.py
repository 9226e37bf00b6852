from alignment.sampling import Completions, Sampler, SamplingParams
from alignment.sampling.hf import TransformersSampler


def test_completions_helpers():
    c = Completions(
        prompts=["a", "b"],
        texts=[["x", "yy"], ["z", ""]],
        token_ids=[[[1, 2], [3, 4, 2]], [[5], [2]]],
        logprobs=[[-1.0, -2.0], [-3.0, -0.5]],
    )
    assert c.flat_prompts() == ["a", "a", "b", "b"]
    assert c.flat_texts() == ["x", "yy", "z", ""]
    assert c.flat_token_ids() == [[1, 2], [3, 4, 2], [5], [2]]
    assert c.flat_logprobs() == [-1.0, -2.0, -3.0, -0.5]
    assert c.num_tokens == 7


def test_defaults_match_the_contract():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_new_tokens, p.seed, p.logprobs) == (
        1,
        1.0,
        1.0,
        0,
        48,
        0,
        False,
    )


def test_transformers_sampler_satisfies_protocol(tiny_model, tiny_tokenizer):
    assert isinstance(TransformersSampler(tiny_model, tiny_tokenizer), Sampler)
