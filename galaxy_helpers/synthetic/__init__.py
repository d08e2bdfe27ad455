"""A synthetic Galaxy Zoo sky: galaxies whose morphology we know, and volunteers who vote on them.

The built-in data of the course, in three steps a notebook can show one at a time:
:func:`draw_truth` (module ``truth``: a population like Galaxy Zoo DECaLS, plus rare features
tagged like Galaxy Zoo Talk, :data:`TAGS`), :func:`render_galaxy` (``render``: DECaLS-like
g/r/z images) and :func:`simulate_votes` (``volunteers``: volunteers walk the decision tree).
:func:`make_sky` (``sky``) runs all three into a cached catalogue that follows the catalogue
contract (DEVELOPERS.md); galaxy ``i`` depends only on ``(seed, i)``, so a small sky is a prefix
of a bigger one. ``montages`` draws example figures; ``python -m galaxy_helpers.synthetic
make|montage`` is the command line.

>>> from galaxy_helpers import synthetic
>>> catalogue = synthetic.make_sky(n_galaxies=500)  # doctest: +SKIP
"""

from .montages import montage_by_answer, montage_by_tag
from .render import render_galaxy
from .sky import make_sky, sky_dir
from .truth import DEFAULT_TAG_RATES, TAGS, TYPES, SkyConfig, draw_truth, truth_matches_answer
from .volunteers import answer_probabilities, simulate_votes, volunteer_numbers

__all__ = ["TAGS", "TYPES", "DEFAULT_TAG_RATES", "SkyConfig", "make_sky", "draw_truth"]
__all__ += ["render_galaxy", "answer_probabilities", "simulate_votes", "volunteer_numbers"]
__all__ += ["truth_matches_answer", "montage_by_answer", "montage_by_tag", "sky_dir"]
