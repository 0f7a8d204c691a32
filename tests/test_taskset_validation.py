"""A task-set file edited by hand into something invalid fails on reading, naming the file and
the bad field, instead of training on it or failing deep inside an environment."""
import json
import math

import pytest

from metarl.envs import FAMILY_NAMES
from metarl.tasksets import read_taskset, write_taskset


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_generated_task_sets_are_valid(tmp_path, family):
    path = tmp_path / f"{family}.json"
    write_taskset(family, 7, path)
    assert read_taskset(path, family) == json.loads(path.read_text())["splits"]


@pytest.mark.parametrize("change, field", [
    (lambda c: c["splits"].update(testing=c["splits"].pop("test")), "'splits'"),
    (lambda c: c["splits"]["test"][3].update(goal=[0.5, math.nan]), "splits.test[3].goal: not finite"),
    (lambda c: c["splits"]["train"][0].update(goal=[1, 2, 3]), "splits.train[0].goal: shape (3,), expected (2,)"),
    (lambda c: c["splits"]["train"][1].update(goal="north"), "splits.train[1].goal: not numbers"),
    (lambda c: c["splits"]["test"][0].update(target=c["splits"]["test"][0].pop("goal")), "splits.test[0]: task keys"),
    (lambda c: c["splits"].update(test=[]), "splits.test: expected a non-empty list"),
    (lambda c: c.update(family="gridworlds"), "'family'"),
])
def test_hand_edited_task_set_names_file_and_field(tmp_path, change, field):
    path = tmp_path / "gridworld.json"
    write_taskset("gridworld", 7, path)
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))  # json writes a NaN as the bare word NaN, as a hand edit might
    with pytest.raises(ValueError) as error:
        read_taskset(path)
    assert str(path) in str(error.value) and field in str(error.value), str(error.value)


def test_task_set_of_another_family_is_refused(tmp_path):
    path = tmp_path / "tasks.json"
    write_taskset("point_robot", 7, path)
    with pytest.raises(ValueError, match="'family' is 'point_robot', expected 'gridworld'"):
        read_taskset(path, "gridworld")
