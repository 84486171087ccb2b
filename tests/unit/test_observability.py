"""The garbage-collector monitor: every pause is measured, startup objects are frozen."""

from __future__ import annotations

import gc

from customer360.observability import _GC_TIMER, REGISTRY, gc_monitor


def pauses() -> float:
    return REGISTRY.get_sample_value("c360_gc_pause_seconds_count", {"generation": "2"}) or 0.0


def test_collections_are_timed_once_however_many_gateways_monitor_them() -> None:
    outer_users = _GC_TIMER.users  # the session's gateway may hold one already
    threshold = gc.get_threshold()
    before = pauses()
    with gc_monitor(), gc_monitor():  # two gateways in one process
        assert gc.get_freeze_count() > 0  # what existed at start is out of every pass
        gc.collect()
        assert pauses() == before + 1  # one callback, not one per gateway
    gc.collect()
    if outer_users == 0:
        # the last one out restores the collector: nothing timed, nothing frozen
        assert pauses() == before + 1
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
    else:
        # still monitored for the gateway that remains
        assert pauses() == before + 2
        assert gc.get_freeze_count() > 0
