"""Runtimes: how a batch of model inputs becomes logits, chosen per archive (fp32, bf16 or int8).

Measured on this project's 2-core Zen 4 CPU (docs/benchmark.md, section 1), OpenVINO's CPU
plugin was the fastest engine in every mode and compiles a stored model in a fraction of a second,
so all three modes run on it from an IR that ``make mar`` builds and packs in the archive:

* ``fp32``: the checkpoint's float32 graph, executed in float32 (the reference);
* ``bf16``: the same graph, executed in bfloat16 (needs the CPU's BF16 instructions);
* ``int8``: post-training quantized with NNCF on calibration images; what stays in float runs in
  float32 (as fast here as bfloat16, and closer to the reference).

Torch eager is the fallback when OpenVINO cannot be imported, and the runtime of the training and
evaluation scripts. Each runtime takes a float32 NCHW batch and returns float32 (N, 2) logits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import warnings
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from handler.settings import PRECISIONS

logger = logging.getLogger(__name__)

MORE_EXACT = {"int8": "bf16", "bf16": "fp32"}  # the fallback chain, nearest mode first
REQUIRED_CAPABILITY = {"bf16": "BF16", "int8": "INT8"}  # names in OpenVINO's OPTIMIZATION_CAPABILITIES
IR_FILES = {"fp32": "model_fp32.xml", "bf16": "model_fp32.xml", "int8": "model_int8.xml"}
INFERENCE_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


@dataclass(frozen=True)
class RuntimeInfo:
    """What really runs, for ``describe`` and the worker log."""

    engine: str  # "openvino" or "torch"
    precision: str  # the mode that runs
    requested: str  # the mode the archive asked for
    fallback: str | None = None  # why ``precision`` differs from ``requested``
    device: str = "cpu"  # where it runs: "cpu", or "cuda:<gpu_id>"
    agreement: dict[str, Any] | None = None  # half precision on a GPU: how it agreed with fp32 at worker start

    def to_mapping(self) -> dict[str, Any]:
        mapping = asdict(self)
        if mapping["agreement"] is None:  # only a checked GPU runtime has one
            del mapping["agreement"]
        return mapping


class Runtime(Protocol):
    info: RuntimeInfo

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRuntime:
    """Eager PyTorch in float32, channels-last (the reference, and the fallback)."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", info: RuntimeInfo | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        self.info = info or RuntimeInfo("torch", "fp32", "fp32")

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        tensor = torch.as_tensor(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model(tensor).float().cpu().numpy()


@functools.cache
def openvino_core() -> Any:
    """One OpenVINO Core per process: it holds the plugins and their caches."""
    import openvino as ov

    return ov.Core()


class OpenVINORuntime:
    """A model compiled by OpenVINO's CPU plugin at the precision its mode needs."""

    def __init__(self, model: Any, info: RuntimeInfo):
        config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION_HINT[info.precision], "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = openvino_core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.info = info

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(result[0], dtype=np.float32)  # a copy: the request reuses its output buffer


def to_openvino(model: torch.nn.Module, image_size: int) -> Any:
    """Convert an eval-mode torch model to an OpenVINO model with a dynamic batch dimension."""
    import openvino as ov

    example = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)  # OpenVINO traces
        return ov.convert_model(model, example_input=example, input=[(-1, 3, image_size, image_size)])


def save_openvino(model: Any, path: Path) -> Path:
    """Write ``path`` (.xml) and its .bin, weights kept in float32 (OpenVINO compresses to f16 by default)."""
    import openvino as ov

    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def cpu_capabilities() -> set[str]:
    """OpenVINO's view of the CPU: {"FP32", "BF16", "INT8", ...}; empty without OpenVINO."""
    try:
        core = openvino_core()
    except ImportError:
        return set()
    return set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def available_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 quota (a container's CPU
    limit, e.g. the KServe manifest's 2 CPUs on a larger node)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def share_cores(workers: int, cores: int | None = None) -> int | None:
    """Split the cores between an archive's ``workers``: each worker's torch (the face detector, the
    eager runtime) and OpenVINO then use ``cores // workers`` threads instead of all of them, so that
    the workers run side by side instead of oversubscribing the CPU. OpenVINO's thread pinning is
    turned off then: with a thread count set, its CPU plugin pins each process's inference threads
    from the first core on, so every worker's ran on core 0 (two 1-thread workers: half the rate each,
    measured in tests/test_runtimes.py). One worker keeps the engines' own defaults. The split follows
    the archive's ``minWorkers``, read once at worker start: workers added later through the
    management API do not re-split it. Returns the threads per worker (None: left as is)."""
    if workers <= 1:
        return None
    threads = max(1, (cores or available_cores()) // workers)
    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):  # no OpenVINO: torch eager is the runtime
        openvino_core().set_property("CPU", {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})
    return threads


def plan_precision(requested: str, capabilities: Collection[str]) -> tuple[str, str | None]:
    """The nearest mode at or above ``requested`` in exactness that this CPU supports, and why."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    precision, reasons = requested, []
    while (needed := REQUIRED_CAPABILITY.get(precision)) and needed not in capabilities:
        reasons.append(f"{precision} needs the CPU capability {needed}, which this CPU lacks")
        precision = MORE_EXACT[precision]
    return precision, "; ".join(reasons) or None


# --- the GPU ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Accelerator:
    """What a worker was given and what it can use: TorchServe's ``gpu_id`` (None without GPUs in its
    config), whether CUDA works here, and whether that GPU computes in bfloat16."""

    gpu_id: int | None
    cuda_available: bool
    bf16_supported: bool = False

    @classmethod
    def detect(cls, gpu_id: int | str | None) -> Accelerator:
        available = gpu_id is not None and torch.cuda.is_available() and int(gpu_id) < torch.cuda.device_count()
        bf16 = bool(available and torch.cuda.is_bf16_supported())
        return cls(None if gpu_id is None else int(gpu_id), bool(available), bf16)


GPU_PRECISION = {"fp32": "fp32", "bf16": "bf16", "int8": "fp16"}  # on a GPU, int8's place goes to fp16
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def plan_gpu(requested: str, accelerator: Accelerator | None) -> tuple[str, str | None] | None:
    """(precision, why it differs from ``requested``) for the GPU this worker was given, or None to stay
    on the CPU (no ``gpu_id``, or no working CUDA: said in the worker's log)."""
    if accelerator is None or accelerator.gpu_id is None:
        return None
    if not accelerator.cuda_available:
        logger.warning("gpu_id %s given but CUDA is not available here: running on the CPU", accelerator.gpu_id)
        return None
    precision = GPU_PRECISION[requested]
    reasons = []
    if requested == "int8":
        reasons.append("int8 is a CPU mode (OpenVINO); on the GPU fp16 runs instead")
    if precision == "bf16" and not accelerator.bf16_supported:
        precision = "fp16"
        reasons.append("this GPU has no bfloat16: fp16 instead")
    return precision, "; ".join(reasons) or None


class CudaRuntime:
    """Torch on a GPU: channels-last, half precision by autocast (fp16/bf16) or fp32, cuDNN autotuning,
    inputs copied from pinned host memory without blocking. Also runs on ``cpu`` (bf16 autocast), which
    is how CPU-only machines test it."""

    def __init__(self, model: torch.nn.Module, device: str, precision: str, info: RuntimeInfo):
        self.device = torch.device(device)
        self.dtype = AUTOCAST_DTYPES[precision]
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the batch sizes are few and warmed up: autotune them
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        self.info = info

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits for a host batch, or for one already on this device (frames decoded there: decode_frames)."""
        if isinstance(batch, torch.Tensor) and batch.device == self.device:
            tensor = batch.contiguous(memory_format=torch.channels_last)
        else:
            host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            if self.device.type == "cuda":
                host = host.pin_memory()
            tensor = host.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(tensor)
        return logits.float().cpu().numpy()


def load_runtime(
    model_dir: Path,
    requested: str,
    torch_model: Callable[[], torch.nn.Module],
    image_size: int,
    capabilities: Collection[str] | None = None,
    accelerator: Accelerator | None = None,
) -> Runtime:
    """The runtime for an unpacked archive: on the GPU the worker was given (``accelerator``) torch in half
    precision; else its packed IR for the mode this CPU can run.

    ``torch_model`` loads the checkpoint (the source of truth); on the CPU it is called only on a fallback.
    """
    gpu = plan_gpu(requested, accelerator)
    if gpu is not None and accelerator is not None:
        precision, reason = gpu
        device = f"cuda:{accelerator.gpu_id}"
        info = RuntimeInfo("torch-cuda", precision, requested, reason, device)
        logger.info("Running on %s in %s%s", device, precision, f" ({reason})" if reason else "")
        return CudaRuntime(torch_model(), device, precision, info)
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        reason = f"OpenVINO cannot be imported ({exc}); running torch eager fp32"
        logger.warning(reason)
        return TorchRuntime(torch_model(), info=RuntimeInfo("torch", "fp32", requested, reason))
    caps = cpu_capabilities() if capabilities is None else set(capabilities)
    precision, reason = plan_precision(requested, caps)
    if reason:
        logger.warning("Falling back from %s to %s: %s", requested, precision, reason)
    ir = Path(model_dir) / IR_FILES[precision]
    if ir.is_file():
        model = openvino_core().read_model(str(ir))
    else:  # a fallback to a mode whose IR the archive does not carry: convert the checkpoint now
        logger.warning("%s not in the archive: converting the checkpoint at start-up", ir.name)
        model = to_openvino(torch_model(), image_size)
    return OpenVINORuntime(model, RuntimeInfo("openvino", precision, requested, reason))
