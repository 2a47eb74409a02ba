import gc

from tpsim.base.collector import paused_gc


def test_paused_gc_restores_the_collector_and_freezes_only_when_asked():
    """Off inside; on again after; ``freeze`` moves what is alive then out of the collector's
    passes (gc.get_freeze_count), without it nothing is frozen; off before: stays off."""
    was, frozen = gc.isenabled(), gc.get_freeze_count()
    gc.enable()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() == frozen
        with paused_gc(freeze=True):
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() > frozen
        gc.disable()
        with paused_gc(freeze=True):
            pass
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()
