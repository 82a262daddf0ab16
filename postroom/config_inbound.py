"""The ``[inbound]`` section: how processing mailboxes are taken (docs/inbound.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from postroom.config_reading import Table, keys_of
from postroom.errors import ConfigError

# those mail-parser-reply knows (postroom.inbound's default is the first four); kept here so that
# loading the config does not import the parser
KNOWN_LANGUAGES = ("en", "de", "fr", "es", "cs", "da", "it", "ja", "ko", "nl", "pl", "sv", "zh")
DEFAULT_LANGUAGES = ("en", "de", "fr", "es")


@dataclass(frozen=True)
class InboundConfig:
    """The processing mailboxes (:mod:`sync.inbound`).

    ``interval``: seconds between two runs over every processing mailbox in the worker (the
    embedded one and the Celery beat). ``batch_size``: messages fetched at once (each still
    processed in its own transaction). ``max_message_size``: a larger message goes to failed/
    unread. ``languages``: those whose quoting headers and sign-offs are recognised.
    ``aliases``: other spellings of data keys, by canonical key, e.g.
    ``{"name": ["Name", "Nom", "Vorname Nachname"]}``."""

    interval: float = 60.0
    batch_size: int = 50
    max_message_size: int = 25 * 1024 * 1024
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def read_inbound(doc: Mapping[str, Any], source: str) -> InboundConfig:
    t, d = Table(doc, "inbound", keys_of(InboundConfig), source), InboundConfig()
    interval = t.get("interval", float, d.interval)
    if not 1 <= interval <= 86400:
        raise ConfigError(f"Setting inbound.interval must be between 1 and 86400 seconds, not {interval}.")
    batch = t.get("batch_size", int, d.batch_size)
    if not 1 <= batch <= 500:
        raise ConfigError(f"Setting inbound.batch_size must be between 1 and 500, not {batch}.")
    size = t.get("max_message_size", int, d.max_message_size)
    if size < 1024:
        raise ConfigError(f"Setting inbound.max_message_size must be at least 1024 bytes, not {size}.")
    languages = t.get("languages", list, list(d.languages))
    for lang in languages:
        if lang not in KNOWN_LANGUAGES:
            raise ConfigError(
                f"Setting inbound.languages must list language codes among {', '.join(KNOWN_LANGUAGES)}, not {lang!r}."
            )
    raw_aliases = t.get("aliases", dict, {})
    aliases: dict[str, tuple[str, ...]] = {}
    for key, spellings in raw_aliases.items():
        if not isinstance(spellings, list) or not all(isinstance(x, str) for x in spellings):
            raise ConfigError(f'Setting inbound.aliases.{key} must be a list of spellings, such as ["Nom"].')
        aliases[str(key)] = tuple(spellings)
    return InboundConfig(
        interval=interval,
        batch_size=batch,
        max_message_size=size,
        languages=tuple(languages),
        aliases=aliases,
    )
