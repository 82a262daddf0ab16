"""The published shapes the Graph and identity stand-ins are held to.

Microsoft publishes Graph's schema as OData CSDL (``https://graph.microsoft.com/v1.0/$metadata``,
mirrored in the ``microsoftgraph/msgraph-metadata`` repository); no copy ships in a Python
package this project installs. So the entity and complex types the stand-in serves are
transcribed here from the v1.0 metadata and the Graph reference pages (``message``,
``mailFolder``, ``recipient``, ``emailAddress``, ``itemBody``, ``followupFlag``,
``internetMessageHeader``, ``singleValueLegacyExtendedProperty``, ``user``, the OData
collection and delta envelopes, the JSON batch response and the error body), and the
identity platform's token and error responses from its protocol reference.

They use the dialect of :mod:`standins.discovery` (objects are closed: a property the
type does not declare is a violation), so :func:`check` is ``discovery.validate`` over
these schemas::

    >>> check({"id": "AAMk", "isRead": "yes"}, "message")
    ['message.isRead: expected a boolean, got \\'yes\\'']
"""

from __future__ import annotations

from typing import Any

from standins.discovery import validate

_S = {"type": "string"}
_B = {"type": "boolean"}
_I32 = {"type": "integer", "format": "int32"}


def _array(ref: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": ref}}


SCHEMAS: dict[str, Any] = {
    "emailAddress": {"type": "object", "properties": {"name": _S, "address": _S}},
    "recipient": {"type": "object", "properties": {"emailAddress": {"$ref": "emailAddress"}}},
    "itemBody": {
        "type": "object",
        "properties": {"contentType": {"type": "string", "enum": ["text", "html"]}, "content": _S},
    },
    "dateTimeTimeZone": {"type": "object", "properties": {"dateTime": _S, "timeZone": _S}},
    "followupFlag": {
        "type": "object",
        "properties": {
            "flagStatus": {"type": "string", "enum": ["notFlagged", "complete", "flagged"]},
            "completedDateTime": {"$ref": "dateTimeTimeZone"},
            "dueDateTime": {"$ref": "dateTimeTimeZone"},
            "startDateTime": {"$ref": "dateTimeTimeZone"},
        },
    },
    "internetMessageHeader": {"type": "object", "properties": {"name": _S, "value": _S}},
    "singleValueLegacyExtendedProperty": {"type": "object", "properties": {"id": _S, "value": _S}},
    "removed": {"type": "object", "properties": {"reason": {"type": "string", "enum": ["changed", "deleted"]}}},
    "message": {
        "type": "object",
        "properties": {
            "@odata.context": _S,
            "@odata.type": _S,
            "@odata.etag": _S,
            "@removed": {"$ref": "removed"},
            "id": _S,
            "createdDateTime": _S,
            "lastModifiedDateTime": _S,
            "changeKey": _S,
            "categories": {"type": "array", "items": _S},
            "receivedDateTime": _S,
            "sentDateTime": _S,
            "hasAttachments": _B,
            "internetMessageId": _S,
            "subject": _S,
            "bodyPreview": _S,
            "importance": {"type": "string", "enum": ["low", "normal", "high"]},
            "parentFolderId": _S,
            "conversationId": _S,
            "conversationIndex": {"type": "string", "format": "byte"},
            "isDeliveryReceiptRequested": _B,
            "isReadReceiptRequested": _B,
            "isRead": _B,
            "isDraft": _B,
            "webLink": _S,
            "inferenceClassification": {"type": "string", "enum": ["focused", "other"]},
            "body": {"$ref": "itemBody"},
            "uniqueBody": {"$ref": "itemBody"},
            "sender": {"$ref": "recipient"},
            "from": {"$ref": "recipient"},
            "toRecipients": _array("recipient"),
            "ccRecipients": _array("recipient"),
            "bccRecipients": _array("recipient"),
            "replyTo": _array("recipient"),
            "flag": {"$ref": "followupFlag"},
            "internetMessageHeaders": _array("internetMessageHeader"),
            "singleValueExtendedProperties": _array("singleValueLegacyExtendedProperty"),
            "singleValueExtendedProperties@odata.context": _S,
        },
    },
    "mailFolder": {
        "type": "object",
        "properties": {
            "@odata.context": _S,
            "id": _S,
            "displayName": _S,
            "parentFolderId": _S,
            "childFolderCount": _I32,
            "unreadItemCount": _I32,
            "totalItemCount": _I32,
            "isHidden": _B,
        },
    },
    "user": {
        "type": "object",
        "properties": {
            "@odata.context": _S,
            "id": _S,
            "displayName": _S,
            "mail": _S,
            "userPrincipalName": _S,
            "businessPhones": {"type": "array", "items": _S},
        },
    },
    "messageCollection": {
        "type": "object",
        "properties": {
            "@odata.context": _S,
            "@odata.nextLink": _S,
            "@odata.deltaLink": _S,
            "value": _array("message"),
        },
    },
    "mailFolderCollection": {
        "type": "object",
        "properties": {"@odata.context": _S, "@odata.nextLink": _S, "value": _array("mailFolder")},
    },
    "batchResponse": {"type": "object", "properties": {"responses": _array("batchPart")}},
    "batchPart": {
        "type": "object",
        "properties": {
            "id": _S,
            "status": _I32,
            "headers": {"type": "object", "additionalProperties": _S},
            "body": {"type": "any"},
        },
    },
    "error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": _S,
                    "message": _S,
                    "innerError": {
                        "type": "object",
                        "properties": {"date": _S, "request-id": _S, "client-request-id": _S},
                    },
                },
            }
        },
    },
    # Microsoft identity platform (OAuth 2.0 / OpenID Connect endpoints)
    "tokenResponse": {
        "type": "object",
        "properties": {
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "scope": _S,
            "expires_in": {"type": "integer"},
            "ext_expires_in": {"type": "integer"},
            "access_token": _S,
            "refresh_token": _S,
            "id_token": _S,
            "client_info": _S,
        },
    },
    "tokenError": {
        "type": "object",
        "properties": {
            "error": {
                "type": "string",
                "enum": [
                    "invalid_request",
                    "invalid_instance",
                    "invalid_client",
                    "invalid_grant",
                    "unauthorized_client",
                    "unsupported_grant_type",
                    "invalid_scope",
                    "interaction_required",
                    "temporarily_unavailable",
                ],
            },
            "error_description": _S,
            "error_codes": {"type": "array", "items": {"type": "integer"}},
            "timestamp": _S,
            "trace_id": _S,
            "correlation_id": _S,
            "error_uri": _S,
        },
    },
    "openidConfiguration": {
        "type": "object",
        "properties": {
            "issuer": _S,
            "authorization_endpoint": _S,
            "token_endpoint": _S,
            "device_authorization_endpoint": _S,
            "end_session_endpoint": _S,
            "jwks_uri": _S,
            "userinfo_endpoint": _S,
            "token_endpoint_auth_methods_supported": {"type": "array", "items": _S},
            "response_types_supported": {"type": "array", "items": _S},
            "response_modes_supported": {"type": "array", "items": _S},
            "scopes_supported": {"type": "array", "items": _S},
            "subject_types_supported": {"type": "array", "items": _S},
            "id_token_signing_alg_values_supported": {"type": "array", "items": _S},
            "claims_supported": {"type": "array", "items": _S},
            "code_challenge_methods_supported": {"type": "array", "items": _S},
            "request_uri_parameter_supported": _B,
            "tenant_region_scope": {"type": "any"},
            "cloud_instance_name": _S,
            "cloud_graph_host_name": _S,
            "msgraph_host": _S,
            "rbac_url": _S,
            "frontchannel_logout_supported": _B,
            "http_logout_supported": _B,
            "kerberos_endpoint": _S,
        },
    },
    "instanceDiscovery": {
        "type": "object",
        "properties": {
            "tenant_discovery_endpoint": _S,
            "api-version": _S,
            "metadata": {"type": "array", "items": {"$ref": "instanceMetadata"}},
        },
    },
    "instanceMetadata": {
        "type": "object",
        "properties": {
            "preferred_network": _S,
            "preferred_cache": _S,
            "aliases": {"type": "array", "items": _S},
        },
    },
}
_DOC = {"schemas": SCHEMAS}


def check(value: Any, ref: str) -> list[str]:
    """Every way ``value`` violates type ``ref`` (empty: it conforms)."""
    return validate(_DOC, value, ref)
