"""Scalars on an accelerator, logged without waiting for the device.

`DeviceScalar` is built on the caller's thread (a log call given a tensor that is not on the CPU)
and read on the writer thread (`tracking.recorder.batch`), which is the one that may wait.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DeviceScalar"]


class DeviceScalar:
    """A copy of a scalar tensor on an accelerator, read on the writer thread: the caller never
    waits for the device.

    CUDA: an asynchronous copy into pinned host memory, queued on the tensor's current stream, with
    an event recorded after it; `read()` waits on that event. Any other device (MPS, XLA, ...): a
    copy on the device, queued there like any other operation (so a later in-place change to the
    tensor does not reach it); `read()` takes its value with `.item()`, which waits for the device
    on the writer thread.
    """

    __slots__ = ("_copy", "_done")

    def __init__(self, tensor: Any) -> None:
        if tensor.is_cuda:
            import torch

            self._copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._copy.copy_(tensor.detach(), non_blocking=True)
            self._done = torch.cuda.Event()
            self._done.record(torch.cuda.current_stream(tensor.device))
        else:
            self._copy = tensor.detach().clone()
            self._done = None

    def read(self) -> float:
        if self._done is not None:
            self._done.synchronize()
        return float(self._copy.reshape(()).item())
