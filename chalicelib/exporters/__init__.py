"""The catalogue of export kinds. ``register`` adds an application's own."""

from __future__ import annotations

from chalicelib.exporters.base import BuildContext, Exporter, RowExporter
from chalicelib.exporters.demo import DemoExporter
from chalicelib.exporters.dynamodb_table import DynamoDBTableExporter
from chalicelib.exporters.log_archive import LogArchiveExporter
from chalicelib.exporters.s3_bundle import S3BundleExporter

REGISTRY: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    REGISTRY[exporter.kind] = exporter
    return exporter


def get_exporter(kind: str) -> Exporter | None:
    return REGISTRY.get(kind)


register(DemoExporter())
register(DynamoDBTableExporter())
register(S3BundleExporter())
register(LogArchiveExporter())

__all__ = ["REGISTRY", "BuildContext", "Exporter", "RowExporter", "get_exporter", "register"]
