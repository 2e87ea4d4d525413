"""How closely measured MACs follow (alpha * beta^2 * gamma^2)^phi under compound scaling.

Both kinds of base table: the 32 px ones (``effnet_b0``, ``resnet18``) at both input sizes of
the examples (CIFAR 3x32x32, MNIST 1x28x28) with the (alpha, beta, gamma) that the examples'
grid accepts (product within 2 +- 10%), the paper's (1.2, 1.1, 1.15) and the three
single-dimension points; the 224 px ones (``effnet_b0_224``, ``resnet18_224``, torchvision's
strides) at 3x224x224 with the paper's point and the single-dimension points. phi in {1, 2},
both depth-rounding rules: the fvcore MACs of the scaled model over the base's, against the
compound factor. Prints one row per case as it is measured, then a summary per rule and base;
the last line is the worst relative error of the default rules.

    python benchmarks/compound_macs.py            # about 10 minutes on one CPU core
    python benchmarks/compound_macs.py --torchvision   # only the 224 px bases against torchvision

``--torchvision`` builds the 224 px bases at 1000 classes and torchvision's ``efficientnet_b0``
and ``resnet18`` (``weights=None``) and prints both parameter counts and fvcore MACs at
3x224x224; its last line is the worst relative MACs difference.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import warnings

import pandas as pd

warnings.simplefilter("ignore", FutureWarning)

from archscale.analysis.cost import count_macs  # noqa: E402
from archscale.space import build, get_space  # noqa: E402
from archscale.space.efficientnet import net_config  # noqa: E402
from archscale.space.scaling import BASES, design_side  # noqa: E402

SIZES = {"cifar 3x32": {"in_channels": 3, "num_classes": 10, "image_size": 32},
         "mnist 1x28": {"in_channels": 1, "num_classes": 10, "image_size": 28},
         "imagenet 3x224": {"in_channels": 3, "num_classes": 1000, "image_size": 224}}
GRID = ((1.0, 1.2, 1.4), (1.0, 1.1, 1.2), (1.0, 1.15, 1.3))  # the examples' alpha, beta, gamma
SINGLE = [(2.0, 1.0, 1.0), (1.0, math.sqrt(2), 1.0), (1.0, 1.0, math.sqrt(2))]
PHIS = (1, 2)


def coefficient_grid(side: int) -> list[tuple[float, float, float]]:
    """The examples' grid at 32 px; at 224 px (fvcore takes seconds a network) the paper's point."""
    if side == 224:
        return [(1.2, 1.1, 1.15), *SINGLE]
    return [abg for abg in itertools.product(*GRID) if abs(abg[0] * abg[1] ** 2 * abg[2] ** 2 - 2) <= 0.2] + SINGLE


def cases() -> list[tuple[str, str, str, dict, tuple[float, float, float]]]:
    """(rule, base, input, context, coefficients): each base at the input sizes within 2x of its design side."""
    out = []
    for rounding, base, (size, ctx) in itertools.product(("total", "stage"), BASES, SIZES.items()):
        if 0.5 <= ctx["image_size"] / design_side(base) <= 2:
            out += [(rounding, base, size, ctx, abg) for abg in coefficient_grid(design_side(base))]
    return out


def against_torchvision() -> None:
    """The 224 px bases next to the torchvision models they copy: parameters and fvcore MACs."""
    import torchvision

    family, shape, worst = get_space("efficientnet"), (1, 3, 224, 224), 0.0
    print(f"{'base':>13} {'torchvision':>15} {'params':>11} {'tv params':>11} {'macs':>14} {'tv macs':>14} {'error':>7}")
    for base, name in (("effnet_b0_224", "efficientnet_b0"), ("resnet18_224", "resnet18")):
        ours = build(family.resolve({"base": base}, SIZES["imagenet 3x224"]))
        theirs = torchvision.models.get_model(name, weights=None)
        params = [sum(p.numel() for p in m.parameters()) for m in (ours, theirs)]
        macs = [count_macs(m, shape) for m in (ours, theirs)]
        worst = max(worst, abs(macs[0] / macs[1] - 1))
        print(f"{base:>13} {name:>15} {params[0]:>11,} {params[1]:>11,} {macs[0]:>14,} {macs[1]:>14,} "
              f"{macs[0] / macs[1] - 1:+7.2%}", flush=True)
    print(f"worst_macs_error_vs_torchvision: {worst:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchvision", action="store_true", help="only the 224 px bases against torchvision")
    if parser.parse_args().torchvision:
        return against_torchvision()
    start = time.perf_counter()
    family = get_space("efficientnet")
    cache: dict[tuple, int] = {}
    rows = []
    print(f"{'rule':>6} {'base':>13} {'input':>14} {'alpha':>6} {'beta':>6} {'gamma':>6} {'phi':>3} "
          f"{'side':>4} {'expected':>8} {'measured':>8} {'error':>7}", flush=True)
    for rounding, base, size, ctx, (a, b, g) in cases():
        shape = (1, ctx["in_channels"], ctx["image_size"], ctx["image_size"])
        macs, sides = [], []
        for phi in (0.0, *map(float, PHIS)):
            arch = family.resolve({"base": base, "alpha": a, "beta": b, "gamma": g, "phi": phi,
                                   "depth_rounding": rounding, "tolerance": 0.2}, ctx)
            net = net_config(arch.params)
            key, sides = (net.text, shape), sides + [net.resolution]
            if key not in cache:
                cache[key] = count_macs(build(arch), shape)
            macs.append(cache[key])
        factor = a * b * b * g * g
        for i, phi in enumerate(PHIS, start=1):
            row = {"depth_rounding": rounding, "base": base, "input": size, "alpha": a, "beta": b, "gamma": g,
                   "phi": phi, "side": sides[i], "expected": factor ** phi, "measured": macs[i] / macs[0],
                   "error": macs[i] / macs[0] / factor ** phi - 1}
            rows.append(row)
            print(f"{rounding:>6} {base:>13} {size:>14} {a:6.3f} {b:6.3f} {g:6.3f} {phi:3d} {sides[i]:4d} {row['expected']:8.3f} "
                  f"{row['measured']:8.3f} {row['error']:+7.1%}", flush=True)
    table = pd.DataFrame(rows)
    print("\nworst |error| by rule, base and phi:")
    summary = table.assign(abs_error=table["error"].abs()).pivot_table(
        index=["depth_rounding", "base"], columns="phi", values="abs_error", aggfunc="max")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    paper = table[(table["alpha"] == 1.2) & (table["beta"] == 1.1) & (table["gamma"] == 1.15)]
    print("\nthe paper's (1.2, 1.1, 1.15), worst |error| by rule:",
          paper.groupby("depth_rounding")["error"].apply(lambda e: e.abs().max()).round(3).to_dict())
    print(f"{len(cache)} distinct networks measured in {time.perf_counter() - start:.0f}s")
    default = table[table["depth_rounding"] == "total"]
    print(f"worst_macs_error_default_rules: {default['error'].abs().max():.3f}")


if __name__ == "__main__":
    main()
