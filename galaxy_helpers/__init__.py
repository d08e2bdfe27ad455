"""Helpers behind the galaxy morphology course (Walmsley et al. 2022, MNRAS 513, 1581).

Each notebook has one thin module here (``explore``, ``training``, ``representations``,
``similarity``, ``anomaly``, ``finetuning``); shared machinery lives in ``schema``,
``synthetic``, ``images``, ``plotting``, ``course`` and ``data``.
"""

__version__ = "0.1.0"
