"""The catalog: inventory, and later the journal and run history."""

from shelflife.catalog.catalog import Catalog, CatalogObject, TierTotals

__all__ = ["Catalog", "CatalogObject", "TierTotals"]
