import io

from rich.console import Console

from memfit import progress


def test_nested_tasks_share_one_display_and_draw_on_the_given_console():
    out = io.StringIO()
    progress.set_enabled(True, Console(file=out, force_terminal=True, width=100))
    try:
        with progress.task("outer", total=2) as outer:
            with progress.task("inner step", total=4) as inner:
                inner.advance(4)
            outer.advance()
            outer.update(description="outer, half way")
            assert progress._live is not None
        assert progress._live is None
    finally:
        progress.set_enabled(None)
    drawn = out.getvalue()
    assert "inner step" in drawn and "outer" in drawn
    assert inner.completed == 4 and outer.completed == 1


def test_disabled_progress_draws_nothing_but_still_counts():
    progress.set_enabled(False)
    try:
        with progress.task("quiet", total=3) as t:
            t.advance(2)
        assert progress._live is None and t.completed == 2
    finally:
        progress.set_enabled(None)


def test_not_a_terminal_means_no_progress(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.enabled()
    monkeypatch.setenv("MEMFIT_NO_PROGRESS", "1")
    assert not progress.enabled()
