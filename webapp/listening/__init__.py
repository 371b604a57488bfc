"""The blind listening study, one room per concern, the Gradio page on top:

- `listeners`: listener ids the server signs, clients told apart by a keyed hash, limits per client;
- `stimuli`: excerpts, their conditions (loudness-matched), the files a browser gets, the headphone check;
- `store`: listeners, trials and ratings in SQLite;
- `campaign`: what counts, what a session plays, the one screening, completion codes, the export;
- `results`: the statistics, computed once per change of the ratings and shared by every page;
- `study`: the study as the app runs it (`Study`: the rooms together, on the app's clips and models);
- `player`, `page`: the trial player (Web Audio, `static/`) and the tabs of the Gradio page.

Statistics and screening rules are `eval.ratings` (pure functions over rating rows).
"""
