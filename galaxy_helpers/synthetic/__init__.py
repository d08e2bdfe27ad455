"""A synthetic Galaxy Zoo sky: galaxies whose morphology we know, and volunteers who vote on them.

Three steps a notebook can show one at a time: :func:`draw_truth` (a DECaLS-like population with
rare Talk-like tags), :func:`render_galaxy` (g/r/z images) and :func:`simulate_votes`
(volunteers walk the decision tree). :func:`make_sky` runs all three into a cached catalogue;
galaxy ``i`` depends only on ``(seed, i)``, so a small sky is a prefix of a bigger one.
``python -m galaxy_helpers.synthetic make|montage`` is the command line.
"""

from .montages import montage_by_answer, montage_by_tag
from .render import render_galaxy
from .sky import make_sky, sky_dir
from .truth import DEFAULT_TAG_RATES, TAGS, TYPES, SkyConfig, draw_truth, truth_matches_answer
from .volunteers import answer_probabilities, simulate_votes

__all__ = ["TAGS", "TYPES", "DEFAULT_TAG_RATES", "SkyConfig", "make_sky", "draw_truth"]
__all__ += ["render_galaxy", "answer_probabilities", "simulate_votes"]
__all__ += ["truth_matches_answer", "montage_by_answer", "montage_by_tag", "sky_dir"]
