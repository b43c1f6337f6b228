"""The Label Studio bridge: server lifecycle, labeling config, import, sync, simulated annotator.

The pipeline talks to the server only through label-studio-sdk; the server itself runs from
its own virtual environment (.venv-ls) because its pins differ from the pipeline's.
"""
