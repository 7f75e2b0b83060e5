"""A training run's process skips the collector's last passes at exit, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXITING = """
import atexit, sys, weakref
from pathlib import Path
from ct_platform.defs.training.assets import skip_final_collection_at_exit

out = Path(sys.argv[1])
skip_final_collection_at_exit()
skip_final_collection_at_exit()  # a second run in the same process

class Held:
    pass

held = Held()
weakref.finalize(held, (out / "finalized").write_text, "finalizer ran")
atexit.register((out / "atexit").write_text, "atexit ran")
unclosed = open(out / "unclosed", "w")  # buffered, never closed: flushed when freed
unclosed.write("x" * 100)
print("stdout flushed at exit", end="")
"""


def test_skipping_final_collection_keeps_every_other_exit_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITING, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stdout flushed at exit"
    assert (tmp_path / "finalized").read_text() == "finalizer ran"
    assert (tmp_path / "atexit").read_text() == "atexit ran"
    assert (tmp_path / "unclosed").read_text() == "x" * 100


LESS_OFTEN = """
import gc, weakref
from ct_platform.defs.training.assets import collect_whole_heap_less_often

young, middle, _ = gc.get_threshold()
collect_whole_heap_less_often()
collect_whole_heap_less_often()  # a second run in the same process
assert gc.get_threshold() == (young, middle, 100), gc.get_threshold()
gc.set_threshold(young, middle, 500)
collect_whole_heap_less_often()
assert gc.get_threshold() == (young, middle, 500), "a higher setting is kept"

class Node:
    pass

freed = []
first, second = Node(), Node()
first.other, second.other = second, first
weakref.finalize(first, freed.append, "cycle freed")
del first, second
allocated = [[] for _ in range(30 * young)]  # the young passes run as containers are made
print(freed, end="")
"""


def test_full_collections_are_rarer_and_cyclic_garbage_is_still_freed() -> None:
    done = subprocess.run([sys.executable, "-c", LESS_OFTEN], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['cycle freed']"


SKOPS_FIRST = """
import sys
import dagster
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.training.assets import model_registry
from ct_platform.settings import load_spec

assert "mlflow" not in sys.modules and "skops.io" not in sys.modules
registry = model_registry(MlflowResource(), load_spec())
assert registry.versions() == []  # a working registry on its fresh store
order = list(sys.modules)
print(order.index("skops.io") < order.index("mlflow"), end="")
"""


def test_model_steps_import_skops_before_mlflow(spec_file: Path, ct_home: Path) -> None:
    # In import order: skops's own import then searches Dagster's modules, not MLflow's.
    done = subprocess.run([sys.executable, "-c", SKOPS_FIRST], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True"
