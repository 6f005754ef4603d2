"""Table 2: parameters and inference time of each Table 1 configuration.

    csetgraph complexity                                         # synthetic default model
    csetgraph complexity --config configs/sysu_mm01.yaml --batch 32 --device cuda
    csetgraph complexity --rounds 20 model.mhga.layer=message_passing

Inference is what a deployed model runs: one image of one modality through the clean stream
(and the MHGA on its own token graph), no SE, no CA. Each round times every configuration
once, in turn, so drift in machine speed hits them all alike; the median over rounds is
reported, with its ratio to the baseline's median. Weights do not change the cost, so
``model.pretrained`` is ignored (nothing is downloaded). Positional ``key=value`` overrides
may stand anywhere on the line.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping

from csetgraph.errors import ConfigError, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph complexity",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML recipe (default: built-in synthetic)")
    parser.add_argument("--num-classes", type=int, default=395, help="classifier width (SYSU: 395)")
    parser.add_argument("--batch", type=int, default=16, help="images per timed call")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (median reported)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=4")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuse counts that cannot be measured, naming the option."""
    for option, value, low in (
        ("--batch", args.batch, 1),
        ("--rounds", args.rounds, 1),
        ("--num-classes", args.num_classes, 1),
        ("--threads", args.threads, 0),
    ):
        if value < low:
            raise ConfigError(f"{option} {value} is not allowed: give an integer >= {low}")


def time_models(
    models: Mapping[str, Callable[[], object]],
    rounds: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds per call of each ``models[name]()``, ``rounds`` times, interleaved.

    One warm-up call each first; ``sync`` waits for queued device work (CUDA) around a call.
    """
    for run in models.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, run in models.items():
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def format_table(params: Mapping[str, float], ms: Mapping[str, float], baseline: str) -> str:
    """Rows of ``configuration, params (M), ms / image, x baseline``."""
    lines = [f"{'configuration':<22} {'params (M)':>10} {'ms / image':>11} {'x baseline':>11}"]
    for name in params:
        ratio = ms[name] / ms[baseline]
        lines.append(f"{name:<22} {params[name]:10.3f} {ms[name]:11.3f} {ratio:11.2f}")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> int:
    import torch

    from csetgraph.config import load_config
    from csetgraph.engine.distributed import describe_device, resolve_device
    from csetgraph.models import build_model
    from csetgraph.models.ablation import TABLE1, ablation_config

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, option="--device")
    base = load_config(args.config, args.overrides)
    base.model.pretrained = ""  # weights do not change the cost
    size = (base.data.height, base.data.width)
    models = {}
    for name, *_ in TABLE1:
        torch.manual_seed(0)
        cfg = ablation_config(base, name)
        models[name] = build_model(cfg.model, args.num_classes, size).to(device).eval()
    x = torch.randn(args.batch, 3, *size, device=device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    calls = {name: (lambda m=model: m(x, modality="ir")) for name, model in models.items()}
    with torch.inference_mode():
        times = time_models(calls, args.rounds, sync)
    ms = {name: statistics.median(t) / args.batch * 1e3 for name, t in times.items()}
    params = {n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in models.items()}
    print(
        f"device {describe_device(device)}, batch {args.batch}, input {size[0]}x{size[1]}, "
        f"backbone {base.model.backbone}, {args.rounds} rounds (median)"
    )
    print(format_table(params, ms, baseline=TABLE1[0][0]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        check_args(args)
        return measure(args)

    return run_command(body, debug=args.debug, name="csetgraph complexity")


if __name__ == "__main__":
    raise SystemExit(main())
