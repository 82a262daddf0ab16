"""Webhook deliveries are signed per the Standard Webhooks spec: a receiver using any of that
project's libraries accepts them, and refuses a forged, tampered or replayed one."""

from __future__ import annotations

import base64
import doctest
import hashlib
import hmac

import pytest

import postroom.webhook_signing
from postroom.webhook_signing import WebhookVerificationError, headers, new_secret, sign, verify

# The spec's test vector, as the reference libraries check it (standard-webhooks/standard-webhooks,
# libraries/go/webhook_test.go TestWebhookSign); recomputed independently below.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"type":"message.bounced","data":{"recipient":"ana@example.com","status":"5.1.1"}}'


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(postroom.webhook_signing).failed == 0


def test_the_spec_vector_signs_as_published() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    # the prefix is optional, as in the reference libraries
    assert sign(VECTOR_SECRET.removeprefix("whsec_"), VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_spec_vector_verifies_and_its_neighbours_do_not() -> None:
    received = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    verify(VECTOR_SECRET, received, VECTOR_BODY, now=VECTOR_TS)
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, received, b'{"test": 2432232315}', now=VECTOR_TS)
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, {**received, "webhook-id": "msg_other"}, VECTOR_BODY, now=VECTOR_TS)


def test_the_key_is_the_decoded_secret_not_its_text() -> None:
    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert sign(secret, "msg_1", NOW, BODY) == "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize("nbytes", [24, 32, 64])
def test_new_secrets_have_the_prefix_and_the_size_asked_for(nbytes: int) -> None:
    secret = new_secret(nbytes)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == nbytes
    assert new_secret(nbytes) != secret


@pytest.mark.parametrize("nbytes", [0, 16, 23, 65])
def test_new_secret_refuses_sizes_outside_the_spec(nbytes: int) -> None:
    with pytest.raises(ValueError):
        new_secret(nbytes)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 16).decode()])
def test_malformed_or_short_secrets_are_refused_without_being_echoed(secret: str) -> None:
    with pytest.raises(ValueError) as caught:
        sign(secret, "msg_1", NOW, BODY)
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(caught.value)


def test_headers_carry_id_timestamp_and_signature() -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", NOW, BODY)
    assert sent == {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": sign(secret, "msg_1", NOW, BODY),
    }
    verify(secret, sent, BODY, now=NOW)


def test_during_rotation_one_delivery_verifies_under_either_secret() -> None:
    new, old = new_secret(), new_secret()
    sent = headers([new, old], "msg_1", NOW, BODY)
    assert sent["webhook-signature"].split(" ") == [sign(new, "msg_1", NOW, BODY), sign(old, "msg_1", NOW, BODY)]
    verify(old, sent, BODY, now=NOW)  # a receiver not yet updated
    verify(new, sent, BODY, now=NOW)  # a receiver already updated
    verify([new, old], sent, BODY, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(new_secret(), sent, BODY, now=NOW)


def test_a_receiver_holding_two_secrets_accepts_a_delivery_signed_with_either() -> None:
    new, old = new_secret(), new_secret()
    verify([new, old], headers(old, "msg_1", NOW, BODY), BODY, now=NOW)
    verify([new, old], headers(new, "msg_1", NOW, BODY), BODY, now=NOW)


@pytest.mark.parametrize(
    "tampered",
    [
        BODY.replace(b"5.1.1", b"4.1.1"),
        BODY + b" ",
        BODY + b"\n",
        b"",
    ],
)
def test_a_tampered_body_fails(tampered: bytes) -> None:
    secret = new_secret()
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(secret, headers(secret, "msg_1", NOW, BODY), tampered, now=NOW)


def test_a_signature_moved_to_another_timestamp_fails() -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", NOW, BODY)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(secret, {**sent, "webhook-timestamp": str(NOW + 1)}, BODY, now=NOW)


@pytest.mark.parametrize(
    ("skew", "accepted"), [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86_400, False)]
)
def test_the_timestamp_must_be_within_the_tolerance_either_way(skew: int, accepted: bool) -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", NOW, BODY)
    if accepted:
        verify(secret, sent, BODY, now=NOW + skew)
    else:
        with pytest.raises(WebhookVerificationError, match="tolerance"):
            verify(secret, sent, BODY, now=NOW + skew)


def test_the_tolerance_can_be_widened_or_narrowed() -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", NOW, BODY)
    verify(secret, sent, BODY, now=NOW + 3600, tolerance=3600)
    with pytest.raises(WebhookVerificationError):
        verify(secret, sent, BODY, now=NOW + 10, tolerance=5)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_fails_and_is_named(missing: str) -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", NOW, BODY)
    del sent[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        verify(secret, sent, BODY, now=NOW)


def test_header_names_are_matched_whatever_their_case() -> None:
    secret = new_secret()
    sent = {name.title(): value for name, value in headers(secret, "msg_1", NOW, BODY).items()}
    assert "Webhook-Signature" in sent
    verify(secret, sent, BODY, now=NOW)


@pytest.mark.parametrize("stamp", ["", "soon", "1700000000.5", "-1700000000", "1e9"])
def test_a_malformed_timestamp_fails(stamp: str) -> None:
    secret = new_secret()
    sent = {**headers(secret, "msg_1", NOW, BODY), "webhook-timestamp": stamp}
    with pytest.raises(WebhookVerificationError, match="webhook-timestamp"):
        verify(secret, sent, BODY, now=NOW)


def test_other_signature_versions_and_garbage_are_skipped_not_fatal() -> None:
    secret = new_secret()
    sent = headers(secret, "msg_1", NOW, BODY)
    wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    noisy = f"v1a,AAAA v2,{sent['webhook-signature'][3:]} v1,!!! {wrong} {sent['webhook-signature']}"
    verify(secret, {**sent, "webhook-signature": noisy}, BODY, now=NOW)
    only_others = f"v1a,AAAA v2,{sent['webhook-signature'][3:]}"
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify(secret, {**sent, "webhook-signature": only_others}, BODY, now=NOW)


def test_the_signature_is_checked_with_a_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(postroom.webhook_signing.hmac, "compare_digest", spy)
    secret = new_secret()
    verify(secret, headers(secret, "msg_1", NOW, BODY), BODY, now=NOW)
    assert calls


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1"])
def test_ids_that_could_blur_the_signed_content_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError):
        sign(new_secret(), msg_id, NOW, BODY)


def test_verify_needs_at_least_one_secret() -> None:
    with pytest.raises(ValueError):
        verify([], headers(new_secret(), "msg_1", NOW, BODY), BODY, now=NOW)
