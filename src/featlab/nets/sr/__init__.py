"""Super-resolution and restoration networks behind one interface.

Every network is ``Net(scale, in_channels=3, out_channels=3, **arch)`` and maps an RGB batch in
[0, 1] of any size ``(B, C, h, w)`` to ``(B, C, h * scale, w * scale)``; restoration nets
(NAFNet, SCUNet) only accept ``scale=1``. Each class lists ``supported_scales``; each instance
has ``scale``, ``in_channels`` and ``size_multiple`` (the input is padded internally to a
multiple of it and the output cropped back; tools use it to pick export and tiling sizes).
Hydra configs instantiate the classes directly (``conf/net/<name>.yaml``); :func:`build_sr_net`
is the by-name entry for code and tests."""

from __future__ import annotations

from typing import Any

from torch import nn

from featlab.errors import unknown_name
from featlab.nets.sr.edsr import EDSR
from featlab.nets.sr.espcn import ESPCN
from featlab.nets.sr.fsrcnn import FSRCNN
from featlab.nets.sr.nafnet import NAFNet
from featlab.nets.sr.rdn import RDN
from featlab.nets.sr.rrdb import RRDBNet
from featlab.nets.sr.scunet import SCUNet
from featlab.nets.sr.srcnn import SRCNN
from featlab.nets.sr.swinir import SwinIR

SR_NETS: dict[str, type[nn.Module]] = {
    "espcn": ESPCN,
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "edsr": EDSR,
    "rdn": RDN,
    "rrdb": RRDBNet,
    "swinir": SwinIR,
    "nafnet": NAFNet,
    "scunet": SCUNet,
}


def build_sr_net(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a registered network by name; unknown names raise a ConfigError for ``net``."""
    if name not in SR_NETS:
        raise unknown_name("net", name, SR_NETS, what="SR network")
    return SR_NETS[name](**kwargs)


__all__ = [
    "SR_NETS",
    "build_sr_net",
    "EDSR",
    "ESPCN",
    "FSRCNN",
    "NAFNet",
    "RDN",
    "RRDBNet",
    "SCUNet",
    "SRCNN",
    "SwinIR",
]
