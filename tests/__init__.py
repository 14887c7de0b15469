"""Tests of auto-healer (real NATS, git and HTTP; see conftest.py)."""
