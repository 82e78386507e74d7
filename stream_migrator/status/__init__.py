"""Where a migration stands: one read-only document of every stage, and whether it can cut over.

``stream-migrator status`` prints it (``--json`` as is); the ``/progress``
endpoint (``progress_page.py``) serves the same document. Every figure is read
from the store that owns it - capture's checkpoint (``capture.py``), the change
topic's positions through :class:`~stream_migrator.reconcile.lag.LagProbe`, the
one lag source, and the quarantine topic (``transform.py``), the reconcile run
store (``reconcile.py``) and the rollout state (``rollout.py``) - and nothing is
written anywhere. ``reader.py`` assembles the sections, ``cutover.py`` decides
``can_cutover``.

Why each section carries ``available`` and ``error`` instead of raising: the view
is most wanted when something is down. A broker that does not answer leaves the
capture section readable and says so in the transform and quarantine sections;
``can_cutover`` is then false with the reason (unknown is never "fine").

Rates (snapshot copy rate, drain rate) need two readings (``rates.py``): a
:class:`~stream_migrator.status.reader.StatusReader` keeps its previous one, and
the first reading of a reader takes the Kafka positions twice,
``first_interval_s`` apart.
"""

from stream_migrator.status.reader import progress_document

__all__ = ["progress_document"]
