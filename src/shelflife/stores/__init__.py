"""Stores: one protocol, one module per backend, chosen by URL scheme."""

from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import ObjectInfo, PutResult, Store
from shelflife.stores.registry import open_store

__all__ = ["ObjectInfo", "ObstoreStore", "PutResult", "Store", "open_store"]
