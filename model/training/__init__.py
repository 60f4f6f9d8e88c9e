"""Training-time data pipeline for the embedded default model.

Fetches the allowed Debian packages, indexes and decodes their audio, renders synthetic stems,
splits whole sources into train and held-out, and builds on-the-fly mixtures and evaluation sets.
Never imported by the serving path.
"""
