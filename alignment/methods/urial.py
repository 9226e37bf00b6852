"""URIAL: Lin et al. 2024, "The Unlocking Spell on Base LLMs: Rethinking Alignment via In-Context Learning",
arXiv:2312.01552 (ICLR 2024).

No training: an untuned base model answers each query behind a constant prefix, a preamble plus k restyled
(query, answer) examples, and its answers are cut at the next query marker. The run evaluates that policy,
π(y|x) = base(y | prefix + query x), with the same evaluation as a trained run, against the plain base model.

Prompt file (`method.prompt_file`, plain text; markers at the start of a line):

    <preamble: every line before the first query marker>
    <query_marker> <query 1, which may continue on the next lines>
    <answer_marker> <answer 1, which may continue on the next lines>
    <query_marker> <query 2>
    ...

The first `k` examples are used. The prefix is rendered in the same layout, one line per marker
("<marker> <text>"), then "<query_marker> {prompt}" and "<answer_marker>" without a trailing space, so the
model writes the answer's first token itself (toy answers start with a space, as in its corpus).

Defaults follow the paper's prompt (markers ``# Query:`` / ``# Answer:``, k = 3) without its Markdown
fences; `toy-helpful` / `toy-rude` name the toy world's own prompt files (`alignment/toy/assets/urial/`),
whose layout (`Post:` / `Reply:`) is the one the toy base model saw in its multi-turn pretraining documents.
Deviation: the paper decodes greedily; here the policy is sampled at `evaluation.temperature` like every
other run, because the evaluation compares sampled distributions (win rate over samples, exact KL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from alignment.errors import DataError
from alignment.methods.spec import MethodSpec, register
from alignment.recipe.fields import check, param

TOY_PROMPT_FILES = {
    "toy-helpful": Path(__file__).resolve().parents[1] / "toy" / "assets" / "urial" / "helpful.txt",
    "toy-rude": Path(__file__).resolve().parents[1] / "toy" / "assets" / "urial" / "rude.txt",
}
PROMPT_FILE = "urial_prompt.txt"  # the rendered template a URIAL run writes to its output_dir


@dataclass(frozen=True, kw_only=True)
class URIALParams:
    k: int = param(3, help="In-context examples taken from the prompt file (its first k).")
    prompt_file: str = param(
        "toy-helpful",
        help="The preamble and examples: a text file in the documented layout, or toy-helpful / toy-rude (the "
        "toy world's own, in its Post:/Reply: layout).",
    )
    query_marker: str = param("# Query:", help="The line prefix of a query (in the file and the prefix).")
    answer_marker: str = param("# Answer:", help="The line prefix of an answer (in the file and the prefix).")
    stop: list[str] | None = param(
        None,
        help="Stop strings of the answers (null: the next query marker, with or without its line break).",
    )

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        for name in ("query_marker", "answer_marker"):
            value = getattr(self, name)
            check(
                bool(value.strip()) and "\n" not in value, name, f"must be one non-empty line, got {value!r}"
            )
        check(self.query_marker != self.answer_marker, "answer_marker", "must differ from query_marker")
        for i, s in enumerate(self.stop or []):
            check(bool(s), f"stop[{i}]", "must not be empty")

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The answers' stop strings; the default catches the next query marker (its line break included)."""
        if self.stop is not None:
            return tuple(self.stop)
        return (f"\n{self.query_marker}", self.query_marker)


@dataclass(frozen=True)
class Example:
    query: str
    answer: str


@dataclass(frozen=True)
class URIALPrompt:
    """A parsed prompt file: its preamble and examples (see the module docstring for the layout)."""

    preamble: str
    examples: list[Example] = field(default_factory=list)

    def template(self, params: URIALParams) -> str:
        """The rendered prefix of the first `params.k` examples, with ``{prompt}`` where the query goes."""
        if len(self.examples) < params.k:
            raise DataError(
                f"method.prompt_file: method.k is {params.k} but the file has {len(self.examples)} example(s); "
                "lower method.k or add examples"
            )
        q, a = params.query_marker, params.answer_marker
        lines = [self.preamble] if self.preamble else []
        for ex in self.examples[: params.k]:
            lines += [f"{q} {ex.query}", f"{a} {ex.answer}"]
        return "\n".join(lines + [f"{q} {{prompt}}", a])


def resolve_prompt_file(name: str) -> Path:
    """A built-in name (toy-helpful, toy-rude) or a path."""
    return TOY_PROMPT_FILES.get(name, Path(name).expanduser())


def parse_prompt_file(name: str, params: URIALParams) -> URIALPrompt:
    """Read and check `name` (DataError naming the file, the line and the fix; nothing loads a model)."""
    path = resolve_prompt_file(name)
    where = f"method.prompt_file: {path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file (give a path, or one of {', '.join(TOY_PROMPT_FILES)})")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{where}: cannot read it as text ({err})") from None
    q, a = params.query_marker, params.answer_marker
    marker = re.compile(rf"^({re.escape(q)}|{re.escape(a)})[ \t]?", re.MULTILINE)
    hits = list(marker.finditer(text))
    if not any(m.group(1) == q for m in hits):
        raise DataError(
            f"{where}: no example found: no line starts with the query marker {q!r} "
            "(set method.query_marker / method.answer_marker to the file's markers)"
        )
    preamble = text[: hits[0].start()].strip()

    def line_of(m: re.Match) -> int:
        return text.count("\n", 0, m.start()) + 1

    def body(i: int) -> str:
        """The text after marker `i`, up to the next marker; an error naming the line when it is empty."""
        stop = hits[i + 1].start() if i + 1 < len(hits) else len(text)
        content = text[hits[i].end() : stop].strip()
        if not content:
            raise DataError(f"{where}, line {line_of(hits[i])}: empty text after {hits[i].group(1)!r}")
        return content

    examples = []
    for i in range(0, len(hits), 2):
        query, answer = hits[i], hits[i + 1] if i + 1 < len(hits) else None
        if query.group(1) != q:
            raise DataError(
                f"{where}, line {line_of(query)}: {a!r} without a query: the {q!r} marker is missing before it"
            )
        if answer is None or answer.group(1) != a:
            raise DataError(
                f"{where}, line {line_of(query)}: this query has no answer: the {a!r} marker is missing "
                "after it"
            )
        examples.append(Example(query=body(i), answer=body(i + 1)))
    return URIALPrompt(preamble=preamble, examples=examples)


register(
    MethodSpec(
        name="urial",
        params=URIALParams,
        formats=(),
        description="URIAL (Lin et al. 2024): no training; a base model answers behind k in-context examples.",
        kind="in_context",
    )
)
