"""Helpers shared by the test modules.

Test modules import their helpers from here, never from one another or from conftest.py
(tests/test_layout.py checks it); conftest.py keeps only fixtures and hooks.
"""
