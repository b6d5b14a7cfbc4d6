"""Markers for tests that need a real peer program; each names what is missing and who installs it."""

from __future__ import annotations

import shutil

import pytest


def needs(program: str) -> pytest.MarkDecorator:
    """Skip when ``program`` is not on PATH (.ci/run installs every one of them with apt-get)."""
    return pytest.mark.skipif(
        shutil.which(program) is None, reason=f"{program} is not installed (.ci/run installs it with apt-get)"
    )
