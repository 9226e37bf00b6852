"""TransformersSampler: shapes, seeding, EOS handling, untempered log-probs, peft/no_grad/mode safety."""

import pytest
import torch

from alignment.sampling import SamplingParams
from alignment.sampling.base import prompt_token_ids
from alignment.sampling.hf import TransformersSampler


def test_shapes(tiny_model, tiny_tokenizer, prompts_for):
    prompts = prompts_for(3)
    c = TransformersSampler(tiny_model, tiny_tokenizer).generate(
        prompts, SamplingParams(n=4, max_new_tokens=12, logprobs=True)
    )
    assert c.prompts == prompts
    assert [len(t) for t in c.texts] == [4, 4, 4]
    assert [len(t) for t in c.token_ids] == [4, 4, 4]
    assert [len(t) for t in c.logprobs] == [4, 4, 4]
    assert all(1 <= len(ids) <= 12 for ids in c.flat_token_ids())
    assert c.flat_prompts() == [p for p in prompts for _ in range(4)]
    assert c.num_tokens == sum(len(ids) for ids in c.flat_token_ids())
    assert all(lp < 0 for lp in c.flat_logprobs())


def test_seeded_calls_repeat_and_leave_global_rng_alone(tiny_model, tiny_tokenizer, prompts_for):
    sampler = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=8)
    prompts = prompts_for(4)
    params = SamplingParams(n=3, max_new_tokens=16, seed=123)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    a = sampler.generate(prompts, params)
    after = torch.rand(3)
    b = sampler.generate(prompts, params)
    c = sampler.generate(prompts, SamplingParams(n=3, max_new_tokens=16, seed=124))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    assert torch.equal(before, after)  # sampling ran inside fork_rng


def test_stops_at_eos(tiny_model, tiny_tokenizer, prompts_for):
    eos = tiny_tokenizer.eos_token_id
    c = TransformersSampler(tiny_model, tiny_tokenizer).generate(
        prompts_for(8), SamplingParams(n=4, max_new_tokens=20)
    )
    stopped = [ids for ids in c.flat_token_ids() if ids[-1] == eos]
    assert len(stopped) >= 8  # the fixture model ends most sentences
    for ids, text in zip(c.flat_token_ids(), c.flat_texts()):
        assert eos not in ids[:-1]  # nothing after the first EOS
        assert ids[-1] == eos or len(ids) == 20
        assert "</s>" not in text and "<pad>" not in text
    stopped_text = [t for ids, t in zip(c.flat_token_ids(), c.flat_texts()) if ids[-1] == eos][0]
    stopped_ids = [ids for ids in c.flat_token_ids() if ids[-1] == eos][0]
    assert stopped_text == tiny_tokenizer.decode(stopped_ids[:-1])


@pytest.mark.parametrize("knobs", [dict(temperature=1.0), dict(temperature=0.6, top_p=0.8, top_k=10)])
def test_logprobs_are_untempered_forward_pass_logprobs(
    tiny_model, tiny_tokenizer, prompts_for, completion_logps, knobs
):
    prompts = prompts_for(5)
    c = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=6).generate(
        prompts, SamplingParams(n=3, max_new_tokens=16, logprobs=True, **knobs)
    )
    want = completion_logps(
        tiny_model, prompt_token_ids(tiny_tokenizer, c.flat_prompts()), c.flat_token_ids()
    )
    torch.testing.assert_close(
        torch.tensor(c.flat_logprobs(), dtype=torch.float64),
        torch.tensor(want, dtype=torch.float64),
        rtol=0,
        atol=1e-4,
    )


def test_greedy_is_independent_of_batching_and_padding(tiny_model, tiny_tokenizer, prompts_for):
    prompts = prompts_for(7)
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=16)
    one = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=1).generate(prompts, params)
    many = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=64).generate(prompts, params)
    assert one.token_ids == many.token_ids
    assert all(a == b for a, b in one.token_ids)  # greedy: the n samples agree


def test_peft_model_under_no_grad_keeps_train_mode(tiny_model, tiny_tokenizer, prompts_for):
    from peft import LoraConfig, get_peft_model

    prompts = prompts_for(3)
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=10)
    plain = TransformersSampler(tiny_model, tiny_tokenizer).generate(prompts, params)
    policy = get_peft_model(
        tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )  # B = 0: same model
    policy.train()
    with torch.no_grad():
        got = TransformersSampler(policy, tiny_tokenizer).generate(prompts, params)
    assert policy.training
    assert got.token_ids == plain.token_ids


def test_load_weights_copies_into_a_separate_model(tiny_model, tiny_tokenizer, prompts_for):
    import copy

    target = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sampler = TransformersSampler(target, tiny_tokenizer)
    sampler.load_weights(tiny_model.named_parameters())
    for (n, a), (_, b) in zip(target.named_parameters(), tiny_model.named_parameters()):
        assert torch.equal(a, b), n
    sampler.load_weights(target.named_parameters())  # the live-policy case: same storage, skipped
    with pytest.raises(KeyError):
        sampler.load_weights([("nope.weight", torch.zeros(1))])
