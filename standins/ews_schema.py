"""A structural check of EWS responses: which children each element may have, and in what order.

Microsoft's published ``messages.xsd``/``types.xsd`` are not available offline here
(they ship neither with exchangelib nor in any package on this machine), so this
module transcribes the part of them the stand-in serves: for each element, the
children its schema type allows, in the order of the type's ``xs:sequence``
(``ItemType`` then ``MessageType`` for a message; ``BaseFolderType`` then
``FolderType`` for a folder). :func:`check` walks a response and reports any
child the schema does not allow there, any child out of sequence, and any
response message without its ``ResponseCode``. The tests also run it over the
responses exchangelib parsed in ``shared/reference/ews-capture/``.
"""

from __future__ import annotations

from lxml import etree

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"

_RESPONSE_MESSAGE = ["m:MessageText", "m:ResponseCode", "m:DescriptiveLinkKey", "m:MessageXml"]
_MAILBOX = ["t:Name", "t:EmailAddress", "t:RoutingType", "t:MailboxType", "t:ItemId"]
_MESSAGE = [
    "t:MimeContent",
    "t:ItemId",
    "t:ParentFolderId",
    "t:ItemClass",
    "t:Subject",
    "t:Sensitivity",
    "t:Body",
    "t:Attachments",
    "t:DateTimeReceived",
    "t:Size",
    "t:Categories",
    "t:Importance",
    "t:InReplyTo",
    "t:IsSubmitted",
    "t:IsDraft",
    "t:IsFromMe",
    "t:IsResend",
    "t:IsUnmodified",
    "t:InternetMessageHeaders",
    "t:DateTimeSent",
    "t:DateTimeCreated",
    "t:HasAttachments",
    "t:ExtendedProperty",
    "t:ConversationId",
    "t:Sender",
    "t:ToRecipients",
    "t:CcRecipients",
    "t:BccRecipients",
    "t:IsReadReceiptRequested",
    "t:IsDeliveryReceiptRequested",
    "t:ConversationIndex",
    "t:ConversationTopic",
    "t:From",
    "t:InternetMessageId",
    "t:IsRead",
    "t:IsResponseRequested",
    "t:References",
    "t:ReplyTo",
]
_FOLDER = [
    "t:FolderId",
    "t:ParentFolderId",
    "t:FolderClass",
    "t:DisplayName",
    "t:TotalCount",
    "t:ChildFolderCount",
    "t:ExtendedProperty",
    "t:EffectiveRights",
    "t:DistinguishedFolderId",
    "t:UnreadCount",
]
_SYNC = ["m:SyncState", "m:IncludesLastItemInRange", "m:IncludesLastFolderInRange", "m:Changes"]

CHILDREN: dict[str, list[str]] = {
    "s:Envelope": ["s:Header", "s:Body"],
    "s:Header": ["t:ServerVersionInfo"],
    "s:Fault": ["faultcode", "faultstring", "faultactor", "detail"],
    "detail": ["e:ResponseCode", "e:Message", "t:MessageXml"],
    "t:MessageXml": ["t:Value", "t:LineNumber", "t:LinePosition", "t:Violation"],
    "m:ResponseMessages": ["m:*ResponseMessage"],
    "m:GetFolderResponseMessage": [*_RESPONSE_MESSAGE, "m:Folders"],
    "m:CreateFolderResponseMessage": [*_RESPONSE_MESSAGE, "m:Folders"],
    "m:SyncFolderHierarchyResponseMessage": [*_RESPONSE_MESSAGE, *_SYNC],
    "m:SyncFolderItemsResponseMessage": [*_RESPONSE_MESSAGE, *_SYNC],
    "m:GetItemResponseMessage": [*_RESPONSE_MESSAGE, "m:Items"],
    "m:CreateItemResponseMessage": [*_RESPONSE_MESSAGE, "m:Items"],
    "m:MoveItemResponseMessage": [*_RESPONSE_MESSAGE, "m:Items"],
    "m:DeleteItemResponseMessage": _RESPONSE_MESSAGE,
    "m:FindItemResponseMessage": [*_RESPONSE_MESSAGE, "m:RootFolder"],
    "m:RootFolder": ["t:Items"],
    "m:Folders": ["t:Folder"],
    "m:Items": ["t:Message"],
    "t:Items": ["t:Message"],
    "m:Changes": ["t:Create", "t:Update", "t:Delete", "t:ReadFlagChange"],
    "t:Create": ["t:Message", "t:Folder"],
    "t:Update": ["t:Message", "t:Folder"],
    "t:Delete": ["t:ItemId", "t:FolderId"],
    "t:ReadFlagChange": ["t:ItemId", "t:IsRead"],
    "t:Message": _MESSAGE,
    "t:Folder": _FOLDER,
    "t:Sender": ["t:Mailbox"],
    "t:From": ["t:Mailbox"],
    "t:ToRecipients": ["t:Mailbox"],
    "t:CcRecipients": ["t:Mailbox"],
    "t:BccRecipients": ["t:Mailbox"],
    "t:ReplyTo": ["t:Mailbox"],
    "t:Mailbox": _MAILBOX,
    "t:InternetMessageHeaders": ["t:InternetMessageHeader"],
    "t:ExtendedProperty": ["t:ExtendedFieldURI", "t:Value", "t:Values"],
}
_OPERATIONS: tuple[str, ...] = ("GetFolder", "SyncFolderHierarchy", "SyncFolderItems", "GetItem", "CreateItem")
_OPERATIONS += ("MoveItem", "DeleteItem", "FindItem", "CreateFolder")
for _op in _OPERATIONS:
    CHILDREN[f"m:{_op}Response"] = ["m:ResponseMessages"]
CHILDREN["s:Body"] = [f"m:{op}Response" for op in _OPERATIONS] + ["s:Fault"]
_PREFIX = {S: "s", M: "m", T: "t", E: "e"}
CHOICES = {"m:Changes", "s:Body"}  # an xs:choice (maxOccurs unbounded): any order


def _name(el: etree._Element) -> str:
    q = etree.QName(el)
    return f"{_PREFIX[q.namespace]}:{q.localname}" if q.namespace in _PREFIX else q.localname


def check(root: etree._Element) -> list[str]:
    """Problems found in a response document, as ``path: problem`` lines; empty when it conforms."""
    problems: list[str] = []

    def walk(el: etree._Element, path: str) -> None:
        name = _name(el)
        allowed = CHILDREN.get(name)
        if name.endswith("ResponseMessage") and el.find(f"{{{M}}}ResponseCode") is None:
            problems.append(f"{path}: no m:ResponseCode")
        if allowed is None:
            return  # a simple-content element, or one whose content the stand-in does not check
        position = 0
        for child in el:
            if not isinstance(child.tag, str):
                continue
            child_name = _name(child)
            key = (
                "m:*ResponseMessage"
                if name == "m:ResponseMessages" and child_name.endswith("ResponseMessage")
                else child_name
            )
            if key not in allowed:
                problems.append(f"{path}/{child_name}: not allowed in {name}")
                continue
            index = allowed.index(key)
            if index < position and name not in CHOICES:
                problems.append(f"{path}/{child_name}: out of sequence in {name} (after {allowed[position]})")
            position = max(position, index)
            walk(child, f"{path}/{child_name}")

    walk(root, _name(root))
    return problems
