"""The README's comparison tables, generated from `bds bench` result files.

Each generated table sits in README.md between two marker lines:

    <!-- generated: benchmarks/results/NAME.json minus DEFENSE -->
    ...
    <!-- end generated -->

and is the bench report's comparison (bds.bench.report.comparison): per task and p, each
defense's HS / FA / over-refusal with 95 % CIs over seeds and items, and its paired
difference to DEFENSE. A block opened by `<!-- generated: FILE verdict -->` holds the
report's verdict on the expected result instead (bds.bench.verdict). So a README number
cannot drift from the result file it cites; the test suite fails when one has.

    python benchmarks/readme_tables.py            # rewrite the tables from the result files
    python benchmarks/readme_tables.py --check    # exit 1 when one is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bds.bench.report import comparison, verdict_lines

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(?P<start><!-- generated: (?P<file>\S+) (?:minus (?P<minus>\S+)|(?P<verdict>verdict)) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<end><!-- end generated -->)",
    re.S,
)


def render(text: str, root: Path = ROOT) -> str:
    """`text` with every generated block rewritten from its result file."""

    def table(match: re.Match) -> str:
        path = root / match["file"]
        if not path.is_file():
            raise SystemExit(f"README: {match['file']}: no such result file (fix the marker)")
        results = json.loads(path.read_text())
        if "statistics" not in results:
            raise SystemExit(f"README: {match['file']} is not a `bds bench` results.json")
        if match["verdict"]:
            lines = verdict_lines(results) or ["(no verdict: no group with SFT and BDS, both with FA)"]  # fmt: skip
        else:
            lines = comparison(results, match["minus"])
        body = "\n".join(lines) + "\n"
        return match["start"] + body + match["end"]

    return BLOCK.sub(table, text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is stale")
    args = parser.parse_args()
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    new = render(text)
    blocks = len(BLOCK.findall(text))
    if args.check:
        if new != text:
            sys.exit(f"{path}: a generated table is out of date; run {Path(__file__).name}")
        print(f"{path}: {blocks} generated tables, all current")
        return
    path.write_text(new, encoding="utf-8")
    print(f"{path}: {blocks} generated tables written")


if __name__ == "__main__":
    main()
