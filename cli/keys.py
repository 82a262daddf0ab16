"""``postroom keys rotate``."""

from __future__ import annotations

import argparse

from cli.common import App, CommandError, Commands, Subparsers, common, group, json_flag, output
from services.keys import rotate_secrets


def register(sub: Subparsers) -> Commands:
    ke = group(sub, "keys", "the key that encrypts stored credentials (docs/security.md)")
    rot = common(
        ke.add_parser(
            "rotate",
            help="re-seal every stored credential under security.secret_key (old keys in security.previous_keys)",
        )
    )
    json_flag(rot)
    return {("keys", "rotate"): rotate}


def rotate(app: App, args: argparse.Namespace) -> int:
    done = rotate_secrets(app.config, app.sessions)
    output(
        args,
        done.as_json(),
        f"Stored credentials: {len(done.resealed)} re-sealed under the current key, "
        f"{len(done.current)} already sealed under it, {len(done.unreadable)} unreadable."
        + (
            f"\nWebhook secrets: {len(done.webhooks_resealed)} re-sealed, {len(done.webhooks_current)} already "
            f"sealed under it, {len(done.webhooks_unreadable)} unreadable."
            if done.webhooks_resealed or done.webhooks_current or done.webhooks_unreadable or done.webhooks_busy
            else ""
        ),
    )
    if done.unreadable:
        ids = ", ".join(map(str, done.unreadable))
        raise CommandError(
            f"{len(done.unreadable)} stored credentials (accounts {ids}) open with neither security.secret_key "
            "nor security.previous_keys: add the key they were sealed under to security.previous_keys and run "
            "'postroom keys rotate' again, or reconnect those accounts."
        )
    if done.busy:
        ids = ", ".join(map(str, done.busy))
        raise CommandError(f"Accounts {ids} changed on every attempt; run 'postroom keys rotate' again.")
    if done.webhooks_unreadable:
        ids = ", ".join(map(str, done.webhooks_unreadable))
        raise CommandError(
            f"The signing secrets of webhook subscriptions {ids} open with neither security.secret_key nor "
            "security.previous_keys: add the key they were sealed under to security.previous_keys and run "
            "'postroom keys rotate' again, or subscribe those URLs again."
        )
    if done.webhooks_busy:
        ids = ", ".join(map(str, done.webhooks_busy))
        raise CommandError(f"Webhook subscriptions {ids} changed on every attempt; run 'postroom keys rotate' again.")
    return 0
