"""The trainable policy as a recipe describes it: the causal LM, dropout off, optionally a LoRA adapter."""

from __future__ import annotations

from torch import nn


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (TRL's `disable_dropout`, on by default there too).

    With dropout active, the policy in training mode, its adapter-off reference and the precomputed reference
    (computed in eval mode) are different networks, so log-ratios carry dropout noise instead of being 0 at
    the start. Applied to the base model before LoRA wraps it: the adapter's own `lora.dropout` is a
    regulariser the user chose, and the reference (adapter off) never runs it.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        # attention kernels take their dropout as a float the attention module copied from its config
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def build_policy(recipe) -> nn.Module:
    """recipe.model -> the policy to train (safetensors weights only; remote code only when asked)."""
    from alignment.models import load_causal_lm

    model = load_causal_lm(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
        dtype=recipe.model.dtype,
        attn_implementation=recipe.model.attn_implementation,
    )
    if recipe.model.disable_dropout:
        disable_dropout(model)
    lora = recipe.model.lora
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model
