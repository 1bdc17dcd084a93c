"""embedsvc: transfer learning as a service.

Frozen pretrained backbones turn images into vectors; vectors feed indexes and light heads.
Heavy modules (torch, timm) are imported only when used, so ``import embedsvc`` stays cheap.
"""
__version__ = "0.1.0"
