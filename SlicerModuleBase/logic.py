"""The Logic base of both Slicer modules: a pipeline run in a child process, from a request to output nodes.

A module's Logic (CTPerfusionMappingLogic, DoseCNNLogic) has one public method that a script calls with explicit
keyword arguments and nodes, ``process(inputCT, ..., waitForCompletion=True, timeoutSeconds=None, onProgress=None)``,
like SlicerTotalSegmentator's and MONAIAuto3DSeg's Logic. It packs the keywords into the module's request (a dataclass
of the core's ``slicer_glue`` whose ``problem()`` checks it) and calls :meth:`PipelineLogic.run`:

1. :meth:`~PipelineLogic.start`: the request's problem and the missing packages, as one-line UserErrors, before
   anything is written; then a temporary folder, the module's ``exportInputs(request, folder)``, its
   ``childCommand(request, inputs, outputFolder)`` started with ``childEnvironment()``
   (:func:`~SlicerModuleBase.jobs.startJob`);
2. ``waitForCompletion``: wait (batch scripts, self-tests); otherwise the job is returned and the GUI polls it;
3. :meth:`~PipelineLogic.finish`: the child's one-line error, or the module's ``importResults(outputFolder, request,
   inputs)``, which fills (or creates) the output nodes and returns them by keyword (``{"outputTable": node, ...}``).

The parameter node is the Widget's: the Logic never reads it.
"""

import importlib.util
import sys

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from ImagingBasics.errors import UserError
from ImagingBasics.process import device_probe_command, device_text

from .jobs import startJob

#: the results files of the pipelines' children, the first found holds the run's quality warnings
RESULTS_FILES = ("metrics.json", "run.json", "integrate.json")
#: node attribute that marks a module's quality-warnings table (value: the Logic's class name)
WARNINGS_TABLE_ATTRIBUTE = "SlicerLungFunction.QualityWarnings"
#: the columns of the quality-warnings table (as ImagingBasics.slicer_nodes.fill_typed_table takes them)
WARNINGS_TABLE_COLUMNS = (
    ("code", "Code", "string", "", "what was found (the code of the warning in the run's results file)"),
    ("message", "Warning", "string", "", "what was found, how much, and what it means for the results"),
)


class PipelineLogic(ScriptedLoadableModuleLogic):
    """What both modules' Logic share; the module sets the class attributes and defines the hooks below."""

    #: the module's request dataclass: its fields are the keywords of ``process``
    requestClass = None
    #: prefix of the module's temporary folders (under ``slicer.app.temporaryPath``)
    temporaryPrefix = "pipeline-"
    #: the device line when torch is not installed (what the module can still do)
    noTorchText = ("PyTorch is not installed: install the PyTorch extension (Extension Manager), then PyTorchUtils "
                   "installs torch")

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.summary = ""  # one line about the last results, for the status line
        self.warnings = []  # the quality warnings of the last results
        self.importWarnings = []  # warnings importResults found itself ({"code", "message"} dicts), reported too

    # --- the module's hooks ---------------------------------------------------------------------------------------
    def requiredPackages(self, request=None):
        """{import name: how to install it} of the Python packages a run of ``request`` needs."""
        return {}

    def exportInputs(self, request, folder):
        """Write the input nodes into ``folder`` for the child; return what was written (paths and what the results
        need)."""
        raise NotImplementedError

    def childCommand(self, request, inputs, outputFolder):
        """The child's command line (a list of strings)."""
        raise NotImplementedError

    def childEnvironment(self):
        """The child's environment (the packages' folders on PYTHONPATH)."""
        raise NotImplementedError

    def importResults(self, outputFolder, request, inputs):
        """Fill (or create) the output nodes from the child's files; return them by keyword. Quality warnings of work
        done here (not by the child) go into :attr:`importWarnings` (``{"code", "message"}`` dicts), which
        :meth:`reportWarnings` reports after the child's."""
        raise NotImplementedError

    # --- checks ---------------------------------------------------------------------------------------------------
    def inputProblem(self, **keywords):
        """Why a run with these keywords (those of ``process``) cannot start, in one line a user can act on, or None."""
        return self.requestClass(**keywords).problem()

    def describeDevices(self):
        """What the child will compute on (torch is looked up without importing it into Slicer)."""
        if importlib.util.find_spec("torch") is None:
            return self.noTorchText
        return "PyTorch found; device 'auto' uses a CUDA GPU when there is one, else the CPU"

    def deviceProbeCommand(self):
        """The child that reports what torch can use (torch is never imported into Slicer itself)."""
        return device_probe_command(sys.executable)

    def deviceText(self, lines, errorText=""):
        """The device line from the probe's output lines."""
        return device_text(lines, errorText)

    def torchInstallHint(self):
        """How to install torch in this Slicer."""
        if importlib.util.find_spec("PyTorchUtils") is not None:
            return "the PyTorch extension is installed: run PyTorchUtils.PyTorchUtilsLogic().torch in the Python console"
        return "install the PyTorch extension from the Extension Manager, restart, then let it install torch"

    def missingPackages(self, request=None):
        """Python packages a run needs that this Slicer lacks, each with how to install it."""
        return {name: how for name, how in self.requiredPackages(request).items()
                if importlib.util.find_spec(name) is None}

    # --- running --------------------------------------------------------------------------------------------------
    def start(self, request, onProgress=None):
        """Check the request, export its inputs and start the child; returns the job (poll it, then :meth:`finish`)."""
        problem = request.problem()
        if problem:
            raise UserError(problem)
        missing = self.missingPackages(request)
        if missing:
            raise UserError("missing Python packages: " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
        return startJob(slicer.app.temporaryPath, self.temporaryPrefix, request, self.exportInputs, self.childCommand,
                        self.childEnvironment(), onProgress)

    def finish(self, job):
        """After the child ended: the output nodes by keyword; raises the child's one-line error. The run's quality
        warnings (:attr:`warnings`) are logged and the first is added to :attr:`summary`. The job's folder is removed
        either way."""
        try:
            outputFolder = job.outputFolder()
            self.importWarnings = []
            outputs = self.importResults(outputFolder, job.request, job.inputs)
            self.reportWarnings(outputFolder)
            return outputs
        finally:
            job.cleanup()

    def reportWarnings(self, outputFolder):
        """The quality warnings the child wrote into its results file (metrics.json, run.json or integrate.json), then
        those of :attr:`importWarnings`: kept in :attr:`warnings`, logged, the first shown in the status line, and all
        of them in the module's quality-warnings table (:meth:`warningsTable`; emptied by a run without warnings)."""
        import logging
        import os

        from ImagingBasics.quality import read_warnings, status_text
        from ImagingBasics.slicer_nodes import fill_typed_table

        results = [os.path.join(outputFolder, name) for name in RESULTS_FILES]
        found = next((read_warnings(path) for path in results if os.path.isfile(path)), [])
        found += [{"code": str(w["code"]), "message": str(w["message"])} for w in self.importWarnings]
        self.warnings = [w["message"] for w in found]
        for message in self.warnings:
            logging.warning("%s: %s", type(self).__name__, message)
        self.summary += status_text(self.warnings)
        table = self.warningsTable(create=bool(found))
        if table is not None:
            fill_typed_table(table, found, WARNINGS_TABLE_COLUMNS)

    def warningsTable(self, create=False):
        """The table node of this module's quality warnings (one per scene, found by its attribute), created when
        ``create`` and absent; None otherwise."""
        name = type(self).__name__
        tables = slicer.mrmlScene.GetNodesByClass("vtkMRMLTableNode")
        for i in range(tables.GetNumberOfItems()):
            node = tables.GetItemAsObject(i)
            if node.GetAttribute(WARNINGS_TABLE_ATTRIBUTE) == name:
                return node
        if not create:
            return None
        title = name[:-len("Logic")] if name.endswith("Logic") else name
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} quality warnings")
        node.SetAttribute(WARNINGS_TABLE_ATTRIBUTE, name)
        return node

    def run(self, request, waitForCompletion=True, timeoutSeconds=None, onProgress=None):
        """:meth:`start`; with ``waitForCompletion`` wait and :meth:`finish` (the output nodes), else the job."""
        job = self.start(request, onProgress)
        if not waitForCompletion:
            return job
        job.wait(timeoutSeconds)
        return self.finish(job)

    def runCLI(self, module, parameters, what):
        """``slicer.cli.runSync``, which does not raise: its status is checked here (RuntimeError '<what> failed: ...')."""
        cli = slicer.cli.runSync(module, None, parameters)
        failed = cli.GetStatus() & cli.ErrorsMask
        errorText = cli.GetErrorText()
        slicer.mrmlScene.RemoveNode(cli)
        if failed:
            raise RuntimeError(f"{what} failed: {errorText}")
