"""Models: what `log_model` keeps of a torch model, saved on the caller's thread.

Runs on the caller's thread, inside `Tracker.log_model`: what is logged is the model as it is at
the call (the loop goes on training it right after), so it is serialised before the call returns,
into a folder of the run's `artifacts/` that nothing changes afterwards. The journal holds only that
folder's path (a MODEL event); the delivery agent sends the folder on: the MLflow sink as the MLflow
run's artifacts at `artifact_path`, and a new registry version when a name is given.

What the folder holds:

- mlflow installed: an MLflow Model written by `mlflow.pytorch.save_model`, loadable with
  `mlflow.pytorch.load_model(folder)` and, once delivered, `runs:/<mlflow run id>/<artifact_path>`.
  The format is "pickle" (cloudpickle: a model class defined in `__main__` travels by value) unless
  an `input_example` is given, then "pt2" (`torch.export`). MLflow 3 defaults to "pt2", which
  refuses a model without an example. The pip requirements are the flavor's defaults, not inferred:
  inference loads the model again in a subprocess, seconds on the caller's thread.
- no mlflow: `model.pth` (`torch.save` of the whole model, with cloudpickle where it is installed)
  and `state_dict.pth`, which `torch.load` reads back.

A second model logged at the same `artifact_path` in one run goes to `{artifact_path}-2` (then -3,
...): a registered version must keep pointing at the model it was made from.
"""
from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import InvalidModelError, InvalidNameError
from ..core.names import check_text

__all__ = ["ModelInfo", "check_model", "check_registered_model_name", "save_model_folder", "model_folder_above", "PICKLE", "PT2", "TORCH_SAVE"]

_logger = logging.getLogger(__name__)

#: the formats a saved model can have (`ModelInfo.serialization_format`)
PICKLE, PT2, TORCH_SAVE = "pickle", "pt2", "torch.save"
#: the most folders tried for one artifact_path (`model`, `model-2`, ...)
_MAX_SUFFIX = 10_000
#: what a saved model's folder holds (an MLflow Model's MLmodel; `torch.save`'s pair)
_MARKERS = ("MLmodel", "state_dict.pth")
#: two log_model calls of this process never pick one folder (os.rename takes an empty one)
_placing = threading.Lock()


@dataclass(frozen=True)
class ModelInfo:
    """What `log_model` returns: where the model is, now and once delivered.

    local_path: the saved folder inside the run's `artifacts/`; loadable at once.
    artifact_path: where the model is under the run's artifacts (here and in MLflow).
    registered_model_name: the registry name a version is created under, or None.
    serialization_format: "pickle", "pt2" (an MLflow Model) or "torch.save" (no mlflow installed).
    model_uri: see below.
    """

    local_path: Path
    artifact_path: str
    registered_model_name: str | None
    serialization_format: str
    #: gives the MLflow run's id, waiting for it (None: the tracker does not send to MLflow)
    mlflow_run_id: InitVar[Callable[[], str] | None] = None

    def __post_init__(self, mlflow_run_id: Callable[[], str] | None) -> None:
        object.__setattr__(self, "_mlflow_run_id", mlflow_run_id)  # not a field: not in repr, ==, asdict

    @functools.cached_property
    def model_uri(self) -> str:
        """What `mlflow.pytorch.load_model` takes: `runs:/<MLflow run id>/<artifact_path>` on a
        tracker that sends to MLflow, else the local folder; the same whenever it is read.

        The MLflow run is made by the delivery agent shortly after `start_run`: the first read
        waits for it (at most the tracker's `flush_timeout_s`) and raises `RunIdPendingError`
        if MLflow has no run by then (read it again later)."""
        if self._mlflow_run_id is None:
            return str(self.local_path)
        return f"runs:/{self._mlflow_run_id()}/{self.artifact_path}"


def check_model(model: Any) -> None:
    """Raise InvalidModelError unless `model` is a `torch.nn.Module`."""
    torch = _import_torch()
    if not isinstance(model, torch.nn.Module):
        raise InvalidModelError(
            f"log_model: model must be a torch.nn.Module, got {type(model).__name__}; "
            "log other files with log_artifact()"
        )


def check_registered_model_name(name: Any) -> str | None:
    """`name` if MLflow's model registry can hold it (or None); raises InvalidNameError otherwise."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError(f"registered_model_name must be a non-empty str or None, got {name!r}")
    check_text(name, "registered_model_name")
    if "/" in name or ":" in name:
        raise InvalidNameError(f"registered_model_name must not contain '/' or ':' (MLflow's model "
                               f"registry refuses them), got {name!r}")
    return name


def model_folder_above(artifacts_dir: Path, name: str) -> str | None:
    """The artifact path of a saved model that `name` would fall inside, if there is one."""
    parts = name.replace("\\", "/").split("/")
    for depth in range(1, len(parts)):
        above = "/".join(parts[:depth])
        if any((artifacts_dir / above / marker).is_file() for marker in _MARKERS):
            return above
    return None


def save_model_folder(model: Any, artifacts_dir: Path, artifact_path: str,
                      input_example: Any = None) -> tuple[str, Path, str]:
    """Save `model` under `artifacts_dir`; returns (artifact_path used, its folder, format).

    The folder appears whole or not at all: the model is written to a temporary folder beside it,
    then renamed into place. A saved model is never written into: an `artifact_path` inside
    another model's folder raises InvalidNameError.
    """
    _refuse_inside_a_model(artifacts_dir, artifact_path)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", suffix=".partial", dir=artifacts_dir))
    try:
        content = staging / "m"
        mlflow_pytorch = _import_mlflow_pytorch()
        if mlflow_pytorch is not None:
            fmt = _save_mlflow_model(mlflow_pytorch, model, content, input_example)
        else:
            fmt = _save_torch(model, content, input_example)
        with _placing:
            _refuse_inside_a_model(artifacts_dir, artifact_path)
            used, folder = _move_into_place(content, artifacts_dir, artifact_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return used, folder, fmt


def _refuse_inside_a_model(artifacts_dir: Path, artifact_path: str) -> None:
    above = model_folder_above(artifacts_dir, artifact_path)
    if above is not None:
        raise InvalidNameError(f"log_model: artifact_path {artifact_path!r} is inside the model logged at "
                               f"{above!r}; use a path beside it (e.g. {above + '-best'!r})")


def _import_mlflow_pytorch() -> Any:
    try:
        import mlflow.pytorch
    except ImportError:
        return None
    return mlflow.pytorch


def _save_mlflow_model(mlflow_pytorch: Any, model: Any, folder: Path, input_example: Any) -> str:
    kwargs: dict[str, Any] = {"pip_requirements": mlflow_pytorch.get_default_pip_requirements()}
    fmt = PICKLE
    if "serialization_format" in inspect.signature(mlflow_pytorch.save_model).parameters:  # MLflow >= 3
        fmt = PT2 if input_example is not None else PICKLE
        kwargs["serialization_format"] = fmt
    if input_example is not None:
        kwargs["input_example"] = _as_numpy(input_example)
    try:
        mlflow_pytorch.save_model(model, str(folder), **kwargs)
    except Exception as exc:
        raise InvalidModelError(_cannot_save(model, fmt, exc)) from exc
    return fmt


def _save_torch(model: Any, folder: Path, input_example: Any) -> str:
    torch = _import_torch()
    if input_example is not None:
        _logger.warning("log_model: input_example is kept only in an MLflow Model "
                        "(pip install mlflow); it is ignored here")
    try:
        import cloudpickle as pickle_module
    except ImportError:
        pickle_module = None
    folder.mkdir()
    try:
        if pickle_module is not None:
            torch.save(model, folder / "model.pth", pickle_module=pickle_module)
        else:
            torch.save(model, folder / "model.pth")
        torch.save(model.state_dict(), folder / "state_dict.pth")
    except Exception as exc:
        raise InvalidModelError(_cannot_save(model, TORCH_SAVE, exc)) from exc
    return TORCH_SAVE


def _as_numpy(example: Any) -> Any:
    """A tensor example as the numpy array MLflow's pt2 signature takes (a tensor example fails there)."""
    torch = _import_torch()
    if isinstance(example, torch.Tensor):
        return example.detach().cpu().numpy()
    if isinstance(example, (tuple, list)):
        return type(example)(_as_numpy(item) for item in example)
    if isinstance(example, dict):
        return {key: _as_numpy(value) for key, value in example.items()}
    return example


def _move_into_place(content: Path, artifacts_dir: Path, artifact_path: str) -> tuple[str, Path]:
    """Rename `content` to `artifacts_dir/artifact_path`, or the first `-N` variant that is free."""
    for index in range(1, _MAX_SUFFIX):
        used = artifact_path if index == 1 else f"{artifact_path}-{index}"
        folder = artifacts_dir / used
        if folder.exists():
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(content, folder)  # fails if another thread took the name meanwhile
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        return used, folder
    raise InvalidModelError(f"log_model: {_MAX_SUFFIX} models are logged at artifact_path "
                            f"{artifact_path!r} already; use another artifact_path")


def _cannot_save(model: Any, fmt: str, exc: Exception) -> str:
    name = type(model).__name__
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    if fmt == PT2 and any(p.device.type != "cpu" for p in model.parameters()):
        hint = ("MLflow exports the pt2 format with the input_example on the CPU: log a CPU copy of "
                "the model (copy.deepcopy(model).cpu()), or call log_model without an input_example")
    elif fmt == PT2:
        hint = ("MLflow's pt2 format (torch.export) could not save it with that input_example; pass "
                "what forward() takes as a tensor or numpy array, or call log_model without one to pickle it")
    else:
        hint = ("something it holds can't be pickled (an open file, a lock, a generator); log its "
                "state_dict with torch.save and log_artifact instead")
    return f"log_model: could not save the {name} model as {fmt!r} ({reason}); {hint}"


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise InvalidModelError("log_model needs torch: pip install 'batteryml-tracking[torch]'") from None
    return torch
