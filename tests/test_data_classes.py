"""Class relations: what may interfere with what."""

from samstream.model.classes import family, members, overlaps


def test_families_and_members():
    assert family("woman speaking") == "speech" and family("piano") == "music" and family("dog bark") == "dog bark"
    assert set(members("speech")) == {"speech", "man speaking", "woman speaking"}
    assert "piano" in members("music") and "music" not in members("piano")


def test_overlaps():
    assert overlaps("piano", "music") and overlaps("music", "drums")  # a mix contains instruments
    assert not overlaps("piano", "drums")  # separating instruments is the point
    assert overlaps("speech", "man speaking") and overlaps("man speaking", "woman speaking")
    assert overlaps("siren", "alarm") and overlaps("laughter", "woman speaking")
    assert not overlaps("dog bark", "engine")
