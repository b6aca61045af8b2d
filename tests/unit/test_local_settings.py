"""Which settings a local run gets: the caller's environment over ``.chalice/config.json``."""

from __future__ import annotations

from local.stack import app_environment

CONFIG = {"EXPORTABLE_TABLES": "demo-users", "BUNDLE_BUCKETS": "", "LOG_GROUPS": "/app/orders",
          "URL_TTL_SECONDS": "900", "MAX_ACTIVE_TASKS": 20}
SAMPLES = {"EXPORTABLE_TABLES": "demo-users", "BUNDLE_BUCKETS": "demo-files", "LOG_GROUPS": "/demo/app"}


def test_the_config_file_gives_the_defaults_with_the_samples_first_on_the_allow_lists() -> None:
    assert app_environment(CONFIG, SAMPLES, {}) == {
        "EXPORTABLE_TABLES": "demo-users",  # already listed: once
        "BUNDLE_BUCKETS": "demo-files",  # an empty list gains the sample
        "LOG_GROUPS": "/demo/app,/app/orders",  # the sample first: GET /kinds offers it as the example
        "URL_TTL_SECONDS": "900",
        "MAX_ACTIVE_TASKS": "20",  # environment values are text
    }


def test_whatever_the_caller_sets_wins_as_it_is() -> None:
    """``BUNDLE_BUCKETS=my-bucket make run`` means that bucket only; an empty value means none."""
    environ = {"BUNDLE_BUCKETS": "my-bucket", "LOG_GROUPS": "", "URL_TTL_SECONDS": "60", "HOME": "/root"}
    merged = app_environment(CONFIG, SAMPLES, environ)
    assert merged["BUNDLE_BUCKETS"] == "my-bucket"
    assert merged["LOG_GROUPS"] == ""
    assert merged["URL_TTL_SECONDS"] == "60"
    assert merged["EXPORTABLE_TABLES"] == "demo-users"
    assert "HOME" not in merged  # only the app's settings are its business


def test_a_sample_without_a_config_entry_still_reaches_the_app() -> None:
    assert app_environment({}, {"LOG_GROUPS": "/demo/app"}, {}) == {"LOG_GROUPS": "/demo/app"}
