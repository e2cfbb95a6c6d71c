"""DoseCNN: Lu-177 dose-rate and absorbed-dose maps from SPECT/CT (voxel dose kernels with density scaling, optionally
corrected by a residual CNN), with per-organ statistics and DVHs.

Thin Slicer glue over the tested core (DoseCNNLib): the Logic exports the input nodes to files, runs ``dosecnn run``
(one time point) or ``dosecnn integrate`` (several time points) in a PythonSlicer child process (the GUI stays
responsive and Cancel works; batch scripts and the self-test wait for it), and imports the results as new nodes. The
child-process protocol and node adapter are shared with CTPerfusionMapping (CTPerfusionMappingLib/process.py and
slicer_nodes.py); the command lines, tables and batch arguments are in DoseCNNLib/slicer_*.py.

Time points (several SPECT/CTs): a table of rows (SPECT, CT, hours after administration, activity in the SPECT's field
of view); the CT of a row may be left empty for the reference CT (the CT input), and the outputs lie on the
reference CT's grid. The rows are kept in the parameter node as a list of parameter packs.
"""

import logging
import os
import shutil
import sys
import tempfile
from typing import Annotated, List, Optional

import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DoseCNNLib.slicer_glue import commands as slicer_commands  # the GUI's choices and the child's command lines (no torch)

METHODS = list(slicer_commands.METHODS)
CALIBRATIONS = list(slicer_commands.CALIBRATIONS)
FIT_MODELS = list(slicer_commands.FIT_MODELS)
START_MODES = list(slicer_commands.START_MODES)
REGISTRATION_METRICS = list(slicer_commands.REGISTRATION_METRICS)
DEVICES = ["auto", "cpu", "cuda"]
#: columns of the time-point table
TIME_POINT_COLUMNS = ("SPECT", "CT (empty: the reference CT)", "Time (h)", "Activity (MBq)")


class DoseCNN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DoseCNN"
        self.parent.categories = ["Radiotherapy"]
        self.parent.dependencies = []
        self.parent.contributors = ["CTPerfusionMapping / DoseCNN developers"]
        self.parent.helpText = (
            "Lu-177 voxel dosimetry from SPECT/CT: the dose-rate map (mGy/s) by voxel dose kernel convolution with "
            "density scaling, optionally corrected by a residual CNN trained on Monte Carlo (Li et al.); with several "
            "time points, the time-integrated absorbed dose (Gy). Per organ/lesion: dose statistics, DVHs and, "
            "against a reference map, MDE and NRMSE. <b>Research software, not for clinical use</b>; the bundled CNN "
            "is trained on synthetic phantoms only.")
        self.parent.acknowledgementText = (
            "Methods after Li et al. (residual CNN on voxel dose kernels for Lu-177 dosimetry). Decay data: ICRP "
            "Publication 107.")


@parameterPack
class DoseTimePoint:
    """One SPECT/CT time point: hours after administration; activity in the SPECT's field of view (MBq; used with
    that calibration); ct None: the reference CT."""

    spect: Optional[vtkMRMLScalarVolumeNode]
    ct: Optional[vtkMRMLScalarVolumeNode]
    hours: float = 24.0
    activityMBq: float = 0.0


@parameterNodeWrapper
class DoseCNNParameterNode:
    inputCT: vtkMRMLScalarVolumeNode
    inputSPECT: Optional[vtkMRMLScalarVolumeNode]
    inputSegmentation: Optional[vtkMRMLSegmentationNode]
    inputLabelmap: Optional[vtkMRMLLabelMapVolumeNode]
    inputReference: Optional[vtkMRMLScalarVolumeNode]
    integrate: bool = False
    timePoints: List[DoseTimePoint]
    method: Annotated[str, Choice(METHODS)] = "VDK"
    calibration: Annotated[str, Choice(CALIBRATIONS)] = "Activity in the field of view (MBq)"
    activityMBq: Annotated[float, WithinRange(0.0, 1000000.0)] = 0.0
    bqPerCount: Annotated[float, WithinRange(0.0, 1.0e9)] = 0.0
    useBundledModel: bool = True
    weightsFile: str = ""
    device: Annotated[str, Choice(DEVICES)] = "auto"
    fitModel: Annotated[str, Choice(FIT_MODELS)] = "Mono-exponential"
    startMode: Annotated[str, Choice(START_MODES)] = "First value held back to 0 h"
    registerCTs: bool = True
    registrationMetric: Annotated[str, Choice(REGISTRATION_METRICS)] = "Mean squares (HU)"
    outputDoseRate: Optional[vtkMRMLScalarVolumeNode]
    outputAbsorbedDose: Optional[vtkMRMLScalarVolumeNode]
    outputTable: Optional[vtkMRMLTableNode]
    outputDVHTable: Optional[vtkMRMLTableNode]
    outputDVHChart: Optional[vtkMRMLPlotChartNode]
    outputTimePointDoseRates: List[vtkMRMLScalarVolumeNode]


class DoseCNNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._probe = None
        self._probeTimer = None
        self._updatingTable = False

    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DoseCNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DoseCNNLogic()
        self.ui.deviceLabel.text = self.logic.describeDevices()
        if self.logic.missingPackages().get("torch") is None:
            self._startDeviceProbe()
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        table = self.ui.timePointsTableWidget
        table.setColumnCount(len(TIME_POINT_COLUMNS))
        table.setHorizontalHeaderLabels(list(TIME_POINT_COLUMNS))
        table.horizontalHeader().setSectionResizeMode(qt.QHeaderView.Stretch)
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.addTimePointButton.connect("clicked(bool)", self.onAddTimePoint)
        self.ui.removeTimePointButton.connect("clicked(bool)", self.onRemoveTimePoint)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsChanged)
        self.initializeParameterNode()

    def _startDeviceProbe(self):
        """Ask a child process what torch can use (torch is never imported into Slicer itself); the same probe as
        CTPerfusionMapping's (``ctpm devices --json``)."""
        import qt

        from ImagingBasics.process import PipelineProcess

        lines = []
        self._probe = PipelineProcess(self.logic.deviceProbeCommand(), env=slicer_commands.child_environment(),
                                      on_text=lines.append)
        self._probe.start()
        self._probeTimer = qt.QTimer()
        self._probeTimer.setInterval(200)

        def poll():
            if self._probe.poll():
                return
            self._probeTimer.stop()
            self.ui.deviceLabel.text = self.logic.deviceText(lines, self._probe.error_text())

        self._probeTimer.connect("timeout()", poll)
        self._probeTimer.start()

    def cleanup(self):
        self.onCancelButton()
        if self._probe is not None:
            self._probeTimer.stop()
            self._probe.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputCT:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputCT = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.ui.weightsPathLineEdit.currentPath = self._parameterNode.weightsFile
            self._tableFromTimePoints()
            self._checkCanApply()

    def onWeightsChanged(self, path):
        if self._parameterNode:
            self._parameterNode.weightsFile = path

    # --- the time-point table (bound by hand: a list of parameter packs) ------------------------------------------
    def _nodeComboBox(self, toolTip):
        combo = slicer.qMRMLNodeComboBox()
        combo.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        combo.showChildNodeTypes = False  # no label maps
        combo.noneEnabled = True
        combo.addEnabled = False
        combo.removeEnabled = False
        combo.renameEnabled = False
        combo.toolTip = toolTip
        combo.setMRMLScene(slicer.mrmlScene)
        return combo

    def _spinBox(self, value, maximum, suffix, toolTip):
        import qt

        box = qt.QDoubleSpinBox()
        box.decimals = 1
        box.setRange(0.0, maximum)
        box.suffix = suffix
        box.value = value
        box.toolTip = toolTip
        return box

    def _addRow(self, point):
        table = self.ui.timePointsTableWidget
        row = table.rowCount
        table.insertRow(row)
        spect = self._nodeComboBox("SPECT of this time point (counts)")
        ct = self._nodeComboBox("CT of this time point; empty: the reference CT (the CT input above)")
        spect.setCurrentNode(point.spect)
        ct.setCurrentNode(point.ct)
        hours = self._spinBox(point.hours, 100000.0, " h", "hours after administration")
        activity = self._spinBox(point.activityMBq, 1000000.0, " MBq", "activity in this SPECT's field of view")
        for column, widget in enumerate((spect, ct, hours, activity)):
            table.setCellWidget(row, column, widget)
        for combo in (spect, ct):
            combo.connect("currentNodeChanged(vtkMRMLNode*)", self._timePointsFromTable)
        for box in (hours, activity):
            box.connect("valueChanged(double)", self._timePointsFromTable)

    def _tableFromTimePoints(self):
        self._updatingTable = True
        try:
            self.ui.timePointsTableWidget.setRowCount(0)
            for point in self._parameterNode.timePoints:
                self._addRow(point)
        finally:
            self._updatingTable = False

    def _timePointsFromTable(self, *args):
        if self._updatingTable or not self._parameterNode:
            return
        table = self.ui.timePointsTableWidget
        points = []
        for row in range(table.rowCount):
            spect, ct, hours, activity = (table.cellWidget(row, c) for c in range(len(TIME_POINT_COLUMNS)))
            points.append(DoseTimePoint(spect=spect.currentNode(), ct=ct.currentNode(), hours=float(hours.value),
                                        activityMBq=float(activity.value)))
        self._parameterNode.timePoints = points

    def onAddTimePoint(self):
        if not self._parameterNode:
            return
        points = list(self._parameterNode.timePoints)
        hours = 4.0 if not points else max(p.hours for p in points) + 24.0
        self._updatingTable = True
        try:
            self._addRow(DoseTimePoint(spect=None, ct=None, hours=hours, activityMBq=0.0))
        finally:
            self._updatingTable = False
        self._timePointsFromTable()

    def onRemoveTimePoint(self):
        table = self.ui.timePointsTableWidget
        row = table.currentRow() if table.currentRow() >= 0 else table.rowCount - 1
        if row >= 0:
            table.removeRow(row)
            self._timePointsFromTable()

    # --- state of the buttons ---------------------------------------------------------------------------------
    def _checkCanApply(self, caller=None, event=None):
        p = self._parameterNode
        problem = self.logic.inputProblem(p) if p else "no parameters"
        running = self._job is not None
        self.ui.applyButton.enabled = problem is None and not running
        self.ui.applyButton.toolTip = problem or "Compute the dose"
        if p:
            integrate = p.integrate
            byActivity = p.calibration == CALIBRATIONS[0]
            cnn = slicer_commands.METHODS[p.method] == "cnn"
            self.ui.inputSPECTSelector.enabled = not integrate
            self.ui.timePointsCollapsibleButton.enabled = integrate
            self.ui.timePointsTableWidget.setColumnHidden(3, not byActivity)
            self.ui.activitySpinBox.enabled = byActivity and not integrate
            self.ui.bqPerCountSpinBox.enabled = not byActivity
            self.ui.useBundledModelCheckBox.enabled = cnn
            self.ui.weightsPathLineEdit.enabled = cnn and not p.useBundledModel
            for widget in (self.ui.fitModelComboBox, self.ui.startModeComboBox, self.ui.registerCTsCheckBox,
                           self.ui.registrationMetricComboBox, self.ui.outputAbsorbedDoseSelector):
                widget.enabled = integrate
            self.ui.registrationMetricComboBox.enabled = integrate and p.registerCTs
            self.ui.outputDoseRateSelector.enabled = not integrate
        if not running:
            self.ui.statusLabel.text = problem or "Ready"

    # --- running ------------------------------------------------------------------------------------------------
    def onApplyButton(self):
        with slicer.util.tryWithErrorDisplay("Failed to start the dose calculation.", waitCursor=True):
            self._job = self.logic.start(self._parameterNode)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.cancelButton.show()
            self.ui.applyButton.enabled = False
            self.ui.statusLabel.text = "Starting..."
            self._timer.start()

    def onCancelButton(self):
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = "Cancelled"
            self._finishJob()

    def _poll(self):
        job = self._job
        if job is None:
            return
        if job.process.poll():
            self.ui.progressBar.value = int(round(100 * job.process.progress))
            step = job.process.step
            self.ui.statusLabel.text = (step[:1].upper() + step[1:] + "...") if step else "Working..."
            return
        self._finishJob(job)

    def _finishJob(self, job=None):
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        if job is not None:
            with slicer.util.tryWithErrorDisplay("The dose calculation failed.", waitCursor=True):
                try:
                    self.logic.finish(job, self._parameterNode)
                    self.ui.statusLabel.text = "Done: " + self.logic.summary
                except Exception:
                    self.ui.statusLabel.text = "Failed"
                    raise
        self._checkCanApply()


class DoseJob:
    """A running child process with its files (made by :meth:`DoseCNNLogic.start`)."""

    def __init__(self, process, workdir, inputs):
        self.process = process
        self.workdir = workdir
        self.inputs = inputs  # what exportInputs wrote: labels, names, colours, times

    def cancel(self):
        self.process.cancel()
        shutil.rmtree(self.workdir, ignore_errors=True)


class DoseCNNLogic(ScriptedLoadableModuleLogic):
    """Usable without the GUI: ``process(parameterNode)`` blocks; ``start`` + ``finish`` let a GUI poll."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.summary = ""
        self.kernelCache = None  # folder of computed kernels (None: ~/.cache/dosecnn/kernels)

    def getParameterNode(self):
        return DoseCNNParameterNode(super().getParameterNode())

    # --- checks -------------------------------------------------------------------------------------------------
    def describeDevices(self):
        """What the child will compute on (torch is looked up without importing it into Slicer)."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return ("PyTorch is not installed: the dose calculation needs it (the VDK convolution and the CNN run in "
                    "torch); install the PyTorch extension (Extension Manager), then PyTorchUtils installs torch")
        return "PyTorch found; device 'auto' uses a CUDA GPU when there is one, else the CPU"

    def deviceProbeCommand(self):
        from ImagingBasics.process import device_probe_command

        return device_probe_command(sys.executable)

    def deviceText(self, lines, errorText=""):
        from ImagingBasics.process import device_text

        return device_text(lines, errorText)

    def missingPackages(self, p=None):
        """Python packages the dose calculation needs that this Slicer lacks, each with how to install it."""
        import importlib.util

        if importlib.util.find_spec("PyTorchUtils") is not None:
            torchHow = "the PyTorch extension is installed: run PyTorchUtils.PyTorchUtilsLogic().torch in the Python console"
        else:
            torchHow = "install the PyTorch extension from the Extension Manager, restart, then let it install torch"
        if p is not None and slicer_commands.METHODS.get(p.method) == "cnn":
            torchHow = "the CNN method (and the VDK convolution) run in PyTorch: " + torchHow
        needs = {"torch": torchHow, "matplotlib": 'slicer.util.pip_install("matplotlib")'}
        if p is not None and p.integrate:
            needs["icrp107_database"] = 'slicer.util.pip_install("icrp107-database")'
        return {name: how for name, how in needs.items() if importlib.util.find_spec(name) is None}

    def inputProblem(self, p):
        """Why Apply cannot run yet, or None (one line a user can act on)."""
        byActivity = p.calibration == CALIBRATIONS[0]
        if not p.inputCT:
            return "Select a CT volume" + (" (the reference CT)" if p.integrate else "")
        if not p.integrate:
            if not p.inputSPECT:
                return "Select a SPECT volume, or turn on time integration and add time points"
            if p.inputSPECT == p.inputCT:
                return "The SPECT and the CT must be different volumes"
            if byActivity and not p.activityMBq > 0:
                return "Enter the activity in the SPECT's field of view (MBq)"
        else:
            points = list(p.timePoints)
            if len(points) < 2:
                return "Add at least 2 time points (SPECT, time, activity)"
            for n, point in enumerate(points, start=1):
                if not point.spect:
                    return f"Choose the SPECT of time point {n}"
                if point.spect == (point.ct or p.inputCT):
                    return f"Time point {n}: the SPECT and the CT must be different volumes"
                if byActivity and not point.activityMBq > 0:
                    return f"Enter the activity in the field of view of time point {n} (MBq)"
            hours = [point.hours for point in points]
            if len(set(hours)) != len(hours):
                return "Two time points have the same time; each needs its own hours after administration"
            if slicer_commands.FIT_MODELS[p.fitModel] == "bi" and len(points) < 3:
                return "The bi-exponential fit needs at least 3 time points; choose the mono-exponential fit"
        if not byActivity and not p.bqPerCount > 0:
            return "Enter the calibration factor (Bq per count)"
        if p.inputSegmentation and p.inputLabelmap:
            return "Choose a segmentation or a label map, not both"
        if slicer_commands.METHODS[p.method] == "cnn" and not p.useBundledModel:
            if not p.weightsFile:
                return "Choose a CNN weights file, or use the bundled model"
            if not os.path.isfile(p.weightsFile):
                return f"CNN weights file not found: {p.weightsFile}"
        return None

    # --- running ------------------------------------------------------------------------------------------------
    def start(self, p, onProgress=None):
        """Export the inputs and start the child (``dosecnn run`` or ``integrate``); returns a DoseJob (poll
        ``job.process``)."""
        from ImagingBasics.errors import UserError
        from ImagingBasics.process import PipelineProcess

        problem = self.inputProblem(p)
        if problem:
            raise UserError(problem)
        missing = self.missingPackages(p)
        if missing:
            raise UserError("missing Python packages: " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
        workdir = tempfile.mkdtemp(prefix="dosecnn-", dir=slicer.app.temporaryPath)
        try:
            inputs = self.exportInputs(p, workdir)
            command = self.childCommand(p, inputs, os.path.join(workdir, "out"))
            logging.info("DoseCNN: " + " ".join(command))
            process = PipelineProcess(command, env=slicer_commands.child_environment(), on_progress=onProgress).start()
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return DoseJob(process, workdir, inputs)

    def childCommand(self, p, inputs, out):
        byActivity = p.calibration == CALIBRATIONS[0]
        method = slicer_commands.METHODS[p.method]
        weights = p.weightsFile if method == "cnn" and not p.useBundledModel else None
        if not p.integrate:
            return slicer_commands.run_command(
                inputs["spect"], inputs["ct"], out, python=sys.executable,
                activity_mbq=p.activityMBq if byActivity else None, bq_per_count=None if byActivity else p.bqPerCount,
                labels=inputs.get("labels"), method=method, weights=weights, device=p.device,
                kernel_cache=self.kernelCache)
        return slicer_commands.integrate_command(
            inputs["manifest"], out, python=sys.executable, reference_ct=inputs["ct"], labels=inputs.get("labels"),
            names=inputs.get("names"), method=method, weights=weights, fit=slicer_commands.FIT_MODELS[p.fitModel],
            start=slicer_commands.START_MODES[p.startMode], register=p.registerCTs,
            registration_metric=slicer_commands.REGISTRATION_METRICS[p.registrationMetric], device=p.device,
            kernel_cache=self.kernelCache)

    def finish(self, job, p):
        """After the child ended: import its results into (new) output nodes; raises with the child's error."""
        try:
            out = job.process.check()
            self.importResults(out, p, job.inputs)
        finally:
            shutil.rmtree(job.workdir, ignore_errors=True)

    def process(self, p, timeoutSeconds=None, onProgress=None):
        """Blocking run (batch scripts, self-test): start, wait, import."""
        job = self.start(p, onProgress)
        try:
            job.process.wait(timeoutSeconds)
        except Exception:
            shutil.rmtree(job.workdir, ignore_errors=True)
            raise
        self.finish(job, p)

    # --- inputs -------------------------------------------------------------------------------------------------
    def exportInputs(self, p, folder):
        """Write the input nodes as NRRD files (and the time-point manifest) for the child; never modifies them.
        Returns the paths used and what the results need (labels, names, colours, times)."""
        from ImagingBasics.imageio import write_volume
        from ImagingBasics.slicer_nodes import volume_from_node

        ct = volume_from_node(p.inputCT, "CT")
        inputs = {"ct": os.path.join(folder, "ct.nrrd"), "grid": ct}
        write_volume(ct, inputs["ct"])
        if not p.integrate:
            inputs["spect"] = os.path.join(folder, "spect.nrrd")
            write_volume(volume_from_node(p.inputSPECT, "SPECT"), inputs["spect"])
        else:
            inputs.update(self.exportTimePoints(p, folder))
        labels = self.labelMap(p, ct)
        if labels is not None:
            volume, names, colours = labels
            inputs["labels"] = os.path.join(folder, "labels.nrrd")
            write_volume(volume, inputs["labels"])
            inputs.update(labelVolume=volume, names=names, colours=colours)
        return inputs

    def exportTimePoints(self, p, folder):
        """Each time point's SPECT and CT (a node used twice is written once; no CT: the reference CT) and the
        manifest of ``dosecnn integrate``, in time order."""
        from ImagingBasics.imageio import write_volume
        from ImagingBasics.slicer_nodes import volume_from_node

        written = [(p.inputCT, os.path.join(folder, "ct.nrrd"))]

        def fileOf(node, what):
            for known, path in written:
                if known is node:
                    return path
            path = os.path.join(folder, f"{what}_{len(written)}.nrrd")
            write_volume(volume_from_node(node, what), path)
            written.append((node, path))
            return path

        byActivity = p.calibration == CALIBRATIONS[0]
        points = sorted(p.timePoints, key=lambda point: point.hours)
        rows = [slicer_commands.TimePointFiles(point.hours, fileOf(point.spect, "spect"), fileOf(point.ct or p.inputCT, "ct"),
                                               point.activityMBq if byActivity else None,
                                               None if byActivity else p.bqPerCount) for point in points]
        manifest = slicer_commands.write_time_manifest(rows, os.path.join(folder, "timepoints.csv"))
        return {"manifest": str(manifest), "times": [point.hours for point in points]}

    def labelMap(self, p, ct):
        """(label map on the CT grid, {value: name}, {value: RGB}) from the segmentation or label map, or None."""
        from DoseCNNLib.slicer_glue.results import labels_on_grid
        from ImagingBasics.slicer_nodes import label_map_from_segments, volume_from_node

        if p.inputSegmentation:
            segmentation = p.inputSegmentation.GetSegmentation()
            segments, colours = [], {}
            for index in range(segmentation.GetNumberOfSegments()):
                segmentId = segmentation.GetNthSegmentID(index)
                segment = segmentation.GetSegment(segmentId)
                mask = slicer.util.arrayFromSegmentBinaryLabelmap(p.inputSegmentation, segmentId, p.inputCT)
                segments.append((segmentId, segment.GetName(), mask))
                colours[index + 1] = tuple(segment.GetColor())
            array, names = label_map_from_segments(segments)
            return ct.with_array(array), names, colours
        if p.inputLabelmap:
            labels = labels_on_grid(volume_from_node(p.inputLabelmap, "label map"), ct)
            values = sorted(int(v) for v in set(labels.array.ravel().tolist()) if v > 0)
            return labels, {v: f"label {v}" for v in values}, {}
        return None

    # --- outputs ------------------------------------------------------------------------------------------------
    def importResults(self, outDir, p, inputs):
        """New (or the chosen) output nodes from the child's files: dose maps (PET colours, shown over the CT), the
        per-segment table, the DVH table and chart."""
        from DoseCNNLib.slicer_glue import results
        from ImagingBasics.imageio import read_volume
        from ImagingBasics.slicer_nodes import volume_from_node

        name = p.inputCT.GetName()
        grid = inputs["grid"]
        labels = inputs.get("labelVolume")
        names = inputs.get("names") or {}
        reference = None
        if p.inputReference:
            reference = results.on_grid(volume_from_node(p.inputReference, "reference map"), grid, "reference map")
        if not p.integrate:
            doseRate = read_volume(os.path.join(outDir, "dose_rate.nrrd"))
            p.outputDoseRate = self.showDoseMap(p.outputDoseRate, name + " dose rate", doseRate)
            shown, peak = p.outputDoseRate, f"maximum dose rate {float(doseRate.array.max()):.3g} mGy/s"
            if labels is not None:
                rows = results.dose_rate_rows(doseRate, labels, names,
                                              results.read_rows_by_label(os.path.join(outDir, "table.csv")), reference)
                self.fillTable(p, name + " dose rate per segment", rows, results.dose_rate_columns(reference is not None))
                self.showDVH(p, name, doseRate, labels, names, inputs.get("colours") or {}, "mGy/s")
        else:
            times = inputs["times"]
            absorbed = read_volume(os.path.join(outDir, "absorbed_dose.nrrd"))
            rates = [read_volume(os.path.join(outDir, slicer_commands.dose_rate_map_name(i))) for i in range(len(times))]
            p.outputAbsorbedDose = self.showDoseMap(p.outputAbsorbedDose, name + " absorbed dose", absorbed)
            self.showTimePointDoseRates(p, name, times, rates)
            shown, peak = p.outputAbsorbedDose, f"maximum absorbed dose {float(absorbed.array.max()):.3g} Gy"
            if labels is not None:
                rows = results.absorbed_dose_rows(absorbed, rates, labels, names,
                                                  results.read_rows_by_label(os.path.join(outDir, "organs.csv")),
                                                  reference)
                self.fillTable(p, name + " absorbed dose per segment", rows,
                               results.absorbed_dose_columns(times, reference is not None))
                self.showDVH(p, name, absorbed, labels, names, inputs.get("colours") or {}, "Gy")
        self.summary = peak + (f"; {len(names)} segments in the table" if labels is not None else "")
        slicer.util.setSliceViewerLayers(background=p.inputCT, foreground=shown, foregroundOpacity=0.5)

    def showDoseMap(self, node, name, volume):
        """Put a dose map into ``node`` (a new one when None) with the PET colour map and a window 0..99.9th
        percentile."""
        from DoseCNNLib.slicer_glue.results import DOSE_COLOUR_NODE_ID, display_window
        from ImagingBasics.slicer_nodes import update_node_from_volume

        node = node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        update_node_from_volume(node, volume)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(DOSE_COLOUR_NODE_ID)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(*display_window(volume.array))
        return node

    def showTimePointDoseRates(self, p, name, times, rates):
        """One dose-rate node per time point (the nodes of an earlier run are reused, extra ones removed)."""
        old = [node for node in p.outputTimePointDoseRates if node is not None]
        nodes = []
        for index, (hours, rate) in enumerate(zip(times, rates)):
            title = f"{name} dose rate {slicer_commands.time_label(hours)}"
            node = self.showDoseMap(old[index] if index < len(old) else None, title, rate)
            node.SetName(title)
            nodes.append(node)
        for node in old[len(nodes):]:
            slicer.mrmlScene.RemoveNode(node)
        p.outputTimePointDoseRates = nodes

    def fillTable(self, p, title, rows, columns):
        from ImagingBasics.slicer_nodes import fill_typed_table

        table = p.outputTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", title)
        fill_typed_table(table, rows, columns)
        p.outputTable = table

    def showDVH(self, p, name, dose, labels, names, colours, unit):
        """The cumulative DVHs as a table (dose, then one volume-% column per segment) and a plot chart."""
        from DoseCNNLib.slicer_glue.results import dvh_table
        from ImagingBasics.slicer_nodes import fill_typed_table

        columns, rows, series = dvh_table(dose, labels, names, unit)
        table = p.outputDVHTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name + " DVH")
        fill_typed_table(table, rows, columns)
        p.outputDVHTable = table
        chart = p.outputDVHChart or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", name + " DVH")
        for index in reversed(range(chart.GetNumberOfPlotSeriesNodes())):  # this module's series of an earlier run
            old = chart.GetNthPlotSeriesNode(index)
            if old is not None and old.GetAttribute("DoseCNN.DVH"):
                chart.RemovePlotSeriesNodeID(old.GetID())
                slicer.mrmlScene.RemoveNode(old)
        for key, segmentName, value in series:
            plot = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", segmentName)
            plot.SetAttribute("DoseCNN.DVH", "1")
            plot.SetAndObserveTableNodeID(table.GetID())
            plot.SetXColumnName("dose")
            plot.SetYColumnName(key)
            plot.SetPlotType(plot.PlotTypeScatter)
            plot.SetMarkerStyle(plot.MarkerStyleNone)
            if value in colours:
                plot.SetColor(*colours[value])
            chart.AddAndObservePlotSeriesNodeID(plot.GetID())
        chart.SetTitle("Cumulative DVH")
        chart.SetXAxisTitle(("Absorbed dose" if unit == "Gy" else "Dose rate") + f" ({unit})")
        chart.SetYAxisTitle("Volume (%)")
        p.outputDVHChart = chart
        if hasattr(slicer.modules, "plots"):
            slicer.modules.plots.logic().ShowChartInLayout(chart)


class DoseCNNTest(ScriptedLoadableModuleTest):
    """Self-test: a small synthetic torso (1.96 x 1.96 x 3 mm voxels: bundled kernels) built in the scene, one time
    point and two time points through the child process (VDK), output nodes checked (no network access)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_OneTimePoint()
        self.setUp()
        self.test_TwoTimePoints()

    def _addVolume(self, volume, name):
        from ImagingBasics.volume import ijk_to_ras_matrix

        return slicer.util.addVolumeFromArray(volume.array, ijk_to_ras_matrix(volume), name)

    def _case(self):
        from DoseCNNLib.slicer_glue.selftest import small_case

        self.delayDisplay("Building a small synthetic torso")
        case = small_case()
        ct = self._addVolume(case.ct, "torso CT")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
        for value in (2, 3, 4, 5):
            segmentId = segmentation.GetSegmentation().AddEmptySegment(case.names[value].replace(" ", "_"),
                                                                         case.names[value])
            mask = (case.labels.array == value).astype("uint8")
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segmentId, ct)
        return case, ct, segmentation

    def test_OneTimePoint(self):
        import numpy as np

        logic = DoseCNNLogic()
        self.assertEqual(logic.missingPackages(), {}, "install these packages first")
        case, ct, segmentation = self._case()
        spect = self._addVolume(case.activity_bq(24.0), "torso SPECT 24 h")
        p = logic.getParameterNode()
        p.inputCT, p.inputSPECT, p.inputSegmentation = ct, spect, segmentation
        p.integrate = False
        p.calibration = CALIBRATIONS[0]
        p.activityMBq = case.total_activity_mbq(24.0)
        p.method, p.device = "VDK", "cpu"
        self.assertIsNone(logic.inputProblem(p))
        self.delayDisplay("Dose rate (child process)")
        logic.process(p, timeoutSeconds=600)
        dose = slicer.util.arrayFromVolume(p.outputDoseRate)
        self.assertEqual(dose.shape, case.ct.shape)
        self.assertTrue(np.isfinite(dose).all() and dose.min() >= 0.0 and dose.max() > 0.0)
        table = p.outputTable.GetTable()
        self.assertEqual(table.GetNumberOfRows(), 4)
        names = [table.GetColumnByName("name").GetValue(i) for i in range(4)]
        self.assertEqual(names, ["liver", "right kidney", "left kidney", "spleen"])
        kidney = table.GetColumnByName("mean_dose_rate_mgy_s").GetValue(1)
        liver = table.GetColumnByName("mean_dose_rate_mgy_s").GetValue(0)
        self.assertGreater(kidney, liver)  # cortex uptake 0.5 vs liver 0.18 MBq/mL
        self.assertEqual(p.outputDVHChart.GetNumberOfPlotSeriesNodes(), 4)
        self.delayDisplay("Test passed")

    def test_TwoTimePoints(self):
        import numpy as np

        logic = DoseCNNLogic()
        case, ct, segmentation = self._case()
        p = logic.getParameterNode()
        p.inputCT, p.inputSegmentation = ct, segmentation
        p.integrate = True
        p.calibration = CALIBRATIONS[0]
        points = []
        for hours in (24.0, 96.0):
            spect = self._addVolume(case.activity_bq(hours), f"torso SPECT {hours:g} h")
            points.append(DoseTimePoint(spect=spect, ct=None, hours=hours, activityMBq=case.total_activity_mbq(hours)))
        p.timePoints = points
        p.method, p.device = "VDK", "cpu"
        self.assertIsNone(logic.inputProblem(p))
        self.delayDisplay("Absorbed dose (child process)")
        logic.process(p, timeoutSeconds=600)
        absorbed = slicer.util.arrayFromVolume(p.outputAbsorbedDose)
        self.assertEqual(absorbed.shape, case.ct.shape)
        self.assertTrue(np.isfinite(absorbed).all() and absorbed.max() > 0.0)
        self.assertEqual(len(p.outputTimePointDoseRates), 2)
        table = p.outputTable.GetTable()
        halfLife = table.GetColumnByName("effective_half_life_h").GetValue(0)
        self.assertAlmostEqual(halfLife, 70.0, delta=3.0)  # the liver's made-up effective half-life
        self.delayDisplay("Test passed")
