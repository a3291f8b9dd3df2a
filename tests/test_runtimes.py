"""Runtimes and precision modes in-process: fallbacks, agreement checks, faithfulness to torch fp32."""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from handler.calibration import CHECK_FOLDER
from handler.checkpoint import load_model
from handler.preprocessing import decode_frames, decode_image, to_model_input
from handler.runtimes import (
    Accelerator,
    CudaRuntime,
    OpenVINORuntime,
    RuntimeInfo,
    TorchRuntime,
    available_cores,
    cpu_capabilities,
    load_runtime,
    openvino_core,
    plan_gpu,
    plan_precision,
    share_cores,
    to_openvino,
)
from handler.service import DetectorService, checked_half_precision
from handler.settings import HALF_MEAN, HALF_STD, ModelSettings
from scripts.operations.precision import (
    MIN_LABEL_AGREEMENT,
    build_runtime,
    check_folder,
    image_sets,
    own_demo_images,
)
from tests.conftest import REPO_ROOT, constant_checkpoint, frame_bytes, image_bytes, needs_bf16, random_checkpoint

TIER = "unit"

SETTINGS = ModelSettings(mean=HALF_MEAN, std=HALF_STD)


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 distinct small images: enough for a quick int8 calibration and a held-out third."""
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(30):
        (folder / f"{i:02d}.jpg").write_bytes(image_bytes(((i * 37) % 256, (i * 91) % 256, (i * 53) % 256), (72, 56)))
    return folder


@pytest.fixture(scope="module")
def r18() -> torch.nn.Module:
    return load_model(random_checkpoint("resnet18", 3))[0]


def test_plan_precision_falls_back_to_the_nearest_mode_the_cpu_runs():
    every = {"FP32", "BF16", "INT8"}
    assert plan_precision("int8", every) == ("int8", None)
    assert plan_precision("bf16", every) == ("bf16", None)
    precision, reason = plan_precision("bf16", {"FP32", "INT8"})
    assert precision == "fp32" and "BF16" in reason
    precision, reason = plan_precision("int8", {"FP32", "BF16"})
    assert precision == "bf16" and "INT8" in reason
    precision, reason = plan_precision("int8", {"FP32"})
    assert precision == "fp32" and "INT8" in reason and "BF16" in reason
    with pytest.raises(ValueError, match="fp16"):
        plan_precision("fp16", every)


@pytest.mark.slow  # packages the model for OpenVINO
def test_openvino_fp32_is_the_checkpoints_own_arithmetic(r18: torch.nn.Module):
    batch = torch.stack(
        [DetectorService(TorchRuntime(r18), SETTINGS).decode(image_bytes((i * 40, 90, 30))) for i in range(5)]
    )
    with torch.inference_mode():
        expected = r18(batch).numpy()
    runtime = OpenVINORuntime(to_openvino(r18, 224), RuntimeInfo("openvino", "fp32", "fp32"))
    np.testing.assert_allclose(runtime(batch.numpy()), expected, rtol=1e-4, atol=1e-4)
    for size in (1, 3):  # any batch size: the IR's batch dimension is dynamic
        np.testing.assert_allclose(runtime(batch[:size].numpy()), expected[:size], rtol=1e-4, atol=1e-4)


def split_model(images: Path) -> torch.nn.Module:
    """A model that calls some of the images Fake and the others Real, each by a clear margin (a random model
    gives nearly every image the same class, which shows no agreement): its margin is the images' main
    direction of variation in feature space, scaled up, thresholded in the widest gap between them."""
    state = random_checkpoint("resnet18", 3)
    model = load_model(state)[0]
    service = DetectorService(TorchRuntime(model), SETTINGS)
    batch = torch.stack([service.decode(p.read_bytes()) for p in sorted(images.glob("*.jpg"))])
    model.fc = torch.nn.Identity()
    with torch.inference_mode():
        features = model(batch).double()
    direction = torch.linalg.svd(features - features.mean(0), full_matrices=False).Vh[0]
    projected = features @ direction
    scale = 8.0 / float(projected.std())
    margins = (projected * scale).sort().values
    middle = margins[len(margins) // 4 : 3 * len(margins) // 4]
    widest = int((middle[1:] - middle[:-1]).argmax())
    state["fc.weight"] = torch.stack([torch.zeros_like(direction), direction * scale]).float()
    state["fc.bias"] = torch.tensor([0.0, -float(middle[widest] + middle[widest + 1]) / 2])
    return load_model(state)[0]


@pytest.mark.slow  # NNCF quantisation
def test_default_mode_is_int8_when_it_agrees_and_records_why(calibration_folder: Path, tmp_path: Path):
    model = split_model(calibration_folder)
    build = build_runtime(model, SETTINGS, tmp_path, None, calibration_folder, log=lambda _: None)
    assert build.precision == "int8", build.report
    assert [p.name for p in build.files] == ["model_int8.xml", "model_int8.bin", "agreement"]
    assert all(p.is_file() for p in build.files[:2])
    # the held-out images, as given, for a GPU worker's half-precision check
    assert len(list(build.files[2].glob("*.img"))) == 10
    measured = build.report["agreement"]["int8"]
    assert measured["images"] == 10 and measured["passes"]  # a third of 30 held out, never calibrated on
    assert "CALIBRATION_IMAGES" in build.report["images"]
    # a worker loads and warms it up without torchvision or TorchServe's BaseHandler, which import torch._dynamo:
    # ~3 s more of every worker's start (cold start 8.3 s -> 5.7 s, ResNet50 int8 here)
    settings = json.dumps(dataclasses.replace(SETTINGS, precision="int8").to_mapping())
    loaded = subprocess.run(
        [sys.executable, "-c", WORKER_LOAD, str(tmp_path), settings], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["OpenVINORuntime", "int8"], loaded.stdout


WORKER_LOAD = """
import json
import sys
from pathlib import Path

import handler.deepfake_handler
from handler.service import DetectorService
from handler.settings import ModelSettings

settings = ModelSettings.from_mapping(json.loads(sys.argv[2]))
service = DetectorService.from_model_dir(Path(sys.argv[1]), "weights.pth", settings)
service.warm_up(2)
heavy = [name for name in ("torchvision", "torch._dynamo", "ts.torch_handler.base_handler") if name in sys.modules]
assert not heavy, heavy
print(type(service.runtime).__name__, service.runtime.info.precision)
"""


def tiny_margin_model(images: Path) -> torch.nn.Module:
    """A model whose decisions hinge on tiny feature differences: only fp32 agrees with fp32.

    Its two logit rows differ by 1e-4 noise (equal in bfloat16), and the bias centres the margins
    of the test images on zero, so about half of them are Fake and rounding anywhere flips labels.
    """
    state = random_checkpoint("resnet18", 5)
    first = state["fc.weight"][0]
    state["fc.weight"] = torch.stack([first, first + 1e-4 * torch.randn_like(first)])
    state["fc.bias"] = torch.zeros(2)
    model = load_model(state)[0]
    service = DetectorService(TorchRuntime(model), SETTINGS)
    batch = torch.stack([service.decode(p.read_bytes()) for p in sorted(images.glob("*.jpg"))])
    margins = service.logits(batch) @ torch.tensor([-1.0, 1.0])
    state["fc.bias"] = torch.tensor([0.0, -float(margins.median())])
    return load_model(state)[0]


@pytest.mark.slow  # NNCF quantisation
@needs_bf16
def test_default_mode_falls_back_when_it_misses_the_bar(calibration_folder: Path, tmp_path: Path):
    lines: list[str] = []
    model = tiny_margin_model(calibration_folder)
    build = build_runtime(model, SETTINGS, tmp_path, None, calibration_folder, log=lines.append)
    assert build.precision == "fp32"
    assert build.report["agreement"]["int8"]["label_agreement"] < MIN_LABEL_AGREEMENT
    assert build.report["agreement"]["bf16"]["label_agreement"] < MIN_LABEL_AGREEMENT
    assert any("falling back to bf16" in line for line in lines)
    assert any("falling back to fp32" in line for line in lines)
    assert [p.name for p in build.files] == ["model_fp32.xml", "model_fp32.bin", "agreement"]


@pytest.mark.slow  # NNCF quantisation
@needs_bf16
def test_an_explicit_mode_is_kept_with_a_warning(calibration_folder: Path, tmp_path: Path):
    lines: list[str] = []
    model = tiny_margin_model(calibration_folder)
    build = build_runtime(model, SETTINGS, tmp_path, "bf16", calibration_folder, log=lines.append)
    assert build.precision == "bf16"
    assert any(line.startswith("WARNING") and "misses the bar" in line for line in lines)


@pytest.mark.slow  # packages the model for OpenVINO and checks bf16 against fp32 (~3-4 s each)
@pytest.mark.parametrize("capabilities", [{"FP32", "INT8"}, {"FP32", "INT8", "BF16"}])
def test_a_bf16_check_on_a_cpu_without_bf16_says_it_checked_nothing(
    r18: torch.nn.Module, calibration_folder: Path, tmp_path: Path, monkeypatch, capabilities: set[str]
):
    """OpenVINO runs a bf16 hint in f32 on a CPU without BF16, silently: there the archive's bf16 check compares fp32
    with fp32. The build says so, in its log and its record, instead of reporting a bf16 agreement it never saw."""
    import scripts.operations.precision as precision

    monkeypatch.setattr(precision, "cpu_capabilities", lambda: capabilities)
    lines: list[str] = []
    build = build_runtime(r18, SETTINGS, tmp_path, "bf16", calibration_folder, log=lines.append)
    checked = build.report["agreement"]["bf16"]
    lacking = "BF16" not in capabilities
    assert (checked.get("ran_as") == "fp32") is lacking and ("ran_as" in checked) is lacking
    said = [line for line in lines if line.startswith("bf16 could not be checked on this CPU")]
    assert len(said) == lacking and said == [n for n in build.report["notes"] if n.startswith("bf16 could not")]
    if lacking:
        assert "the CPU capability BF16, which this CPU lacks" in said[0] and "the check ran in fp32" in said[0]


@pytest.mark.slow  # NNCF quantisation
def test_a_worker_on_a_cpu_without_the_feature_falls_back_and_says_so(
    r18: torch.nn.Module, calibration_folder: Path, tmp_path: Path, caplog
):
    weights = tmp_path / "weights.pth"
    torch.save(r18.state_dict(), weights)
    build = build_runtime(r18, SETTINGS, tmp_path, "int8", calibration_folder, log=lambda _: None)
    settings = ModelSettings(mean=HALF_MEAN, std=HALF_STD, precision=build.precision)
    payload = image_bytes((10, 200, 30))
    with caplog.at_level("WARNING"):
        service = DetectorService.from_model_dir(tmp_path, weights.name, settings, capabilities={"FP32"})
    info = service.describe()["runtime"]
    assert (info["precision"], info["requested"]) == ("fp32", "int8")
    assert "INT8" in info["fallback"] and "INT8" in caplog.text
    reference = DetectorService(TorchRuntime(r18), SETTINGS)
    expected = reference.logits(reference.decode(payload).unsqueeze(0))
    torch.testing.assert_close(service.logits(service.decode(payload).unsqueeze(0)), expected, rtol=1e-4, atol=1e-4)


def test_warm_up_runs_every_batch_size_once():
    class Recording:
        info = RuntimeInfo("torch", "fp32", "fp32")

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            self.sizes.append(batch.shape[0])
            return np.zeros((batch.shape[0], 2), np.float32)

    runtime = Recording()
    DetectorService(runtime, SETTINGS).warm_up(8)
    assert runtime.sizes == [1, 2, 3, 4, 5, 6, 7, 8]


def test_calibration_images_are_split_without_overlap(calibration_folder: Path):
    sets = image_sets(calibration_folder)
    assert len(sets.held_out) == 10 and len(sets.calibration) == 20
    assert not set(sets.held_out) & set(sets.calibration)
    with pytest.raises(ValueError, match="at least 20"):
        image_sets(calibration_folder / "missing")


def test_available_cores_follow_the_affinity_capped_by_the_container_quota(tmp_path: Path):
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert available_cores(cpu_max) == affinity  # no cgroup v2 file: the affinity
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == affinity  # no quota
    cpu_max.write_text("50000 100000\n")
    assert available_cores(cpu_max) == 1  # half a CPU still gets a thread
    cpu_max.write_text(f"{150000 * affinity} 100000\n")
    assert available_cores(cpu_max) == affinity  # a quota above the affinity does not add cores
    if affinity >= 2:
        cpu_max.write_text("200000 100000\n")
        assert available_cores(cpu_max) == 2  # e.g. a 2-CPU pod on a larger node


@pytest.fixture
def restore_threads():
    torch_threads = torch.get_num_threads()
    openvino = {
        name: openvino_core().get_property("CPU", name) for name in ("INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING")
    }
    yield
    torch.set_num_threads(torch_threads)
    openvino_core().set_property("CPU", openvino)


def test_workers_share_the_cores_between_torch_and_openvino(restore_threads):
    before = torch.get_num_threads()
    assert share_cores(1, cores=4) is None and torch.get_num_threads() == before  # one worker: engine defaults
    assert share_cores(2, cores=4) == 2
    assert torch.get_num_threads() == 2
    assert openvino_core().get_property("CPU", "INFERENCE_NUM_THREADS") == 2
    assert share_cores(3, cores=2) == 1  # more workers than cores: one thread each, never none
    assert torch.get_num_threads() == 1
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)).eval()
    tiny(torch.zeros(1, 3, 32, 32))
    compiled = OpenVINORuntime(to_openvino(tiny, 32), RuntimeInfo("openvino", "fp32", "fp32")).compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1  # what a worker's runtime compiles with
    assert compiled.get_property("ENABLE_CPU_PINNING") is False  # pinned, every worker inferred on core 0


PINNING_PROBE = """
import glob, os, sys, threading, time
import openvino as ov
import torch
from handler.runtimes import openvino_core, share_cores

if sys.argv[1] == "workers":
    share_cores(2, cores=2)  # what each of an archive's two workers does at start
else:  # a thread count alone
    openvino_core().set_property("CPU", {"INFERENCE_NUM_THREADS": 1})
model = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(6)]).eval()
example = torch.zeros(1, 16, 96, 96)
compiled = openvino_core().compile_model(ov.convert_model(model, example_input=example), "CPU", {})
request, batch, seen, done = compiled.create_infer_request(), example.numpy(), set(), threading.Event()

def watch():  # every thread's CPU affinity, sampled while inferences run
    while not done.is_set():
        for task in glob.glob(f"/proc/{os.getpid()}/task/*"):
            try:
                seen.add(tuple(sorted(os.sched_getaffinity(int(task.rsplit("/", 1)[1])))))
            except OSError:  # a thread that ended
                pass

watcher = threading.Thread(target=watch)
watcher.start()
deadline = time.perf_counter() + 1.5
while time.perf_counter() < deadline:
    request.infer({0: batch})
done.set()
watcher.join()
print(sorted(seen))
"""


@pytest.mark.slow  # two fresh interpreters loading torch and OpenVINO (~9 s)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_workers_sharing_the_cores_are_not_pinned_to_the_first(tmp_path: Path):
    """With a thread count set, OpenVINO's CPU plugin pins the inferring thread from core 0 on: every
    face worker inferred on core 0 (two such processes ran at half their rate each). share_cores turns
    pinning off: no thread of a worker is ever held to fewer cores than the process has."""
    script = tmp_path / "probe.py"
    script.write_text(PINNING_PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    probes = {  # both at once: each a fresh interpreter loading torch and OpenVINO
        mode: subprocess.Popen(
            [sys.executable, str(script), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for mode in ("workers", "threads only")
    }

    def affinities(mode: str) -> list[tuple[int, ...]]:
        stdout, stderr = probes[mode].communicate(timeout=120)
        assert probes[mode].returncode == 0, stderr[-2000:]
        return ast.literal_eval(stdout.strip().splitlines()[-1])

    assert affinities("workers") == [tuple(sorted(os.sched_getaffinity(0)))]
    assert (0,) in affinities("threads only")  # the probe sees pinning where it happens


@pytest.mark.slow  # NNCF quantisation
def test_a_user_checkpoint_without_calibration_images_is_not_int8(r18: torch.nn.Module, tmp_path: Path):
    lines: list[str] = []
    build = build_runtime(r18, SETTINGS, tmp_path, None, None, log=lines.append)
    expected, _ = plan_precision("bf16", cpu_capabilities())
    assert build.report["requested"] == expected and not build.report["explicit"]
    assert build.precision in (expected, "fp32")  # bf16 checked against fp32 like any mode
    assert "int8" not in build.report["agreement"]
    [line] = [line for line in lines if line.startswith("Precision: ")]
    assert "CALIBRATION_IMAGES=" in line and "For int8" in line and line[len("Precision: ") :] in build.report["notes"]


def test_only_a_demo_build_calibrates_on_the_demo_images(tmp_path: Path):
    demo = tmp_path / "demo"
    for split in ("val", "test"):
        (demo / "data" / "images" / split).mkdir(parents=True)
    (demo / "model").mkdir()
    assert own_demo_images(demo / "model" / "best_ResNet18.pth") == (demo / "data" / "images").resolve()
    assert own_demo_images(tmp_path / "mine" / "best_ResNet50.pth") is None
    assert own_demo_images(tmp_path / "best_ResNet50.pth") is None


@pytest.mark.slow  # NNCF quantisation
def test_a_reference_that_gives_one_class_to_everything_shows_no_agreement(calibration_folder: Path, tmp_path: Path):
    lines: list[str] = []
    constant = load_model(constant_checkpoint())[0]  # class 1 for every image
    build = build_runtime(constant, SETTINGS, tmp_path, None, calibration_folder, log=lines.append)
    measured = build.report["agreement"]["int8"]
    assert measured["label_agreement"] == 1.0 and measured["degenerate"] and not measured["passes"]
    assert measured["reference_one_class_share"] == 1.0
    assert build.precision == "fp32"  # nothing cheaper was shown to agree
    assert any("so agreement shows nothing" in line for line in lines)


# --- the GPU: selection with injected capabilities (every machine), numerics where CUDA exists ----------
def test_a_worker_without_a_usable_gpu_stays_on_the_cpu():
    assert plan_gpu("int8", None) is None
    assert plan_gpu("int8", Accelerator(gpu_id=None, cuda_available=False)) is None  # no GPUs configured
    assert plan_gpu("int8", Accelerator(gpu_id=0, cuda_available=False)) is None  # a gpu_id but no CUDA here
    detected = Accelerator.detect(None)
    assert detected == Accelerator(None, False, False)
    if not torch.cuda.is_available():  # this CPU-only machine: TorchServe's gpu_id alone never moves a worker
        assert Accelerator.detect(0).cuda_available is False


def test_a_worker_given_a_gpu_runs_half_precision_there():
    gpu = Accelerator(gpu_id=1, cuda_available=True, bf16_supported=False)
    assert plan_gpu("int8", gpu) == ("fp16", "int8 is a CPU mode (OpenVINO); on the GPU fp16 runs instead")
    assert plan_gpu("bf16", gpu) == ("fp16", "this GPU has no bfloat16: fp16 instead")
    assert plan_gpu("bf16", Accelerator(1, True, bf16_supported=True)) == ("bf16", None)
    assert plan_gpu("fp32", gpu) == ("fp32", None)


def test_the_gpu_runtime_computes_the_checkpoints_answers(r18: torch.nn.Module):
    """CudaRuntime's code path (channels-last, autocast, float32 out), on the CPU with bf16 here and on
    the GPU (fp16) where CUDA exists."""
    batch = torch.randn(4, 3, 64, 64).numpy()
    with torch.inference_mode():
        reference = r18.eval()(torch.from_numpy(batch)).numpy()
    on_cpu = CudaRuntime(copy.deepcopy(r18), "cpu", "bf16", RuntimeInfo("torch-cuda", "bf16", "bf16", device="cpu"))
    assert on_cpu(batch).dtype == np.float32 and np.abs(on_cpu(batch) - reference).max() < 0.1
    exact = CudaRuntime(copy.deepcopy(r18), "cpu", "fp32", RuntimeInfo("torch-cuda", "fp32", "fp32", device="cpu"))
    assert np.abs(exact(batch) - reference).max() < 1e-4
    if torch.cuda.is_available():
        info = RuntimeInfo("torch-cuda", "fp16", "int8", device="cuda:0")
        on_gpu = CudaRuntime(copy.deepcopy(r18), "cuda:0", "fp16", info)
        assert np.abs(on_gpu(batch) - reference).max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tested where one is lent)")
def test_an_archive_loads_on_the_gpu_it_is_given(r18: torch.nn.Module, calibration_folder: Path, tmp_path: Path):
    runtime = load_runtime(tmp_path, "int8", lambda: copy.deepcopy(r18), 64, {"FP32"}, Accelerator.detect(0))
    assert isinstance(runtime, CudaRuntime) and runtime.info.device == "cuda:0" and runtime.info.precision == "fp16"
    # an unpacked archive with its check images: fp16 is kept only if it agrees with fp32 on this GPU
    model = split_model(calibration_folder)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    check_folder(tmp_path / CHECK_FOLDER, [p.read_bytes() for p in sorted(calibration_folder.glob("*.jpg"))])
    settings = dataclasses.replace(SETTINGS, precision="int8")
    service = DetectorService.from_model_dir(tmp_path, "weights.pth", settings, {"FP32"}, Accelerator.detect(0))
    info = service.describe()["runtime"]
    assert info["device"] == "cuda:0" and info["agreement"]["images"] == 30 and info["precision"] == "fp16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tested where one is lent)")
def test_a_gpu_worker_decodes_the_clients_frames_there_to_the_cpus_inputs(r18: torch.nn.Module):
    """nvJPEG on the GPU gives the CPU path's pixels for the client's frames (within one level, after
    normalisation), and a service on a GPU runtime decodes them there with the CPU path's answers."""
    frames = [frame_bytes(seed) for seed in range(8)]
    on_gpu = decode_frames(frames, torch.device("cuda:0"), HALF_MEAN, HALF_STD)
    on_cpu = torch.stack([to_model_input(decode_image(frame), HALF_MEAN, HALF_STD) for frame in frames])
    assert on_gpu.device == torch.device("cuda:0")
    assert float((on_gpu.cpu() - on_cpu).abs().max()) * 255 * HALF_STD[0] <= 1.0 + 1e-4
    info = RuntimeInfo("torch-cuda", "fp16", "int8", device="cuda:0")
    service = DetectorService(CudaRuntime(copy.deepcopy(r18), "cuda:0", "fp16", info), SETTINGS)
    assert service.frame_device == torch.device("cuda:0")
    assert service.describe()["runtime"]["frames_decoded_on"] == "cuda:0"
    answers, timing = service.predict([*frames, b"garbage"])
    reference, _ = DetectorService(TorchRuntime(copy.deepcopy(r18)), SETTINGS).predict(frames)
    assert timing.size == 8 and answers[-1].code == 400
    for answer, expected in zip(answers, reference, strict=False):
        assert abs(answer.fake_probability - expected.fake_probability) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tested where one is lent)")
def test_a_gpu_whose_context_a_kernel_fault_lost_is_seen_as_not_working():
    """What makes a GPU worker end itself (DetectorService.leave_if_device_lost): a device-side assert (an
    index past a buffer, in a kernel) loses the process's CUDA context for good; ``device_works`` sees it.
    In a process of its own, which that fault leaves unusable."""
    code = (
        "import torch\n"
        "from handler.service import device_works\n"
        "device = torch.device('cuda:0')\n"
        "print('before', device_works(device))\n"
        "values = torch.zeros(4, device=device)\n"
        "try:\n"
        "    values[torch.tensor([40], device=device)].sum().item()\n"
        "except Exception as exc:\n"
        "    print('fault', type(exc).__name__)\n"
        "print('after', device_works(device))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    said = done.stdout
    assert "before True" in said and "fault " in said and "after False" in said, done.stderr[-2000:]


def cpu_stand_in(model: torch.nn.Module, precision: str) -> CudaRuntime:
    """CudaRuntime's code path on the CPU (bf16 autocast): what a GPU worker runs, minus the GPU."""
    return CudaRuntime(
        copy.deepcopy(model), "cpu", precision, RuntimeInfo("torch-cuda", precision, "int8", device="cpu")
    )


@pytest.mark.slow  # three agreement checks of bf16 against fp32 on 30 images in torch (~13 s)
def test_half_precision_on_a_gpu_worker_is_checked_against_fp32_like_int8(calibration_folder: Path, caplog):
    """The worker-start check of fp16/bf16 (run here on the CPU with bf16): kept when it agrees with fp32 on
    the archive's held-out images, replaced by fp32 on the same device when it does not, and said."""
    images = [p.read_bytes() for p in sorted(calibration_folder.glob("*.jpg"))]
    kept = checked_half_precision(cpu_stand_in(split_model(calibration_folder), "bf16"), SETTINGS, images)
    assert kept.info.precision == "bf16" and kept.info.agreement["passes"] and kept.info.agreement["images"] == 30
    with caplog.at_level("WARNING"):
        replaced = checked_half_precision(cpu_stand_in(tiny_margin_model(calibration_folder), "bf16"), SETTINGS, images)
    assert replaced.info.precision == "fp32" and replaced.dtype is None and not replaced.info.agreement["passes"]
    assert "misses the bar" in replaced.info.fallback and "running fp32" in caplog.text
    unchecked = cpu_stand_in(split_model(calibration_folder), "bf16")
    with caplog.at_level("WARNING"):
        assert checked_half_precision(unchecked, SETTINGS, []) is unchecked
    assert "carries no check images" in caplog.text
