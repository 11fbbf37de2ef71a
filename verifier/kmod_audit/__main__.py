"""`python -m kmod_audit`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
