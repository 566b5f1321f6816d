"""Using a trained run: predict new images, export the network with its preprocessing, convert FC to CONV.

Everything here starts from a run (or ensemble) directory alone, never from the training data.
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.deploy.convert import ConvertResult, convert_run
    from babysit.deploy.export import ExportResult, export_run
    from babysit.deploy.load import Classifier, LoadedRun, load_model, load_run_alone
    from babysit.deploy.predict import Predictions, format_predictions, predict, write_csv

__all__ = ["Classifier", "ConvertResult", "ExportResult", "LoadedRun", "Predictions", "convert_run", "export_run",
           "format_predictions", "load_model", "load_run_alone", "predict", "write_csv"]

__getattr__, __dir__ = attach(__name__)
