"""Fixtures for the letters tests."""

from __future__ import annotations
