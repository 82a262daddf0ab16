"""The webhooks page in a real Chromium: an admin ticks events, subscribes a URL, is shown its
signing secret once (gone when the page is opened again), and a mistake is named next to its
field; the page loads nothing the CSP refuses."""

from __future__ import annotations

from tests.browser.conftest import Browser, csp_violations, page_errors

HOOK = "https://hooks.example.com/browser-test"


def test_an_admin_adds_a_subscription_and_sees_the_secret_once(browser: Browser) -> None:
    admin = browser.live.new_user(role="admin")
    browser.sign_in(admin)
    browser.open("/")
    browser.find('header nav a[href="/webhooks"]').click()
    browser.wait_path("/webhooks")
    assert "No subscriptions yet" in browser.text
    browser.fill("#add-webhook input[name=url]", HOOK)
    browser.find('#add-webhook input[value="message.replied"]').click()
    browser.find('#add-webhook input[value="message.bounced"]').click()
    browser.find("#add-webhook button[type=submit]").click()
    browser.wait(lambda: browser.find_all("#webhook-secret"), what="the secret")
    secret = browser.find("#webhook-secret").text.strip()
    assert secret.startswith("whsec_") and len(secret) > 40
    assert "It is shown only now" in browser.text
    browser.find("a.button.primary").click()  # Done
    browser.wait_path("/webhooks")
    row = browser.find("table.webhooks tbody tr")
    assert HOOK in row.text and "message.replied, message.bounced" in row.text and "active" in row.text
    assert secret not in browser.driver.page_source  # never shown again
    browser.open("/webhooks")
    assert secret not in browser.driver.page_source
    assert csp_violations(browser.console()) == [] and page_errors(browser.console()) == []


def test_a_mistake_is_named_next_to_its_field(browser: Browser) -> None:
    browser.sign_in(browser.live.new_user(role="admin"))
    browser.open("/webhooks")
    browser.fill("#add-webhook input[name=url]", HOOK)
    browser.find("#add-webhook button[type=submit]").click()  # no event ticked
    browser.wait(lambda: browser.find_all(".field-error"), what="the error")
    assert browser.find(".field-error").text.startswith("Events must name at least one of")
    assert browser.find("#add-webhook input[name=url]").get_attribute("value") == HOOK
    assert "No subscriptions yet" in browser.text
