"""Learning curves: snapshots are found in CPU order and drawn one line per run."""

from pathlib import Path

from samstream.model.training.curves import snapshots, svg


def test_snapshots_are_ordered_by_cpu_time_and_drawn(tmp_path: Path):
    folder = tmp_path / "run" / "snapshots"
    folder.mkdir(parents=True)
    for name in ("cpu00010min-step754", "cpu00005min-step370", "cpu00015min-step1217", "not-a-snapshot"):
        (folder / f"{name}.safetensors").write_bytes(b"")
    found = snapshots(tmp_path / "run")
    assert [(minutes, step) for minutes, step, _ in found] == [(5, 370), (10, 754), (15, 1217)]
    chart = svg({"fullband": [(5, -1.0), (10, 0.5)], "dit": [(5, -2.0), (10, -1.5), (15, 0.2)]}, "curves")
    assert chart.startswith("<svg") and chart.count("<polyline") == 2 and ">fullband<" in chart
