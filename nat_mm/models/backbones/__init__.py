from .nat import NAT

__all__ = ['NAT']
