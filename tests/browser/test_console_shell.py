"""The console's frame: served by the API, signs in with Cognito, says where the API is."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import password, shot, sign_in


def test_alice_signs_in_and_out(new_page: Any, stack: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")
    assert "alice" in page.get_by_text("Signed in as").inner_text()
    stored = page.evaluate("() => Object.keys(sessionStorage)")
    assert stored, "the tokens live in sessionStorage"
    assert "Token" not in page.url and "token" not in page.url
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_a_wrong_password_is_refused_in_words(new_page: Any) -> None:
    page = new_page()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not-her-password-1A!")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong username or password" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("button", name="Sign out").count() == 0


def test_keyboard_only_sign_in(new_page: Any, stack: Any) -> None:
    from playwright.sync_api import expect

    page = new_page()
    # the username field has the focus on arrival; Tab to the password, Enter submits
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(password(stack, "alice"))
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Sign out").wait_for()
    shot(page, "signed-in")


def test_a_signed_in_tab_stays_signed_in_on_reload(new_page: Any, stack: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")
    page.reload()
    page.get_by_role("button", name="Sign out").wait_for()


def test_the_chinese_page_shows_chinese_labels(new_page: Any, stack: Any) -> None:
    page = new_page(locale="zh-CN")
    page.get_by_label("用户名").wait_for()
    assert page.get_by_role("button", name="登录").is_visible()
    assert page.evaluate("() => document.documentElement.lang") == "zh-CN"


def test_the_language_switch_is_remembered(new_page: Any) -> None:
    page = new_page(locale="en-US")
    page.get_by_label("Language").select_option("zh")
    page.get_by_label("用户名").wait_for()
    page.reload()
    page.get_by_label("用户名").wait_for()


def test_an_expiring_token_is_refreshed_with_the_refresh_token(new_page: Any, stack: Any) -> None:
    """The page trades its refresh token for a new ID token instead of signing the person out."""
    import json

    page = new_page()
    sign_in(page, stack, "alice")
    key = "download-center.session"
    state = json.loads(page.evaluate(f"() => sessionStorage.getItem('{key}')"))
    assert "refreshToken" in state and state["idToken"].count(".") == 2
    page.evaluate(f"""() => sessionStorage.setItem('{key}',
        JSON.stringify({{...JSON.parse(sessionStorage.getItem('{key}')), expiresAt: 0}}))""")
    flows: list[str] = []
    page.on("request", lambda request: flows.append(json.loads(request.post_data or "{}").get("AuthFlow", ""))
            if request.url.startswith(stack.info["aws_endpoint_url"]) else None)
    page.reload()
    page.get_by_role("table").wait_for()
    page.get_by_role("button", name="Sign out").wait_for()
    assert flows == ["REFRESH_TOKEN_AUTH"]
    refreshed = json.loads(page.evaluate(f"() => sessionStorage.getItem('{key}')"))
    assert refreshed["idToken"] != state["idToken"] and refreshed["expiresAt"] > 0


def test_the_console_links_to_the_api_description(new_page: Any, stack: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")
    link = page.get_by_role("link", name="API description")
    href = link.evaluate("a => a.href")
    assert href == stack.info["console_url"] + "openapi.json"
    document = page.request.get(href).json()
    assert document["openapi"].startswith("3.") and "/downloads" in document["paths"]
