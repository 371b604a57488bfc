"""Gradio's per-session state without a copy of every component's config made up front.

Gradio makes a `SessionState` for every new page session (and for every session id an API caller
sends), and its constructor builds the config of every component of the page (`config_for_block`:
127 here, with their API schemas): ~9 ms of the one interpreter and ~200 kB that stays until
10,000 sessions later. Only the deep-link route (`/gradio_api/deep_link`) ever lists them; events
read and update the configs of their own inputs and outputs. So a 60-person class opening the page
costs half a second of the app before anyone listens, and any client inventing session ids holds
up to 2 GB of configs. `LazyConfigs` makes each component's config when it is first asked for:
the same configs (made from the same blocks as Gradio's constructor takes), in the same order when
listed whole, so a deep link is the same.

`lean_sessions` installs it on the Gradio version it was written against: the constructor's source
is checked first (`GRADIO_INIT`), and anything else is left as it is.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os

from gradio import state_holder

# sha256 of `SessionState.__init__`'s source in gradio 6.31.0, the constructor `lean_init` stands for
GRADIO_INIT = "1b2ea21dc42c45da"
GRADIO_SESSION_INIT = state_holder.SessionState.__init__  # Gradio's own, as imported (before `lean_sessions`)


class LazyConfigs(dict):
    """{component id: its config}, each made on first use from the block the session started with
    (`config_for_block(id, [], block)`, as Gradio's constructor makes them all); set or updated as
    a dict. Listed whole (`items`, `values`, `keys`, iteration, `len`), every config is made and
    the order is the blocks' order, as Gradio's own dict has it."""

    def __init__(self, blocks_config, blocks: dict):
        super().__init__()
        self._blocks_config = blocks_config
        self._blocks = blocks  # {id: block} as the session started

    def __missing__(self, key):
        if key not in self._blocks:
            raise KeyError(key)
        config = self._blocks_config.config_for_block(key, [], self._blocks[key])
        self[key] = config
        return config

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in self._blocks

    def get(self, key, default=None):
        return self[key] if key in self else default

    def _whole(self) -> dict:
        made = {key: self[key] for key in self._blocks}  # every one made, in the blocks' order
        return {**made, **{key: value for key, value in dict.items(self) if key not in made}}

    def items(self):
        return self._whole().items()

    def values(self):
        return self._whole().values()

    def keys(self):
        return self._whole().keys()

    def __iter__(self):
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def made(self) -> int:
        """How many configs have been made so far."""
        return dict.__len__(self)


def lean_init(self, blocks) -> None:
    """`SessionState.__init__` of gradio 6.31.0 with `config_values` made lazily (`LazyConfigs`)."""
    self.blocks_config = copy.copy(blocks.default_config)
    started = {k: v for k, v in self.blocks_config.blocks.items() if k in blocks.blocks}
    self.config_values = LazyConfigs(self.blocks_config, started)
    self.state_data = {}
    self._state_ttl = {}
    self.is_closed = False
    self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


def init_digest(init) -> str:
    return hashlib.sha256(inspect.getsource(init).encode()).hexdigest()[:16]


def lean_sessions(session_class=state_holder.SessionState) -> bool:
    """`lean_init` in place of Gradio's session constructor, if that is the one it was written
    against (True: installed now or before)."""
    if session_class.__init__ is lean_init:
        return True
    if init_digest(session_class.__init__) != GRADIO_INIT:
        return False
    session_class.__init__ = lean_init
    return True
