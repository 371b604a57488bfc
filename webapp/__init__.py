"""The web app's parts that are not UI: configuration, clips, the separation pipeline,
figures and the ratings store. `app.py` (the Gradio UI) puts them together."""
