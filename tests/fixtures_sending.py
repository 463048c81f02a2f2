"""Fixtures for the sending tests."""

from __future__ import annotations
