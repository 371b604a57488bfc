"""Model cards: the README.md of a checkpoint folder, which a Hugging Face model repo shows.

Laid out as the Hub's model-card convention has it: YAML metadata (tags and a `model-index`, so
that the Hub shows the test scores on the model's page), a summary, intended use and limits, how
to use it, training data and compute, evaluation results, the lineage (one line per step, named
by the SHA-256 of its weights, never by a folder of the machine it was trained on) and the config.
Everything is written from the checkpoint's `config.json`, so a card can always be rebuilt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from separation.models.base import count_parameters

_ORACLES = ("mixture", "irm", "ibm")


def verdict(test: dict | None, name: str | None = None) -> str:
    """One sentence on how well the model separates, from the measured test scores only."""
    if not test:
        return (
            "It has not been scored on held-out songs yet: "
            "`python -m eval --methods NAME=<this folder>,mixture,irm ...` then "
            "`python -m training export ... --scores RESULTS` puts the measured scores here."
        )
    medians = test["medians"]
    own = _own_row(test, name)
    if own is None or "vocals" not in own:
        return "Its test results hold no vocals score."
    vocals = own["vocals"]
    sentence = (
        f"On the {test.get('data', '?')}, {test.get('tracks', '?')} held-out tracks, "
        f"it scores {vocals:.2f} dB vocals SDR"
    )
    quality = None
    if "mixture" in medians and "vocals" in medians["mixture"]:
        gain = vocals - medians["mixture"]["vocals"]
        quality = (
            "a clear separation"
            if gain >= 8
            else "a partial separation"
            if gain >= 3
            else "barely better than the unprocessed mixture"
            if gain >= 0
            else "worse than the unprocessed mixture"
        )
        sentence += f", {gain:+.2f} dB over the mixture itself"
    if "irm" in medians and "vocals" in medians["irm"]:
        sentence += f" and {medians['irm']['vocals'] - vocals:.2f} dB below the ideal ratio mask"
    return sentence + (f": {quality}." if quality else ".")


def _own_row(test: dict, name: str | None = None) -> dict | None:
    """The model's medians in a test record: its method's row, else the one that is neither an
    oracle nor the mixture."""
    medians = test["medians"]
    name = name or test.get("method")
    if name in medians:
        return medians[name]
    return next((v for k, v in medians.items() if k not in _ORACLES), None)


def model_card(model, training: dict) -> str:
    """The whole card of `model` with the training record `training` (config.json's `training`)."""
    tests = [training["test"], *training.get("more_tests", [])] if training.get("test") else []
    sections = [
        _front_matter(model, training, tests),
        f"# {model.architecture}: vocals / accompaniment separation\n\n> {_summary(training, tests)}\n",
        _intended_use(training),
        _how_to_use(),
        _training_table(model, training),
        _results(training, tests),
        _lineage(training),
        f"## Config\n\n```json\n{json.dumps(model.config_dict(), indent=2)}\n```\n",
    ]
    return "\n".join(s for s in sections if s)


# ---------------------------------------------------------------------------- what it is for


def _kind_of_data(training: dict) -> str:
    data = training.get("data", "")
    if "MUSDB18" in data:
        return "musdb"
    if "songgen.world" in data:
        return "world"
    if data.startswith("synthetic"):
        return "synthetic"
    return "other"


def _summary(training: dict, tests: list[dict]) -> str:
    said = verdict(tests[0] if tests else None)
    kind = _kind_of_data(training)
    if kind == "world":
        return (
            "**Trained on songs rendered from sampled instruments, drum kits and synthetic singing** "
            f"(`python -m songgen.world`), offline, on the compute below. {said} It is a demo: "
            "real music needs a model trained on MUSDB18-HQ."
        )
    if kind == "synthetic":
        return (
            "**Trained on synthetic data** (sung-like vowels over a synthetic band), to demonstrate the pipeline "
            f"offline. {said} Real music needs a model trained on MUSDB18-HQ."
        )
    return said


def _intended_use(training: dict) -> str:
    kind = _kind_of_data(training)
    if kind in ("world", "synthetic"):
        limits = (
            "- **Not trained on real music.** It has heard only generated songs (the training data below); on "
            "commercial recordings expect a rough split with audible bleed. For real songs use Open-Unmix "
            "`umxhq` or a DPRNN trained on MUSDB18-HQ.\n"
            "- Its scores are on generated test songs: they are not comparable with MUSDB18 results.\n"
        )
        use = (
            "Trying the separation pipeline, the app and the evaluation offline; a starting point for "
            "fine-tuning; teaching and research on how separators generalise to unheard sounds."
        )
    else:
        limits = "- Trained on the data below only; other genres, languages and recording chains may fare worse.\n"
        use = "Separating songs into vocals and accompaniment (karaoke); research comparisons of separators."
        if kind == "musdb":
            limits += "- MUSDB18 is licensed for non-commercial research: so are models trained on it.\n"
    return (
        "## Intended use and limits\n\n"
        f"{use}\n\n{limits}"
        "- Two sources (vocals, accompaniment = everything else), 44.1 kHz stereo; other rates and mono are "
        "converted on the way in.\n"
    )


def _how_to_use() -> str:
    return """## How to use

```python
from separation import Separator

sep = Separator.from_pretrained("<this repo or folder>")
stems = sep.separate(waveform, sample_rate)  # {"vocals": (2, T), "accompaniment": (2, T)}
```

or `python -m separation song.mp3 --model <this repo or folder>` (code: the separation lab's
`separation` package; weights load from safetensors, no pickle).
"""


# ---------------------------------------------------------------------------- data and compute


_WORLD = re.compile(
    r"songs rendered from sampled sounds \((?:songgen|training)\.world(?:, the '(\w+)' sounds)?, "
    r"(\d+) [\w/]+ tracks? of ([\d.]+) s, seed (\d+)[^)]*\)"
)
_SYNTHETIC = re.compile(
    r"synthetic MUSDB-shaped set \((?:songgen|training)\.synthetic, \{'train': (\d+), .*'seconds': ([\d.]+), "
    r"'seed': (\d+)\b.*\)"
)


def condensed_data(data: str) -> str:
    """A training-data description in a few words: "1100 songs rendered by songgen.world
    (30 s, seeds 5, 8, 9)" for the long generated-folder descriptions; anything else as given."""
    tracks, seconds, seeds, sounds = 0, set(), [], set()
    rest = data
    for m in _WORLD.finditer(data):
        sounds.add(m.group(1) or "train")
        tracks += int(m.group(2))
        seconds.add(m.group(3))
        seeds.append(m.group(4))
        rest = rest.replace(m.group(0), "")
    if seeds and not rest.replace(" plus ", "").strip():
        length = f"{next(iter(seconds))} s, " if len(seconds) == 1 else ""
        length = "".join(f"the {s!r} sounds, " for s in sorted(sounds - {"train"})) + length
        return (
            f"{tracks} songs rendered by songgen.world ({length}seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
        )
    m = _SYNTHETIC.fullmatch(data.strip())
    if m and " plus " not in data:
        used = re.search(r"; (\d+) [\w/]+ tracks? of it\)$", data)  # the tracks a run used of the set
        return f"{used.group(1) if used else m.group(1)} songs of songgen.synthetic ({m.group(2)} s, seed {m.group(3)})"
    return data


_BUDGET = re.compile(r"([\d.]+) min of training on (\w+)(?: \(([^)]*)\))?(, (\w+) autocast)?")


def _compute(budget: str | None) -> tuple[float, str] | None:
    """(minutes, "CPU (2 CPU threads)" or the GPU's name) from a budget sentence, or None."""
    m = _BUDGET.search(budget or "")
    if not m:
        return None
    detail = m.group(3)
    if m.group(2) == "cpu":
        where = f"CPU ({detail})" if detail else "CPU"
    else:
        where = detail or m.group(2).upper()  # the GPU's name where recorded
    return float(m.group(1)), where + (f", {m.group(5)}" if m.group(5) else "")


def _minutes(m: float) -> str:
    return f"{m:.0f} min" if m >= 10 else f"{m:.1f} min"


def _runs_of(parts: list[dict]) -> list[list[dict]]:
    """The checkpoints of an average grouped by the run they came from (same data, batch, chunk
    and validation data: the epochs of one run)."""
    runs: dict[tuple, list[dict]] = {}
    for part in parts:
        key = tuple(part.get(k) for k in ("data", "batch_size", "chunk_seconds", "valid_data"))
        runs.setdefault(key, []).append(part)
    return list(runs.values())


def _longest(run: list[dict]) -> dict:
    return max(run, key=lambda p: p.get("steps") if isinstance(p.get("steps"), int) else -1)


def _step_minutes(node: dict) -> list[tuple[float, str]]:
    """The compute of one step of the lineage: a run's budget, or for an average the longest
    checkpoint of each run it averaged (epochs of one run share its minutes)."""
    if node.get("averaged_from"):
        found = [_compute(_longest(run).get("budget")) for run in _runs_of(node["averaged_from"])]
    else:
        found = [_compute(node.get("budget"))]
    return [c for c in found if c]


def _chain(training: dict) -> list[dict]:
    """This checkpoint's record, then the records of the checkpoints it was fine-tuned from."""
    chain, node = [], training
    while node:
        chain.append(node)
        node = node.get("parent")
    return chain


def _training_table(model, training: dict) -> str:
    totals: dict[str, float] = {}  # by device, whatever the precision
    chain = _chain(training)
    for node in chain:
        for minutes, where in _step_minutes(node):
            device = where.split(", ")[0]
            totals[device] = totals.get(device, 0.0) + minutes
    compute = "; ".join(f"{_minutes(m)} on {where}" for where, m in totals.items()) or "not recorded"
    this = _step_minutes(training)
    rows = [
        ("architecture", f"`{model.architecture}`, {count_parameters(model) / 1e6:.2f} M parameters"),
        ("sources", ", ".join(model.sources)),
        ("training data", condensed_data(training.get("data", "?"))),
    ]
    if training.get("valid_data"):
        chose = "validation losses" if training.get("averaged_from") else "chose the best epoch"
        rows.append((f"validation data ({chose})", condensed_data(training["valid_data"])))
    rows += [
        ("this step", _what(training)),
        ("compute, this step", "; ".join(f"{_minutes(m)} on {w}" for m, w in this) or "not recorded"),
    ]
    if len(chain) > 1:
        rows.append((f"compute, all {len(chain)} steps of the lineage", compute))
    valid = training.get("valid") or {}
    if valid:
        rows.append(
            ("validation when saved", ", ".join(f"{k.removeprefix('valid_')} {v:.3f}" for k, v in valid.items()))
        )
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Training data and compute\n\n| | |\n|---|---|\n{body}\n"


def _what(node: dict) -> str:
    """What one step of the lineage did, in a few words."""
    shape = _shape(node.get("batch_size"), node.get("chunk_seconds"))
    if node.get("greedy"):
        return (
            f"greedy soup of {len(node['averaged_from'])} of {len(node['greedy'])} checkpoints tried "
            "(`python -m training average --greedy`)"
        )
    if node.get("averaged_from"):
        runs = _runs_of(node["averaged_from"])
        longest = _longest(node["averaged_from"])
        of = "the epochs of one run" if len(runs) == 1 else f"{len(runs)} runs"
        shape = _shape(longest.get("batch_size"), longest.get("chunk_seconds"))
        steps = longest.get("steps", "?")
        weights = [p.get("weight") for p in node["averaged_from"]]
        weighted = "" if len(set(weights)) == 1 else ", weights " + ", ".join(f"{w:.3g}" for w in weights)
        return f"average of {len(node['averaged_from'])} checkpoints, {of} (up to {steps} steps{shape}){weighted}"
    start = "fine-tune" if node.get("init_from") else "trained from scratch"
    return f"{start}, {node.get('steps', '?')} steps{shape}"


def _shape(batch: int | None, chunk: float | None) -> str:
    """' of batch 8 x 3-s chunks' from what is recorded, '' when neither is."""
    if not batch and not chunk:
        return ""
    chunks = f"{chunk:g}-s chunks" if chunk else "chunks"
    return f" of batch {batch} x {chunks}" if batch else f" of {chunks}"


# ---------------------------------------------------------------------------- results


def _results(training: dict, tests: list[dict]) -> str:
    if not tests:
        return "## Evaluation results\n\nNot scored on held-out songs yet.\n"
    rows = []
    for t in tests:
        own, medians = _own_row(t) or {}, t["medians"]
        cells = [f"{t.get('data', '?')}", str(t.get("tracks", "?"))]
        for source in ("vocals", "accompaniment"):
            cells += [_db(medians.get(m, {}).get(source)) for m in ("mixture", "irm")] + [f"**{_db(own.get(source))}**"]
        rows.append("| " + " | ".join(cells) + " |")
    scored = tests[0].get("weights")
    return (
        "## Evaluation results\n\n"
        "BSSEval v4 SDR in dB (median over 1-s windows, then over tracks), with the unprocessed mixture "
        "(the floor) and the ideal ratio mask (the ceiling of masking) on the same tracks.\n\n"
        "| test data | tracks | vocals: mixture | IRM | this model | accompaniment: mixture | IRM | this model |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
        + (f"\nScored weights: sha256 `{scored[:16]}...` (float32, as evaluated).\n" if scored else "")
    )


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _front_matter(model, training: dict, tests: list[dict]) -> str:
    """The Hub's YAML metadata; `model-index` puts the test scores on the model's page. Strings are
    written as JSON strings, which YAML reads as double-quoted scalars."""
    kind = _kind_of_data(training)
    lines = [
        "---",
        "library_name: pytorch",
        "license: mit",
        f"tags: [audio, music-source-separation, vocals, karaoke, {model.architecture}]",
        "pipeline_tag: audio-to-audio",
    ]
    if kind == "musdb":  # `datasets` names Hub datasets; songs generated offline are none
        lines.append("datasets: [musdb18-hq]")
    results = []
    for t in tests:
        own = _own_row(t) or {}
        metrics = [
            f"      - {{type: sdr, name: {json.dumps(source + ' SDR (BSSEval v4, median)')}, value: {own[source]:.2f}}}"
            for source in ("vocals", "accompaniment")
            if own.get(source) is not None
        ]
        if not metrics:
            continue
        data = t.get("data", "")
        test_kind = "world" if "songgen.world" in data else "synthetic" if "songgen.synthetic" in data else kind
        dataset = {"musdb": "musdb18-hq", "world": "songgen-world", "synthetic": "songgen-synthetic"}
        results += [
            "  - task: {type: audio-to-audio, name: Music source separation (vocals / accompaniment)}",
            f"    dataset: {{type: {dataset.get(test_kind, 'custom')}, name: {json.dumps(t.get('data', '?'))}}}",
            "    metrics:",
            *metrics,
        ]
    if results:
        lines += ["model-index:", f"- name: {model.architecture}", "  results:", *results]
    return "\n".join([*lines, "---", ""])


# ---------------------------------------------------------------------------- lineage


def _lineage(training: dict) -> str:
    chain = _chain(training)
    if len(chain) == 1 and not training.get("averaged_from"):
        return ""
    rows = []
    for i, node in enumerate(chain):
        weights = (training.get("test") or {}).get("weights") if i == 0 else node.get("weights")
        name = f"`{weights[:12]}`" if weights else "this checkpoint" if i == 0 else "not recorded"
        trained_on = {condensed_data(p.get("data", "?")) for p in node.get("averaged_from", [])} or {
            condensed_data(node.get("data", "?"))
        }
        compute = "; ".join(f"{_minutes(m)} on {w}" for m, w in _step_minutes(node)) or "-"
        rows.append(f"| {i} | {name} | {_what(node)} | {' + '.join(sorted(trained_on))} | {compute} |")
    return (
        "## Lineage\n\n"
        "Each step started from the weights of the step below it (0 is this checkpoint; a step is named by the "
        "SHA-256 of its weights where recorded).\n\n"
        "| step | weights | what | trained on | compute |\n|---:|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def portable(record):
    """A training record without the folders of the machine it was made on: an absolute path
    (an `--init-from` or an averaged checkpoint's folder) becomes relative to the current folder
    when under it, else its last three parts (`run/epochs/epoch-003`). Weights are named by their
    SHA-256 beside it, which is what identifies them."""
    if isinstance(record, dict):
        return {k: portable(v) for k, v in record.items()}
    if isinstance(record, list):
        return [portable(v) for v in record]
    if isinstance(record, str) and record.startswith(("/", "~")) and "\n" not in record:
        path = Path(record).expanduser()
        try:
            return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            return Path(*path.parts[-3:]).as_posix()
    return record
