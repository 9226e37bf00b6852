"""Recipes: one YAML file names the method and every setting; see `schema` (sections) and `load` (I/O).

```python
from alignment.recipe import load_recipe, save_recipe, to_training_arguments
recipe = load_recipe("recipes/dpo.yaml", ["method.beta=0.2"])
```
"""

from alignment.recipe.load import (
    apply_override,
    dump_recipe,
    load_recipe,
    method_from_dict,
    parse_override,
    recipe_from_dict,
    save_recipe,
    to_dict,
)
from alignment.recipe.schema import (
    TRAINING_DEFAULTS,
    DataConfig,
    DatasetSpec,
    EvaluationConfig,
    LoraConfig,
    MethodConfig,
    ModelConfig,
    Recipe,
    RewardConfig,
    SamplingConfig,
    VLLMConfig,
    method_spec,
    reference_mode,
    to_training_arguments,
    validate_training,
)

__all__ = [
    "TRAINING_DEFAULTS",
    "DataConfig",
    "DatasetSpec",
    "EvaluationConfig",
    "LoraConfig",
    "MethodConfig",
    "ModelConfig",
    "Recipe",
    "RewardConfig",
    "SamplingConfig",
    "VLLMConfig",
    "apply_override",
    "dump_recipe",
    "load_recipe",
    "method_from_dict",
    "method_spec",
    "parse_override",
    "recipe_from_dict",
    "reference_mode",
    "save_recipe",
    "to_dict",
    "to_training_arguments",
    "validate_training",
]
