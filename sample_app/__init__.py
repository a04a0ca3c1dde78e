"""A small Neutron-like API (networks and ports) that shows the whole toolkit at work.

Run ``python -m sample_app demo`` for a tour, ``python -m sample_app serve`` to
try it with ``curl``. See ``docs/sample_app.md``.

**It does no authentication**: it trusts ``X-Project-Id`` and ``X-Roles`` as if
an authentication middleware had set them.
"""

from __future__ import annotations
