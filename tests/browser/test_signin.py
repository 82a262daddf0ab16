"""Signing in, in a real Chromium: the wrong-password sentence, the rate limit, signing out, and
CSRF — a form whose token is missing or stale is refused and changes nothing."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.browser.conftest import Browser, page_errors

WRONG = "That email address and password do not match an account."
TOO_MANY = "Too many failed sign-ins; please wait 15 minutes and try again."
CSRF_REFUSED = "This form has expired or did not come from Postroom"


def _submit_login(browser: Browser, email: str, password: str) -> None:
    browser.fill("input[name=email]", email)
    browser.fill("input[name=password]", password)
    browser.find("form button[type=submit]").click()


def _errors(browser: Browser) -> list[str]:
    return [e.text for e in browser.find_all(".flash-error")]


def test_a_page_asks_for_sign_in_and_returns_there_after_it(browser: Browser) -> None:
    who = browser.live.new_user()
    browser.open("/")
    browser.wait_path("/login")
    assert "Sign in to Postroom" in browser.text
    _submit_login(browser, who.email, who.password)
    browser.wait_path("/")
    assert f"Signed in as {who.email}." in browser.text
    assert who.email in browser.find("header .who").text
    assert page_errors(browser.console()) == []


def test_a_wrong_password_says_so_in_one_sentence_and_signs_nobody_in(browser: Browser) -> None:
    who = browser.live.new_user()
    browser.open("/login")
    _submit_login(browser, who.email, "not the password at all")
    browser.wait(lambda: _errors(browser), what="the error")
    assert browser.path == "/login"
    assert _errors(browser) == [WRONG]
    assert browser.find("input[name=email]").get_attribute("value") == who.email  # kept for a second try
    assert browser.find("input[name=password]").get_attribute("value") == ""  # never sent back
    browser.open("/")
    browser.wait_path("/login")  # still nobody


def test_after_five_failures_even_the_right_password_is_refused_with_one_sentence(browser: Browser) -> None:
    who = browser.live.new_user()
    browser.open("/login")
    for attempt in range(5):
        _submit_login(browser, who.email, f"wrong password {attempt}")
        browser.wait(lambda: _errors(browser) == [WRONG], what=f"failure {attempt + 1}")
        browser.open("/login")
    _submit_login(browser, who.email, who.password)
    browser.wait(lambda: _errors(browser), what="the refusal")
    assert _errors(browser) == [TOO_MANY]
    assert browser.path == "/login"
    browser.open("/")
    browser.wait_path("/login")


def test_signing_out_ends_the_session(browser: Browser) -> None:
    browser.sign_in()
    browser.find("form.signout button[type=submit]").click()
    browser.wait_path("/login")
    assert "You are signed out." in browser.text
    browser.open("/")
    browser.wait_path("/login")


def test_a_form_without_its_csrf_token_is_refused(browser: Browser) -> None:
    who = browser.live.new_user()
    browser.open("/login")
    browser.driver.execute_script("document.querySelector('input[name=csrf_token]').remove()")
    _submit_login(browser, who.email, who.password)
    browser.wait(lambda: CSRF_REFUSED in browser.text, what="the CSRF refusal")
    browser.open("/")
    browser.wait_path("/login")  # the right password did not sign in without the token


def test_a_form_with_a_stale_csrf_token_is_refused(browser: Browser) -> None:
    """The page was loaded in a session that has since ended: its token no longer counts."""
    who = browser.live.new_user()
    browser.open("/login")
    browser.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # the session the token belonged to is gone
    _submit_login(browser, who.email, who.password)
    browser.wait(lambda: CSRF_REFUSED in browser.text, what="the CSRF refusal")
    browser.open("/")
    browser.wait_path("/login")


def test_a_stale_sign_out_form_from_another_session_does_not_sign_out(browser: Browser) -> None:
    """A sign-out form kept from an earlier session carries that session's token: posted in a
    new session it is refused, and the new session stays signed in."""
    browser.sign_in()
    old_token = browser.find("form.signout input[name=csrf_token]").get_attribute("value")
    browser.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.sign_in()
    browser.driver.execute_script(
        "document.querySelector('form.signout input[name=csrf_token]').value = arguments[0]", old_token
    )
    browser.find("form.signout button[type=submit]").click()
    browser.wait(lambda: CSRF_REFUSED in browser.text, what="the CSRF refusal")
    browser.open("/")
    browser.wait_path("/")  # still signed in
    assert browser.driver.find_elements(By.CSS_SELECTOR, "form.signout")
