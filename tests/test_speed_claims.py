"""The runner's speed and memory claims in README.md and bench/README.md say only what a committed result shows.

Each README marks its claims section with `<!-- speed-claims -->` ... `<!-- /speed-claims -->`. Inside it:
- every table block `<!-- table: bench/results/X.json -->` ... `<!-- /table -->` is exactly what
  `python bench/speed.py --render bench/results/X.json` prints, and that result is complete (every method reached its
  clean pairs, none short);
- every ratio figure (like 1.05x) is a number of the rendered table of a result the section names (a median, or
  the min or max of its pairs), or one of bench/speed.py's TARGETS;
- every result the section names exists, and was measured with identical batches (its pairs carry the planned
  rows' real-token credit and the noise guard's measures).
"""

import json
import re

import pytest

from tests.conftest import ROOT

READMES = [ROOT / "README.md", ROOT / "bench" / "README.md"]
SECTION = re.compile(r"<!-- speed-claims -->(.*?)<!-- /speed-claims -->", re.S)
TABLE = re.compile(r"<!-- table: (\S+) -->\n(.*?)\n<!-- /table -->", re.S)
RESULT = re.compile(r"bench/results/[\w.-]+\.json")
RATIO = re.compile(r"(?<![\w.])(\d+\.\d+)x")
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+")


def _render(path: str) -> str:
    pytest.importorskip("torch")
    from bench.speed import markdown
    return markdown(json.loads((ROOT / path).read_text()))


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_speed_claims_are_what_the_committed_results_show(readme):
    sections = SECTION.findall(readme.read_text())
    assert sections, f"{readme.name}: no <!-- speed-claims --> section"
    for section in sections:
        named = sorted(set(RESULT.findall(section)))
        assert named, "a claims section names the results it rests on"
        rendered = {}
        for path in named:
            result = json.loads((ROOT / path).read_text())
            assert result["complete"] and result["noise_guard"]["on"], path
            for method in ("lora", "qlora"):
                for pair in result.get(f"{method}_clean_pairs", []):
                    for run in pair["runs"].values():
                        assert {"tokens_per_second", "labelled_tokens_per_second", "foreign_cpu_share",
                                "step_outlier_ratio"} <= run.keys()
            rendered[path] = _render(path)
        for path, block in TABLE.findall(section):
            assert block == rendered[path], f"{readme.name}: the table of {path} differs from --render's"
        from bench.speed import TARGETS
        numbers = {n for text in rendered.values() for n in NUMBER.findall(text)}
        numbers |= {str(bound) for _, bound in TARGETS.values()}
        unsupported = sorted(f"{f}x" for f in set(RATIO.findall(section)) if f not in numbers)
        assert not unsupported, f"{readme.name}: figures not in {named}: {unsupported}"
