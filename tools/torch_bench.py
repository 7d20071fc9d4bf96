#!/usr/bin/python3
"""PyTorch reference for //tools:model_bench: the same networks, the same
synthetic training step (forward, cross-entropy, backward, SGD with momentum
and weight decay), the same threads and batch. Debian's python3-torch (1.13,
CPU, oneDNN 2.6.3).

  /usr/bin/python3 tools/torch_bench.py --network resnet_v1 --num_layers 20 --batch_size 32 --threads 2

Prints one JSON object with the fields model_bench --json prints. The ResNet
here is pstrain's resnet_v1 (post-activation, as torchvision's); pstrain's
"resnet" is MXNet's pre-activation symbols/resnet.py, not built here.
"""
import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn


def lenet(classes):
    # MXNet's example LeNet, as nn/builders.cc builds it.
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Conv2d(20, 50, 5), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(800, 500), nn.Tanh(), nn.Linear(500, classes))


class Unit(nn.Module):
    """ResNet v1 unit: basic or bottleneck, 1x1 projection when the shape changes."""

    def __init__(self, cin, cout, stride, bottleneck):
        super().__init__()
        mid = cout // 4 if bottleneck else cout
        if bottleneck:
            layers = [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=2e-5), nn.ReLU(inplace=True),
                      nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid, eps=2e-5),
                      nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=2e-5)]
        else:
            layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, eps=2e-5),
                      nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                      nn.BatchNorm2d(cout, eps=2e-5)]
        self.body = nn.Sequential(*layers)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout, eps=2e-5))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        s = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + s)


def resnet(num_layers, classes, cifar):
    if cifar:
        n = (num_layers - 2) // 6
        units, filters, bottleneck = [n, n, n], [16, 32, 64], False
        stem = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16, eps=2e-5), nn.ReLU(inplace=True)]
        cin = 16
    else:
        units = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                 152: [3, 8, 36, 3]}[num_layers]
        bottleneck = num_layers >= 50
        filters = [256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512]
        stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64, eps=2e-5), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1)]
        cin = 64
    layers = stem
    for s, (u, f) in enumerate(zip(units, filters)):
        for i in range(u):
            layers.append(Unit(cin, f, 2 if (s > 0 and i == 0) else 1, bottleneck))
            cin = f
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="lenet", choices=["lenet", "resnet_v1"])
    ap.add_argument("--num_layers", type=int, default=0)
    ap.add_argument("--image_shape", default="")
    ap.add_argument("--num_classes", type=int, default=0)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.image_shape:
        shape = [int(v) for v in a.image_shape.split(",")]
    elif a.network == "lenet":
        shape = [1, 28, 28]
    else:
        shape = [3, 32, 32] if a.num_layers in (20, 32, 44, 56, 110) else [3, 224, 224]
    classes = a.num_classes or (10 if shape[1] <= 32 else 1000)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = lenet(classes) if a.network == "lenet" else resnet(a.num_layers, classes, shape[1] <= 32)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(a.batch_size, *shape)
    y = torch.randint(0, classes, (a.batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    secs = []
    for _ in range(a.iters):
        t = time.perf_counter()
        step()
        secs.append(time.perf_counter() - t)
    median = statistics.median(secs)
    print(json.dumps({
        "framework": "pytorch " + torch.__version__, "network": a.network, "num_layers": a.num_layers,
        "image_shape": ",".join(map(str, shape)), "batch_size": a.batch_size, "threads": a.threads,
        "images_per_sec": round(a.batch_size / median, 2), "ms_per_step_median": round(median * 1e3, 3),
        "params": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    sys.exit(main())
