"""Export to ONNX, run in ONNX Runtime, compare with PyTorch.

While exporting, :func:`nat_mm.ops.na2d` runs the dense ``'export'`` backend
(:mod:`nat_mm.ops.export`), whose window indices are computed from the
symbolic map size, so a ``dynamic=True`` export serves every input size in
``[MIN_SIZE, MAX_SIZE]`` (height and width independently).

The file keeps what a consumer needs to feed it in its ``metadata_props``
(JSON values under ``nat_mm.*`` keys): the preprocessing (mean, std, channel
order), the test resize scale, the export size and whether it is dynamic,
the size limits, classes and palette.

Dynamic exports swap ``nn.AdaptiveAvgPool2d`` for its matmul form
(:mod:`nat_mm.deploy.pooling`): exported as is, its windows are those of the
example size.
"""
import contextlib
import json

import numpy as np
import torch

from ..compat import require_export_support
from .pooling import exportable_adaptive_pooling

#: Dynamic exports accept heights and widths in [MIN_SIZE, MAX_SIZE]: at
#: least one pixel at NAT's stride 32 (smaller maps go through the
#: small-input padding, which is symbolic too).
MIN_SIZE = 32
MAX_SIZE = 4096
METADATA_PREFIX = 'nat_mm.'


def export_onnx(module, shape, path, dynamic=False, output_names=('output',), metadata=None):
    """Exports ``module`` (one image input) with ``torch.onnx.export(dynamo=True)``.

    Args:
        module: an nn.Module taking ``image`` (B, 3, H, W) float32 (eval mode).
        shape: (H, W) of the example input (the only size of a static export).
        path: where to write the .onnx file.
        dynamic: symbolic height and width (MIN_SIZE..MAX_SIZE) instead of ``shape``.
        output_names: one name per output tensor.
        metadata: dict of JSON-able values stored in the file's metadata_props.

    Returns:
        ``path``.
    """
    require_export_support('export_onnx')
    import onnx
    from torch.export import Dim
    height, width = shape
    if dynamic and not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise ValueError(
            f'export_onnx: a dynamic export needs an example size within [{MIN_SIZE}, '
            f'{MAX_SIZE}], got {height}x{width}; choose --shape inside that range')
    example = torch.zeros(1, 3, height, width)
    dynamic_shapes = None
    if dynamic:
        # Positional (one entry per input), whatever the module names its argument.
        dynamic_shapes = ({2: Dim('height', min=MIN_SIZE, max=MAX_SIZE),
                           3: Dim('width', min=MIN_SIZE, max=MAX_SIZE)},)
    # A dynamic export of nn.AdaptiveAvgPool2d (UperNet's pyramid pooling) computes
    # wrong windows at other sizes; its matmul form is exact at every size.
    pooling = exportable_adaptive_pooling(module) if dynamic else contextlib.nullcontext()
    with torch.no_grad(), pooling:
        program = torch.onnx.export(
            module, (example,), input_names=['image'], output_names=list(output_names),
            dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False)
    program.save(path)
    model = onnx.load(path)
    props = dict(metadata or {}, input_shape=[height, width], dynamic=bool(dynamic),
                 min_size=MIN_SIZE if dynamic else None, max_size=MAX_SIZE if dynamic else None)
    onnx.helper.set_model_props(
        model, {METADATA_PREFIX + key: json.dumps(value) for key, value in props.items()})
    onnx.save(model, path)
    return path


def read_metadata(props):
    """The ``nat_mm.*`` entries of a metadata_props mapping, JSON-decoded."""
    return {key[len(METADATA_PREFIX):]: json.loads(value) for key, value in props.items()
            if key.startswith(METADATA_PREFIX)}


class OnnxModel:
    """An exported file in an ONNX Runtime CPU session.

    Args:
        path: the .onnx file.
        threads: intra-op threads (default: torch's thread count, so that
            side-by-side timings use the same cores).
    """

    def __init__(self, path, threads=None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        self.path = path
        self.metadata = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check_input(self, image):
        """Raises ValueError when ``image``'s size is outside what the file was exported for."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(
                f'{self.path}: expects a (B, 3, H, W) image, got shape {tuple(image.shape)}')
        height, width = image.shape[2:]
        meta = self.metadata
        if not meta.get('dynamic', False):
            expected = tuple(meta.get('input_shape', (height, width)))
            if (height, width) != expected:
                raise ValueError(
                    f'{self.path} was exported for {expected[0]}x{expected[1]} inputs only, got '
                    f'{height}x{width}: resize the image to that size, or export with --dynamic '
                    'for any size')
        elif not (meta['min_size'] <= min(height, width)
                  and max(height, width) <= meta['max_size']):
            raise ValueError(
                f'{self.path} is a dynamic export for heights and widths in '
                f"[{meta['min_size']}, {meta['max_size']}], got {height}x{width}: resize the "
                'image into that range (or pad it)')

    def __call__(self, image):
        """(B, 3, H, W) float32 array or tensor -> list of output arrays."""
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        image = np.ascontiguousarray(image, dtype=np.float32)
        self.check_input(image)
        return self.session.run(self.output_names, {self.input_name: image})


def max_differences(expected, actual):
    """(max abs difference, max abs difference / max abs of ``expected``) over
    matching output lists (tensors or arrays)."""
    if len(expected) != len(actual):
        raise ValueError(
            f'PyTorch gave {len(expected)} outputs, ONNX Runtime {len(actual)}')
    abs_diff, scale = 0., 0.
    for e, a in zip(expected, actual):
        e = e.detach().cpu().numpy() if isinstance(e, torch.Tensor) else np.asarray(e)
        if e.shape != a.shape:
            raise ValueError(f'output shapes differ: PyTorch {e.shape}, ONNX Runtime {a.shape}')
        abs_diff = max(abs_diff, float(np.abs(e.astype(np.float64) - a).max()))
        scale = max(scale, float(np.abs(e).max()))
    return abs_diff, abs_diff / scale if scale else 0.
