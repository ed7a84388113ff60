"""Where this host's hub is configured: `--hub URL`, else `HERMES_KANBAN_HUB_URL`, else the host's config file
`$HERMES_HOME/kanban/hub.url` (one line, 0600: it may carry a password). `HERMES_KANBAN_SYNC=off` turns syncing off
without touching anything else. Nothing here connects: it only says which hub, so gc and doctor (below the hub
package) can ask whether one is configured.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidValue, StorageError
from .paths import hermes_home

HUB_URL_ENV = "HERMES_KANBAN_HUB_URL"
SYNC_ENV = "HERMES_KANBAN_SYNC"
SCHEMES = ("postgresql://", "postgres://")


def hub_file() -> Path:
    return hermes_home() / "kanban" / "hub.url"


def check_hub_url(url: str, source: str = "--hub") -> str:
    url = url.strip()
    if not url.startswith(SCHEMES):
        raise InvalidValue(f"invalid hub URL from {source}: use postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME")
    return url


def sync_disabled() -> bool:
    """HERMES_KANBAN_SYNC=off (or 0/false/no): no sync runs; boards work as without a hub."""
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("off", "0", "false", "no")


def configured_hub(explicit: str | None = None) -> str | None:
    """The hub URL for this host, or None when none is configured."""
    if explicit:
        return check_hub_url(explicit)
    env = os.environ.get(HUB_URL_ENV, "").strip()
    if env:
        return check_hub_url(env, HUB_URL_ENV)
    path = hub_file()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"cannot read the hub URL from {path}: {exc} (fix or remove it)") from None
    return check_hub_url(text, str(path)) if text else None


def redact(url: str) -> str:
    """The URL without its password: how a hub is named in messages, in the board's checkpoint keys and in doctor."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"
