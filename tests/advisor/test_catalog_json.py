"""The prebuilt JSON catalogs match their YAML (regenerate with scripts/build_catalogs.py), and load to the same entries."""

import json

import pytest

from advisor.catalog import load as catalog


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


def test_a_json_built_for_other_fields_is_not_trusted(tmp_path, monkeypatch):
    """The digest matches but the entries name fields this version does not have (or lack a required one): the
    prebuilt entries are not constructed unchecked; the YAML is read instead."""
    yaml_text = "- {name: x, vendor: v, input_usd_per_mtok: 1, output_usd_per_mtok: 2, source: s, date: '2026-11'}\n"
    (tmp_path / "apis.yaml").write_text(yaml_text)
    monkeypatch.setattr(catalog, "DATA_DIR", tmp_path)
    good = catalog.prebuilt("apis")
    for broken in ({**good["entries"][0], "colour": "red"}, {k: v for k, v in good["entries"][0].items() if k != "vendor"}):
        (tmp_path / "apis.json").write_text(json.dumps({**good, "entries": [broken | {"name": "from-json"}]}))
        assert [e.name for e in catalog._shipped_entries("apis")] == ["x"]
    (tmp_path / "apis.json").write_text(json.dumps({**good, "entries": [good["entries"][0] | {"name": "from-json"}]}))
    assert [e.name for e in catalog._shipped_entries("apis")] == ["from-json"]
