"""Evaluation: CMC / mAP / mINP, re-ranking, protocols, feature extraction."""
