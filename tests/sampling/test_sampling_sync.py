"""model_state_for_sync: HF names, merged LoRA weights, training model untouched (no vLLM needed)."""

import copy

import torch

from alignment.sampling import model_state_for_sync


def test_plain_model_yields_its_state_dict(tiny_model):
    got = dict(model_state_for_sync(tiny_model))
    want = dict(tiny_model.named_parameters())
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_lora_policy_yields_merged_weights_without_mutating_it(tiny_model):
    from peft import LoraConfig, get_peft_model

    names = set(dict(tiny_model.named_parameters()))
    policy = get_peft_model(
        tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)  # a trained adapter (B starts at 0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    got = dict(model_state_for_sync(policy))
    assert set(got) == names
    assert all(torch.equal(before[n], p) for n, p in policy.named_parameters())  # untouched
    assert not any(getattr(m, "merged", False) for m in policy.modules())
    merged = copy.deepcopy(policy).merge_and_unload()
    for n, p in merged.named_parameters():
        torch.testing.assert_close(got[n], p, rtol=0, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (
        got[q] - before[f"base_model.model.{q.replace('.weight', '.base_layer.weight')}"]
    ).abs().max() > 1e-3
