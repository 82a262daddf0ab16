"""Tracked sends with an SMTP envelope (issue 11): Gmail and Microsoft 365 accounts with
``smtp_submission`` submit over their service's SMTP with XOAUTH2 (google-auth and msal fetch the
tokens, smtplib talks to the stand-ins' SMTP companions), and a Postfix port that files every
submitted message in Sent itself, as those services do."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from postroom import db
from postroom.config import GoogleConfig, MicrosoftConfig, load_config
from postroom.models import MailAccount
from providers.base import Capability, FolderRole, OutgoingMessage, RemoteFolder
from providers.errors import AuthError, TransientError
from providers.imap import ImapProvider
from providers.smtp_oauth import OAuthSubmission
from providers.transport import Endpoint
from standins.microsoft_identity import GRAPH
from sync.credentials import open_account
from tests.cli.harness import Cli
from tests.rig.fixtures import Mailbox
from tests.rig.messages import make_message, new_message_id
from tests.standins.gmail_rig import GmailRig, gmail_rig
from tests.standins.graph_rig import GraphRig, graph_rig

GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
ANN, BOB = "ann@example.test", "bob@example.test"  # Gmail users of the stand-in
ANNE, BEN = "anne@contoso.test", "ben@contoso.test"  # Microsoft 365 users of the stand-in


def tracked_copy(sender: str, *, to: str, cc: str, envelope: str) -> OutgoingMessage:
    """One recipient's copy of a tracked send: the visible To and Cc name everyone, the envelope one."""
    message_id = new_message_id()
    raw = make_message(message_id=message_id, from_=sender, to=to, cc=cc, subject="Your interview")
    return OutgoingMessage(raw, sender, (envelope,), message_id)


def headers(raw: bytes) -> tuple[str, str, str]:
    msg = message_from_bytes(raw, policy=default)
    return str(msg["Message-ID"]), str(msg["To"]), str(msg["Cc"])


# ------------------------------------------------------------------ Gmail
@pytest.fixture
def gmail() -> Iterator[GmailRig]:
    with gmail_rig(smtp=True) as rig:
        for user in (ANN, BOB):
            rig.standin.add_user(user)
        yield rig


def gmail_inbox(rig: GmailRig, address: str) -> list[bytes]:
    return [m.raw for m in rig.standin.mailbox(address).by_label("INBOX")]


def test_gmail_tracked_copy_reaches_only_the_envelope_recipient_and_leaves_sent_clean(gmail: GmailRig) -> None:
    copy = tracked_copy(gmail.address, to=ANN, cc=BOB, envelope=ANN)
    with gmail.provider(smtp_submission=True) as provider:
        result = provider.send_without_copy(copy)
    assert (result.message_id, result.sent_copy_stored, dict(result.refused)) == (copy.message_id, False, {})
    (delivered,) = gmail_inbox(gmail, ANN)
    assert headers(delivered) == (copy.message_id, ANN, BOB)  # the headers name both; only Ann got it
    assert gmail_inbox(gmail, BOB) == []
    assert [s.recipients for s in gmail.smtp.submissions] == [(ANN,)]  # type: ignore[union-attr]
    assert gmail.standin.api_calls("users.messages.send") == []  # SMTP, not the API
    # Gmail filed the submitted message in SENT itself; Postroom moved that copy to the trash (recoverable
    # for 30 days; find_sent still sees trashed copies on purpose: they prove a message went out)
    assert gmail.raw_messages(FolderRole.SENT) == []
    assert [headers(raw)[0] for raw in gmail.raw_messages(FolderRole.TRASH)] == [copy.message_id]


def test_gmail_hands_an_outside_recipient_on_and_keeps_a_copy_to_the_sender_as_their_inbox_copy(
    gmail: GmailRig,
) -> None:
    outside = tracked_copy(gmail.address, to="jane@outside.test", cc=BOB, envelope="jane@outside.test")
    to_self = tracked_copy(gmail.address, to=gmail.address, cc=ANN, envelope=gmail.address)
    with gmail.provider(smtp_submission=True) as provider:
        assert provider.send_without_copy(outside).sent_copy_stored is False
        assert provider.send_without_copy(to_self).sent_copy_stored is True  # the inbox copy is that message
    assert [(sender, to) for sender, to, _ in gmail.standin.outbound] == [(gmail.address, ["jane@outside.test"])]
    assert gmail_inbox(gmail, BOB) == [] and gmail_inbox(gmail, ANN) == []
    assert [headers(raw)[0] for raw in gmail.raw_messages(FolderRole.SENT)] == [to_self.message_id]
    assert [headers(raw)[0] for raw in gmail.raw_messages(FolderRole.INBOX)] == [to_self.message_id]


def test_gmail_grant_without_the_full_mail_scope_is_refused_and_the_error_says_to_reconnect(gmail: GmailRig) -> None:
    limited = gmail.standin.grant(gmail.address, [GMAIL_MODIFY])
    copy = tracked_copy(gmail.address, to=ANN, cc=BOB, envelope=ANN)
    with gmail.provider(limited, smtp_submission=True) as provider:
        with pytest.raises(AuthError) as refused:
            provider.send_without_copy(copy)
        sentence = str(refused.value)
        assert "535 5.7.8 Username and Password not accepted" in sentence
        assert "reconnect the account through Google sign-in" in sentence and "https://mail.google.com/" in sentence
        assert sentence.endswith(".") and ". " not in sentence  # one sentence
        assert gmail_inbox(gmail, ANN) == []
        # refused twice: the second time with a freshly refreshed token, in case the first had run out
        assert [reply[:3] for _, reply in gmail.smtp.refusals] == ["535"] * 2  # type: ignore[union-attr]
        provider.send(copy)  # an untracked send still goes through the Gmail API with that grant
    assert [headers(raw)[0] for raw in gmail_inbox(gmail, ANN)] == [copy.message_id]


def test_gmail_smtp_signs_in_with_a_fresh_token_refreshed_and_stored_as_the_api_does(gmail: GmailRig) -> None:
    with gmail.provider(smtp_submission=True) as provider:
        provider.send_without_copy(tracked_copy(gmail.address, to=ANN, cc=BOB, envelope=ANN))
        assert len(gmail.refreshes) == 1  # no stored access token: refreshed before signing in
        gmail.standin.expire_access_tokens()  # Google ends the token early; the provider still thinks it valid
        provider.send_without_copy(tracked_copy(gmail.address, to=ANN, cc=BOB, envelope=ANN))
    assert len(gmail_inbox(gmail, ANN)) == 2
    assert len(gmail.refreshes) == 2 and gmail.refreshes[0][0] != gmail.refreshes[1][0]  # the new token was stored
    assert gmail.standin.smtp_authorize(gmail.address, gmail.refreshes[1][0]) == gmail.address


def test_gmail_a_copy_that_cannot_be_trashed_is_reported_and_never_raises(gmail: GmailRig) -> None:
    gmail.standin.fail("users.messages.trash", status=500, times=50)
    copy = tracked_copy(gmail.address, to=ANN, cc=BOB, envelope=ANN)
    with gmail.provider(smtp_submission=True) as provider:
        result = provider.send_without_copy(copy)  # the message went out: no error, whatever happens next
    assert result.sent_copy_stored is True
    assert [headers(raw)[0] for raw in gmail_inbox(gmail, ANN)] == [copy.message_id]
    assert [headers(raw)[0] for raw in gmail.raw_messages(FolderRole.SENT)] == [copy.message_id]


def test_gmail_smtp_server_unreachable_is_transient_and_nothing_went_out(gmail: GmailRig) -> None:
    assert gmail.smtp is not None
    gmail.smtp.close()
    with gmail.provider(smtp_submission=True) as provider, pytest.raises(TransientError, match="cannot connect"):
        provider.send_without_copy(tracked_copy(gmail.address, to=ANN, cc=BOB, envelope=ANN))
    assert gmail_inbox(gmail, ANN) == [] and gmail.raw_messages(FolderRole.SENT) == []


def test_a_copy_the_service_files_late_is_still_found_and_one_that_never_comes_is_reported() -> None:
    """Gmail files at once, Exchange Online within a second or two: the lookup waits (0.25 s, doubling)."""
    endpoint = Endpoint("smtp.example.test", 587, "starttls")
    slept: list[float] = []
    submission = OAuthSubmission(
        endpoint, address="r@x.test", where="Gmail r@x.test", token=lambda fresh: "t", hint="h", timeout=1.0,
        sleep=slept.append, copy_wait=2.0,
    )  # fmt: skip
    answers, removed = iter([None, None, "4711"]), []
    assert submission.remove_filed_copy("<a@x>", lambda mid: next(answers), removed.append) is True
    assert (removed, slept) == (["4711"], [0.25, 0.5])
    slept.clear()
    assert submission.remove_filed_copy("<b@x>", lambda mid: None, removed.append) is False
    assert removed == ["4711"] and sum(slept) == 2.0  # gave up after smtp_copy_wait seconds


# ------------------------------------------------------------------ Microsoft 365
@pytest.fixture
def graph() -> Iterator[GraphRig]:
    with graph_rig(smtp=True) as rig:
        for user in (ANNE, BEN):
            rig.graph.add_user(user)
        yield rig


def graph_folder(rig: GraphRig, address: str, folder: str) -> list[bytes]:
    box = rig.graph.mailbox(address)
    return [i.raw for i in box.in_folder(box.folder(folder).id)]


def test_graph_tracked_copy_reaches_only_the_envelope_recipient_and_leaves_sent_items_clean(graph: GraphRig) -> None:
    copy = tracked_copy(graph.address, to=ANNE, cc=BEN, envelope=ANNE)
    with graph.provider(smtp_submission=True) as provider:
        result = provider.send_without_copy(copy)
        assert provider.find_sent(copy.message_id) is None
    assert (result.sent_copy_stored, dict(result.refused)) == (False, {})
    (delivered,) = graph_folder(graph, ANNE, "inbox")
    assert headers(delivered) == (copy.message_id, ANNE, BEN)
    assert graph_folder(graph, BEN, "inbox") == []
    assert [s.recipients for s in graph.smtp.submissions] == [(ANNE,)]  # type: ignore[union-attr]
    assert graph.graph.api_calls("sendMail") == [] and graph.graph.api_calls("messages.send") == []
    # Exchange Online filed the submitted message in Sent Items; Postroom deleted it (into Deleted Items)
    assert graph.raw_messages(FolderRole.SENT) == []
    assert [headers(raw)[0] for raw in graph.raw_messages(FolderRole.TRASH)] == [copy.message_id]


def test_graph_smtp_token_comes_from_the_same_grant_and_the_account_keeps_a_graph_token(graph: GraphRig) -> None:
    with graph.provider(smtp_submission=True) as provider:
        provider.list_folders()
        provider.send_without_copy(tracked_copy(graph.address, to=ANNE, cc=BEN, envelope=ANNE))
    assert len(graph_folder(graph, ANNE, "inbox")) == 1
    # the SMTP.Send token is never stored as the account's access token: what was stored still opens Graph
    assert graph.refreshes and all(graph.identity.user_for(t, GRAPH)[0] == graph.address for t, _ in graph.refreshes)
    # Microsoft rotated the refresh token when it issued the SMTP token; the newest one was stored and works
    assert graph.rotations
    with graph.provider(graph.rotations[-1], smtp_submission=True) as later:
        later.send_without_copy(tracked_copy(graph.address, to=ANNE, cc=BEN, envelope=ANNE))
    assert len(graph_folder(graph, ANNE, "inbox")) == 2


def test_graph_grant_without_smtp_send_is_refused_and_the_error_says_to_reconnect(graph: GraphRig) -> None:
    graph_only = graph.identity.grant(graph.address)  # Mail.ReadWrite and Mail.Send on Graph, no SMTP.Send
    with graph.provider(graph_only, smtp_submission=True) as provider, pytest.raises(AuthError) as refused:
        provider.send_without_copy(tracked_copy(graph.address, to=ANNE, cc=BEN, envelope=ANNE))
    sentence = str(refused.value)
    assert "AADSTS65001" in sentence and "https://outlook.office.com/SMTP.Send" in sentence
    assert "reconnect the account through Microsoft sign-in with microsoft.smtp_send on" in sentence
    assert sentence.endswith(".") and ". " not in sentence  # one sentence
    assert graph_folder(graph, ANNE, "inbox") == [] and graph.smtp.submissions == []  # type: ignore[union-attr]


def test_graph_hands_an_outside_recipient_on_over_smtp(graph: GraphRig) -> None:
    copy = tracked_copy(graph.address, to="jane@outside.test", cc=BEN, envelope="jane@outside.test")
    with graph.provider(smtp_submission=True) as provider:
        assert provider.send_without_copy(copy).sent_copy_stored is False
    assert [(sender, to) for sender, to, _ in graph.graph.outbound] == [(graph.address, ["jane@outside.test"])]
    assert graph_folder(graph, BEN, "inbox") == [] and graph.raw_messages(FolderRole.SENT) == []


# ------------------------------------------------------------------ capability
@pytest.mark.parametrize("rig_of", [gmail_rig, graph_rig], ids=["gmail", "graph"])
def test_only_an_account_with_smtp_submission_has_the_envelope_and_untracked_sends_stay_on_the_api(
    rig_of: Callable[..., object],
) -> None:
    with rig_of(smtp=True) as rig:  # type: ignore[attr-defined]
        with rig.provider() as api_only, rig.provider(smtp_submission=True) as smtp:
            assert Capability.SMTP_ENVELOPE not in api_only.capabilities
            assert Capability.SMTP_ENVELOPE in smtp.capabilities
            assert Capability.SEND in smtp.capabilities
            copy = tracked_copy(rig.address, to=rig.address, cc="jane@outside.test", envelope=rig.address)
            smtp.send(copy)  # untracked: the API, which takes the recipients from the headers
        assert rig.smtp.submissions == []


# ------------------------------------------------------------------ a server that files Sent itself
def wait_for(what: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "not within 10 s"
        time.sleep(0.05)
    return found


def test_a_submission_server_that_files_sent_mail_puts_a_copy_in_sent_which_postroom_can_remove(
    new_mailbox: Callable[[], Mailbox],
) -> None:
    sender, peer = new_mailbox(), new_mailbox()
    if sender.rig.smtp_kind == "none":
        pytest.skip("no SMTP server in this rig")
    plain_copy = tracked_copy(sender.address, to=peer.address, cc=ANN, envelope=peer.address)
    filed_copy = tracked_copy(sender.address, to=peer.address, cc=ANN, envelope=peer.address)
    with ImapProvider(sender.settings()) as plain, ImapProvider(sender.settings(files_sent=True)) as filing:
        assert Capability.SMTP_ENVELOPE in filing.capabilities
        plain.send_without_copy(plain_copy)
        filing.send_without_copy(filed_copy)
        wait_for(lambda: len(peer.uids()) == 2)  # both delivered; the Sent copy travels the same way (LMTP)
        uid = wait_for(lambda: filing.find_sent(filed_copy.message_id))
        assert plain.find_sent(plain_copy.message_id) is None  # the ordinary port files nothing
        assert [headers(raw)[0] for raw in sender.fetch_raw("Sent").values()] == [filed_copy.message_id]
        filing.delete(RemoteFolder("Sent", FolderRole.SENT), [str(uid)])
    assert sender.uids("Sent") == []


# ------------------------------------------------------------------ accounts add-gmail|add-graph --smtp-submission
def _toml(section: str, settings: object) -> str:
    """``[section]`` with every plain setting of a config dataclass (secrets go in the environment)."""
    lines = [f"[{section}]"]
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if f.name == "client_secret" or value is None or isinstance(value, tuple):
            continue
        lines.append(f"{f.name} = {json.dumps(value)}")  # JSON strings, numbers and booleans are TOML too
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("backend", ["gmail", "graph"])
def test_accounts_added_with_smtp_submission_send_tracked_copies_over_the_configured_smtp(
    backend: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    rig_of = gmail_rig if backend == "gmail" else graph_rig
    with rig_of(smtp=True) as rig:  # type: ignore[operator]
        other = "rita.two@example.test" if backend == "gmail" else "rita.two@contoso.test"
        peer = ANN if backend == "gmail" else ANNE
        settings: GoogleConfig | MicrosoftConfig
        if isinstance(rig, GmailRig):
            rig.standin.add_user(peer)
            cfg, other_token = rig.config(load_config(env=env)), rig.standin.grant(other)
            section, settings = "google", cfg.google
        else:
            rig.graph.add_user(peer)
            rig.graph.add_user(other)
            cfg, other_token = rig.config(load_config(env=env)), rig.identity.grant(other)
            section, settings = "microsoft", cfg.microsoft
        toml = tmp_path / "postroom.toml"
        toml.write_text(_toml(section, settings))
        secret = {f"POSTROOM_{section.upper()}_CLIENT_SECRET": settings.client_secret}
        cli = Cli(env | secret | {"POSTROOM_CONFIG": str(toml), "TOKEN": rig.refresh_token, "OTHER": other_token},
                  monkeypatch, capsys)  # fmt: skip
        add = ["accounts", f"add-{backend}", "--refresh-token-env"]
        with_smtp = cli.json(*add, "TOKEN", "--email", rig.address, "--smtp-submission")
        api_only = cli.json(*add, "OTHER", "--email", other)
        assert isinstance(with_smtp, dict) and isinstance(api_only, dict)
        config = load_config(toml, env=env | secret)
        engine = db.make_engine(config.database)
        sessions = db.make_sessionmaker(engine)
        try:
            with sessions() as s:
                smtp_account = s.get_one(MailAccount, with_smtp["id"])
                plain_account = s.get_one(MailAccount, api_only["id"])
                assert smtp_account.settings["smtp_submission"] is True
                assert "smtp_submission" not in plain_account.settings
                with closing(open_account(plain_account, config, sessions)) as plain:
                    assert Capability.SMTP_ENVELOPE not in plain.capabilities
                with closing(open_account(smtp_account, config, sessions)) as provider:
                    assert Capability.SMTP_ENVELOPE in provider.capabilities
                    copy = tracked_copy(rig.address, to=peer, cc=BOB, envelope=peer)
                    assert provider.send_without_copy(copy).sent_copy_stored is False
        finally:
            engine.dispose()
        # the host and port came from the config's smtp_host / smtp_port: the stand-in got the message
        assert [s.recipients for s in rig.smtp.submissions] == [(peer,)]  # type: ignore[union-attr]
