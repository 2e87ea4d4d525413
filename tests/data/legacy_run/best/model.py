"""Standalone model: budgeted:activation=relu,blur_size=3,blurpool=false,c1_conv=regular,c1_convs=1,c1_dilation=2,c1_width=8,c2_conv=regular,c2_convs=1,c2_dilation=2,c2_width=8,c3_conv=depthwise,c3_convs=1,c3_dilation=2,c3_width=8,c4_conv=regular,c4_convs=1,c4_dilation=2,c4_width=16,downsample=maxpool,dropout=0.0,ghost_batch=32,image_size=28,in_channels=1,norm=batch,norm_groups=2,num_classes=10,se_ratio=0.0

Plain PyTorch: this file imports nothing but torch. It was written by archscale from the
model's inference graph (eval mode: BatchNorm uses its running statistics, dropout is off),
captured with torch.export; ``forward`` is one line per ATen operator, commented with the
module of the original network each one came from.

    import model
    net = model.load()                 # the weights.pt beside this file, eval mode
    logits = net(x)                    # x: float32 (B, 1, 28, 28)

Inputs: (pixels / 255 - MEAN) / STD per channel, as in training.
Batch size: any.
"""

import base64
import math
from pathlib import Path

import torch
from torch import nn


ARCH = 'budgeted:activation=relu,blur_size=3,blurpool=false,c1_conv=regular,c1_convs=1,c1_dilation=2,c1_width=8,c2_conv=regular,c2_convs=1,c2_dilation=2,c2_width=8,c3_conv=depthwise,c3_convs=1,c3_dilation=2,c3_width=8,c4_conv=regular,c4_convs=1,c4_dilation=2,c4_width=16,downsample=maxpool,dropout=0.0,ghost_batch=32,image_size=28,in_channels=1,norm=batch,norm_groups=2,num_classes=10,se_ratio=0.0'
INPUT_SHAPE = (1, 28, 28)  # (channels, height, width) of one image
MEAN = [0.127969428896904]  # per channel, in [0, 1] units: x = (pixels / 255 - MEAN) / STD
STD = [0.304913192987442]
BATCH = None  # None: any batch size

# Tensors of the state dict (loaded from weights.pt): dotted name, shape, dtype, kind.
STATE = [
    ('blocks.0.0.0.weight', (8, 1, 3, 3), 'float32', 'parameter'),
    ('blocks.0.0.1.weight', (8,), 'float32', 'parameter'),
    ('blocks.0.0.1.bias', (8,), 'float32', 'parameter'),
    ('blocks.0.0.1.running_mean', (8,), 'float32', 'buffer'),
    ('blocks.0.0.1.running_var', (8,), 'float32', 'buffer'),
    ('blocks.0.0.1.num_batches_tracked', (), 'int64', 'buffer'),
    ('blocks.1.1.0.weight', (8, 8, 3, 3), 'float32', 'parameter'),
    ('blocks.1.1.1.weight', (8,), 'float32', 'parameter'),
    ('blocks.1.1.1.bias', (8,), 'float32', 'parameter'),
    ('blocks.1.1.1.running_mean', (8,), 'float32', 'buffer'),
    ('blocks.1.1.1.running_var', (8,), 'float32', 'buffer'),
    ('blocks.1.1.1.num_batches_tracked', (), 'int64', 'buffer'),
    ('blocks.2.1.0.0.weight', (8, 1, 3, 3), 'float32', 'parameter'),
    ('blocks.2.1.0.1.weight', (8, 8, 1, 1), 'float32', 'parameter'),
    ('blocks.2.1.1.weight', (8,), 'float32', 'parameter'),
    ('blocks.2.1.1.bias', (8,), 'float32', 'parameter'),
    ('blocks.2.1.1.running_mean', (8,), 'float32', 'buffer'),
    ('blocks.2.1.1.running_var', (8,), 'float32', 'buffer'),
    ('blocks.2.1.1.num_batches_tracked', (), 'int64', 'buffer'),
    ('blocks.3.1.0.weight', (16, 8, 3, 3), 'float32', 'parameter'),
    ('blocks.3.1.1.weight', (16,), 'float32', 'parameter'),
    ('blocks.3.1.1.bias', (16,), 'float32', 'parameter'),
    ('blocks.3.1.1.running_mean', (16,), 'float32', 'buffer'),
    ('blocks.3.1.1.running_var', (16,), 'float32', 'buffer'),
    ('blocks.3.1.1.num_batches_tracked', (), 'int64', 'buffer'),
    ('head.classifier.weight', (10, 16, 1, 1), 'float32', 'parameter'),
    ('head.classifier.bias', (10,), 'float32', 'parameter'),
]

# Tensors the state dict does not hold (non-persistent buffers, constants): exact bytes.
CONSTANTS = {

}


def _attach(root: nn.Module, name: str, tensor: torch.Tensor, kind: str) -> None:
    """Register ``tensor`` at the dotted ``name``, creating plain containers on the way."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        if part not in module._modules:
            module.add_module(part, nn.Module())
        module = module._modules[part]
    if kind == "parameter":
        module.register_parameter(leaf, nn.Parameter(tensor))
    else:
        module.register_buffer(leaf, tensor, persistent=(kind == "buffer"))


def _decode(shape, dtype: str, data: str) -> torch.Tensor:
    raw = bytearray(base64.b64decode(data))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return flat.view(getattr(torch, dtype)).reshape(shape).clone()


class Net(nn.Module):
    """budgeted:activation=relu,blur_size=3,blurpool=false,c1_conv=regular,c1_convs=1,c1_dilation=2,c1_width=8,c2_conv=regular,c2_convs=1,c2_dilation=2,c2_width=8,c3_conv=depthwise,c3_convs=1,c3_dilation=2,c"""

    def __init__(self) -> None:
        super().__init__()
        for name, shape, dtype, kind in STATE:
            _attach(self, name, torch.zeros(shape, dtype=getattr(torch, dtype)), kind)
        for name, (shape, dtype, data) in CONSTANTS.items():
            _attach(self, name, _decode(shape, dtype, data), "constant")

    def forward(self, x):
        blocks_0_0_0_weight = self.get_parameter('blocks.0.0.0.weight')
        blocks_0_0_1_weight = self.get_parameter('blocks.0.0.1.weight')
        blocks_0_0_1_bias = self.get_parameter('blocks.0.0.1.bias')
        blocks_1_1_0_weight = self.get_parameter('blocks.1.1.0.weight')
        blocks_1_1_1_weight = self.get_parameter('blocks.1.1.1.weight')
        blocks_1_1_1_bias = self.get_parameter('blocks.1.1.1.bias')
        blocks_2_1_0_0_weight = self.get_parameter('blocks.2.1.0.0.weight')
        blocks_2_1_0_1_weight = self.get_parameter('blocks.2.1.0.1.weight')
        blocks_2_1_1_weight = self.get_parameter('blocks.2.1.1.weight')
        blocks_2_1_1_bias = self.get_parameter('blocks.2.1.1.bias')
        blocks_3_1_0_weight = self.get_parameter('blocks.3.1.0.weight')
        blocks_3_1_1_weight = self.get_parameter('blocks.3.1.1.weight')
        blocks_3_1_1_bias = self.get_parameter('blocks.3.1.1.bias')
        head_classifier_weight = self.get_parameter('head.classifier.weight')
        head_classifier_bias = self.get_parameter('head.classifier.bias')
        blocks_0_0_1_running_mean = self.get_buffer('blocks.0.0.1.running_mean')
        blocks_0_0_1_running_var = self.get_buffer('blocks.0.0.1.running_var')
        blocks_0_0_1_num_batches_tracked = self.get_buffer('blocks.0.0.1.num_batches_tracked')
        blocks_1_1_1_running_mean = self.get_buffer('blocks.1.1.1.running_mean')
        blocks_1_1_1_running_var = self.get_buffer('blocks.1.1.1.running_var')
        blocks_1_1_1_num_batches_tracked = self.get_buffer('blocks.1.1.1.num_batches_tracked')
        blocks_2_1_1_running_mean = self.get_buffer('blocks.2.1.1.running_mean')
        blocks_2_1_1_running_var = self.get_buffer('blocks.2.1.1.running_var')
        blocks_2_1_1_num_batches_tracked = self.get_buffer('blocks.2.1.1.num_batches_tracked')
        blocks_3_1_1_running_mean = self.get_buffer('blocks.3.1.1.running_mean')
        blocks_3_1_1_running_var = self.get_buffer('blocks.3.1.1.running_var')
        blocks_3_1_1_num_batches_tracked = self.get_buffer('blocks.3.1.1.num_batches_tracked')
        # blocks.0.0.0 (Conv2d)
        conv2d = torch.ops.aten.conv2d.default(x, blocks_0_0_0_weight, None, [1, 1], [1, 1]);  x = blocks_0_0_0_weight = None
        # blocks.0.0.1 (BatchNorm2d)
        batch_norm = torch.ops.aten.batch_norm.default(conv2d, blocks_0_0_1_weight, blocks_0_0_1_bias, blocks_0_0_1_running_mean, blocks_0_0_1_running_var, False, 0.1, 1e-05, False);  conv2d = blocks_0_0_1_weight = blocks_0_0_1_bias = blocks_0_0_1_running_mean = blocks_0_0_1_running_var = None
        # blocks.0.0.2 (ReLU)
        relu = torch.ops.aten.relu.default(batch_norm);  batch_norm = None
        # blocks.1.0 (MaxPool2d)
        max_pool2d = torch.ops.aten.max_pool2d.default(relu, [2, 2], [2, 2]);  relu = None
        # blocks.1.1.0 (Conv2d)
        conv2d_1 = torch.ops.aten.conv2d.default(max_pool2d, blocks_1_1_0_weight, None, [1, 1], [1, 1]);  max_pool2d = blocks_1_1_0_weight = None
        # blocks.1.1.1 (BatchNorm2d)
        batch_norm_1 = torch.ops.aten.batch_norm.default(conv2d_1, blocks_1_1_1_weight, blocks_1_1_1_bias, blocks_1_1_1_running_mean, blocks_1_1_1_running_var, False, 0.1, 1e-05, False);  conv2d_1 = blocks_1_1_1_weight = blocks_1_1_1_bias = blocks_1_1_1_running_mean = blocks_1_1_1_running_var = None
        # blocks.1.1.2 (ReLU)
        relu_1 = torch.ops.aten.relu.default(batch_norm_1);  batch_norm_1 = None
        # blocks.2.0 (MaxPool2d)
        max_pool2d_1 = torch.ops.aten.max_pool2d.default(relu_1, [2, 2], [2, 2]);  relu_1 = None
        # blocks.2.1.0.0 (Conv2d)
        conv2d_2 = torch.ops.aten.conv2d.default(max_pool2d_1, blocks_2_1_0_0_weight, None, [1, 1], [1, 1], [1, 1], 8);  max_pool2d_1 = blocks_2_1_0_0_weight = None
        # blocks.2.1.0.1 (Conv2d)
        conv2d_3 = torch.ops.aten.conv2d.default(conv2d_2, blocks_2_1_0_1_weight);  conv2d_2 = blocks_2_1_0_1_weight = None
        # blocks.2.1.1 (BatchNorm2d)
        batch_norm_2 = torch.ops.aten.batch_norm.default(conv2d_3, blocks_2_1_1_weight, blocks_2_1_1_bias, blocks_2_1_1_running_mean, blocks_2_1_1_running_var, False, 0.1, 1e-05, False);  conv2d_3 = blocks_2_1_1_weight = blocks_2_1_1_bias = blocks_2_1_1_running_mean = blocks_2_1_1_running_var = None
        # blocks.2.1.2 (ReLU)
        relu_2 = torch.ops.aten.relu.default(batch_norm_2);  batch_norm_2 = None
        # blocks.3.0 (MaxPool2d)
        max_pool2d_2 = torch.ops.aten.max_pool2d.default(relu_2, [2, 2], [2, 2]);  relu_2 = None
        # blocks.3.1.0 (Conv2d)
        conv2d_4 = torch.ops.aten.conv2d.default(max_pool2d_2, blocks_3_1_0_weight, None, [1, 1], [1, 1]);  max_pool2d_2 = blocks_3_1_0_weight = None
        # blocks.3.1.1 (BatchNorm2d)
        batch_norm_3 = torch.ops.aten.batch_norm.default(conv2d_4, blocks_3_1_1_weight, blocks_3_1_1_bias, blocks_3_1_1_running_mean, blocks_3_1_1_running_var, False, 0.1, 1e-05, False);  conv2d_4 = blocks_3_1_1_weight = blocks_3_1_1_bias = blocks_3_1_1_running_mean = blocks_3_1_1_running_var = None
        # blocks.3.1.2 (ReLU)
        relu_3 = torch.ops.aten.relu.default(batch_norm_3);  batch_norm_3 = None
        # head (GlobalPoolHead)
        mean = torch.ops.aten.mean.dim(relu_3, [2, 3], True);  relu_3 = None
        # head.classifier (Conv2d)
        conv2d_5 = torch.ops.aten.conv2d.default(mean, head_classifier_weight, head_classifier_bias);  mean = head_classifier_weight = head_classifier_bias = None
        # head (GlobalPoolHead)
        flatten = torch.ops.aten.flatten.using_ints(conv2d_5, 1);  conv2d_5 = None
        return flatten
        


def load(weights: str | Path | None = None, device: str | torch.device = "cpu") -> Net:
    """The network with ``weights`` (default: the weights.pt beside this file) loaded, in eval mode."""
    path = Path(weights) if weights is not None else Path(__file__).resolve().with_name('weights.pt')
    net = Net()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval()


if __name__ == "__main__":
    net = load()
    x = torch.randn(BATCH or 2, *INPUT_SHAPE)
    print(f"{ARCH}: input {tuple(x.shape)} -> logits {tuple(net(x).shape)}")
