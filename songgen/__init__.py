"""MUSDB-shaped data made here: songs whose true stems are known, for training, tests, benchmarks
and the app's demo clips when MUSDB18-HQ is not at hand.

- `songgen.synthetic`: numpy-only songs (a formant voice over a band) with real stems' traits;
  `python -m songgen.synthetic FOLDER`.
- `songgen.world`: songs rendered from sampled instruments, recorded drum kits and sung words;
  `python -m songgen.world FOLDER`. Needs the `world` extra (`pip install .[world]`: pyworld,
  pedalboard) and the Debian packages in `packages-world.txt`.
- `songgen.describe`: what a generated folder holds, read from the record its generator wrote
  (`synthetic.json`, `world.json`), for model cards and evaluation records alike.

Below `training`, `eval` and `webapp`, above `separation`: it imports only `separation`.
"""
