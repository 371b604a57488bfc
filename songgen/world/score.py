"""Generated arrangements: what each instrument and the singer play, before any sound.

A song has a genre (tempo range, groove, bass and comping styles, instruments), a key (any of
the twelve, major or minor), sections (intro, verses, choruses, a break, an outro; no vocals
in intro, break and outro, so every song has long vocal-free stretches as real ones do), a
chord progression per section, and parts: drums (hits on a kit), bass, comping, a pad, an
instrumental lead in the vocal-free sections, the sung melody with its words, and sometimes
backing vocals (a choir patch on the chords, a harmony a third above in choruses). Timing and
velocity are humanised. Everything is drawn from one `numpy` generator: a seed gives a song.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .synth import Note

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 4), (0, 3, 0, 4), (1, 4, 0, 0), (3, 4, 2, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 3, 6, 2), (5, 6, 0, 0)),
}


@dataclass(frozen=True)
class Genre:
    tempo: tuple[int, int]
    swing: float  # delay of the off-beat 16ths, as a share of a 16th
    grooves: tuple[dict[str, str], ...]  # piece -> 16 steps per bar ("x" loud, "o" soft)
    bass: tuple[str, ...]  # styles: roots, root_fifth, eighths, funk, walking, long
    comp: tuple[str, ...]  # styles: block, arpeggio, strum, offbeat, sustain
    comp_programs: tuple[int, ...]
    pad_programs: tuple[int, ...]
    lead_programs: tuple[int, ...]
    bass_programs: tuple[int, ...]
    sevenths: float = 0.2


GENRES = {
    "pop": Genre(
        (90, 128),
        0.0,
        (
            {"kick": "x.....x...x.....", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
            {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "xoxoxoxoxoxoxoxo"},
        ),
        ("eighths", "roots", "root_fifth"),
        ("block", "arpeggio", "offbeat"),
        (0, 1, 4, 5, 24, 25, 26),
        (48, 49, 88, 89, 91),
        (80, 81, 65, 73, 56),
        (33, 34, 38, 36),
    ),
    "rock": Genre(
        (100, 160),
        0.0,
        (
            {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
            {"kick": "x.x.....x.x..x..", "snare": "....x.......x...", "ride": "x.x.x.x.x.x.x.x."},
        ),
        ("eighths", "root_fifth"),
        ("strum", "block"),
        (29, 30, 27, 25, 18),
        (48, 50, 89),
        (29, 30, 81),
        (34, 33, 35),
    ),
    "funk": Genre(
        (92, 118),
        0.15,
        ({"kick": "x..x..x...x..x..", "snare": "....x..o.o..x..o", "hat": "xxxxxxxxxxxxxxxx"},),
        ("funk",),
        ("offbeat", "strum"),
        (28, 4, 16, 27, 7),
        (61, 89, 48),
        (65, 66, 61, 80),
        (36, 37, 33, 38),
        sevenths=0.7,
    ),
    "ballad": Genre(
        (60, 84),
        0.0,
        ({"kick": "x.......x.......", "snare": "........x.......", "hat": "x...x...x...x..."},),
        ("long", "roots"),
        ("arpeggio", "sustain"),
        (0, 1, 2, 24, 46),
        (48, 49, 52, 88, 89, 94),
        (73, 71, 40, 68),
        (32, 33, 35),
        sevenths=0.4,
    ),
    "bossa": Genre(
        (110, 150),
        0.0,
        ({"kick": "x..xx..xx..xx..x", "snare": "x..x..x...x..x..", "hat": "xoxoxoxoxoxoxoxo"},),
        ("root_fifth", "walking"),
        ("offbeat", "arpeggio"),
        (24, 0, 4, 11),
        (48, 49, 89),
        (73, 65, 56, 11),
        (32, 33),
        sevenths=0.9,
    ),
    "electronic": Genre(
        (118, 180),
        0.0,
        (
            {
                "kick": "x...x...x...x...",
                "clap": "....x.......x...",
                "hat": "..x...x...x...x.",
                "open_hat": "..o...o...o...o.",
            },
            {"kick": "x..x..x.x..x..x.", "snare": "....x.......x...", "hat": "xoxoxoxoxoxoxoxo"},
        ),
        ("eighths", "funk", "long"),
        ("offbeat", "sustain", "arpeggio"),
        (81, 80, 87, 90, 5, 18),
        (88, 89, 90, 91, 94, 95),
        (80, 81, 84, 87),
        (38, 39, 33),
        sevenths=0.3,
    ),
}

WORDS = (
    "love night light heart road home fire rain sky dream time away alone tonight forever "
    "we you I hold run fall call stay know feel see find lose burn shine cold gold river "
    "city morning ocean shadow summer winter golden broken yellow silver window highway "
    "never always tomorrow only nothing everything somebody maybe baby darling oh yeah"
).split()


@dataclass
class Part:
    """A pitched part: which stem it belongs to, its GM program, its notes."""

    stem: str  # bass, other or vocals (a choir patch)
    role: str
    program: int
    notes: list[Note] = field(default_factory=list)


@dataclass
class Phrase:
    """A sung line: its words and notes (the singer's melody)."""

    words: str
    notes: list[Note]
    harmony: list[Note] | None = None  # a third above, sung by a second voice


@dataclass
class Song:
    genre: str
    tempo: float
    key: int  # tonic, 0 = C
    mode: str
    seconds: float
    sections: list[tuple[str, float, float]]  # name, start s, end s
    drums: list[tuple[str, float, float]]  # piece, time s, velocity 0-1
    parts: list[Part]
    phrases: list[Phrase]
    register: int  # the singer's lowest comfortable MIDI note


def _sections(rng: np.random.Generator, bars: int) -> list[tuple[str, int]]:
    """Section names and lengths in bars, filling `bars`: intro, verse, chorus, (break), ... outro."""
    # Intro and outro take at most a fifth of the song each: every song has someone singing.
    edge = max(1, bars // 5)
    if bars < 3:
        return [("verse", bars)]
    plan = [("intro", min(edge, int(rng.choice([1, 2, 2, 4]))))]
    body = ["verse", "chorus", "break", "verse", "chorus", "chorus", "verse", "chorus"]
    if rng.random() < 0.4:
        body.remove("break")
    outro = min(edge, int(rng.choice([1, 2, 2, 4])))
    i = 0
    while sum(b for _, b in plan) + outro < bars:
        name = body[i % len(body)]
        size = 2 if name == "break" else int(rng.choice([4, 4, 8]))
        plan.append((name, size))
        i += 1
    plan.append(("outro", outro))
    return plan


def _chord(key: int, scale: tuple[int, ...], degree: int, seventh: bool) -> list[int]:
    steps = (0, 2, 4, 6) if seventh else (0, 2, 4)
    return [key + scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in steps]


def _human(rng: np.random.Generator, t: float, spread: float = 0.008) -> float:
    return max(0.0, t + float(rng.normal(0, spread)))


def _drum_part(rng, genre: Genre, sections, bar: float) -> list[tuple[str, float, float]]:
    groove = genre.grooves[rng.integers(len(genre.grooves))]
    step = bar / 16
    hits: list[tuple[str, float, float]] = []
    for name, start, end in sections:
        if name == "intro" and rng.random() < 0.5:
            continue  # many songs start without drums
        density = 0.6 if name == "break" else 1.0
        hits.append(("crash", _human(rng, start), 0.8))
        bars = int(round((end - start) / bar))
        for b in range(bars):
            fill = b == bars - 1 and rng.random() < 0.5
            for piece, pattern in groove.items():
                for s, c in enumerate(pattern):
                    if c == "." or (fill and s >= 12) or rng.random() > density:
                        continue
                    t = start + b * bar + s * step + (genre.swing * step if s % 2 else 0)
                    hits.append((piece, _human(rng, t, 0.006), (0.9 if c == "x" else 0.45) * rng.uniform(0.8, 1.0)))
            if fill:
                for s in range(12, 16):
                    piece = ("snare", "tom_high", "tom_high", "tom_low")[s - 12]
                    hits.append((piece, _human(rng, start + b * bar + s * step), rng.uniform(0.6, 1.0)))
    return hits


def _bass_part(rng, genre: Genre, chords, bar: float, key: int) -> list[Note]:
    style = str(rng.choice(genre.bass))
    beat = bar / 4
    notes = []
    for start, chord in chords:
        root = 36 + (chord[0] - key) % 12 + key % 12
        root = root - 12 if root > 47 else root
        fifth = root + 7
        if style == "long":
            pattern = [(0, 4, root)]
        elif style == "roots":
            pattern = [(0, 2, root), (2, 2, root)]
        elif style == "root_fifth":
            pattern = [(0, 1.5, root), (1.5, 0.5, root), (2, 2, fifth)]
        elif style == "walking":
            pattern = [(i, 1, root + (0, 4, 7, 5)[i]) for i in range(4)]
        elif style == "funk":
            pattern = [
                (0, 0.5, root),
                (0.75, 0.25, root + 12),
                (1.5, 0.5, root),
                (2.5, 0.25, fifth),
                (3, 0.5, root + 10),
            ]
        else:  # eighths
            pattern = [(i * 0.5, 0.45, root) for i in range(8)]
        for at, length, pitch in pattern:
            t = _human(rng, start + at * beat)
            notes.append(Note(t, length * beat * 0.95, int(pitch), int(rng.integers(80, 118))))
    return notes


def _comp_part(rng, style: str, chords, bar: float) -> list[Note]:
    beat = bar / 4
    notes = []
    for start, chord in chords:
        voicing = [p + 12 for p in chord] if chord[0] < 52 else list(chord)
        if style == "block":
            hits = [(0, 1.8), (2, 1.8)]
        elif style == "offbeat":
            hits = [(i + 0.5, 0.4) for i in range(4)]
        elif style == "strum":
            hits = [(0, 1.4), (1.5, 0.9), (2.5, 0.5), (3, 0.9)]
        elif style == "sustain":
            hits = [(0, 3.9)]
        else:  # arpeggio
            for i in range(8):
                p = voicing[i % len(voicing)] + (12 if i >= len(voicing) and i % 2 else 0)
                notes.append(Note(_human(rng, start + i * beat / 2), beat * 0.9, p, int(rng.integers(60, 100))))
            continue
        for at, length in hits:
            for k, p in enumerate(voicing):  # a strum: notes a few ms apart
                t = _human(rng, start + at * beat + (0.012 * k if style == "strum" else 0.0), 0.004)
                notes.append(Note(t, length * beat, p, int(rng.integers(55, 100))))
    return notes


def _melody(rng, chords, start: float, end: float, bar: float, scale_notes: list[int], low: int) -> Phrase:
    """A phrase between `start` and `end`: rhythm on an 8th grid, chord tones on strong beats,
    steps in between, within an octave and a half above `low`; one word per one to three notes."""
    eighth = bar / 8
    pool = [p for p in scale_notes if low <= p <= low + 17]
    notes: list[Note] = []
    t = start + eighth * int(rng.integers(0, 2))
    prev = pool[len(pool) // 2]
    while t < end - eighth:
        chord = next((c for s, c in reversed(chords) if s <= t + 1e-6), chords[0][1])
        length = eighth * float(rng.choice([1, 1, 2, 2, 3, 4]))
        strong = abs(((t - start) / (2 * eighth)) - round((t - start) / (2 * eighth))) < 1e-6
        tones = [p for p in pool if p % 12 in {c % 12 for c in chord}] if strong else pool
        near = sorted(tones, key=lambda p: abs(p - prev) + rng.uniform(0, 3))
        prev = near[0] if rng.random() < 0.7 else near[min(len(near) - 1, 2)]
        notes.append(Note(_human(rng, t, 0.01), min(length, end - t) * 0.92, int(prev), int(rng.integers(70, 110))))
        t += length
    syllables = max(1, len(notes) // 2 + int(rng.integers(0, max(1, len(notes) // 2))))
    words = " ".join(str(w) for w in rng.choice(WORDS, size=max(2, min(syllables, 9))))
    return Phrase(words, notes)


def _harmony(phrase: Phrase, scale_notes: list[int]) -> list[Note]:
    out = []
    for n in phrase.notes:
        above = [p for p in scale_notes if p > n.pitch]
        out.append(Note(n.start, n.length, above[1] if len(above) > 1 else n.pitch + 4, n.velocity))
    return out


def make_song(rng: np.random.Generator, seconds: float, *, female: bool) -> Song:
    """A song of `seconds` (the last section is cut at the end)."""
    name = str(rng.choice(list(GENRES)))
    genre = GENRES[name]
    tempo = float(rng.uniform(*genre.tempo))
    bar = 4 * 60.0 / tempo
    key, mode = int(rng.integers(0, 12)), str(rng.choice(["major", "major", "minor"]))
    scale = MAJOR if mode == "major" else MINOR
    scale_notes = [key + 12 * o + s for o in range(2, 8) for s in scale]
    sections, t = [], 0.0
    for sec, bars in _sections(rng, int(np.ceil(seconds / bar))):
        sections.append((sec, t, min(t + bars * bar, seconds)))
        t += bars * bar
    sections = [s for s in sections if s[1] < seconds]
    progression = {s: PROGRESSIONS[mode][rng.integers(len(PROGRESSIONS[mode]))] for s in ("verse", "chorus", "other")}
    chords = []  # (start s, MIDI notes), a chord per bar
    for sec, start, end in sections:
        prog = progression.get(sec, progression["other"])
        for b in range(int(np.ceil((end - start) / bar - 1e-6))):
            seventh = rng.random() < genre.sevenths
            chords.append((start + b * bar, _chord(48 + key, scale, prog[b % 4], seventh)))
    parts = [
        Part("bass", "bass", int(rng.choice(genre.bass_programs)), _bass_part(rng, genre, chords, bar, key)),
        Part(
            "other",
            "comp",
            int(rng.choice(genre.comp_programs)),
            _comp_part(rng, str(rng.choice(genre.comp)), chords, bar),
        ),
    ]
    if rng.random() < 0.7:
        parts.append(Part("other", "pad", int(rng.choice(genre.pad_programs)), _comp_part(rng, "sustain", chords, bar)))
    low = (55 if female else 45) + int(rng.integers(-2, 3))
    phrases, lead = [], []
    for sec, start, end in sections:
        in_sec = [c for c in chords if start - 1e-6 <= c[0] < end]
        if sec in ("verse", "chorus"):
            length = bar * float(rng.choice([1, 2, 2]))
            t = start
            while t + length <= end + 1e-6:
                phrase = _melody(rng, in_sec, t, t + length, bar, scale_notes, low + (3 if sec == "chorus" else 0))
                if sec == "chorus" and rng.random() < 0.4:
                    phrase.harmony = _harmony(phrase, scale_notes)
                phrases.append(phrase)
                t += length + bar * float(rng.choice([0.5, 1.0]))  # a breath between lines
        elif sec in ("break", "intro") and rng.random() < 0.6:
            lead += _melody(rng, in_sec, start, end, bar, scale_notes, 62).notes
    if lead:
        parts.append(Part("other", "lead", int(rng.choice(genre.lead_programs)), lead))
    if rng.random() < 0.35:  # backing vocals: a choir patch on the chorus chords (vocals in MUSDB)
        ch = [c for c in chords if any(s == "chorus" and a <= c[0] < b for s, a, b in sections)]
        parts.append(Part("vocals", "choir", int(rng.choice([52, 53, 54])), _comp_part(rng, "sustain", ch, bar)))
    drums = _drum_part(rng, genre, sections, bar)
    return Song(name, tempo, key, mode, seconds, sections, drums, parts, phrases, low)
