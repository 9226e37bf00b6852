"""The experience stage of on-policy training: sample → label → select, with typed hand-offs.

* `samples` — `Samples` (what the sampler returned, P prompts × k samples) and `Experience` (the B examples
  kept, C completions each, with their per-example columns for the loss);
* `labellers` — how samples get their (P, k) scores: registry `LABELLERS`, `build_labeller`;
* `selectors` — which samples become an example's completions: registry `SELECTORS`. It is the one
  implementation of best/worst picking, shared by the online trainer, `alignment generate`, the toy
  builders and evaluation;
* `stage` — `make_experience`, the three steps in order.

This file imports nothing, so `alignment.experience.selectors` stays a light dependency (torch and the
registry only) that sampling, evaluation, the toy world and the methods can import without a circle.
"""
