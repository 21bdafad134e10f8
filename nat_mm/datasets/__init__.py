from .synthetic import (SEG_CLASSES, SEG_PALETTE, SHAPE_CLASSES, SHAPE_PALETTE,
                        dataloader_datasets, generate_ade20k_like, generate_coco_like,
                        generate_demo_data, render_scene)

__all__ = [
    'SEG_CLASSES', 'SEG_PALETTE', 'SHAPE_CLASSES', 'SHAPE_PALETTE', 'dataloader_datasets',
    'generate_ade20k_like', 'generate_coco_like', 'generate_demo_data', 'render_scene'
]
