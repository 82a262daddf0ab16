"""``[microsoft]`` settings that point Postroom at the running identity and Graph stand-ins."""

from __future__ import annotations

from postroom.config import MicrosoftConfig
from tests.standins.graph_rig import GraphRig


def microsoft_config(rig: GraphRig) -> MicrosoftConfig:
    """The stand-ins' app, authority and Graph root, trusting their test CA; the authority is not
    Microsoft's, so msal's instance discovery (a question to login.microsoftonline.com) is off."""
    return MicrosoftConfig(
        client_id=rig.identity.client_id,
        client_secret=rig.identity.client_secret,
        tenant=rig.identity.tenant,
        authority=f"{rig.idp_server.url}/{rig.identity.tenant}",
        graph_root=f"{rig.graph_server.url}/v1.0",
        ca_file=rig.ca_file,
        instance_discovery=False,
    )
