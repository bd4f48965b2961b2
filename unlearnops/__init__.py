"""unlearnops: production machine unlearning for large language models.

The core package: settings, storage, the documents that cross pipeline steps, the request
ledger, the text format shared by training and evaluation, model I/O and the CLI shell.
It never imports ``unlearnops.components`` or ``unlearnops.pipelines``.
"""

__version__ = "0.1.0"
