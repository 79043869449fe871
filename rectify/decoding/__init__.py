"""Rectified decoding: caps from Q_D, their exact KL projection, a cached sampling loop, a LogitsProcessor."""

from rectify.decoding.caps import CapConfig, caps_from_q
from rectify.decoding.config import DecodingConfig
from rectify.decoding.processor import RectifyLogitsProcessor
from rectify.decoding.projection import Projection, project, project_to_caps
from rectify.decoding.rows import row_seed
from rectify.decoding.sampler import GenerationResult, RectifiedSampler, VocabularyMismatch
from rectify.decoding.warping import warp_logits

__all__ = [
    "CapConfig", "DecodingConfig", "GenerationResult", "Projection", "RectifiedSampler", "RectifyLogitsProcessor", "VocabularyMismatch",
    "caps_from_q", "project", "project_to_caps", "row_seed", "warp_logits",
]
