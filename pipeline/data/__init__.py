"""Data stages: ingest → split → preprocess → augment, and the fold views training reads.

OpenCV (resizing here, albumentations' warps in ``augment``) picks per CPU among SIMD kernels (SSE4, AVX2,
AVX-512) that round differently, so the same params gave other augmented bytes on another machine. Importing
this package turns the dispatch off: OpenCV's baseline kernels give the same bytes on every x86-64 CPU, at no
measured cost (README: Reproducibility).
"""

import cv2

cv2.setUseOptimized(False)
