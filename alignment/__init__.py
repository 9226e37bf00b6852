"""alignment: preference alignment for language models from one YAML recipe.

Importing the package is cheap: heavy libraries (transformers, vLLM, DeepSpeed) load lazily in the modules
that need them.
"""

__version__ = "0.1.0"
