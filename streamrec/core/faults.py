"""Failpoints: named places in the code where a test can inject a fault, switched on by the environment.

    STREAMREC_FAULT=after_pointer                     raise InjectedFault at that point
    STREAMREC_FAULT=before_pointer=sleep(1.5)          pause there for 1.5 s (to widen a race window)
    STREAMREC_FAULT=before_pointer=sleep(1),after_pointer   several, comma-separated

The pattern of FoundationDB's ``BUGGIFY`` and etcd's ``gofail``: the production code calls
``faults.point("name")`` at the few places where a crash or a delay matters; with ``STREAMREC_FAULT`` unset (always,
outside tests) that call is one dictionary lookup of the environment and does nothing. The variable is read at
each call, so a test can set it for one step and a subprocess inherits it.

The points (each documented where it is called):

``before_pointer``  ``ModelStore.publish``: the pointer compare-and-swap has read the pointer, the manifest is
                    not yet marked published (``sleep`` here makes two publishers overlap)
``after_pointer``   ``ModelStore.publish``: the pointer names the new version, the caller has not yet been told
                    (the publish task dies before recording success)

Actions: ``raise`` (the default) raises :class:`InjectedFault`; ``sleep(<seconds>)`` pauses. Anything else is an
error (``ValueError``), so a typo in a test does not silently inject nothing.
"""

from __future__ import annotations

import os
import re
import sys
import time

ENV = "STREAMREC_FAULT"
POINTS = frozenset({"before_pointer", "after_pointer"})

_SLEEP = re.compile(r"sleep\(\s*([0-9]*\.?[0-9]+)\s*\)")


class InjectedFault(RuntimeError):
    """Raised at a failpoint switched on with ``STREAMREC_FAULT=<name>`` (never outside fault tests)."""


def active(env: str | None = None) -> dict[str, str]:
    """The failpoints switched on in ``env`` (default: ``$STREAMREC_FAULT``): name -> action."""
    text = os.environ.get(ENV, "") if env is None else env
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        name, action = name.strip(), action.strip() or "raise"
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {sorted(POINTS)})")
        if action != "raise" and not _SLEEP.fullmatch(action):
            raise ValueError(f"{ENV}: action of {name!r} must be raise or sleep(<seconds>), not {action!r}")
        out[name] = action
    return out


def point(name: str) -> None:
    """A failpoint: does nothing unless ``$STREAMREC_FAULT`` names it (then raise, or sleep)."""
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    if not os.environ.get(ENV):
        return
    action = active().get(name)
    if action is None:
        return
    print(f"streamrec: failpoint {name}: {action}", file=sys.stderr, flush=True)
    if action == "raise":
        raise InjectedFault(f"injected fault at failpoint {name!r} ({ENV})")
    time.sleep(float(_SLEEP.fullmatch(action).group(1)))
