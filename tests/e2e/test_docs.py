"""docs/clients.md shows the code the suite runs.

Code that a test runs is marked where it lives (`# --- docs/clients.md: NAME ---` ... `# --- end
of snippet ---`, `//` in JavaScript); the block after `<!-- snippet: NAME -->` in the docs must
contain it verbatim (the docs may add imports and example values around it). The curl block is
run as written by test_sse_clients.py.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import HERE, JS_DIR, PAGES_DIR, STREAM, doc_snippets

pytestmark = pytest.mark.e2e

REGION = re.compile(
    r"^[ \t]*(?://|#) --- docs/clients\.md: (?P<name>[\w-]+) ---\n(?P<code>.*?)"
    r"^[ \t]*(?://|#) --- end of snippet ---",
    re.MULTILINE | re.DOTALL,
)
RUN_AS_WRITTEN = {"curl"}
STREAM_DOCUMENT = "stream-document"


def regions() -> dict[str, tuple[Path, str]]:
    sources = [*JS_DIR.glob("*.mjs"), *PAGES_DIR.glob("*.html"), *HERE.glob("test_*.py")]
    found: dict[str, tuple[Path, str]] = {}
    for path in sources:
        for match in REGION.finditer(path.read_text(encoding="utf-8")):
            assert match["name"] not in found, f"{match['name']} is marked twice"
            found[match["name"]] = (path, textwrap.dedent(match["code"]))
    return found


def graphql_words(document: str) -> list[str]:
    return document.replace("{", " { ").replace("}", " } ").split()


def test_every_snippet_in_the_docs_is_code_the_suite_runs() -> None:
    snippets = doc_snippets()
    marked = regions()

    assert set(snippets) == set(marked) | RUN_AS_WRITTEN | {STREAM_DOCUMENT}
    for name, (path, code) in marked.items():
        assert code in snippets[name], (
            f"docs/clients.md's `{name}` block no longer contains the code of {path.name}:\n{code}"
        )


def test_every_client_sends_the_documented_subscription() -> None:
    documented = graphql_words(doc_snippets()[STREAM_DOCUMENT])
    node_copy = (JS_DIR / "lib" / "documents.mjs").read_text(encoding="utf-8")
    page_copy = (PAGES_DIR / "graphql-ws.html").read_text(encoding="utf-8")

    def between_backticks(source: str, after: str) -> str:
        start = source.index("`", source.index(after)) + 1
        return source[start : source.index("`", start)]

    assert graphql_words(STREAM) == documented
    assert graphql_words(between_backticks(node_copy, "export const STREAM")) == documented
    assert graphql_words(between_backticks(page_copy, "const STREAM")) == documented
