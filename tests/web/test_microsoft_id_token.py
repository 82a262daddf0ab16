"""Who signed in, from msal's ``id_token_claims``: the checks Postroom makes itself, because
msal (since 1.38) decodes the ID token without validating it, apart from the nonce."""

from __future__ import annotations

import pytest

from postroom.config import MicrosoftConfig
from services.microsoft_consent import ConnectError, SignedInUser, signed_in_user

APP = "6731de76-14a6-49ae-97bc-6eba6914391e"
TID = "aaaabbbb-0000-cccc-1111-dddd2222eeee"
OID = "00001111-aaaa-2222-bbbb-3333cccc4444"
CLAIMS = {"aud": APP, "iss": f"https://login.microsoftonline.com/{TID}/v2.0", "tid": TID, "oid": OID, "ver": "2.0"}
FOREIGN = "Microsoft's ID token is not for Postroom or does not name your organisation and account."


def test_the_tenant_and_object_id_name_the_user() -> None:
    assert signed_in_user(MicrosoftConfig(client_id=APP), CLAIMS) == SignedInUser(TID, OID)
    upper = CLAIMS | {"tid": TID.upper(), "oid": OID.upper(), "iss": CLAIMS["iss"].upper()}
    assert signed_in_user(MicrosoftConfig(client_id=APP), upper) == SignedInUser(TID, OID)  # stored lower-case


@pytest.mark.parametrize(
    ("claims", "sentence"),
    [
        (None, "Microsoft's answer did not say who signed in (no ID token); please connect again."),
        (CLAIMS | {"aud": "another-app"}, FOREIGN),
        ({k: v for k, v in CLAIMS.items() if k != "oid"}, FOREIGN),
        (CLAIMS | {"tid": "contoso.com"}, FOREIGN),
        (CLAIMS | {"oid": f"{{{OID}}}"}, FOREIGN),
        (CLAIMS | {"iss": "https://login.microsoftonline.com/bbbbcccc-1111-dddd-2222-eeee3333ffff/v2.0"}, FOREIGN),
    ],
    ids=["no-id-token", "other-audience", "no-oid", "tid-not-a-guid", "oid-in-braces", "issuer-other-tenant"],
)
def test_an_id_token_that_does_not_name_a_user_of_this_app_is_refused(claims: object, sentence: str) -> None:
    with pytest.raises(ConnectError) as err:
        signed_in_user(MicrosoftConfig(client_id=APP), claims)
    assert str(err.value) == sentence


def test_allowed_tenants_admit_only_the_listed_tenants() -> None:
    assert signed_in_user(MicrosoftConfig(client_id=APP, allowed_tenants=(TID,)), CLAIMS).tenant_id == TID
    with pytest.raises(ConnectError, match=rf"^Your Microsoft 365 organisation \(tenant {TID}\) may not connect"):
        signed_in_user(
            MicrosoftConfig(client_id=APP, allowed_tenants=("bbbbcccc-1111-dddd-2222-eeee3333ffff",)), CLAIMS
        )
