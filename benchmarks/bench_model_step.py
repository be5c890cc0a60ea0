"""What does skipping padding-only taps save? (train.model.AtrousConv2d)

Times DeepLabv3-ResNet50-GN training steps (forward, cross-entropy,
backward, Adam) on synthetic crops two ways, side by side in one process,
alternating rounds so both see the same machine load:

* dense: every dilated 3x3 convolution computed in full (``nn.Conv2d.forward``);
* skip: the package's ``AtrousConv2d``, which computes only the kernel rows or
  columns that can read data (all of them once a feature map is larger than
  the dilation).

Prints seconds per step (best round) of each, their ratio, and the largest
difference between the two variants' gradients on the same batch from the
same weights (float32 rounding; tests/test_train_units.py checks equality in
float64).
Examples:
  python benchmarks/bench_model_step.py                      # the demo's crops: 24 x 48 px
  python benchmarks/bench_model_step.py --crop 448 --batch 2 --steps 1 --rounds 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from csaws_tools.train import model as model_module


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x)["out"], y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=48, help="crop size in pixels (default 48, the demo's)")
    ap.add_argument("--batch", type=int, default=24, help="crops per step (default 24, the demo's)")
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--output-stride", type=int, default=16, choices=(8, 16))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (the first is a warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    skip_forward = model_module.AtrousConv2d.forward

    def build() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        net = model_module.build_model(args.classes, output_stride=args.output_stride).train()
        return net, torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 1, args.crop, args.crop, generator=gen)
    y = torch.randint(0, args.classes, (args.batch, args.crop, args.crop), generator=gen)
    variants = {"dense": nn.Conv2d.forward, "skip": skip_forward}
    nets = {name: build() for name in variants}
    grads = {}
    for name, forward in variants.items():  # the gradients of the same first batch from the same weights
        model_module.AtrousConv2d.forward = forward  # type: ignore[method-assign]
        net, opt = nets[name]
        F.cross_entropy(net.eval()(x)["out"], y).backward()  # eval: no dropout draw
        net.train()
        grads[name] = [p.grad.detach().clone() for p in net.parameters()]
        opt.zero_grad(set_to_none=True)
    worst = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
                for a, b in zip(grads["dense"], grads["skip"], strict=True))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, forward in variants.items():
            model_module.AtrousConv2d.forward = forward  # type: ignore[method-assign]
            net, opt = nets[name]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                _step(net, opt, x, y)
            if r:
                times[name].append((time.perf_counter() - t0) / args.steps)
    model_module.AtrousConv2d.forward = skip_forward  # type: ignore[method-assign]
    dense, skip = min(times["dense"]), min(times["skip"])
    print(f"crops {args.batch} x {args.crop} px, output stride {args.output_stride}, "
          f"{torch.get_num_threads()} threads")
    print(f"dense {dense:.3f} s/step   skip {skip:.3f} s/step   skip/dense {skip / dense:.2f}")
    print(f"largest gradient difference (relative to the tensor's largest gradient): {worst:.1e} (float32 rounding)")


if __name__ == "__main__":
    main()
