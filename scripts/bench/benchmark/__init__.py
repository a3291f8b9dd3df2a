"""Benchmark the deployment on this machine, side by side in one run, and write a report with targets.

    python -m scripts.bench.benchmark --report docs/benchmark.md          # make benchmark
    python -m scripts.bench.benchmark --quick --report /tmp/quick.md      # smoke run (a test executes it)

Every server is a real TorchServe on free loopback ports, started from an archive built here, one at
a time. The model is a ResNet50 trained on the demo data by this script (cached in artifacts/bench;
the weights matter for the agreement figures, not for speed). Measured:

1. the in-process ceiling per mode: a tight loop over batches of 8 in a fresh process (torch eager
   fp32 and bf16 autocast beside the OpenVINO modes, which is why OpenVINO runs every mode);
2. each mode served, with 16 concurrent clients sending distinct 224x224 JPEG frames, and a lone
   request; the decode and inference time per batch the worker logs;
3. TorchServe's stock ``ImageClassifier`` (a ``topk = 2`` subclass) on the same weights, inputs and
   batch settings;
4. the original app's path: one image at a time, torch fp32, in-process;
5. a 60 s 720p30 H.264 clip analysed at 2 fps by ``deepfake-detect`` end to end, against the original
   app's path (frames extracted to JPEG files, then classified one by one);
6. cold start: TorchServe start to worker READY per mode;
7. agreement of every mode with fp32 on held-out demo images, for the demo ResNet18 and the ResNet50;
plus maxBatchDelay for the default mode. ``--quick`` runs every section on a random ResNet18 with
small counts (numbers meaningless, code paths exercised).

Modules: ``harness`` (what every section uses), one per section (``inprocess``, ``stock``, ``video``,
``faces``, ``analysts``, ``packing``), ``report`` (targets, checks, the markdown), ``cli`` (the run).
"""
