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


def test_a_budget_keeps_the_early_snapshots_and_the_share_below_the_mixture_is_reported(tmp_path: Path, capsys):
    import argparse
    import json

    from samstream.model.training.curves import add_arguments, run

    folder = tmp_path / "run" / "snapshots"
    folder.mkdir(parents=True)
    for minutes, step, db in ((5, 370, 0.4), (10, 754, 0.9), (15, 1217, 1.2)):
        stem = f"cpu{minutes:05d}min-step{step}"
        (folder / f"{stem}.safetensors").write_bytes(b"")
        # the evaluation cached beside the snapshot (what `curves` writes after evaluating it once)
        per_class = {"dog bark": {"si_sdri_db": db, "n": 4, "share_below_0_db": 0.25},
                     "water": {"si_sdri_db": db, "n": 4, "share_below_0_db": 0.5},
                     "not a required class": {"si_sdri_db": db, "n": 8, "share_below_0_db": 1.0}}
        (folder / f"{stem}.eval-held-pc4.json").write_text(
            json.dumps({"mean_si_sdri_required_classes_db": db, "per_class": per_class}))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args([str(tmp_path / "run"), "--eval", str(tmp_path / "held"), "--per-class", "4",
                           "--max-cpu-minutes", "10", "--json"]))
    points = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["points"]
    assert [(p["cpu_minutes"], p["db"], p["share_below_0_db"]) for p in points] == [(5, 0.4, 0.375), (10, 0.9, 0.375)]
