"""Shipped task catalogs (``tasks.py``): loaded once from beside a module, chosen by name or by seed."""

from __future__ import annotations

import json

import pytest

from openenv_ws.errors import ValidationError
from openenv_ws.protocol import ErrorCode
from openenv_ws_envs import coding, shell
from openenv_ws_envs._lib.tasks import choose_task, load_tasks

TASKS = {"fizzbuzz": {"prompt": "a"}, "primes": {"prompt": "b"}, "sort": {"prompt": "c"}}


def test_a_catalog_is_the_tasks_json_beside_the_module_read_once(tmp_path):
    (tmp_path / "tasks.json").write_text(json.dumps(TASKS))
    module_file = str(tmp_path / "environment.py")
    assert load_tasks(module_file) == TASKS
    assert load_tasks(module_file) is load_tasks(module_file)


@pytest.mark.parametrize("package", [coding, shell])
def test_the_shipped_catalogs_load(package):
    tasks = load_tasks(package.environment.__file__)
    assert tasks and all(isinstance(name, str) and isinstance(task, dict) for name, task in tasks.items())


def test_no_name_is_no_task_and_a_name_is_that_task():
    assert choose_task(TASKS, None, 3) is None
    assert choose_task(TASKS, "", 3) is None
    assert choose_task(TASKS, "primes", None) == "primes"
    assert choose_task(TASKS, "primes", 3) == "primes"  # a name wins over the seed


def test_random_picks_by_seed_reproducibly():
    picks = {seed: choose_task(TASKS, "random", seed) for seed in range(50)}
    assert set(picks.values()) == set(TASKS)  # every task can be drawn
    assert all(choose_task(TASKS, "random", seed) == pick for seed, pick in picks.items())
    assert choose_task(dict(reversed(TASKS.items())), "random", 7) == picks[7]  # the catalog's order does not matter


def test_an_unknown_task_is_a_bad_option_naming_the_known_ones():
    with pytest.raises(ValidationError) as caught:
        choose_task(TASKS, "quicksort", 0)
    error = caught.value
    assert error.code == ErrorCode.BAD_OPTIONS and error.path == "$.task"
    assert error.message == "unknown task 'quicksort' (known: fizzbuzz, primes, sort, random)"
