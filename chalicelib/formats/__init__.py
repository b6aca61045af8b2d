"""Format writers shared by every row exporter: rows in, encoded bytes out."""

from chalicelib.formats.base import FORMATS, Format, WriteOptions, get_format

__all__ = ["FORMATS", "Format", "WriteOptions", "get_format"]
