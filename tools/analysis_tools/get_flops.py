"""Count the multiply-adds of NAT models, the neighbourhood attention included.

MMEngine's ``FlopAnalyzer`` traces a model and counts convolutions and
linears (one multiply-add = one "flop"), but it cannot see inside the
neighbourhood attention (fused SDPA and custom autograd functions have no
handle). While counting, this tool runs every ``na2d`` call as one opaque
node of the trace and counts that node (:mod:`nat_mm.ops.flops`): per layer
``2 * B * N * K^2 * C`` multiply-adds (QK and AV), where N = H * W of the map
the attention runs on (padded up to K*d by the module when smaller) and
C = heads * head_dim.

Conventions (those of the published NAT numbers):

* ``--arch NAME``: the classification body (backbone, final norm, average
  pool, 1000-way head), default 224x224.
* detectors: MMDetection 2.x ``get_flops`` (``forward_dummy``): an input
  tensor (1, 3, 1280, 800), i.e. ``--shape 1280 800`` gives H=1280, W=800;
  backbone, neck and RPN head forward, then the RoI heads on 1000 proposals
  (bbox) and on the first 100 of them (mask), in every cascade stage; no NMS.
  (MMDetection 3.x's tool runs the mask heads of a cascade on all proposals.)
* segmentors: MMSegmentation ``get_flops``: backbone, neck and decode head
  (tensor mode, no auxiliary head) on an input (1, 3, s0, s1) of the test
  pipeline's resize scale (s0, s1): 2048x512 for the ADE20K 512 configs,
  2560x640 for the 640 ones (2048x512 where a config has no test Resize).
* query-based models (Mask2Former, in mmdet or mmseg): backbone, pixel decoder
  and transformer decoder with every layer's class and mask predictions (no
  post-processing, no panoptic/instance inference); default input 800x800 for
  both, the size closest to the published Mask2Former DiNAT-L costs, 522G (COCO)
  and 518G (ADE20K): counted here 520.2G (-0.35%) and 507.3G (-2.1%); at the
  training crops the same models count 850.2G (COCO, 1024x1024) and 325.2G
  (ADE20K, 640x640).

Examples::

    python tools/analysis_tools/get_flops.py --arch tiny
    python tools/analysis_tools/get_flops.py configs/mask_rcnn_nat_tiny_coco.py
    python tools/analysis_tools/get_flops.py configs/upernet_nat_tiny_ade20k.py --shape 2048 512
    python tools/analysis_tools/get_flops.py configs/upernet_nat_tiny_ade20k.py --backbone-only \
        --shape 512 512
    python tools/analysis_tools/get_flops.py configs/mask2former_dinat_large_ade20k.py
"""
import argparse
import math
import random
from pathlib import Path

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.print_helper import complexity_stats_table
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings
from torch import nn

from nat_mm import NAT
from nat_mm.deploy.model import config_test_scale, needs_data_samples
from nat_mm.ops import flops

#: Default (H, W) per kind of model; see the module docstring.
DEFAULT_SHAPES = {'classifier': (224, 224), 'mmdet': (1280, 800), 'mmseg': (2048, 512),
                  'mmdet-query': (800, 800), 'mmseg-query': (800, 800)}
#: The mmdet 2.x ``forward_dummy`` numbers of RoIs for bbox and mask heads.
NUM_BBOX_ROIS, NUM_MASK_ROIS = 1000, 100
CLASSIFICATION_CLASSES = 1000


def analyze_flops(model, inputs):
    """A FlopAnalyzer of ``model(*inputs)`` whose counts include the
    neighbourhood attention; the trace runs here, so the analyzer's
    ``total()``, ``by_operator()``, ``by_module()`` are ready to read."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(flops.NA_NODE_KIND, flops.flop_handle)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with flops.na2d_as_one_node(), torch.no_grad():
        analyzer.total()
    return analyzer


class ClassificationBody(nn.Module):
    """NAT classification network: backbone, final LayerNorm, average pool, head.

    The backbone's output norm of the last level is the classifier's final norm.
    Shape: (B, 3, H, W) -> (B, num_classes).
    """

    def __init__(self, arch, num_classes=CLASSIFICATION_CLASSES):
        super().__init__()
        self.backbone = NAT(arch=arch, out_indices=(3,))
        self.head = nn.Linear(self.backbone.num_features[-1], num_classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


class DetectorDummyForward(nn.Module):
    """A two-stage detector as MMDetection 2.x ``forward_dummy`` ran it.

    Backbone, neck, RPN head (convolutions only), then every bbox head on
    :data:`NUM_BBOX_ROIS` fixed proposals and every mask head on the first
    :data:`NUM_MASK_ROIS` of them. Shape: (1, 3, H, W) -> tuple of head outputs.
    """

    def __init__(self, detector):
        super().__init__()
        for part in ('rpn_head', 'roi_head'):
            if getattr(detector, part, None) is None:
                raise ValueError(
                    f'get_flops: {type(detector).__name__} has no {part}; two-stage '
                    'detectors (Mask R-CNN, Cascade Mask R-CNN, ...) and Mask2Former/MaskFormer '
                    '(panoptic_head) are supported')
        self.detector = detector

    @staticmethod
    def proposals(height, width, num, device):
        """``num`` fixed boxes (x1, y1, x2, y2) inside an H x W image."""
        # Python's generator, not torch's: the boxes are constants of the traced graph (torch
        # 2.1's JIT tracer refuses a torch.Generator argument)
        rng = random.Random(0)
        boxes = []
        for _ in range(num):
            x1, y1 = rng.random() * width * 0.75, rng.random() * height * 0.75
            boxes.append([x1, y1, x1 + rng.random() * width * 0.25 + 8,
                          y1 + rng.random() * height * 0.25 + 8])
        return torch.tensor(boxes, device=device)

    def forward(self, inputs):
        from mmdet.structures.bbox import bbox2roi
        features = self.detector.extract_feat(inputs)
        outs = (self.detector.rpn_head(features),)
        rois = bbox2roi([self.proposals(*inputs.shape[-2:], NUM_BBOX_ROIS, inputs.device)])
        roi_head = self.detector.roi_head
        # _bbox_forward / _mask_forward are the per-stage forwards of MMDetection's
        # RoI heads; cascade heads take the stage index first.
        stages = [(stage,) for stage in range(roi_head.num_stages)] \
            if hasattr(roi_head, 'num_stages') else [()]
        if roi_head.with_bbox:
            outs += tuple(roi_head._bbox_forward(*stage, features, rois)['cls_score']
                          for stage in stages)
        if roi_head.with_mask:
            outs += tuple(roi_head._mask_forward(*stage, features, rois[:NUM_MASK_ROIS])
                          ['mask_preds'] for stage in stages)
        return outs


class SegmentorTensorForward(nn.Module):
    """An MMSegmentation segmentor in tensor mode (backbone, neck, decode head)."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs):
        return self.segmentor(inputs, mode='tensor')


class QueryHeadForward(nn.Module):
    """A Mask2Former-style model (mmdet ``MaskFormer``, or an mmseg segmentor with a
    Mask2Former decode head): backbone (and neck, if any), then the head's forward,
    which returns the class scores and mask predictions of every decoder layer.

    These heads take the batch's data samples besides the features (mmseg's
    ``mode='tensor'`` does not pass them); only their meta information is given.
    Shape: (B, 3, H, W) -> (class scores, mask predictions), one per decoder layer.
    """

    def __init__(self, model, head_name):
        super().__init__()
        self.model = model
        self.head_name = head_name      # 'panoptic_head' (mmdet) or 'decode_head' (mmseg)

    def forward(self, inputs):
        from mmengine.structures import BaseDataElement
        height, width = inputs.shape[-2:]
        meta = dict(img_shape=(height, width), pad_shape=(height, width),
                    batch_input_shape=(height, width), ori_shape=(height, width))
        samples = [BaseDataElement(metainfo=meta) for _ in range(inputs.shape[0])]
        head = getattr(self.model, self.head_name)
        return head.forward(self.model.extract_feat(inputs), samples)


def build_from_config(path, backbone_only):
    """(model to count, kind) from an mmdet/mmseg config.

    kind is 'mmdet' or 'mmseg' (two-stage detectors, encoder-decoder segmentors),
    or 'mmdet-query' / 'mmseg-query' for Mask2Former-style models
    (:class:`QueryHeadForward`); with ``backbone_only`` always 'mmdet'/'mmseg'.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'get_flops: config {path} not found: give the path of an mmdet '
                                'or mmseg config file (e.g. configs/mask_rcnn_nat_tiny_coco.py)')
    cfg = Config.fromfile(path)
    kind = cfg.get('default_scope')
    if kind not in ('mmdet', 'mmseg'):
        raise ValueError(f"get_flops: {path} must set default_scope = 'mmdet' or 'mmseg' "
                         f'(directly or through its _base_), got {kind!r}')
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(kind)
    model = MODELS.build(cfg.model.backbone if backbone_only else cfg.model)
    model = revert_sync_batchnorm(model).eval()
    if backbone_only:
        return model, kind
    head_name = 'panoptic_head' if hasattr(model, 'panoptic_head') else 'decode_head'
    head = getattr(model, head_name, None)
    if head is not None and needs_data_samples(head):
        return QueryHeadForward(model, head_name), kind + '-query'
    wrapper = DetectorDummyForward if kind == 'mmdet' else SegmentorTensorForward
    return wrapper(model), kind


def default_shape(kind, config=None):
    """(H, W) counted when --shape is not given: a segmentor config's test resize
    scale, else :data:`DEFAULT_SHAPES` of the kind."""
    if kind == 'mmseg' and config is not None:
        scale = config_test_scale(Config.fromfile(config))
        if scale:
            return tuple(scale)
    return DEFAULT_SHAPES[kind]


def padded_shape(shape, divisor):
    return tuple(math.ceil(size / divisor) * divisor for size in shape)


def format_count(count):
    return f'{count / 1e9:.2f}G' if count >= 1e8 else f'{count / 1e6:.2f}M'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='an mmdet or mmseg config file')
    parser.add_argument('--arch', choices=['mini', 'tiny', 'small', 'base', 'large'],
                        help='count the NAT classification body of this arch (no config)')
    parser.add_argument('--backbone-only', action='store_true',
                        help="count only the config's backbone (with --arch: the NAT "
                             'backbone with its four output norms, no head)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width; default 224 224 (--arch), 1280 800 '
                             '(detectors), the test resize scale (segmentors), 800 800 '
                             '(Mask2Former; with --backbone-only as its detector/segmentor)')
    parser.add_argument('--show-table', action='store_true',
                        help='also print the per-module table (depth 3)')
    args = parser.parse_args(argv)
    if args.config is None and args.arch is None:
        parser.error('nothing to count: give a CONFIG (an mmdet or mmseg config) or --arch '
                     '(a NAT classification body)')
    if args.config is not None and args.arch is not None:
        parser.error(f'both a CONFIG ({args.config}) and --arch {args.arch}: give one of them')
    if args.shape is not None and min(args.shape) < 1:
        parser.error('--shape sizes must be >= 1')
    return args


def main(argv=None):
    """Prints the counts; returns dict(shape=(H, W), params=..., flops=total multiply-adds)."""
    args = parse_args(argv)
    if args.arch:
        model = (NAT(arch=args.arch) if args.backbone_only else ClassificationBody(args.arch))
        kind, what = 'classifier', f'NAT-{args.arch} ' + (
            'backbone' if args.backbone_only else 'classification body')
        model.eval()
    else:
        model, kind = build_from_config(args.config, args.backbone_only)
        what = f'{args.config}' + (' (backbone only)' if args.backbone_only else '')
    height, width = args.shape or default_shape(kind, args.config)
    if kind.startswith('mmdet') and not args.backbone_only:
        # mmdet's data preprocessor pads the batch to a multiple of 32
        height, width = padded_shape((height, width), 32)
    inputs = (torch.randn(1, 3, height, width),)
    analyzer = analyze_flops(model, inputs)
    total = analyzer.total()
    params = parameter_count(model)['']
    print(f'{what}\ninput: (1, 3, {height}, {width})')
    print(f'params: {params / 1e6:.2f}M')
    print(f'flops (multiply-adds): {format_count(total)}')
    for operator, count in analyzer.by_operator().most_common():
        print(f'  {operator:24s} {format_count(count):>9s} ({count / total:.1%})')
    if args.show_table:
        print(complexity_stats_table(analyzer, max_depth=3, show_param_shapes=False))
    return dict(shape=(height, width), params=params, flops=total)


if __name__ == '__main__':
    main()
