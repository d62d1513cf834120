"""The training loop: AdamW, cosine warm restarts, clipping, AMP, early stopping and tracking.

Runs on the caller's thread (one per rank under ``torch.distributed``). The loop hands values
to the tracker as 0-d tensors and never calls ``.item()`` for logging: a host sync per step
would stall a GPU, and the tracker converts on its own worker thread. Epoch metrics are summed
as tensors and turned into Python floats once per epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from trainer import distributed
from trainer.losses import LossConfig, build_loss
from trainer.sample import Sample

__all__ = ["HISTORY_KEYS", "Tracker", "Trainer", "TrainingConfig"]

_logger = logging.getLogger(__name__)

HISTORY_KEYS = ("train_loss", "val_loss", "lr", "train_rmse", "val_rmse", "train_mae", "val_mae")
BEST_MODEL_ARTIFACT = "best_model.pt"
_CHECKPOINT_FORMAT_VERSION = 1
# Index of each running sum in the per-epoch statistics vector; see _batch_stats.
_LOSS_SUM, _SQUARED_SUM, _ABS_SUM, _COUNT = range(4)


class Tracker(Protocol):
    """What the trainer needs from an experiment tracker (``tracking.*`` trackers fit)."""

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_artifact(self, local_path: str, artifact_name: str | None = None) -> None: ...

    def set_tag(self, key: str, value: Any) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Training hyper-parameters; see :meth:`from_config` for where they are read from.

    ``patience`` is in epochs (``None`` disables early stopping); ``scheduler_T0`` is the first
    cosine period in epochs; ``gradient_clip`` is the max global L2 norm (``None`` or 0: no
    clipping); ``checkpoint_dir`` is where ``best_model.pt`` goes (default: a temp dir, made
    only when a tracker needs the file).
    """

    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 100
    patience: int | None = 20
    scheduler_T0: int = 10
    gradient_clip: float | None = 1.0
    use_amp: bool = False
    log_every_n_steps: int = 1
    seed: int = 0
    checkpoint_dir: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> TrainingConfig:
        """Read fields from ``config["training"]`` when present, else from the flat ``config``.

        A flat config may also use dotted keys (``"training.learning_rate"``). ``seed`` falls
        back to the top-level ``config["seed"]``. Unknown keys in a ``training`` section are
        reported with a warning (they are probably typos); other flat keys are ignored.
        """
        config = dict(config or {})
        section = config.get("training")
        if section is not None and not isinstance(section, Mapping):
            raise TypeError(f"config['training'] must be a mapping, got {type(section).__name__}")
        section = dict(section or {})
        names = [field.name for field in dataclasses.fields(cls)]
        _warn_unknown(section, [*names, "loss"])
        values = {}
        for name in names:
            for source, key in ((section, name), (config, f"training.{name}"), (config, name)):
                if key in source:
                    values[name] = source[key]
                    break
        result = cls(**values)
        result._validate()
        return result

    def _validate(self) -> None:
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("scheduler_T0", self.scheduler_T0)
        _check_positive_int("log_every_n_steps", self.log_every_n_steps)
        if self.patience is not None:
            _check_positive_int("patience", self.patience)
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a number > 0, got {self.learning_rate!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        clip = self.gradient_clip
        if clip is not None and not (isinstance(clip, (int, float)) and clip >= 0):
            raise ValueError(f"gradient_clip must be a number >= 0 or None, got {clip!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")


def _warn_unknown(section: Mapping[str, Any], names: Sequence[str]) -> None:
    unknown = sorted(set(section) - set(names))
    if unknown:
        _logger.warning(
            "ignoring unknown training config keys %s; valid keys: %s", unknown, ", ".join(names)
        )


@dataclasses.dataclass(frozen=True)
class _TensorSet:
    """A list of samples collated into stacked tensors on one device."""

    x: torch.Tensor | dict[str, torch.Tensor]
    y: torch.Tensor
    mask: torch.Tensor | None

    def __len__(self) -> int:
        return self.y.shape[0]

    def take(self, index: torch.Tensor) -> _TensorSet:
        x = {k: v[index] for k, v in self.x.items()} if isinstance(self.x, dict) else self.x[index]
        mask = None if self.mask is None else self.mask[index]
        return _TensorSet(x, self.y[index], mask)


def _stack(values: Sequence[torch.Tensor], what: str) -> torch.Tensor:
    try:
        return torch.stack(list(values))
    except RuntimeError as error:
        shapes = sorted({tuple(v.shape) for v in values})
        raise ValueError(
            f"all samples' {what} must have the same shape to batch, got {shapes}"
        ) from error


def _stack_features(samples: Sequence[Sample]) -> torch.Tensor | dict[str, torch.Tensor]:
    first = samples[0].x
    if isinstance(first, Mapping):
        return {key: _stack([s.x[key] for s in samples], f"x[{key!r}]") for key in first}
    return _stack([s.x for s in samples], "x")


def _collate(samples: Sequence[Sample], device: torch.device, with_targets: bool = True) -> _TensorSet:
    if not samples:
        raise ValueError("need at least one sample, got an empty sequence")
    tensors = [sample.to_device(device) for sample in samples]
    x = _stack_features(tensors)
    if not with_targets:
        return _TensorSet(x, torch.empty(len(tensors), 0, device=device), None)
    has_mask = {s.mask is not None for s in tensors}
    if len(has_mask) > 1:
        raise ValueError("either every sample has a mask or none does; got a mix")
    mask = _stack([s.mask for s in tensors], "mask") if has_mask == {True} else None
    return _TensorSet(x, _stack([s.y for s in tensors], "y"), mask)


def _resolve_device(device: torch.device | str) -> torch.device:
    if str(device) != "auto":
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if distributed.is_distributed():
        return torch.device("cuda", distributed.local_rank())
    return torch.device("cuda")


def _show_progress(verbose: bool) -> bool:
    is_tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return (verbose or is_tty) and distributed.is_rank_zero()


class Trainer:
    """Fit a model on :class:`Sample` lists, log to a tracker, keep the best weights.

    The trainer never starts or ends tracker runs; the caller does. Under an initialised
    ``torch.distributed`` process group the model is wrapped in ``DistributedDataParallel``,
    batches are sharded by rank, epoch metrics are averaged over ranks (every rank returns the
    same history), and only rank 0 logs and writes checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Mapping[str, Any] | None = None,
        tracker: Tracker | None = None,
        device: torch.device | str = "auto",
        loss_config: LossConfig = None,
        verbose: bool = False,
    ) -> None:
        self.config = TrainingConfig.from_config(config)
        self.device = _resolve_device(device)
        self.model = model.to(self.device)
        self.tracker = tracker
        self.verbose = verbose
        self.loss_fn = build_loss(loss_config if loss_config is not None else _loss_from_config(config))
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=self.config.scheduler_T0
        )
        self._use_amp = self._amp_enabled()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._use_amp)
        self._train_module = self._wrap_for_distributed(self.model)
        self.global_step = 0
        self.current_epoch = 0
        self.best_epoch: int | None = None
        self.best_val_loss = math.inf
        self.best_checkpoint_path: str | None = None

    def _amp_enabled(self) -> bool:
        if self.config.use_amp and self.device.type != "cuda":
            _logger.warning(
                "use_amp=True ignored: mixed precision is only used on CUDA, device is %s",
                self.device,
            )
        return self.config.use_amp and self.device.type == "cuda"

    def _wrap_for_distributed(self, model: nn.Module) -> nn.Module:
        if not distributed.is_distributed():
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        epochs: int | None = None,
        patience: int | None = None,
    ) -> dict[str, list[float]]:
        """Train, validating after every epoch; return the history (one list per metric).

        ``epochs`` and ``patience`` override the config for this call. Training stops after
        ``patience`` epochs without a lower ``val_loss``; the best weights are restored either way.
        Epochs are numbered across calls, and metrics are logged with ``step=epoch``.
        """
        epochs = self.config.epochs if epochs is None else epochs
        patience = self.config.patience if patience is None else patience
        _check_positive_int("epochs", epochs)
        if patience is not None:
            _check_positive_int("patience", patience)
        train = _collate(train_samples, self.device)
        val = _collate(val_samples, self.device)
        history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        best_state = self._snapshot()
        stale_epochs = 0
        show = _show_progress(self.verbose)
        first_epoch = self.current_epoch
        with tqdm(total=epochs, desc="epochs", unit="epoch", disable=not show) as bar:
            for epoch in range(first_epoch, first_epoch + epochs):
                metrics = self._run_epoch(train, val, epoch, show)
                self.current_epoch = epoch + 1
                for key in HISTORY_KEYS:
                    history[key].append(metrics[key])
                self._log_epoch(metrics, epoch)
                bar.update(1)
                bar.set_postfix(
                    train_loss=f"{metrics['train_loss']:.4g}", val_loss=f"{metrics['val_loss']:.4g}"
                )
                if metrics["val_loss"] < self.best_val_loss:
                    self.best_val_loss, self.best_epoch, stale_epochs = metrics["val_loss"], epoch, 0
                    best_state = self._snapshot()
                    self._write_checkpoint(best_state)
                else:
                    stale_epochs += 1
                if patience is not None and stale_epochs >= patience:
                    _logger.info("early stopping after epoch %d; best epoch %s", epoch, self.best_epoch)
                    break
        self.model.load_state_dict(best_state)
        self._log_best_artifact()
        return history

    def _run_epoch(
        self, train: _TensorSet, val: _TensorSet, epoch: int, show: bool
    ) -> dict[str, float]:
        lr = self.optimizer.param_groups[0]["lr"]
        train_stats = self._train_epoch(train, epoch, show)
        val_stats = self._evaluate_stats(val)
        self.scheduler.step()
        # One all-reduce and one host sync per epoch. Averaging the *sums* and the count over
        # ranks leaves their ratios exact, so RMSE/MAE equal those of the whole data set.
        stats = distributed.all_reduce_mean(torch.stack([train_stats, val_stats])).tolist()
        return {
            "lr": float(lr),
            **_metrics_from_stats("train", stats[0]),
            **_metrics_from_stats("val", stats[1]),
        }

    def _train_epoch(self, data: _TensorSet, epoch: int, show: bool) -> torch.Tensor:
        self._train_module.train()
        order = distributed.shard_indices(len(data), shuffle=True, seed=self.config.seed, epoch=epoch)
        order = order.to(self.device)
        starts = range(0, len(order), self.config.batch_size)
        stats = torch.zeros(4, device=self.device)
        bar = tqdm(total=len(starts), desc=f"epoch {epoch}", unit="step", leave=False, disable=not show)
        with bar:
            for start in starts:
                batch = data.take(order[start : start + self.config.batch_size])
                stats += self._train_step(batch)
                # No loss in the postfix: reading it would force a device sync every step.
                bar.update(1)
        return stats

    def _train_step(self, batch: _TensorSet) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, enabled=self._use_amp):
            prediction = self._train_module(batch.x)
        _check_prediction_shape(prediction, batch.y)
        elementwise = self.loss_fn(prediction.float(), batch.y)
        loss = _masked_mean(elementwise, batch.mask)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.gradient_clip or math.inf  # inf: measure the norm, clip nothing
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._log_step(loss.detach(), grad_norm.detach())
        self.global_step += 1
        return _batch_stats(elementwise.detach(), prediction.detach().float(), batch)

    def _log_step(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        if self.tracker is None or not distributed.is_rank_zero():
            return
        if self.global_step % self.config.log_every_n_steps == 0:
            self.tracker.log_metrics(
                {"train/loss": loss, "train/grad_norm": grad_norm}, step=self.global_step
            )

    def _log_epoch(self, metrics: Mapping[str, float], epoch: int) -> None:
        _logger.debug("epoch %d: %s", epoch, metrics)
        if self.tracker is not None and distributed.is_rank_zero():
            self.tracker.log_metrics(dict(metrics), step=epoch)

    # ------------------------------------------------------------ evaluate

    @torch.no_grad()
    def _evaluate_stats(self, data: _TensorSet) -> torch.Tensor:
        # Evaluate the bare module: every rank holds the same weights, and going through DDP
        # here would add buffer broadcasts that the shards do not need.
        self.model.eval()
        order = distributed.shard_indices(len(data), shuffle=False, pad=False).to(self.device)
        stats = torch.zeros(4, device=self.device)
        for start in range(0, len(order), self.config.batch_size):
            batch = data.take(order[start : start + self.config.batch_size])
            with torch.autocast(device_type=self.device.type, enabled=self._use_amp):
                prediction = self.model(batch.x)
            _check_prediction_shape(prediction, batch.y)
            prediction = prediction.float()
            stats += _batch_stats(self.loss_fn(prediction, batch.y), prediction, batch)
        return stats

    def evaluate(self, samples: Sequence[Sample]) -> dict[str, float]:
        """Return ``{"loss", "rmse", "mae"}`` of the current model on ``samples`` (all ranks)."""
        stats = distributed.all_reduce_mean(self._evaluate_stats(_collate(samples, self.device)))
        metrics = _metrics_from_stats("eval", stats.tolist())
        return {key.removeprefix("eval_"): value for key, value in metrics.items()}

    @torch.no_grad()
    def predict(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return the model's predictions for ``samples`` as a float32 array ``(n, *y_shape)``."""
        data = _collate(samples, self.device, with_targets=False)
        self.model.eval()
        outputs = []
        for start in range(0, len(data), self.config.batch_size):
            batch = data.take(torch.arange(start, min(start + self.config.batch_size, len(data))))
            with torch.autocast(device_type=self.device.type, enabled=self._use_amp):
                outputs.append(self.model(batch.x).float())
        return torch.cat(outputs).cpu().numpy()

    # ---------------------------------------------------------- checkpoints

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def _checkpoint_path(self) -> str | None:
        if self.best_checkpoint_path is not None:
            return self.best_checkpoint_path
        directory = self.config.checkpoint_dir
        if directory is None and self.tracker is None:
            return None  # nobody would read the file; the best weights stay in memory
        if directory is None:
            # Kept after fit: an asynchronous tracker may copy the file later, on its own thread.
            directory = tempfile.mkdtemp(prefix="trainer-ckpt-")
        os.makedirs(directory, exist_ok=True)
        self.best_checkpoint_path = os.path.join(directory, BEST_MODEL_ARTIFACT)
        return self.best_checkpoint_path

    def _write_checkpoint(self, state: Mapping[str, torch.Tensor]) -> None:
        if not distributed.is_rank_zero():
            return
        path = self._checkpoint_path()
        if path is not None:
            torch.save(dict(state), path)

    def _log_best_artifact(self) -> None:
        if self.tracker is None or self.best_checkpoint_path is None or not distributed.is_rank_zero():
            return
        self.tracker.log_artifact(self.best_checkpoint_path, BEST_MODEL_ARTIFACT)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save the model weights and the training config to ``path`` (rank 0 only under DDP)."""
        if not distributed.is_rank_zero():
            return
        payload = {
            "format_version": _CHECKPOINT_FORMAT_VERSION,
            "model_state": self.model.state_dict(),
            "training_config": dataclasses.asdict(self.config),
        }
        torch.save(payload, os.fspath(path))

    def load(self, path: str | os.PathLike[str]) -> Trainer:
        """Load weights saved by :meth:`save`, or a bare state dict such as ``best_model.pt``."""
        payload = torch.load(os.fspath(path), map_location=self.device, weights_only=True)
        if not isinstance(payload, Mapping):
            raise ValueError(
                f"{os.fspath(path)!r} holds a {type(payload).__name__}, not a checkpoint dict"
            )
        if "model_state" in payload:
            version = payload.get("format_version")
            if version != _CHECKPOINT_FORMAT_VERSION:
                raise ValueError(
                    f"checkpoint format_version {version!r} is not supported; "
                    f"expected {_CHECKPOINT_FORMAT_VERSION}"
                )
            payload = payload["model_state"]
        self.model.load_state_dict(payload)
        return self


def _loss_from_config(config: Mapping[str, Any] | None) -> LossConfig:
    """Return ``config["loss"]``, else ``config["training"]["loss"]``, else None (mse)."""
    if not config:
        return None
    if "loss" in config:
        return config["loss"]
    section = config.get("training")
    return section.get("loss") if isinstance(section, Mapping) else None


def _check_prediction_shape(prediction: torch.Tensor, target: torch.Tensor) -> None:
    # Shapes are known on the host, so this costs no device sync; without it a (n, 1)
    # prediction against an (n,) target would broadcast to (n, n) and train on nonsense.
    if prediction.shape != target.shape:
        raise ValueError(
            f"model output shape {tuple(prediction.shape)} does not match target shape "
            f"{tuple(target.shape)}; make the model's output_dim match the samples' y"
        )


def _masked_mean(elementwise: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return elementwise.mean()
    weights = mask.to(elementwise.dtype)
    return (elementwise * weights).sum() / weights.sum().clamp_min(1.0)


def _batch_stats(
    elementwise: torch.Tensor, prediction: torch.Tensor, batch: _TensorSet
) -> torch.Tensor:
    """Return ``[loss sum, squared-error sum, absolute-error sum, element count]`` of a batch."""
    with torch.no_grad():
        error = prediction - batch.y
        weights = torch.ones_like(error) if batch.mask is None else batch.mask.to(error.dtype)
        return torch.stack(
            [
                (elementwise * weights).sum(),
                (error.square() * weights).sum(),
                (error.abs() * weights).sum(),
                weights.sum(),
            ]
        )


def _metrics_from_stats(prefix: str, stats: Sequence[float]) -> dict[str, float]:
    count = stats[_COUNT]
    if count <= 0:
        return {f"{prefix}_loss": math.nan, f"{prefix}_rmse": math.nan, f"{prefix}_mae": math.nan}
    return {
        f"{prefix}_loss": stats[_LOSS_SUM] / count,
        f"{prefix}_rmse": math.sqrt(stats[_SQUARED_SUM] / count),
        f"{prefix}_mae": stats[_ABS_SUM] / count,
    }
