"""The ``demo-users`` table: something real for ``dynamodb_table`` exports to read.

About 10,000 deterministic items whose names and cities are deliberately
multilingual (Chinese, Japanese, accented Latin, Cyrillic, Greek, a few
characters outside the BMP), so encoding bugs in exporters and file names show
up locally rather than in production.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3

log = logging.getLogger("local.seed")

DEMO_TABLE = "demo-users"
DEMO_ROWS = 10_000
COUNTRY_INDEX = "country-signup-index"

GIVEN = [
    "伟",
    "芳",
    "娜",
    "秀英",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "洋",
    "艳",
    "勇",
    "军",
    "杰",
    "娟",
    "José",
    "François",
    "Zoë",
    "Søren",
    "Łukasz",
    "Ærøn",
    "Björk",
    "Chloé",
    "Dvořák",
    "Joaquín",
    "İlkay",
    "Mónica",
    "Renée",
    "Jürgen",
    "Ana-María",
    "Ólafur",
    "Saša",
    "Noémie",
    "Алексей",
    "Мария",
    "Δημήτρης",
    "Ελένη",
    "さくら",
    "ひろし",
    "太郎",
    "花子",
    "민준",
    "서연",
    "Ngọc",
    "Đức",
    "محمد",
    "فاطمة",
    "𠮷野",
    "Amélie 🌸",
]
FAMILY = [
    "王",
    "李",
    "张",
    "刘",
    "陈",
    "杨",
    "黄",
    "赵",
    "吴",
    "周",
    "徐",
    "孙",
    "欧阳",
    "司马",
    "García",
    "Müller",
    "Núñez",
    "Østergaard",
    "Wiśniewski",
    "Dubois-Lefèvre",
    "Håkansson",
    "Ğündoğdu",
    "Šimková",
    "Ó Briain",
    "Brontë",
    "Gonçalves",
    "Nguyễn",
    "Trần",
    "Иванов",
    "Смирнова",
    "Παπαδόπουλος",
    "山田",
    "佐藤",
    "鈴木",
    "김",
    "박",
    "Al-Fārābī",
]
CITIES = [
    ("北京", "CN"),
    ("上海", "CN"),
    ("深圳", "CN"),
    ("東京", "JP"),
    ("大阪", "JP"),
    ("서울", "KR"),
    ("São Paulo", "BR"),
    ("Zürich", "CH"),
    ("Kraków", "PL"),
    ("Москва", "RU"),
    ("Αθήνα", "GR"),
    ("Reykjavík", "IS"),
    ("Montréal", "CA"),
    ("Málaga", "ES"),
    ("Düsseldorf", "DE"),
    ("Hà Nội", "VN"),
    ("İstanbul", "TR"),
    ("København", "DK"),
    ("Besançon", "FR"),
    ("القاهرة", "EG"),
]
TAGS = ["vip", "beta", "newsletter", "churn-risk", "导出", "échantillon", "테스트"]


def demo_item(index: int, rng: random.Random) -> dict[str, Any]:
    """Item number ``index``; the same ``rng`` sequence always yields the same table."""
    city, country = rng.choice(CITIES)
    family, given = rng.choice(FAMILY), rng.choice(GIVEN)
    ascii_name = f"user{index:05d}"
    signup = date(2020, 1, 1) + timedelta(days=rng.randrange(0, 6 * 365))
    item: dict[str, Any] = {
        "id": f"u{index:05d}",
        "name": f"{family}{given}" if family[0] > "\u2e80" else f"{given} {family}",
        "email": f"{ascii_name}@example.com",
        "city": city,
        "country": country,
        "age": rng.randint(18, 90),
        "balance": Decimal(rng.randint(-50_000, 5_000_000)) / 100,
        "active": rng.random() < 0.8,
        "signup_date": signup.isoformat(),
        "created_at": datetime(signup.year, signup.month, signup.day, tzinfo=UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }
    tags = rng.sample(TAGS, rng.randint(0, 3))
    if tags:
        item["tags"] = tags
    if rng.random() < 0.1:
        item["note"] = rng.choice(["含,逗号", 'has "quotes"', "multi\nline", "tab\there", "=1+1"])
    return item


def _ensure_table(client: Any, name: str) -> None:
    try:
        client.describe_table(TableName=name)
        return
    except client.exceptions.ResourceNotFoundException:
        pass
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "country", "AttributeType": "S"},
            {"AttributeName": "signup_date", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": COUNTRY_INDEX,
                "KeySchema": [
                    {"AttributeName": "country", "KeyType": "HASH"},
                    {"AttributeName": "signup_date", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})


def _count(client: Any, name: str) -> int:
    total = 0
    for page in client.get_paginator("scan").paginate(TableName=name, Select="COUNT"):
        total += page["Count"]
    return total


def seed_demo_table(endpoint_url: str, region: str, name: str = DEMO_TABLE, rows: int = DEMO_ROWS) -> int:
    """Create and fill the demo table unless it already holds ``rows`` items.

    Idempotent: items are deterministic and keyed by index, so a re-run
    rewrites the same items rather than adding more.
    """
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region)
    _ensure_table(client, name)
    existing = _count(client, name)
    if existing >= rows:
        log.info("%s already holds %d items", name, existing)
        return existing
    table = boto3.resource("dynamodb", endpoint_url=endpoint_url, region_name=region).Table(name)
    rng = random.Random(20240501)
    with table.batch_writer() as batch:
        for index in range(1, rows + 1):
            batch.put_item(Item=demo_item(index, rng))
    return rows
