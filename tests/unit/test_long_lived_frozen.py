"""``long_lived_frozen``: what exists when a try starts submitting is kept off the collector's full passes
(they stop every thread), and the heap is as it was afterwards."""

from __future__ import annotations

import gc

from airflow_sora.batch.run import long_lived_frozen


def test_the_heap_is_frozen_while_submitting_and_unfrozen_after() -> None:
    gc.unfreeze()
    with long_lived_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_before_stays_frozen() -> None:
    gc.freeze()  # as a process that froze before forking
    try:
        with long_lived_frozen():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
