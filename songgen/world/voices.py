"""Sung lines from speech: a text-to-speech voice says the words, the WORLD vocoder (pyworld)
re-pitches them to the melody.

For each phrase: Festival, Flite or espeak-ng speaks its words; WORLD analyses the speech (F0,
spectral envelope, aperiodicity); the speech is re-timed onto the melody as a singer does it
(each syllable's vowel starts on a note and is held to the next syllable, consonants keep
about their spoken length just before the beat; more notes than syllables make melismas,
more syllables than notes share a note), the envelope optionally warped in frequency
(another singer's vocal tract), and the speech's F0 is
replaced by the melody's (slides between notes, vibrato that sets in after a note's onset,
slow drift) wherever the speech was voiced; consonants stay noise. The envelope is extended
above the voice's own band (diphone voices stop at 8 kHz) with a falling, mostly aperiodic
"air", and synthesised directly at 44.1 kHz, so that a vocals stem is never recognisable by
its bandwidth alone. Doubles (a second take, a few cents and ms off) and harmonies are more
syntheses of the same analysis. A `Singer` (`--singer-share`) varies a voice into another singer:
vocal tract length, breathiness, brightness and a singer's formant.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from separation.audio import SAMPLE_RATE
from separation.errors import SeparationError

from .score import Phrase
from .sounds import Voice
from .synth import Note

FRAME_MS = 5.0


@dataclasses.dataclass(frozen=True)
class Singer:
    """A singer made from a voice (`--singer-share`): nine training voices are few singers, so
    a song may sing through a varied copy of its voice. WORLD's envelope and aperiodicity are
    reshaped along the axes that tell singers apart: vocal tract length (formants scaled by
    `warp`, on top of each song's own 0.92-1.1), breathiness (aperiodicity raised to `breath`:
    < 1 breathier, > 1 more pressed), brightness (`tilt_db` per octave about 1 kHz, as a
    source spectrum's slope) and a singer's formant (a peak of `ring_db` at `ring_hz`, the
    2.4-3.6 kHz cluster trained singers project with). The default is the voice unchanged."""

    warp: float = 1.0
    breath: float = 1.0
    tilt_db: float = 0.0
    ring_db: float = 0.0
    ring_hz: float = 3000.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Singer:
        return cls(
            warp=float(rng.uniform(0.88, 1.14)),
            breath=float(np.exp(rng.uniform(np.log(0.35), np.log(1.6)))),
            tilt_db=float(rng.uniform(-3.0, 2.5)),
            ring_db=float(rng.uniform(0.0, 9.0)),
            ring_hz=float(rng.uniform(2400.0, 3600.0)),
        )

    @property
    def id(self) -> str:
        """e.g. `singer:w1.07:b0.62:t-1.3:r5.1@2870` (what world.json records)."""
        return f"singer:w{self.warp:.2f}:b{self.breath:.2f}:t{self.tilt_db:+.1f}:r{self.ring_db:.1f}@{self.ring_hz:.0f}"

    def color(self, sp: np.ndarray, ap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-band power envelope and aperiodicity `(frames, bins)` (from `_to_full_band`)
        reshaped by this singer's brightness, singer's formant and breathiness."""
        freqs = np.linspace(0, SAMPLE_RATE / 2, sp.shape[1])
        tilt = np.clip(self.tilt_db * np.log2(np.maximum(freqs, 50.0) / 1000.0), -18.0, 18.0)
        ring = self.ring_db * np.exp(-0.5 * ((freqs - self.ring_hz) / (0.15 * self.ring_hz)) ** 2)
        gain = 10 ** ((tilt + ring) / 10)  # the envelope is a power spectrum
        return np.ascontiguousarray(sp * gain), np.clip(ap, 0.0, 1.0) ** self.breath


_SPOKEN: dict[tuple[Voice, str], tuple[np.ndarray, int]] = {}


def _trim(audio: np.ndarray) -> np.ndarray:
    active = np.flatnonzero(np.abs(audio) > 0.02 * (np.abs(audio).max() + 1e-12))
    return audio[active[0] : active[-1] + 1] if active.size else audio[:0]


def speak_all(voice: Voice, texts: list[str]) -> None:
    """Speak every text not spoken yet with `voice`, in one process (Festival takes ~0.25 s to
    start, more than it takes to say a line), into the cache `speak` reads."""
    todo = sorted({t for t in texts if (voice, t) not in _SPOKEN})
    if not todo:
        return
    if len(_SPOKEN) > 512:
        _SPOKEN.clear()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"{i}.wav" for i in range(len(todo))]
        if voice.engine == "festival":
            script = [f"(voice_{voice.name})"] + [
                f'(utt.save.wave (utt.synth (Utterance Text "{t}")) "{f}" \'riff)'
                for t, f in zip(todo, files, strict=True)
            ]
            run = subprocess.run(
                [voice.program, "--pipe"], input="\n".join(script) + "\n", text=True, capture_output=True, timeout=300
            )
            # Festival reports an error in its Scheme (an unknown voice above all) on stderr, exits 0
            # and goes on in its default voice: the song would be sung by another singer than
            # world.json records, and differ between machines with and without the voice.
            if "SIOD ERROR" in run.stderr:
                raise SeparationError(
                    f"{voice.id} failed in Festival ({run.stderr.strip()[-300:]!r})"
                    + (f": is `{voice.package}` installed? (scripts/setup.sh --dev)" if voice.package else "")
                )
        elif voice.engine in ("espeak", "flite"):
            # flite, like Festival, speaks an unknown -voice in its default (kal) without a word
            # (exit status 0); espeak-ng refuses one itself
            if voice.engine == "flite" and voice.name not in flite_voices(voice.program):
                have = ", ".join(flite_voices(voice.program))
                raise SeparationError(f"{voice.id}: flite has no voice {voice.name!r} (its voices: {have})")
            for t, f in zip(todo, files, strict=True):
                arguments = (
                    ["-v", voice.name, "-w", str(f), t]
                    if voice.engine == "espeak"
                    else ["-voice", voice.name, "-t", t, "-o", str(f)]
                )
                run = subprocess.run([voice.program, *arguments], capture_output=True, text=True, timeout=60)
        else:
            raise ValueError(f"{voice.id} does not speak")
        for t, f in zip(todo, files, strict=True):
            if not f.exists():
                raise SeparationError(f"{voice.id} could not speak {t!r}: {run.stderr[-300:]!r}")
            audio, rate = sf.read(f, dtype="float64", always_2d=True)
            audio = _trim(audio.mean(axis=1))
            if audio.size == 0:
                raise SeparationError(f"{voice.id} said nothing for {t!r}")
            _SPOKEN[(voice, t)] = (audio, int(rate))


@functools.cache
def flite_voices(program: str = "flite") -> tuple[str, ...]:
    """The voices built into flite (`flite -lv`: "Voices available: kal awb ...")."""
    listed = subprocess.run([program, "-lv"], capture_output=True, text=True, timeout=60).stdout
    return tuple(listed.partition(":")[2].split())


def speak(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    """Speech of `text` (words of `score.WORDS`: letters and spaces only) as mono float64 and its rate."""
    speak_all(voice, [text])
    return _SPOKEN[(voice, text)]


@functools.lru_cache(maxsize=64)
def _analysis(voice: Voice, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """WORLD analysis of the spoken words: (voiced (F,), envelope (F, bins), aperiodicity, rate)."""
    import pyworld

    audio, rate = speak(voice, text)
    f0, times = pyworld.dio(audio, rate, frame_period=FRAME_MS)
    f0 = pyworld.stonemask(audio, f0, times, rate)
    sp = pyworld.cheaptrick(audio, f0, times, rate)
    ap = pyworld.d4c(audio, f0, times, rate)
    return f0 > 0, sp, ap, rate


def _to_full_band(sp: np.ndarray, ap: np.ndarray, rate: int, warp: float) -> tuple[np.ndarray, np.ndarray]:
    """Envelope and aperiodicity on the 44.1-kHz grid: frequency-warped by `warp` (> 1: a
    smaller vocal tract), and above the voice's band a -12 dB/octave, mostly aperiodic air."""
    import pyworld

    bins = pyworld.get_cheaptrick_fft_size(SAMPLE_RATE) // 2 + 1
    freqs = np.linspace(0, SAMPLE_RATE / 2, bins)
    src = np.linspace(0, rate / 2, sp.shape[1])
    edge = 0.95 * rate / 2
    look = np.minimum(freqs / warp, edge)
    new_sp = np.stack([np.interp(look, src, frame) for frame in sp])
    new_ap = np.stack([np.interp(look, src, frame) for frame in ap])
    above = freqs / warp > edge
    octaves = np.log2(np.maximum(freqs[above] / warp, edge) / edge)
    new_sp[:, above] *= 10 ** (-12 * octaves / 10)
    new_ap[:, above] = np.maximum(new_ap[:, above], 0.85)
    return np.ascontiguousarray(new_sp), np.clip(np.ascontiguousarray(new_ap), 0.0, 1.0)


def _nuclei(voiced: np.ndarray, sp: np.ndarray) -> list[tuple[int, int]]:
    """Syllable nuclei of speech, as (first, last) frames: voiced runs (gaps under 30 ms
    bridged, runs under 30 ms dropped), each split where its energy dips 6 dB below the peaks on
    both sides (connected speech often stays voiced across a syllable boundary: "ever-y")."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    runs = [[int(a), int(b) - 1] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    short = int(30 / FRAME_MS)
    merged: list[list[int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] <= short:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    energy = 10 * np.log10(sp.sum(axis=1) + 1e-30)
    energy = np.convolve(np.pad(energy, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    margin = int(40 / FRAME_MS)

    def split(a: int, b: int) -> list[tuple[int, int]]:
        e = energy[a : b + 1]
        depth = np.minimum(np.maximum.accumulate(e), np.maximum.accumulate(e[::-1])[::-1]) - e
        depth[:margin], depth[len(e) - margin :] = 0.0, 0.0
        m = int(np.argmax(depth)) if len(e) > 2 * margin else 0
        if depth[m] < 6.0:
            return [(a, b)]
        return split(a, a + m - 1) + split(a + m, b)

    return [piece for a, b in merged if b - a + 1 >= short for piece in split(a, b)]


def _timing(voiced: np.ndarray, sp: np.ndarray, notes: list[Note], *, align: bool = True) -> tuple[float, np.ndarray]:
    """Where the sung phrase reads the speech: (start s, speech frame (float) per 5-ms output frame).

    Nucleus i goes to note i * notes / nuclei (an even spread: left-over notes extend the vowel
    before them, extra nuclei share a note). Anchors: each group of nuclei starts on its note's
    onset and its vowel is held until the consonants before the next group, which keep their
    spoken length (at most 40 % of the gap between the notes); the first consonants come just
    before the first note (at most 150 ms), the last ones after the phrase's last note (200 ms).
    Between anchors the mapping is linear. Without `align` (the comparison the tests draw),
    or for speech with no voiced frame, the speech is stretched evenly over the phrase."""
    step = FRAME_MS / 1000
    onsets = [n.start for n in notes]
    end = max(n.start + n.length for n in notes)
    last = len(voiced) - 1
    nuclei = _nuclei(voiced, sp) if align else []
    if not nuclei:
        return onsets[0], np.linspace(0, last, max(2, int((end - onsets[0]) * 1000 / FRAME_MS)))
    groups: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(nuclei):
        groups.setdefault(i * len(notes) // len(nuclei), [a, b])[1] = b
    keys = sorted(groups)
    first = groups[keys[0]][0]
    src, dst = [0.0, first], [onsets[0] - min(first * step, 0.15), onsets[0]]
    for k, nxt in zip(keys, keys[1:], strict=False):
        b, a_next = groups[k][1], groups[nxt][0]
        gap = min((a_next - b) * step, 0.4 * (onsets[nxt] - onsets[k]))
        src += [b, a_next]
        dst += [onsets[nxt] - gap, onsets[nxt]]
    b = groups[keys[-1]][1]
    src += [b, last]
    dst += [end, end + min((last - b) * step, 0.2)]
    src_a, dst_a = np.asarray(src, float), np.asarray(dst, float)
    keep = np.concatenate([[True], np.diff(dst_a) > 1e-9])  # a consonant of no length: one anchor
    src_a, dst_a = src_a[keep], dst_a[keep]
    frames = max(2, int((dst_a[-1] - dst_a[0]) / step) + 1)
    return float(dst_a[0]), np.interp(dst_a[0] + np.arange(frames) * step, dst_a, src_a)


def _contour(notes: list[Note], frames: int, start: float, rng: np.random.Generator, detune_cents: float) -> np.ndarray:
    """The melody's F0 per 5-ms frame from `start`: slides (~50 ms), delayed vibrato, drift."""
    t = start + np.arange(frames) * FRAME_MS / 1000
    midi = np.full(frames, float(notes[0].pitch))
    onset = np.full(frames, notes[0].start)
    for n in notes:
        sel = t >= n.start
        midi[sel], onset[sel] = n.pitch, n.start
    slide = max(1, int(rng.uniform(30, 70) / FRAME_MS))
    kernel = np.hanning(2 * slide + 1)
    midi = np.convolve(np.pad(midi, slide, mode="edge"), kernel / kernel.sum(), mode="valid")
    rate, depth = rng.uniform(4.8, 6.5), rng.uniform(0.15, 0.5)  # Hz, semitones
    ramp = np.clip((t - onset - 0.15) / 0.3, 0.0, 1.0)
    drift = np.cumsum(rng.normal(0, 0.004, frames))
    midi = midi + depth * ramp * np.sin(2 * np.pi * rate * t) + np.clip(drift, -0.2, 0.2) + detune_cents / 100
    return 440.0 * 2 ** ((midi - 69) / 12)


def sing(
    voice: Voice,
    words: str,
    notes: list[Note],
    rng: np.random.Generator,
    *,
    warp: float = 1.0,
    detune_cents: float = 0.0,
    align: bool = True,
    singer: Singer | None = None,
) -> tuple[float, np.ndarray]:
    """`words` sung to `notes`: (start time s, mono float32 at 44.1 kHz); `align`: syllables on
    the notes (else the speech is stretched evenly over the phrase); `singer`: the voice varied
    (None: as it is)."""
    import pyworld

    voiced, sp, ap, rate = _analysis(voice, words)
    start, idx = _timing(voiced, sp, notes, align=align)
    frames = len(idx)
    near = np.round(idx).astype(int)
    lo, frac = np.floor(idx).astype(int), (idx - np.floor(idx))[:, None]
    hi = np.minimum(lo + 1, len(voiced) - 1)
    sp_t = sp[lo] * (1 - frac) + sp[hi] * frac
    ap_t = ap[lo] * (1 - frac) + ap[hi] * frac
    if singer is None:
        sp_f, ap_f = _to_full_band(sp_t, ap_t, rate, warp)
    else:
        sp_f, ap_f = singer.color(*_to_full_band(sp_t, ap_t, rate, warp * singer.warp))
    f0 = _contour(notes, frames, start, rng, detune_cents) * voiced[near]
    audio = pyworld.synthesize(np.ascontiguousarray(f0), sp_f, ap_f, SAMPLE_RATE, FRAME_MS)
    audio = audio / (np.sqrt(np.mean(audio**2)) + 1e-9) * 0.1
    return start, audio.astype(np.float32)


def breath(rng: np.random.Generator, seconds: float = 0.25) -> np.ndarray:
    """An in-breath: band-passed noise with a soft swell, quiet."""
    from scipy.signal import butter, sosfilt

    n = int(seconds * SAMPLE_RATE)
    sos = butter(2, [800, 6000], btype="band", fs=SAMPLE_RATE, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n)) * np.hanning(n)
    return (noise / (np.abs(noise).max() + 1e-9) * 0.02).astype(np.float32)


def place(track: np.ndarray, start: float, audio: np.ndarray, gain: float = 1.0) -> None:
    """Add mono `audio` into `track` (T,) from `start` s, cut at the track's end."""
    at = int(round(start * SAMPLE_RATE))
    if at >= len(track) or at + len(audio) <= 0:
        return
    if at < 0:
        audio, at = audio[-at:], 0
    n = min(len(audio), len(track) - at)
    track[at : at + n] += gain * audio[:n]


def lead_vocal(
    voice: Voice,
    phrases: list[Phrase],
    seconds: float,
    rng: np.random.Generator,
    *,
    singer: Singer | None = None,
) -> dict[str, np.ndarray]:
    """The sung lines of a song: {"lead", "double", "harmony"} mono tracks (T,) float32; the
    double and the harmony are silent where the song has none. `singer`: see `sing`
    (one singer sings every take)."""
    n = int(seconds * SAMPLE_RATE)
    out = {k: np.zeros(n, np.float32) for k in ("lead", "double", "harmony")}
    speak_all(voice, [p.words for p in phrases])
    warp = float(rng.uniform(0.92, 1.1))
    doubled = rng.random() < 0.35
    for phrase in phrases:
        start, audio = sing(voice, phrase.words, phrase.notes, rng, warp=warp, singer=singer)
        place(out["lead"], start, audio)
        if rng.random() < 0.5:
            place(out["lead"], start - 0.3, breath(rng))
        if doubled:
            detune = rng.uniform(-8, 8)
            s2, take = sing(voice, phrase.words, phrase.notes, rng, warp=warp, detune_cents=detune, singer=singer)
            place(out["double"], s2 + rng.uniform(0.01, 0.03), take, 0.5)
        if phrase.harmony:
            s3, harm = sing(voice, phrase.words, phrase.harmony, rng, warp=warp * 1.02, singer=singer)
            place(out["harmony"], s3, harm, 0.6)
    return out
