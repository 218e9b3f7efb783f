import pytest

# The helpers in tests/support assert like the tests do: have pytest rewrite their asserts
# (as it did when they lived in conftest.py and the test modules).
pytest.register_assert_rewrite("tests.support")
