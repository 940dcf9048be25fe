"""Write advisor/catalog/data/{gpus,models,apis}.json from the YAML catalogs: validated entries and the YAML's digest, so the
advisor loads its catalogs without parsing YAML (tests/advisor/test_catalog_json.py checks they match).

Usage: python scripts/build_catalogs.py   (after editing any advisor/catalog/data/*.yaml)
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.catalog.load import DATA_DIR, prebuilt  # noqa: E402


def main() -> None:
    for kind in ("gpus", "models", "apis"):
        path = DATA_DIR / f"{kind}.json"
        path.write_text(json.dumps(prebuilt(kind), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
