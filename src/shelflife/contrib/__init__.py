"""Integrations with the frameworks shelflife's users come from.

Each module is an interface over the service layer, imported only by the application
that uses it, and needs its extra: :mod:`shelflife.contrib.django` (``shelflife[django]``),
:mod:`shelflife.contrib.fsspec` (``shelflife[fsspec]``).
"""
