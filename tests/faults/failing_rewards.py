"""A reward function that imports fine and takes (prompts, completions), then fails when called: a run that
breaks after it started (at its evaluation)."""


def boom(prompts, completions):
    raise RuntimeError("the judge fell over")
