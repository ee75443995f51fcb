"""How much listing a lookup of N names may spend, and what a listing stopped early still answers."""

from __future__ import annotations

from airflow_sora.storage import LIST_PAGE, Listing, listing_budget


def test_a_run_smaller_than_a_page_lists_nothing_a_larger_one_a_page_per_thousand() -> None:
    assert listing_budget(0) == listing_budget(50) == listing_budget(LIST_PAGE - 1) == 0
    assert listing_budget(LIST_PAGE) == 1 and listing_budget(5_500) == 5
    assert listing_budget(50, at_least=1) == 1 and listing_budget(3_000, at_least=1) == 3


def test_a_complete_listing_answers_every_name() -> None:
    listing = Listing({"a.json": 3}, complete=True)
    assert listing.answers("a.json") and listing.answers("zzz.mp4")


def test_a_listing_stopped_early_answers_only_up_to_where_it_reached() -> None:
    listing = Listing({"s_01.json": 3, "s_01.mp4": 9}, complete=False, through="s_01.mp4")
    assert listing.answers("s_00.json") and listing.answers("s_01.mp4")  # absent or present: known
    assert not listing.answers("s_02.json") and not listing.answers("s_01.mp4x")


def test_a_listing_that_reached_no_object_answers_nothing() -> None:
    assert not Listing({}, complete=False).answers("a.json")
