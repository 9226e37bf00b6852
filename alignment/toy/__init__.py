"""The toy world: synthetic corpus, gold reward, dataset builders and the embedded base model (assets/base)."""
