"""Bad input everywhere a user or an attacker can write: selectors, names, request files, policies, S3 keys.

Property tests (hypothesis, bounded example counts) plus one regression per defect of issue 12.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from unlearnops.components.evaluate.gates import GatePolicy, PolicyError
from unlearnops.components.scope.match import Prefilter, build_matcher, normalise

from unlearnops.ledger import RequestFileError, load_request_file
from unlearnops.patterns import PatternError, compile_pattern
from unlearnops.types import ForgetRequest, Selectors

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def subject(names: list[str], subject_ids: list[str] | None = None) -> ForgetRequest:
    selectors = Selectors(names=names, subject_ids=subject_ids or [])
    return ForgetRequest(id="r", kind="subject", selectors=selectors, legal_basis="other", requester="t")


def hits(names: list[str], text: str, aliases: dict[str, list[str]] | None = None,
         fold_accents: bool = False) -> bool:
    req = subject(names, list(aliases or {}))
    matcher = build_matcher([req], aliases or {}, {}, fold_accents=fold_accents)
    return matcher.match({"id": "x", "text": text}) == [0]


# ------------------------------------------------------------------ pattern requests
@pytest.mark.timeout(60)
def test_regression_catastrophic_regex_is_linear() -> None:
    """``(\\w+\\s?)+!$`` hung the scope step under backtracking ``re``; RE2 answers at once."""
    req = ForgetRequest(id="p", kind="pattern", selectors=Selectors(patterns=[r"(\w+\s?)+!$"]),
                        legal_basis="copyright", requester="t")
    matcher = build_matcher([req], {}, {})
    assert matcher.match({"id": "x", "text": "word " * 20_000 + "?"}) == []
    assert matcher.match({"id": "y", "text": "hello world!"}) == [0]


def test_regression_bad_regex_refused_at_filing() -> None:
    """A pattern that does not compile was accepted at filing and failed only in the scope step."""
    with pytest.raises(ValidationError, match="invalid regex"):
        Selectors(patterns=["(unclosed"])
    with pytest.raises(ValidationError, match="invalid regex"):
        Selectors(patterns=[r"(a)\1"])  # back-references need backtracking: refused


@BOUNDED
@given(st.text(max_size=40))
def test_any_pattern_compiles_or_is_refused_cleanly(pattern: str) -> None:
    try:
        rx = compile_pattern(pattern)
    except PatternError as err:
        assert "invalid regex" in str(err)
        with pytest.raises(ValidationError):
            Selectors(patterns=[pattern])
    else:
        rx.search("some text to search, 1234")
        try:
            assert Selectors(patterns=[pattern]).patterns == [pattern]
        except ValidationError as err:  # other text rules (NUL, size) refuse it cleanly
            assert "patterns" in str(err)


# ------------------------------------------------------------------ names in free text
@pytest.mark.parametrize("text", [
    "Ada  Quill was born", "about Ada\nQuill.", "ADA QUILL's notebook", "(Ada Quill)", "“Ada Quill”",
    "Ａｄａ Ｑｕｉｌｌ wrote", "said Ada\tQuill,", "ada quill",
])
def test_regression_name_variants_match(text: str) -> None:
    """The same name with a double space, a line break, other case, fullwidth letters was missed."""
    assert hits(["Ada Quill"], text)


@pytest.mark.parametrize("text", ["Ada Quillson", "Ada Quill-Smith", "Mada Quill", "AdaQuill", "Ada Quil"])
def test_never_inside_a_longer_name(text: str) -> None:
    assert not hits(["Ada Quill"], text)


def test_accents_optional_and_aliases() -> None:
    assert not hits(["Jose Alvarez"], "José Álvarez spoke")
    assert hits(["Jose Alvarez"], "José Álvarez spoke", fold_accents=True)
    assert hits(["José Álvarez"], "JOSÉ ÁLVAREZ spoke")
    aliases = {"person-1": ["Margaret Hale", "Peggy Hale", "M. Hale"]}
    assert hits([], "we met Peggy Hale", aliases) and hits([], "letters of M. Hale.", aliases)
    assert not hits([], "we met Peggy Hales", aliases)


NAME_WORD = st.text(st.characters(min_codepoint=65, max_codepoint=0x24F, categories=("Lu", "Ll"),
                                  exclude_characters="\u0130\u0131\u0149\u017f"), min_size=2, max_size=8)


@BOUNDED
@given(words=st.lists(NAME_WORD, min_size=1, max_size=3),
       gaps=st.lists(st.sampled_from([" ", "  ", "\n", "\t", " \r\n "]), min_size=2, max_size=2),
       before=st.sampled_from(["", "Dr. ", "(", "about ", "“", "- "]),
       after=st.sampled_from(["", "'s", ".", ",", ")", "”", " said", "’s book"]),
       upper=st.booleans())
def test_name_found_in_any_spacing_and_punctuation(words: list[str], gaps: list[str], before: str,
                                                   after: str, upper: bool) -> None:
    name = " ".join(words)
    written = words[0] + "".join(gap + word for gap, word in zip(gaps, words[1:], strict=False))
    text = f"{before}{written.upper() if upper else written}{after}"
    assert hits([name], text)
    assert not hits([name], f"{before}{written}xyz{after}")  # a longer name is not the name
    pre = Prefilter()  # the prefilter keeps every line a match can be on (a superset)
    pre.add_names([name])
    first = b'{"text": "nothing"}\n'
    block = first + b'{"text": ' + json.dumps(text).encode() + b"}\n"
    assert pre.full or len(first) in set(pre.line_starts(block))


def test_normalise() -> None:
    assert normalise("  Ａｄａ\n\tQUILL ") == "ada quill"
    assert normalise("Crème", fold_accents=True) == "creme" and normalise("Crème") == "crème"


# ------------------------------------------------------------------ request files and policies
YAMLISH = st.one_of(
    st.text(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                 max_leaves=12).map(json.dumps),
)


@BOUNDED
@given(text=YAMLISH)
def test_request_files_load_or_fail_cleanly(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("req") / "requests.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_request_file(path)
    except RequestFileError as err:
        assert str(err) and "Traceback" not in str(err)


@BOUNDED
@given(text=YAMLISH)
def test_policies_load_or_fail_cleanly(text: str) -> None:
    try:
        GatePolicy.from_yaml(text, "fuzz.yaml")
    except PolicyError as err:
        assert str(err).startswith("fuzz.yaml")


# ------------------------------------------------------------------ S3 keys
SEGMENT = st.sampled_from(["..", ".", "a", "b", "..a", "x..", "%2e%2e", ""])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(segments=st.lists(SEGMENT, min_size=1, max_size=5))
def test_s3_keys_never_write_outside_the_destination(segments: list[str], monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """Regression: an S3 key such as ``model/../../x`` was written outside the destination folder.

    The bucket listing is simulated (S3 servers differ in which keys they accept; the mapping of a
    listed key to a local path is what is under test)."""
    from unlearnops import storage

    rel = "/".join(segments) + "/f.txt"
    listing = [storage.FileInfo(uri=f"s3://b/model/{k}", size=4, etag="e") for k in ("ok.txt", rel)]
    monkeypatch.setattr(storage, "list_files", lambda uri, suffixes=(): listing)

    def fake_download(uri: str, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"data")

    monkeypatch.setattr(storage, "download_file", fake_download)
    root = tmp_path_factory.mktemp("dl")
    dest = root / "inner" / "dest"
    try:
        storage.download_dir("s3://b/model", dest)
    except storage.StorageError:
        pass  # refusing the folder is fine; writing outside it is not
    written = [p.resolve() for p in root.rglob("*") if p.is_file()]
    outside = [p for p in written if dest.resolve() not in p.parents]
    assert not outside, f"key {rel!r} wrote {outside}"
