"""URIAL: the prompt file's layout and its errors, the rendered prefix, and a run that trains nothing."""

from __future__ import annotations

import json

import pytest

from alignment.errors import DataError
from alignment.methods.urial import URIALParams, parse_prompt_file

TOY = URIALParams(query_marker="Post:", answer_marker="Reply:")


def test_toy_prompt_file_renders_the_thread_layout():
    prompt = parse_prompt_file("toy-helpful", TOY)
    assert prompt.preamble == "Questions and replies."
    assert [ex.query for ex in prompt.examples] == [
        "Review of the kettle:",
        "Tell a story about a fox.",
        "Describe a quiet beach.",
    ]
    template = prompt.template(URIALParams(k=2, query_marker="Post:", answer_marker="Reply:"))
    assert template == (
        "Questions and replies.\n"
        "Post: Review of the kettle:\n"
        "Reply: The kettle is great and sturdy. The quality is fine for the price. I would recommend it.\n"
        "Post: Tell a story about a fox.\n"
        "Reply: Once a brave fox went for a walk and felt happy. One day it met a friend. They walked home "
        "together.\n"
        "Post: {prompt}\n"
        "Reply:"
    )
    assert TOY.stop_strings == ("\nPost:", "Post:")


def test_multi_line_examples_with_the_default_markers(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# Instruction\nBe kind.\n\n# Query:\nHow are you?\n# Answer:\nFine,\nthanks.\n")
    prompt = parse_prompt_file(str(path), URIALParams(k=1))
    assert prompt.preamble == "# Instruction\nBe kind."
    assert (prompt.examples[0].query, prompt.examples[0].answer) == ("How are you?", "Fine,\nthanks.")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no such file"),
        ("Just a preamble.\n", "no example found: no line starts with the query marker '# Query:'"),
        ("# Query: a\n# Answer: b\n# Query: c\n", "line 3: this query has no answer: the '# Answer:' marker"),
        ("# Query: a\n# Answer: b\n# Answer: c\n", "line 3: '# Answer:' without a query"),
        ("# Query: a\n# Answer:\n# Query: c\n# Answer: d\n", "line 2: empty text after '# Answer:'"),
        ("# Query: a\n# Answer: b\n", "method.k is 3 but the file has 1 example(s)"),
    ],
    ids=["missing", "no-examples", "answer-marker-missing", "query-marker-missing", "empty", "too-few"],
)
def test_bad_prompt_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "urial.txt"
    if text is not None:
        path.write_text(text)
    params = URIALParams(prompt_file=str(path))
    with pytest.raises(DataError, match="method.prompt_file") as err:
        parse_prompt_file(params.prompt_file, params).template(params)
    assert message in str(err.value) and err.value.exit_code == 2


def test_bad_prompt_file_exits_2_before_any_model_loads(tmp_path, monkeypatch, capsys):
    import transformers

    from alignment.cli import main

    loaded = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification):
        monkeypatch.setattr(cls, "from_pretrained", lambda *a, **k: loaded.append(a))
    bad = tmp_path / "bad.txt"
    bad.write_text("Post: a question without an answer\n")
    argv = ["recipes/urial.yaml", f"method.prompt_file={bad}", f"output_dir={tmp_path / 'out'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "method.prompt_file" in err and "line 1" in err and "'Reply:' marker is missing" in err
    assert loaded == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.train=toy-prompts", "trains nothing and reads no data"),
        ("training.learning_rate=0.1", "trains nothing; remove the training keys ['learning_rate']"),
        ("evaluation.enabled=false", "only evaluates"),
        ("evaluation.template='Q: {prompt}'", "template is its rendered prefix"),
        ("evaluation.every_n_steps=2", "nothing trains"),
    ],
)
def test_settings_a_urial_run_would_ignore_are_refused(tmp_path, override, message):
    from alignment.errors import RecipeError
    from alignment.recipe.load import load_recipe

    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_recipe("recipes/urial.yaml", [override, f"output_dir={tmp_path}"])


@pytest.mark.integration
def test_urial_run_writes_the_prefix_and_an_eval_comparable_to_a_trained_run(tiny_model_dir, tmp_path):
    """On the tiny model: no weights written, urial_prompt.txt is the template, eval.json has the keys of
    `alignment eval` on the plain model, and the prefix moved the policy away from the base (KL > 0)."""
    from alignment.cli import main
    from alignment.recipe.load import load_recipe
    from alignment.run import run_recipe

    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("Notes.\n# Query: the cat\n# Answer: a red dog likes the cat.\n")
    out = tmp_path / "urial"
    settings = ["evaluation.num_prompts=6", "evaluation.max_new_tokens=12"]
    recipe = load_recipe(
        "recipes/urial.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            "method={name: urial, k: 1, query_marker: '# Query:', answer_marker: '# Answer:', "
            f"prompt_file: {prompt_file}}}",
            *settings,
            f"output_dir={out}",
        ],
    )
    assert run_recipe(recipe) == 0
    template = (out / "urial_prompt.txt").read_text()
    assert template == "Notes.\n# Query: the cat\n# Answer: a red dog likes the cat.\n# Query: {prompt}\n# Answer:"
    assert (out / "recipe.yaml").exists() and not list(out.glob("*.safetensors"))
    result = json.loads((out / "eval.json").read_text())
    assert result["kl"] > 0 and 0 <= result["win_rate"] <= 1
    assert all("# Query:" not in ex["policy"] for ex in result["examples"])

    plain = tmp_path / "plain"
    argv = ["eval", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--output-dir", str(plain)]
    assert main([*argv, "--num-prompts", "6", "--max-new-tokens", "12"]) == 0
    assert set(result) == set(json.loads((plain / "eval.json").read_text()))


def test_a_multi_process_launch_is_refused(tmp_path, monkeypatch, capsys):
    """Every rank would evaluate and write the same files: one process, said before any model loads."""
    from alignment.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["recipes/urial.yaml", f"output_dir={tmp_path / 'out'}"]) == 2
    assert "evaluates on one process" in capsys.readouterr().err and not (tmp_path / "out").exists()
