"""The prebuilt JSON catalogs match their YAML (regenerate with scripts/build_catalogs.py), and load to the same entries."""

import json

import pytest

from advisor import catalog


@pytest.mark.parametrize("kind", ["gpus", "models", "apis"])
def test_prebuilt_json_matches_yaml(kind):
    built = json.loads((catalog.DATA_DIR / f"{kind}.json").read_text())
    assert built == catalog.prebuilt(kind), f"run python scripts/build_catalogs.py after editing {kind}.yaml"
    from_yaml = catalog._read_entries(catalog.DATA_DIR / f"{kind}.yaml", kind)
    assert catalog._shipped_entries(kind) == from_yaml


def test_edited_yaml_is_read_instead_of_a_stale_json(tmp_path, monkeypatch):
    (tmp_path / "apis.yaml").write_text("- {name: x, vendor: v, input_usd_per_mtok: 1, output_usd_per_mtok: 2, "
                                        "source: s, date: '2026-11'}\n")
    (tmp_path / "apis.json").write_text(json.dumps({"yaml_crc32": "old", "entries": []}))
    monkeypatch.setattr(catalog, "DATA_DIR", tmp_path)
    assert [e.name for e in catalog._shipped_entries("apis")] == ["x"]
