import memfit


def test_public_names_resolve():
    for name in memfit.__all__:
        assert getattr(memfit, name) is not None


def test_all_is_the_documented_surface():
    assert {"Budget", "Workload", "MemoryProfile", "profile", "zoo"} <= set(memfit.__all__)
    assert callable(memfit.profile)
