"""One-line notices under any output that used a catalog price: stale (advisor.catalog.load.price_is_stale) or retired."""

import datetime

from advisor.catalog.load import STALE_PRICE_MONTHS, entry_price_stale, user_config_dir
from advisor.catalog.types import ApiPrice, Gpu


def price_notices(entries: list, today: datetime.date | None = None) -> list[str]:
    """A line for each GPU or API entry whose price is STALE_PRICE_MONTHS old or more (or undated), and for each
    retired API model, naming the user catalog file that overrides it."""
    lines = []
    for e in entries:
        kind = "gpus" if isinstance(e, Gpu) else "apis"
        price = (f"${e.price_usd_per_hour:g}/GPU-hour" if isinstance(e, Gpu)
                 else f"${e.input_usd_per_mtok:g}/${e.output_usd_per_mtok:g} per 1M tokens")
        if entry_price_stale(e, today):
            lines.append(f"note: the {e.name} price ({price}) is dated {e.price_dated or 'nowhere'}, {STALE_PRICE_MONTHS} months "
                         f"old or more; override it with an entry named {e.name} in {user_config_dir() / (kind + '.yaml')}")
        if isinstance(e, ApiPrice) and e.retired:
            when = f" (shutdown {e.shutdown_date})" if e.shutdown_date else ""
            lines.append(f"note: {e.name} is retired or deprecated{when}; price a current model with --api "
                         "(advisor catalog apis)")
    return lines
