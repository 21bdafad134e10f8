"""Deployment: exportable modules of configs, ONNX export, ONNX Runtime checks.

mmdet/mmseg are imported only inside the functions that build models.
"""
from .model import (BackboneNeck, DeployModel, SegmentorLogits, build_deploy_model,
                    random_image)
from .onnx import MAX_SIZE, MIN_SIZE, OnnxModel, export_onnx, max_differences, read_metadata

__all__ = ['BackboneNeck', 'DeployModel', 'MAX_SIZE', 'MIN_SIZE', 'OnnxModel', 'SegmentorLogits',
           'build_deploy_model', 'export_onnx', 'max_differences', 'random_image',
           'read_metadata']
