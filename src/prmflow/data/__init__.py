"""Problems in: sources (files, hub datasets, the bundled generator), answer parsing, the `ingest` stage."""
