"""A family of your own: plain CNNs (conv-BN-ReLU units, a max-pool between stages).

`space.family: plainnet:PlainNet` in a spec finds this file in the folder archscale runs
from (or on PYTHONPATH); no registration, nothing to install.
"""

from torch import nn

from archscale.space import Param, SearchSpace


class PlainNet(SearchSpace):
    name = "plainnet"  # the family's name in trials.csv and in the text form (plainnet:width=16,...)
    description = "plain CNN: stages of conv-BN-ReLU units, a 2x2 max-pool between stages, GAP, linear"
    params = (
        Param("stages", 3, "stages; each after the first halves the resolution and doubles the width", low=1, high=5),
        Param("units", 1, "conv-BN-ReLU units per stage", low=1, high=4),
        Param("width", 16, "channels of the first stage", low=4, high=256),
        Param("kernel", 3, "kernel of every conv", choices=(3, 5)),
    )

    def check(self, params):  # cross-parameter rules: optional, raise SpaceError
        if params["image_size"] < 2 ** params["stages"]:
            from archscale.space import SpaceError

            raise SpaceError("stages", f"{params['stages']} stages need images of at least "
                                       f"{2 ** params['stages']} px, not {params['image_size']}")

    def build_model(self, arch):
        p = arch.params  # the declared params plus in_channels, num_classes, image_size (from the dataset)
        layers, cin = [], p["in_channels"]
        for stage in range(p["stages"]):
            cout = p["width"] * 2 ** stage
            if stage:
                layers.append(nn.MaxPool2d(2))  # (B, C, H, W) -> (B, C, H/2, W/2)
            for _ in range(p["units"]):
                layers += [nn.Conv2d(cin, cout, p["kernel"], padding=p["kernel"] // 2, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, p["num_classes"]))
