"""Evaluation of music separators: BSSEval v4 (museval-exact, fast), runs over MUSDB, reports
and listener-rating statistics.

    python -m eval --methods dprnn,umxhq --musdb-root ~/data/musdb18hq --is-wav --out results/
    python -m eval report results/
    python -m eval metrics REF_DIR EST_DIR
"""
