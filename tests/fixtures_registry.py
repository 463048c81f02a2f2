"""Fixtures for the registry tests."""

from __future__ import annotations
