"""Optional copy of the ratings to a private Hugging Face dataset repo.

A SQLite file that is being written cannot be uploaded safely, so each committed submission
is also appended as JSON lines to a file in a folder that `huggingface_hub.CommitScheduler`
uploads every few minutes (the pattern of the huggingface_hub docs: append under the
scheduler's lock). Off unless both `RATINGS_REPO` and `HF_TOKEN` are set.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

log = logging.getLogger("webapp")


class JsonlSync:
    def __init__(self, folder: Path, scheduler=None):
        """scheduler: a `CommitScheduler` (or anything with a `.lock`) uploading `folder`."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"ratings-{uuid.uuid4().hex[:8]}.jsonl"  # one file per app process
        self.scheduler = scheduler

    def __call__(self, rows: list[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        if self.scheduler is not None:
            with self.scheduler.lock:
                self._append(text)
        else:
            self._append(text)

    def _append(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text)


def start_sync(folder: Path, repo_id: str, token: str, every_minutes: float = 5.0) -> JsonlSync | None:
    try:
        from huggingface_hub import CommitScheduler

        scheduler = CommitScheduler(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            path_in_repo="ratings",
            every=every_minutes,
            private=True,
            token=token,
        )
    except Exception as exc:  # no network, bad token: the local database still has everything
        log.warning(
            "ratings sync to %s is off: %s", repo_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )
        return None
    return JsonlSync(folder, scheduler)
