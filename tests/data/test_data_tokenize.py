"""Chat rendering, the token-id conventions, and truncation counts checked against hand arithmetic.

The test tokenizer (conftest.py) is word-level: a prompt of w words is w + 1 tokens (BOS), a completion of
w words is w + 1 tokens (EOS).
"""

from __future__ import annotations

import logging

import datasets
import pytest
from datasets import Dataset

from alignment.data.tokenize import dataset_statistics, tokenize_dataset, truncate_example
from alignment.errors import DataError

datasets.disable_progress_bars()

PAIRED = {
    "prompt": ["one two three", "one two three four five six seven", "one"],  # 4, 8, 2 tokens
    "chosen": [
        "four five",
        "one two three four five six",
        "one two three four five six seven eight nine ten",
    ],
    "rejected": ["six", "two", "one two"],  # chosen 3, 7, 11 tokens; rejected 2, 2, 3
}


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def user(text):
    return [{"role": "user", "content": text}]


def bot(text):
    return [{"role": "assistant", "content": text}]


def test_truncate_example_keeps_prompt_end_and_completion_start():
    prompt, completions, prompt_cut, cut, dropped = truncate_example(
        [1, 2, 3, 4, 5], [[6, 7, 8], [9]], max_length=5, max_prompt_length=3
    )
    assert (prompt, completions, prompt_cut, cut, dropped) == ([3, 4, 5], [[6, 7], [9]], True, 1, False)
    assert truncate_example([1, 2], [[3], [4]], max_length=2, max_prompt_length=None) == (
        [1, 2], [[], []], False, 2, True
    )  # fmt: skip
    assert truncate_example([1], [[2]], max_length=None, max_prompt_length=None) == (
        [1],
        [[2]],
        False,
        0,
        False,
    )


def test_plain_paired_ids_follow_the_text_conventions(tokenizer):
    ds, report = tokenize_dataset(
        Dataset.from_dict(PAIRED), "paired", tokenizer, max_length=None, max_prompt_length=None
    )
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    row = ds[0]
    assert row["prompt"] == "one two three"  # text columns stay
    assert row["prompt_input_ids"] == [bos] + ids(tokenizer, "one two three")
    assert row["chosen_input_ids"] == ids(tokenizer, "four five") + [eos]
    assert row["rejected_input_ids"] == ids(tokenizer, "six") + [eos]
    assert not report.anything_cut and report.rows_out == 3
    assert report.summary() == "no truncation: 3 rows fit max_prompt_length=None, max_length=None"


def test_truncation_counts_prompt_first_then_completions(tokenizer, caplog):
    """max_prompt_length=5, max_length=8.
    row 0: prompt 4 fits; budget 8-4=4: chosen 3, rejected 2 fit.
    row 1: prompt 8 -> last 5 (cut 1); budget 3: chosen 7 -> 3 (cut 2), rejected 2 fits.
    row 2: prompt 2 fits; budget 6: chosen 11 -> 6 (cut 3), rejected 3 fits.
    """
    with caplog.at_level(logging.WARNING, logger="alignment.data.tokenize"):
        ds, report = tokenize_dataset(
            Dataset.from_dict(PAIRED), "paired", tokenizer, max_length=8, max_prompt_length=5
        )
    assert (report.prompts_truncated, report.completions_truncated, report.examples_dropped) == (1, 2, 0)
    assert (report.rows_in, report.rows_out, report.completions_in) == (3, 3, 6)
    assert ds[1]["prompt_input_ids"] == ids(tokenizer, "three four five six seven")  # BOS cut with the start
    assert ds[1]["chosen_input_ids"] == ids(tokenizer, "one two three")  # EOS cut with the end
    assert ds[2]["chosen_input_ids"] == ids(tokenizer, "one two three four five six")
    assert [len(p) + len(c) for p, c in zip(ds["prompt_input_ids"], ds["chosen_input_ids"])] == [7, 8, 8]
    want = (
        "1 of 3 prompts truncated to their last 5 tokens; 2 of 6 completions truncated to fit max_length=8; "
        "3 of 3 rows remain"
    )
    assert report.summary() == want
    assert f"truncation: {want}" in caplog.text


def test_rows_whose_completions_have_no_room_are_dropped(tokenizer):
    """max_length=4, no prompt limit.
    row 0: prompt 4 -> budget 0: chosen and rejected cut to nothing -> dropped.
    row 1: prompt 8 -> budget 0 -> dropped.
    row 2: prompt 2 -> budget 2: chosen 11 -> 2, rejected 3 -> 2 (both cut) -> kept.
    """
    ds, report = tokenize_dataset(
        Dataset.from_dict(PAIRED), "paired", tokenizer, max_length=4, max_prompt_length=None
    )
    assert (report.prompts_truncated, report.completions_truncated, report.examples_dropped) == (0, 6, 2)
    assert report.rows_out == 1 and ds["prompt"] == ["one"]
    assert ds[0]["rejected_input_ids"] == ids(tokenizer, "one two")
    assert "2 examples dropped (a completion had no tokens left); 1 of 3 rows remain" in report.summary()


def test_unpaired_negatives_and_prompts_columns(tokenizer):
    eos = tokenizer.eos_token_id
    unpaired = Dataset.from_dict(
        {"prompt": ["one", "two"], "completion": ["three four", "five"], "label": [True, False]}
    )
    ds, report = tokenize_dataset(unpaired, "unpaired", tokenizer, max_length=3, max_prompt_length=2)
    assert ds["label"] == [True, False]
    # prompts 2 tokens, budget 1: "three four" + EOS (3) -> 1 and "five" + EOS (2) -> 1, both cut
    assert ds["completion_input_ids"] == [ids(tokenizer, "three"), ids(tokenizer, "five")]
    assert (report.completions_truncated, report.completions_in) == (2, 2)
    negatives = Dataset.from_dict({"prompt": ["one"], "rejected": ["two"]})
    ds, _ = tokenize_dataset(negatives, "negatives", tokenizer, max_length=None, max_prompt_length=None)
    assert (
        ds[0]["rejected_input_ids"] == ids(tokenizer, "two") + [eos] and "completion" not in ds.column_names
    )
    prompts = Dataset.from_dict({"prompt": ["one two three four", "five"]})
    ds, report = tokenize_dataset(prompts, "prompts", tokenizer, max_length=4, max_prompt_length=3)
    assert ds["prompt_input_ids"] == [
        ids(tokenizer, "two three four"),
        [tokenizer.bos_token_id] + ids(tokenizer, "five"),
    ]
    assert (report.prompts_truncated, report.completions_in, report.examples_dropped) == (1, 0, 0)


def test_conversational_paired_is_rendered_with_the_chat_template(tokenizer):
    ds = Dataset.from_dict(
        {
            "prompt": [user("what color is the sky ?")],
            "chosen": [bot("it is blue .")],
            "rejected": [bot("it is green .")],
        }
    )
    out, _ = tokenize_dataset(ds, "paired", tokenizer, max_length=None, max_prompt_length=None)
    row = out[0]
    # the template's literal <s> is dropped from the text because the tokenizer adds BOS itself
    assert row["prompt"] == "<|user|> what color is the sky ? <|end|> <|assistant|> "
    assert row["chosen"] == "it is blue . <|end|> " and row["rejected"] == "it is green . <|end|> "
    assert row["prompt_input_ids"] == tokenizer(row["prompt"])["input_ids"]
    assert row["prompt_input_ids"].count(tokenizer.bos_token_id) == 1
    assert row["chosen_input_ids"] == ids(tokenizer, "it is blue . <|end|>") + [tokenizer.eos_token_id]


def test_conversational_negatives_unpaired_and_prompts(tokenizer):
    negatives = Dataset.from_dict({"prompt": [user("where is the sun ?")], "rejected": [bot("in the sea .")]})
    out, _ = tokenize_dataset(negatives, "negatives", tokenizer, max_length=None, max_prompt_length=None)
    assert out[0]["rejected"] == "in the sea . <|end|> " and out.column_names[:2] == ["prompt", "rejected"]
    unpaired = Dataset.from_dict({"prompt": [user("hello")], "completion": [bot("hello")], "label": [False]})
    out, _ = tokenize_dataset(unpaired, "unpaired", tokenizer, max_length=None, max_prompt_length=None)
    assert (out[0]["completion"], out[0]["label"]) == ("hello <|end|> ", False)
    prompts = Dataset.from_dict({"prompt": [[{"role": "system", "content": "be kind"}, *user("hello")]]})
    out, _ = tokenize_dataset(prompts, "prompts", tokenizer, max_length=None, max_prompt_length=None)
    assert out[0]["prompt"] == "<|system|> be kind <|end|> <|user|> hello <|end|> <|assistant|> "


def test_conversational_data_needs_a_chat_template(tokenizer_without_template):
    ds = Dataset.from_dict({"prompt": [user("hello")]})
    with pytest.raises(DataError, match=r"has no chat template; set data.chat_template"):
        tokenize_dataset(ds, "prompts", tokenizer_without_template, max_length=None, max_prompt_length=None)
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    out, _ = tokenize_dataset(
        ds,
        "prompts",
        tokenizer_without_template,
        max_length=None,
        max_prompt_length=None,
        chat_template=template,
    )
    assert out[0]["prompt"] == "[user] hello "


def test_recipe_chat_template_overrides_the_tokenizers(tokenizer):
    ds = Dataset.from_dict({"prompt": [user("hello")], "completion": [bot("hi")], "label": [True]})
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    out, _ = tokenize_dataset(
        ds, "unpaired", tokenizer, max_length=None, max_prompt_length=None, chat_template=template
    )
    assert (out[0]["prompt"], out[0]["completion"]) == ("user: hello\nassistant:", " hi\n")


def test_multiprocess_tokenization_matches_single_process(tokenizer):
    ds = Dataset.from_dict({k: v * 4 for k, v in PAIRED.items()})
    one, report_one = tokenize_dataset(ds, "paired", tokenizer, max_length=8, max_prompt_length=5)
    two, report_two = tokenize_dataset(ds, "paired", tokenizer, max_length=8, max_prompt_length=5, num_proc=2)
    assert one.to_list() == two.to_list() and report_one == report_two


def test_dataset_statistics(tokenizer):
    """Lengths after truncation at (8, 5): prompts 4, 5, 2; chosen 3, 3, 6; rejected 2, 2, 3."""
    tokenized, _ = tokenize_dataset(
        Dataset.from_dict(PAIRED), "paired", tokenizer, max_length=8, max_prompt_length=5
    )
    stats = dataset_statistics(tokenized, "paired")
    assert stats["rows"] == 3
    assert stats["prompt_tokens"] == pytest.approx({"mean": 11 / 3, "p50": 4.0, "p95": 4.9, "max": 5})
    assert stats["chosen_tokens"]["max"] == 6 and stats["rejected_tokens"]["mean"] == pytest.approx(7 / 3)
    assert stats["completion_tokens"] == pytest.approx({"mean": 19 / 6, "p50": 3.0, "p95": 5.25, "max": 6})
    unpaired = Dataset.from_dict(
        {"prompt": ["a", "b", "c", "d"], "completion": ["x"] * 4, "label": [True, False, False, False]}
    )
    tokenized, _ = tokenize_dataset(unpaired, "unpaired", tokenizer, max_length=None, max_prompt_length=None)
    assert dataset_statistics(tokenized, "unpaired")["label_balance"] == {
        "desirable": 1, "undesirable": 3, "desirable_fraction": 0.25
    }  # fmt: skip
