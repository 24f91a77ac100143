import os, sys
_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mlstorlets.zip')
if os.path.exists(_LIB) and _LIB not in sys.path:
    sys.path.insert(0, _LIB)

# Storlet training and scoring mlstorlets' SGD estimators next to the data.
# The logic lives in mlstorlets.linear_model.training so that it is tested
# without an engine; this class only moves bytes.

from mlstorlets.errors import ObjectError  # noqa: E402
from mlstorlets.linear_model import training  # noqa: E402


class SGDEstimatorStorlet(object):
    """Run one SGD operation (partial_fit, score, labels) on the input object.

    Parameters
    ----------
    logger : logging.Logger-like
        The engine's storlet logger.
    """

    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        out = out_files[0]
        try:
            # The whole result is computed before anything is written, so a
            # failure never leaves half an output behind.
            metadata, body = training.run(in_files, dict(params))
        except ObjectError as exc:
            self.logger.info('sgd_estimator refused %s' % exc)
            raise
        finally:
            for f in in_files:
                f.close()
        out.set_metadata(metadata)
        out.write(body)
        out.close()
