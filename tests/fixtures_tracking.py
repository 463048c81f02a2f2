"""Fixtures for the tracking tests."""

from __future__ import annotations
