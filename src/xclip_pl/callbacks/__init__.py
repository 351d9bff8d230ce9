"""What observes a run, as Lightning callbacks a recipe lists in ``trainer.callbacks``.

Imported here so that their short names work on the command line (``--trainer.callbacks+=TestTimeRescoring``).
"""
from xclip_pl.callbacks.diagnostics import RetrievalDiagnostics
from xclip_pl.callbacks.examples import RetrievalExamples
from xclip_pl.callbacks.progress import XCLIPProgressBar
from xclip_pl.callbacks.rescoring import TestTimeRescoring
from xclip_pl.callbacks.summary import RunSummary
from xclip_pl.callbacks.throughput import Throughput
from xclip_pl.callbacks.tokenizer import TokenizerCopy

__all__ = ["RetrievalDiagnostics", "RetrievalExamples", "RunSummary", "TestTimeRescoring", "Throughput", "TokenizerCopy",
           "XCLIPProgressBar"]
