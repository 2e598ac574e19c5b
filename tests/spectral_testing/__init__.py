"""Test support shared by the test files: tiny models, data and log readers (not part of the package)."""
