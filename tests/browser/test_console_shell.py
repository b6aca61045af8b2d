"""The console's frame: served by the API, signs in with Cognito, says where the API is."""

from __future__ import annotations

from typing import Any

import pytest

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


def _idp(stack: Any) -> Any:
    import boto3

    return boto3.client("cognito-idp", endpoint_url=stack.info["aws_endpoint_url"],
                        region_name=stack.info["region"], aws_access_key_id="e2e",
                        aws_secret_access_key="e2e")


def _refresh(stack: Any, refresh_token: str) -> dict[str, Any]:
    return _idp(stack).initiate_auth(ClientId=stack.info["client_id"], AuthFlow="REFRESH_TOKEN_AUTH",
                             AuthParameters={"REFRESH_TOKEN": refresh_token})


def test_sign_out_revokes_the_refresh_token_so_a_copy_of_it_no_longer_signs_in(
        new_page: Any, stack: Any) -> None:
    """Sign-out deleted the tokens from sessionStorage only: a copy of the refresh token (taken
    by a script on the page, or from a shared machine's memory) signed in for 30 days more."""
    import json

    page = new_page()
    sign_in(page, stack, "alice")
    state = json.loads(page.evaluate("() => sessionStorage.getItem('download-center.session')"))
    copy = state["refreshToken"]
    assert _refresh(stack, copy)["AuthenticationResult"]["IdToken"]  # the copy signs in meanwhile

    with page.expect_response(lambda r: r.request.headers.get("x-amz-target")
                              == "AWSCognitoIdentityProviderService.RevokeToken") as revoked:
        page.get_by_role("button", name="Sign out").click()
    request = revoked.value.request
    assert request.url.startswith(stack.info["aws_endpoint_url"]) and revoked.value.status == 200
    assert json.loads(request.post_data) == {"ClientId": stack.info["client_id"], "Token": copy}
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.evaluate("() => sessionStorage.length") == 0
    assert page.locator(".toast").count() == 0
    shot(page, "signed-out")

    with pytest.raises(_idp(stack).exceptions.NotAuthorizedException, match="Refresh Token has been revoked"):
        _refresh(stack, copy)


def test_a_sign_out_cognito_refuses_to_revoke_signs_out_here_and_says_so(new_page: Any, stack: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")

    def refuse(route: Any) -> None:
        if route.request.headers.get("x-amz-target", "").endswith(".RevokeToken"):
            route.fulfill(status=400, content_type="application/x-amz-json-1.1",
                          body='{"__type": "UnsupportedOperationException", '
                               '"message": "Token revocation is not enabled for this app client"}')
        else:
            route.continue_()

    page.route(stack.info["aws_endpoint_url"] + "/**", refuse)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.evaluate("() => sessionStorage.length") == 0
    toast = page.locator(".toast.error")
    toast.wait_for()
    said = toast.inner_text()
    assert "could not end the session (Token revocation is not enabled for this app client)" in said
    shot(page, "signed-out-not-revoked")
