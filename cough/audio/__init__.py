"""One recording, from bytes to window images: decoding, mel spectrograms, quality measures.

The import-light core that every featurizing Ray worker runs: numpy, scipy, soxr,
soundfile, pillow; never Ray, TensorFlow, pandas, or another package of cough (only
:mod:`cough.errors`). Modules: :mod:`.decode` (bytes → samples, bounded in memory),
:mod:`.melspec` (librosa's numbers without librosa), :mod:`.features` (windows → images,
:class:`~.features.FeaturizerParams`), :mod:`.colormap`, :mod:`.quality` (measures, events,
the quality gate), :mod:`.recording` (one recording → its row and images).
"""
