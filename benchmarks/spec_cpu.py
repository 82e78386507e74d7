"""CPU per document of the migration spec on the worker's hot path (figures, no asserts).

Builds N v1 orders the way ``demo seed`` does, round-trips them through BSON
as the worker receives them (``bson.decode`` with ``events.BSON_OPTIONS``), and
times with ``time.process_time()`` (CPU, not wall clock: the machine is shared)
the calls the pipeline makes per event: the forward ``spec.migrate`` (transform
+ target schema), its two halves, ``spec.inverse`` on the migrated documents,
and what the reverse worker runs on them (``inverted(spec).migrate``). Prints
microseconds per document, best of ``--rounds``.

    .venv/bin/python benchmarks/spec_cpu.py [--docs 20000] [--rounds 5] [--spec orders.v1_to_v2]

Needs no servers.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import bson

from stream_migrator.demo.data import v1_order
from stream_migrator.events import BSON_OPTIONS
from stream_migrator.rollout.reverse import inverted
from stream_migrator.spec import get_spec


def _decoded_orders(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [bson.decode(bson.encode(v1_order(rng, i)), BSON_OPTIONS) for i in range(count)]


def _us_per_doc(
    fn: Callable[[dict[str, Any]], Any], docs: list[dict[str, Any]], rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for doc in docs:
            fn(doc)
        best = min(best, time.process_time() - start)
    return best / len(docs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spec", default="orders.v1_to_v2")
    args = parser.parse_args()
    spec = get_spec(args.spec)
    sources = _decoded_orders(args.docs)
    targets = [spec.migrate(doc) for doc in sources]
    figures = {
        "migrate": _us_per_doc(spec.migrate, sources, args.rounds),
        "transform": _us_per_doc(spec.transform, sources, args.rounds),
        "validate_target": _us_per_doc(spec.validate_target, targets, args.rounds),
        "inverse": _us_per_doc(spec.inverse, targets, args.rounds),
        "reverse_migrate": _us_per_doc(inverted(spec).migrate, targets, args.rounds),
    }
    print(f"spec {spec.name}, {args.docs} documents, best of {args.rounds} rounds (CPU)")
    for name, us in figures.items():
        print(f"  {name:<16} {us:8.2f} us/doc")
    print(" ".join(f"{name}_us_per_doc={us:.2f}" for name, us in figures.items()))


if __name__ == "__main__":
    main()
