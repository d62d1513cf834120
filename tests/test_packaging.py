"""The package as a user installs it: a wheel built from this tree, in a virtual environment of its
own, in a project of the user's own. An editable checkout hides what this catches: how the agent
process finds our package, what the wheel ships."""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A venv holding our wheel; its other dependencies come from this environment's site-packages
    (added as a plain path: none of its .pth files, our editable install among them, take effect)."""
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("batteryml_tracking-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    return python


USER_TRACKING = '''\
"""The user's own object tracking (a common project layout)."""
print("the user's tracking package was imported")


def iou(a, b):
    return 0.0
'''

USER_SINK = '''\
import json, os, sys


class CountingSink:
    """The user's sink, in the user's own module: the agent must import it as this script does."""

    name = "counting"

    def open(self, run):
        self.run_dir, self.steps = run.run_dir, []

    def write(self, events):
        self.steps += [event[2] for event in events if event[0] == "metrics"]

    def flush(self):
        pass

    def close(self, status):
        import tracking
        seen = {"pid": os.getpid(), "steps": self.steps, "tracking": tracking.__file__,
                "pythonpath": os.environ.get("PYTHONPATH")}
        with open(os.path.join(self.run_dir, "counting.json"), "w") as fh:
            json.dump(seen, fh)
'''

USER_SCRIPT = '''\
import json, os, sys
from tracking import Tracker
from mysinks import CountingSink

tracker = Tracker(sinks=["json", CountingSink], base_dir="runs")
run_id = tracker.start_run("user")
for step in range(200):
    tracker.log_metric("loss", 1.0 / (step + 1), step=step)
report = tracker.end_run()
print(json.dumps({"run_id": run_id, "complete": report.complete, "placement": tracker.stats().placement,
                  "pid": os.getpid()}))
'''


def test_a_users_own_tracking_folder_changes_nothing_and_prints_nothing(wheel_env, tmp_path):
    project = tmp_path / "project"
    (project / "tracking").mkdir(parents=True)
    (project / "tracking" / "__init__.py").write_text(USER_TRACKING)
    (project / "scripts").mkdir()
    (project / "scripts" / "mysinks.py").write_text(USER_SINK)
    (project / "scripts" / "train.py").write_text(USER_SCRIPT)
    done = subprocess.run([str(wheel_env), "scripts/train.py"], cwd=project, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "user's tracking" not in done.stdout, done.stderr
    said = json.loads(done.stdout)
    assert said["complete"] and said["placement"] == {"json": "agent", "counting": "agent"}
    seen = json.load(open(project / "runs" / said["run_id"] / "counting.json"))
    assert seen["steps"] == list(range(200)) and seen["pid"] != said["pid"]
    assert "site-packages" in seen["tracking"] and seen["pythonpath"] is None


def test_the_readme_example_runs_from_the_wheel(wheel_env, tmp_path):
    example = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_example.py")], capture_output=True,
                             text=True, check=True).stdout  # what CI runs from a fresh venv too
    done = subprocess.run([str(wheel_env), "-c", example], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ended FINISHED: 22 events" in done.stdout, done.stdout  # 20 metrics events, an artifact, a tag
    (run_dir,) = (tmp_path / "artifacts" / "runs").iterdir()
    assert json.load(open(run_dir / "metrics.json")) == {"train_loss": 0.1, "val_rmse": 0.05, "val_mae": 0.04}
    assert (run_dir / "artifacts" / "model.pt").read_bytes() == b"weights"


def test_the_wheel_ships_its_types_license_and_one_version(wheel_env):
    check = textwrap.dedent("""
        import importlib.metadata as md, importlib.resources as res, json, tracking
        dist = md.distribution("batteryml-tracking")
        print(json.dumps({
            "typed": res.files("tracking").joinpath("py.typed").is_file(),
            "license": dist.metadata["License-Expression"],
            "version": [dist.version, tracking.__version__],
            "requires": [r for r in dist.requires if "extra" not in r],
        }))
    """)
    done = subprocess.run([str(wheel_env), "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["typed"] and info["license"] == "MIT" and info["version"][0] == info["version"][1]
    assert sorted(r.split(">")[0] for r in info["requires"]) == ["anyio", "orjson"]  # what it imports
