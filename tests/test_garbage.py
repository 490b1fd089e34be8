"""collector_paused: no automatic collection inside, the collector left as found."""

from __future__ import annotations

import gc

import pytest

from heartbeat.garbage import collector_paused


@pytest.mark.parametrize("collecting", [True, False])
def test_nested_pauses_and_a_raise_leave_the_collector_as_found(collecting: bool) -> None:
    (gc.enable if collecting else gc.disable)()
    try:
        with collector_paused():
            assert not gc.isenabled()
            with pytest.raises(KeyError), collector_paused():
                raise KeyError("x")
            assert not gc.isenabled()  # the inner pause ended; the outer holds
        assert gc.isenabled() is collecting
    finally:
        gc.enable()
