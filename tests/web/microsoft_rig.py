"""``[microsoft]`` settings that point Postroom at the running identity and Graph stand-ins, and
what a Microsoft 365 administrator does to users (change an address, give it to someone else)."""

from __future__ import annotations

from postroom.config import MicrosoftConfig
from tests.standins.graph_rig import GraphRig


def microsoft_config(rig: GraphRig, tenant: str | None = None, **settings: object) -> MicrosoftConfig:
    """The stand-ins' app, authority and Graph root, trusting their test CA; the authority is not
    Microsoft's, so msal's instance discovery (a question to login.microsoftonline.com) is off.
    ``tenant``: the authority's tenant (default the stand-in's home tenant; ``organizations``
    admits users of every tenant)."""
    return rig.microsoft(tenant, **settings)


def change_mail(rig: GraphRig, user: str, mail: str) -> None:
    """An administrator changes the primary SMTP address of the user who signs in as ``user``:
    the directory's ``mail`` attribute, and the mailbox (same contents) answers to the new address."""
    old = rig.identity.users[user.lower()].mail
    rig.identity.change_mail(user, mail)
    mailbox = rig.graph.mailboxes.pop(old)  # the Graph stand-in keys mailboxes by address
    mailbox.address = mail.lower()
    rig.graph.mailboxes[mail.lower()] = mailbox


def give_address_to_someone_else(rig: GraphRig, address: str, tenant: str | None = None) -> str:
    """The user with ``address`` leaves (is deleted) and a new user gets the address, in the same
    tenant or, when the domain moved, in ``tenant``: a new object id and an empty mailbox. Their oid."""
    rig.identity.delete_user(address)
    rig.graph.mailboxes.pop(address.lower())
    newcomer = rig.identity.add_user(address, tenant=tenant)
    rig.graph.add_user(address)
    return newcomer.oid
