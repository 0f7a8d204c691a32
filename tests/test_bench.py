"""`metarl bench pearl|tesp|vate`: each writes its Markdown table, with a mode column."""
import pytest

from metarl.bench_pearl import pearl_for
from metarl.cli import main as cli_main


def _table_rows(text: str) -> list[list[str]]:
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows]


def test_pearl_gradient_step_uses_the_requested_observation_size(repo_config, device):
    config = {**repo_config, "scale": "smoke"}
    agent = pearl_for(config, "E3", "point_robot", "pearl", device, obs_dim=20)
    # policy input: 20 observation + 5 latent (gau(5)); buffer row: 2 obs + act 2 + 3 scalars
    assert agent.model.policy.net[0].in_features == 25
    assert agent.buffer.data.shape[-1] == 2 * 20 + 2 + 3


@pytest.mark.parametrize("what, extra, first_column", [
    ("pearl", ["--family", "point_robot", "--grad-steps", "1"], "scale"),
    ("tesp", ["--families", "reacher_2link"], "family"),
    ("vate", ["--iterations", "1"], "method"),
])
def test_bench_writes_a_table_per_setting(tmp_path, device, what, extra, first_column):
    out = tmp_path / f"{what}.md"
    cli_main(["bench", what, "--scale", "smoke", "--threads", "1", "--device", str(device), "--out", str(out),
              *extra])
    header, *rows = _table_rows(out.read_text())
    assert header[0] == first_column and "mode" in header and "threads" in header
    assert rows and all(row[header.index("mode")] == "eager" for row in rows)
    assert len(rows) == (4 if what == "pearl" else 1)  # PEARL: gradient step, first calls, two collection settings
