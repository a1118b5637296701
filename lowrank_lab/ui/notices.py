"""A message shown once: what happened to the last action (a preset, an upload, a run).

Pages keep a Notice in session state and pop it when they draw it, so it shows on the run
right after the action and is gone on the next one: a message never outlives the edit after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import streamlit as st


@dataclass(frozen=True)
class Notice:
    """A message to show once, and (for an uploaded file) which file it is about."""

    level: Literal["success", "info", "warning", "error"]
    text: str
    file_id: str | None = None

    def show(self) -> None:
        {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}[self.level](self.text)
