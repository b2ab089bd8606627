"""Fail fast, with a clear message, when something must come from the Hugging Face Hub.

On a machine without internet, transformers and datasets may retry for a long
time; we check reachability first (a few seconds at most) and say what to do.
"""
from __future__ import annotations

import functools
import os
import socket

from xl.core.errors import XLError

HUB_HOST = "huggingface.co"


@functools.cache
def reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((os.environ.get("XL_HUB_HOST", HUB_HOST), 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def require(what: str, how: str) -> None:
    """Raise XLError unless the hub answers; `how` says how to get `what` onto this machine."""
    if not reachable():
        raise XLError(f"{what} must be downloaded from the Hugging Face Hub, which is not reachable "
                      f"from this machine (or HF_HUB_OFFLINE is set). {how}")
