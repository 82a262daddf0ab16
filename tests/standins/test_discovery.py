"""The discovery-schema validator that keeps the Gmail stand-in honest: a table of cases."""

from __future__ import annotations

from typing import Any

import pytest

from standins.discovery import ParameterError, load_document, methods, validate

DOC = load_document("gmail", "v1")
MESSAGE = {
    "id": "18c1",
    "threadId": "18c1",
    "labelIds": ["INBOX"],
    "sizeEstimate": 512,
    "historyId": "4242",
    "internalDate": "1700000000000",
    "raw": "RnJvbTogYUBiDQoNCmhp",
}


@pytest.mark.parametrize(
    ("ref", "value", "problem"),
    [
        ("Message", MESSAGE, None),
        ("Message", {**MESSAGE, "threadID": "18c1"}, "Message.threadID: unknown property"),
        ("Message", {**MESSAGE, "historyId": 4242}, "Message.historyId: expected a string holding a uint64"),
        ("Message", {**MESSAGE, "internalDate": "yesterday"}, "Message.internalDate: 'yesterday' is not a int64"),
        ("Message", {**MESSAGE, "sizeEstimate": "512"}, "Message.sizeEstimate: expected an integer"),
        ("Message", {**MESSAGE, "labelIds": "INBOX"}, "Message.labelIds: expected an array"),
        ("Message", {**MESSAGE, "raw": "not base64!"}, "Message.raw: not base64 data"),
        ("Message", {**MESSAGE, "payload": {"headers": [{"name": "To", "valu": "x"}]}}, ".payload.headers[0].valu"),
        ("Label", {"id": "INBOX", "name": "INBOX", "type": "folder"}, "Label.type: 'folder' is not one of"),
        ("ListMessagesResponse", {"messages": [{"id": "1", "threadId": "1"}], "resultSizeEstimate": 1}, None),
        ("ListMessagesResponse", {"messages": [{"id": 1}]}, "ListMessagesResponse.messages[0].id: expected a string"),
        ("ListHistoryResponse", {"historyId": "9", "history": [{"id": "9", "messagesAdded": [{}]}]}, None),
        ("ListHistoryResponse", {"historyId": "9", "history": [{"id": "9", "added": []}]}, "history[0].added"),
        ("Profile", [], "Profile: expected an object"),
    ],
)
def test_validate(ref: str, value: Any, problem: str | None) -> None:
    errors = validate(DOC, value, ref)
    if problem is None:
        assert errors == []
    else:
        assert len(errors) == 1 and problem in errors[0], errors


def test_unknown_schema_is_reported() -> None:
    assert validate(DOC, {}, "NoSuchSchema") == ["NoSuchSchema: schema 'NoSuchSchema' is not in the document"]


GET = methods(DOC)["gmail.users.messages.get"]
HISTORY = methods(DOC)["gmail.users.history.list"]


def test_methods_carry_routes_and_schemas() -> None:
    assert GET.rule == "/gmail/v1/users/<userId>/messages/<id>"
    assert (GET.http_method, GET.response_ref) == ("GET", "Message")
    assert methods(DOC)["gmail.users.messages.send"].request_ref == "Message"


@pytest.mark.parametrize(
    ("method", "query", "expected"),
    [
        (
            GET,
            {"format": ["metadata"], "metadataHeaders": ["Subject", "From"], "alt": ["json"]},
            {"format": "metadata", "metadataHeaders": ["Subject", "From"]},
        ),
        (HISTORY, {"startHistoryId": ["17"], "maxResults": ["500"]}, {"startHistoryId": "17", "maxResults": 500}),
        (GET, {"format": ["everything"]}, "Invalid value 'everything'"),
        (GET, {"fromat": ["raw"]}, "Unknown name 'fromat'"),
        (GET, {"format": ["raw", "full"]}, "is not repeated"),
        (HISTORY, {"startHistoryId": ["soon"]}, "not a uint64"),
        (HISTORY, {"startHistoryId": ["1"], "maxResults": ["many"]}, "not an integer"),
    ],
)
def test_parse_query(method: Any, query: dict[str, list[str]], expected: Any) -> None:
    if isinstance(expected, dict):
        assert method.parse_query(query) == expected
    else:
        with pytest.raises(ParameterError, match=expected):
            method.parse_query(query)
