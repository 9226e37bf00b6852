"""`python -m alignment RECIPE.yaml` and `accelerate launch -m alignment RECIPE.yaml`."""

from alignment.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
