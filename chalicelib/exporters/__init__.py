"""The catalogue of export kinds. ``register`` adds an application's own."""

from __future__ import annotations

from chalicelib.exporters.base import BuildContext, Exporter, RowExporter
from chalicelib.exporters.demo import DemoExporter
from chalicelib.exporters.dynamodb_table import DynamoDBTableExporter
from chalicelib.exporters.log_archive import LogArchiveExporter
from chalicelib.exporters.s3_bundle import S3BundleExporter
from chalicelib.formats.compression import GZIP_EXTENSION

REGISTRY: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    REGISTRY[exporter.kind] = exporter
    return exporter


def get_exporter(kind: str) -> Exporter | None:
    return REGISTRY.get(kind)


def known_extensions() -> tuple[str, ...]:
    """Every extension a registered kind's file may end with (lower case), longest first.

    A format's own and its gzip variant (``.csv``, ``.csv.gz``, ``.zip``,
    ``.log.gz``...): what a name's extension can be, so that ``part_name``
    cuts that and never at a dot of the name itself (``Users v2.1 final.csv``).
    A variant no kind writes (``.zip.gz``) only ever matches a name that ends so.
    """
    found: set[str] = set()
    for exporter in REGISTRY.values():
        for fmt in exporter.formats:
            extension = exporter.format_for(fmt).extension.lower()
            found.update((extension, extension + GZIP_EXTENSION))
    return tuple(sorted(found, key=lambda e: (-len(e), e)))


register(DemoExporter())
register(DynamoDBTableExporter())
register(S3BundleExporter())
register(LogArchiveExporter())

__all__ = ["REGISTRY", "BuildContext", "Exporter", "RowExporter", "get_exporter", "known_extensions",
           "register"]
