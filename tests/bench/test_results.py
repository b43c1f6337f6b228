"""docs/results.md is made from the runs' own tables, and the README's table follows them."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)

TABLE = """### class-agnostic results on the test split (sample)

| method | mask AP |
|---|---:|
| self-supervised SOLO, round 2 (pseudo-labels) | 12.3 |

best no-learning baseline: x (1.0 mask AP); y beats it (12.3, +11.3)

| pseudo-label source (training images) | masks |
|---|---:|
| free masks | 993 |
"""


def _outputs(tmp_path):
    report = tmp_path / "outputs" / "cpu_sample" / "report"
    report.mkdir(parents=True)
    (report / "table.md").write_text(TABLE)
    (tmp_path / "outputs" / "cpu_coins").mkdir()   # no tables yet: no section
    return tmp_path / "outputs"


def test_results_doc_holds_the_run_tables_and_their_commands(tmp_path):
    out, readme = tmp_path / "results.md", tmp_path / "README.md"
    readme.write_text(f"{results.README_START}\n{results.README_END}\n")
    assert results.main(["--outputs", str(_outputs(tmp_path)), "--out", str(out),
                         "--readme", str(readme)]) == 0
    text = out.read_text()
    assert "| self-supervised SOLO, round 2 (pseudo-labels) | 12.3 |" in text
    assert "Made by `make pseudo-labels`" in text
    assert "cpu_coins" not in text and "annotation cost" not in text
    assert "| 12.3 |" in readme.read_text()


def test_no_runs_is_an_error_not_an_empty_doc(tmp_path):
    (tmp_path / "outputs").mkdir()
    out = tmp_path / "results.md"
    assert results.main(["--outputs", str(tmp_path / "outputs"), "--out", str(out),
                         "--readme", str(tmp_path / "README.md")]) == 2
    assert not out.exists()


def test_readme_table_replaced_between_markers_only(tmp_path):
    outputs = _outputs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.README_START}\nold table 48.5\n{results.README_END}\nrest\n")
    assert results.update_readme(readme, outputs / "cpu_sample" / "report" / "table.md")
    text = readme.read_text()
    assert "old table" not in text and "| 12.3 |" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")
    assert "### class-agnostic" not in text
    assert "best no-learning baseline" in text and "pseudo-label source" not in text


def test_the_readme_carries_the_markers():
    text = (ROOT / "README.md").read_text()
    assert results.README_START in text and results.README_END in text


def test_paths_of_the_checkout_the_run_was_made_in_are_shown_relative(tmp_path):
    outputs = _outputs(tmp_path)
    chosen = outputs / "cpu_sample" / "choose" / "chosen_pseudo_labels.json"
    table = outputs / "cpu_sample" / "report" / "table.md"
    table.write_text(TABLE + f"\nchosen pseudo-labels: SOLO round 2 -> {chosen.resolve()}\n")
    out, readme = tmp_path / "results.md", tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert results.main(["--outputs", str(outputs), "--out", str(out),
                         "--readme", str(readme)]) == 0
    text = out.read_text()
    assert "-> outputs/cpu_sample/choose/chosen_pseudo_labels.json" in text
    assert str(tmp_path.resolve()) not in text
