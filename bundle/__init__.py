"""The bundle format: layout, manifest schema, the reader and the one writer.

Every other package reads bundles through here, and nothing here imports anything above
``bert_export.models`` (docs/architecture.md). ``reader.py`` opens only listed, hashed files;
``publish.py`` is the one atomic writer and output-path rule; ``manifest.py`` the schema.
"""
