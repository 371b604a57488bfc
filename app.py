"""Separation lab: DPRNN vs Open-Unmix side by side, metrics, karaoke, and blind listening tests.

    python app.py                     # http://127.0.0.1:7860 (also what a Hugging Face Space runs)

Works offline with no configuration: the shipped DPRNN checkpoint, demo clips generated on
first start, ratings in a local SQLite file. Settings come from the environment (see
`webapp/config.py`). The page is built in `webapp/ui.py`, its logic is `webapp/lab.py`.
The separation is also an API:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    files, info = client.predict(handle_file("song.mp3"), "all", api_name="/separate")
"""

from webapp.ui import main

if __name__ == "__main__":
    main()
