"""semhash's web server: a JSON API and a search page over one stored collection.

:func:`~semhash.server.app.create_app` builds the ASGI app; :func:`~semhash.server.app.serve`
runs it under uvicorn (what ``semhash serve`` does).
"""
