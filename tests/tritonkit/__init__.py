"""Helpers of tests/e2e/test_triton.py (a regular package: it must win over an installed
`triton`, e.g. the one torch brings)."""
