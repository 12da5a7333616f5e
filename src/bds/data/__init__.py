"""Data layer: record schema, sources, the poison mixer, templates and tokenisation."""

from bds.data.schema import SOURCE_LABELS, LoadedSource, Record

__all__ = ["SOURCE_LABELS", "LoadedSource", "Record"]
