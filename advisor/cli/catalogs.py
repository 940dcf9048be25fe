"""`advisor catalog gpus|models|apis`."""

import typer

from advisor.catalog import load as catalog
from advisor.cli.app import catalog_app
from advisor.cli.options import JsonFlag, _emit_json
from advisor.core.convert import to_json
from advisor.render.catalog import catalog_table


def _catalog(kind: catalog.Kind, columns: list[str], as_json: bool) -> None:
    entries = catalog.entries(kind)
    if as_json:
        _emit_json([to_json(e) | ({"stale": catalog.entry_price_stale(e)} if kind != "models" else {}) for e in entries])
    else:
        typer.echo(catalog_table(entries, columns, priced=kind != "models"))


@catalog_app.command("gpus")
def catalog_gpus(as_json: JsonFlag = False):
    """GPU types: dense bf16 peak, memory, bandwidth, reference price."""
    _catalog("gpus", ["name", "peak_tflops_bf16", "memory_gib", "memory_bandwidth_gbs", "price_usd_per_hour", "price_date", "date", "source"], as_json)


@catalog_app.command("models")
def catalog_models(as_json: JsonFlag = False):
    """Model architectures (any command also takes a config.json path)."""
    _catalog("models", ["name", "hub_id", "model_type", "total", "active", "num_hidden_layers", "hidden_size",
                        "experts", "date", "source"], as_json)


@catalog_app.command("apis")
def catalog_apis(as_json: JsonFlag = False):
    """Hosted-model prices per 1M tokens, dated."""
    _catalog("apis", ["name", "vendor", "input_usd_per_mtok", "output_usd_per_mtok", "date", "source"], as_json)

