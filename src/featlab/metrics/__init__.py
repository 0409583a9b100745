"""Metrics kept apart from tasks so every study measures the same way.

SR fidelity (PSNR/SSIM on the Y channel, the standard SR benchmark protocol), identification
accuracy and threshold sweeps, object-discovery scores (FG-ARI, mBO) and kNN evaluation: each is a
plain function returning per-sample values plus, where it is averaged over a data set, a
torchmetrics accumulator whose states sum correctly across DDP ranks.
"""
