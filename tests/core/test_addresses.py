"""Address canonicalisation: the key that matches an applicant however they type."""

from __future__ import annotations

import pytest

from postroom.addresses import canonical_address, normalise_address


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # case and surrounding noise
        ("jane@example.com", "jane@example.com"),
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("  jane@example.com \t", "jane@example.com"),
        ("<jane@example.com>", "jane@example.com"),
        ("Jane Doe <Jane@Example.com>", "jane@example.com"),
        ('"Doe, Jane" <jane@example.com>', "jane@example.com"),
        ("jane@example.com (Jane Doe)", "jane@example.com"),
        ("mailto:jane@example.com", "jane@example.com"),
        # +tag sub-addressing dropped for every domain
        ("jane+jobs@example.com", "jane@example.com"),
        ("jane+jobs+2024@example.com", "jane@example.com"),
        ("Jane+Jobs@Outlook.com", "jane@outlook.com"),
        ("+tagonly@example.com", "+tagonly@example.com"),  # nothing left to keep: stays as is
        # Gmail: dots do not matter, googlemail.com is gmail.com
        ("jane.doe@gmail.com", "janedoe@gmail.com"),
        ("J.a.n.e.Doe+cv@GMail.com", "janedoe@gmail.com"),
        ("jane.doe@googlemail.com", "janedoe@gmail.com"),
        ("jane.doe@example.com", "jane.doe@example.com"),  # dots matter elsewhere
        ("jane.doe@gmail.co.uk", "jane.doe@gmail.co.uk"),  # not Google's consumer domain
        # quoted local parts
        ('"jane.doe"@example.com', "jane.doe@example.com"),  # needless quotes removed
        ('"Jane Doe"@example.com', '"jane doe"@example.com'),  # needed quotes kept
        ('"jane+x"@example.com', "jane@example.com"),
        # IDN domains
        ("anna@Bücher.DE", "anna@bücher.de"),
        ("anna@xn--bcher-kva.de", "anna@bücher.de"),  # punycode and Unicode meet
        ("josé@exämple.com", "josé@exämple.com"),
        # trailing dot (absolute domain)
        ("jane@example.com.", "jane@example.com"),
        # address literal
        ("root@[192.0.2.1]", "root@[192.0.2.1]"),
        # not addresses
        ("", None),
        ("   ", None),
        ("jane", None),
        ("jane@", None),
        ("@example.com", None),
        ("jane@localhost", None),  # no dot: not an address an applicant can have
        ("jane@example..com", None),
        ("jane doe@example.com", None),
        ("undisclosed-recipients:;", None),
        ("MAILER DAEMON <>", None),
        ("a@b@example.com", None),
    ],
)
def test_canonical_address(raw, expected):
    assert canonical_address(raw) == expected


def test_same_person_many_spellings():
    spellings = [
        "Jane Doe <jane.doe@gmail.com>",
        "JANEDOE@GMAIL.COM",
        "jane.doe+applications@googlemail.com",
        "j.ane.d.oe@gmail.com.",
    ]
    assert {canonical_address(s) for s in spellings} == {"janedoe@gmail.com"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Bob <Bob+X@Example.COM>", "bob+x@example.com"),  # tag kept
        ("jane.doe@GMail.com", "jane.doe@gmail.com"),  # dots kept
        ("  <Jane@Example.com>  ", "jane@example.com"),
        ("", ""),
    ],
)
def test_normalise_address_is_exact_but_lower_case(raw, expected):
    assert normalise_address(raw) == expected
