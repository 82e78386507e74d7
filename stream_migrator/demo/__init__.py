"""``stream-migrator demo``: a live shop.orders migrated end to end, with a report.

``run`` starts the stack and the processes and waits until they caught up;
``data`` makes the orders (the tests' and benchmarks' generator too); ``report``
reads the processes' /metrics into the report; ``rollout`` is ``demo --rollout``.
"""
