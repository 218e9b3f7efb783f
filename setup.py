"""The one compiled module: a folder of a ``file://`` tier read in one call.

Everything else is in ``pyproject.toml``. The module is optional: where it cannot be
built (no C compiler), ``shelflife.stores.local`` reads folders in Python instead, the
same entries a little slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shelflife.stores._folder",
            sources=["src/shelflife/stores/_folder.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ]
)
