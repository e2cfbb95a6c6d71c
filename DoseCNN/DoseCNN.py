"""DoseCNN: Lu-177 dose-rate and absorbed-dose maps from SPECT/CT (voxel dose kernels with density scaling, optionally
corrected by a residual CNN), with per-organ statistics and DVHs.

Thin Slicer glue over the tested core (DoseCNNLib) and the module base both modules share (SlicerModuleBase).
``DoseCNNLogic().process(inputCT=..., inputSPECT=..., activityMBq=..., method=...)`` exports the input nodes to files,
runs ``dosecnn run`` (one time point) or ``dosecnn integrate`` (``timePoints``: several) in a PythonSlicer child
process (the GUI stays responsive and Cancel works; batch scripts and the self-test wait for it) and fills the output
nodes. The options, their defaults and ranges are DoseCNNLib/options.py's, the definitions of the command line and
the batch script too; the command lines, tables and batch arguments are in DoseCNNLib/slicer_glue/.

Time points (several SPECT/CTs): a table of rows (SPECT, CT, hours after administration, activity in the SPECT's field
of view); the CT of a row may be left empty for the reference CT (the CT input), and the outputs lie on the
reference CT's grid. The rows are kept in the parameter node as a list of parameter packs.
"""

import os
import sys
from typing import Annotated, List, Optional

# A source checkout keeps the shared packages (ImagingBasics, SlicerModuleBase) one folder above this module's folder
# (an installed extension keeps them beside this file).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_CHECKOUT, "SlicerModuleBase")) and _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)

import slicer
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from DoseCNNLib.options import (  # the option definitions (no torch)
    ACTIVITY_MBQ,
    BQ_PER_COUNT,
    DEVICE,
    FIT,
    MAX_HOURS,
    METHOD,
    REGISTER,
    REGISTRATION_METRIC,
    START,
)
from DoseCNNLib.slicer_glue.request import DoseRequest
from SlicerModuleBase.logic import PipelineLogic
from SlicerModuleBase.nodes import addVolume
from SlicerModuleBase.widget import PipelineWidget

#: the GUI's calibrations: the first, the activity in each SPECT's field of view; the second, one Bq per count
CALIBRATIONS = ("Activity in the field of view (MBq)", "Bq per count")


class DoseCNN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DoseCNN"
        self.parent.categories = ["Radiotherapy"]
        self.parent.dependencies = []
        self.parent.contributors = ["CTPerfusionMapping / DoseCNN developers"]
        self.parent.helpText = (
            "Lu-177 voxel dosimetry from SPECT/CT: the dose-rate map (mGy/s) by voxel dose kernel convolution with "
            "density scaling, optionally corrected by a residual CNN trained on Monte Carlo (Li 2020); with several "
            "time points, the time-integrated absorbed dose (Gy). Per organ/lesion: dose statistics, DVHs and, "
            "against a reference map, MDE and NRMSE. <b>Research software, not for clinical use</b>; the bundled CNN "
            "is trained on synthetic phantoms only.")
        self.parent.acknowledgementText = (
            "Methods after Li 2020 (residual CNN on voxel dose kernels for Lu-177 dosimetry; docs/REFERENCES.md). "
            "Decay data: ICRP Publication 107.")


@parameterPack
class DoseTimePoint:
    """One SPECT/CT time point: hours after administration; activity in the SPECT's field of view (MBq; used with
    that calibration; 0: not entered yet); ct None: the reference CT."""

    spect: Optional[vtkMRMLScalarVolumeNode]
    ct: Optional[vtkMRMLScalarVolumeNode]
    hours: Annotated[float, WithinRange(0.0, MAX_HOURS)] = 24.0
    activityMBq: Annotated[float, WithinRange(*ACTIVITY_MBQ.bounds)] = 0.0


@parameterNodeWrapper
class DoseCNNParameterNode:
    """The GUI's state (DoseCNNWidget.logicArguments maps it onto the Logic's keywords); the ranges and choices are
    the option definitions' (0 MBq and 0 Bq per count: not entered yet, which the Logic refuses)."""

    inputCT: vtkMRMLScalarVolumeNode
    inputSPECT: Optional[vtkMRMLScalarVolumeNode]
    inputSegmentation: Optional[vtkMRMLSegmentationNode]
    inputLabelmap: Optional[vtkMRMLLabelMapVolumeNode]
    inputReference: Optional[vtkMRMLScalarVolumeNode]
    integrate: bool = False
    timePoints: List[DoseTimePoint]
    method: Annotated[str, Choice(METHOD.choice_labels)] = METHOD.label_of(METHOD.default)
    calibration: Annotated[str, Choice(CALIBRATIONS)] = CALIBRATIONS[0]
    activityMBq: Annotated[float, WithinRange(*ACTIVITY_MBQ.bounds)] = 0.0
    bqPerCount: Annotated[float, WithinRange(*BQ_PER_COUNT.bounds)] = 0.0
    useBundledModel: bool = True
    weightsFile: str = ""
    device: Annotated[str, Choice(DEVICE.choice_labels)] = DEVICE.default
    fitModel: Annotated[str, Choice(FIT.choice_labels)] = FIT.label_of(FIT.default)
    startMode: Annotated[str, Choice(START.choice_labels)] = START.label_of(START.default)
    registerCTs: bool = REGISTER.default
    registrationMetric: Annotated[str, Choice(REGISTRATION_METRIC.choice_labels)] = \
        REGISTRATION_METRIC.label_of(REGISTRATION_METRIC.default)
    outputDoseRate: Optional[vtkMRMLScalarVolumeNode]
    outputAbsorbedDose: Optional[vtkMRMLScalarVolumeNode]
    outputTable: Optional[vtkMRMLTableNode]
    outputDVHTable: Optional[vtkMRMLTableNode]
    outputDVHChart: Optional[vtkMRMLPlotChartNode]
    outputTimePointDoseRates: List[vtkMRMLScalarVolumeNode]


class DoseCNNWidget(PipelineWidget):
    uiFile = "UI/DoseCNN.ui"
    parameterNodeClass = DoseCNNParameterNode
    applyToolTip = "Compute the dose"
    startFailureText = "Failed to start the dose calculation."
    failureText = "The dose calculation failed."
    pathParameters = {"weightsPathLineEdit": "weightsFile"}

    def createLogic(self):
        return DoseCNNLogic()

    @staticmethod
    def logicArguments(p):
        byActivity, integrate = p.calibration == CALIBRATIONS[0], p.integrate
        return dict(
            inputCT=p.inputCT, inputSPECT=None if integrate else p.inputSPECT,
            timePoints=list(p.timePoints) if integrate else None, inputSegmentation=p.inputSegmentation,
            inputLabelmap=p.inputLabelmap, inputReference=p.inputReference, method=METHOD.value_of(p.method),
            activityMBq=p.activityMBq if byActivity and not integrate else None,
            bqPerCount=None if byActivity else p.bqPerCount, weightsFile=None if p.useBundledModel else p.weightsFile,
            device=p.device, fitModel=FIT.value_of(p.fitModel), startMode=START.value_of(p.startMode),
            registerCTs=p.registerCTs, registrationMetric=REGISTRATION_METRIC.value_of(p.registrationMetric),
            outputDoseRate=p.outputDoseRate, outputAbsorbedDose=p.outputAbsorbedDose, outputTable=p.outputTable,
            outputDVHTable=p.outputDVHTable, outputDVHChart=p.outputDVHChart,
            outputTimePointDoseRates=list(p.outputTimePointDoseRates))

    def setupModuleWidgets(self):
        from SlicerModuleBase.packtable import PackColumn, PackTable

        self.timePointTable = PackTable(self.ui.timePointsTableWidget, DoseTimePoint, [
            PackColumn("spect", "SPECT", "SPECT of this time point (counts)"),
            PackColumn("ct", "CT (empty: the reference CT)", "CT of this time point; empty: the reference CT (the CT "
                                                             "input above)"),
            PackColumn("hours", "Time (h)", "hours after administration", (0.0, MAX_HOURS), " h"),
            PackColumn("activityMBq", "Activity (MBq)", "activity in this SPECT's field of view", ACTIVITY_MBQ.bounds,
                       " MBq")])
        self.ui.addTimePointButton.connect("clicked(bool)", self.onAddTimePoint)
        self.ui.removeTimePointButton.connect("clicked(bool)", self.timePointTable.removeRow)

    def onParameterNodeSet(self, p):
        self.timePointTable.setParameterNode(p, "timePoints")

    def onAddTimePoint(self):
        if self._parameterNode:
            points = self._parameterNode.timePoints
            hours = 4.0 if not points else max(point.hours for point in points) + 24.0
            self.timePointTable.addRow(DoseTimePoint(spect=None, ct=None, hours=hours, activityMBq=0.0))

    def updateModuleWidgets(self, p):
        integrate = p.integrate
        byActivity = p.calibration == CALIBRATIONS[0]
        cnn = METHOD.value_of(p.method) == "cnn"
        self.ui.inputSPECTSelector.enabled = not integrate
        self.ui.timePointsCollapsibleButton.enabled = integrate
        self.ui.timePointsTableWidget.setColumnHidden(3, not byActivity)  # the activity column
        self.ui.activitySpinBox.enabled = byActivity and not integrate
        self.ui.bqPerCountSpinBox.enabled = not byActivity
        self.ui.useBundledModelCheckBox.enabled = cnn
        self.ui.weightsPathLineEdit.enabled = cnn and not p.useBundledModel
        for widget in (self.ui.fitModelComboBox, self.ui.startModeComboBox, self.ui.registerCTsCheckBox,
                       self.ui.registrationMetricComboBox, self.ui.outputAbsorbedDoseSelector):
            widget.enabled = integrate
        self.ui.registrationMetricComboBox.enabled = integrate and p.registerCTs
        self.ui.outputDoseRateSelector.enabled = not integrate


class DoseCNNLogic(PipelineLogic):
    """``process`` computes the dose on nodes (from the GUI, a script or the batch script)."""

    requestClass = DoseRequest
    temporaryPrefix = "dosecnn-"
    noTorchText = ("PyTorch is not installed: the dose calculation needs it (the VDK convolution and the CNN run in "
                   "torch); install the PyTorch extension (Extension Manager), then PyTorchUtils installs torch")

    def __init__(self):
        PipelineLogic.__init__(self)
        self.kernelCache = None  # folder of computed kernels (None: ~/.cache/dosecnn/kernels)

    def process(self, inputCT, inputSPECT=None, timePoints=None, inputSegmentation=None, inputLabelmap=None,
                inputReference=None, method=METHOD.default, activityMBq=None, bqPerCount=None, weightsFile=None,
                device=DEVICE.default, fitModel=FIT.default, startMode=START.default, registerCTs=REGISTER.default,
                registrationMetric=REGISTRATION_METRIC.default, outputDoseRate=None, outputAbsorbedDose=None,
                outputTable=None, outputDVHTable=None, outputDVHChart=None, outputTimePointDoseRates=None,
                waitForCompletion=True, timeoutSeconds=None, onProgress=None):
        """The dose-rate map (mGy/s) of ``inputSPECT`` on ``inputCT`` (HU), or with ``timePoints`` (each with
        ``spect``, ``ct`` (None: ``inputCT``), ``hours``, ``activityMBq``; e.g. DoseCNNLib.slicer_glue.request.TimePoint)
        the absorbed dose (Gy) on ``inputCT``'s grid.

        Calibration: ``activityMBq`` in the SPECT's field of view (with time points, each point's), unless
        ``bqPerCount``. ``method``: "vdk" or "cnn" (``weightsFile`` None: the bundled CNN). With a segmentation or
        label map: the per-segment table and the DVHs; with ``inputReference``: MDE and NRMSE against it. Returns the
        output nodes it filled (the given ones, or new ones) by keyword; with ``waitForCompletion=False`` the running
        job instead (poll it, then :meth:`finish` it). ``onProgress(fraction, step)``: the child's progress.
        """
        request = DoseRequest(
            inputCT=inputCT, inputSPECT=inputSPECT, timePoints=timePoints, inputSegmentation=inputSegmentation,
            inputLabelmap=inputLabelmap, inputReference=inputReference, method=method, activityMBq=activityMBq,
            bqPerCount=bqPerCount, weightsFile=weightsFile, device=device, fitModel=fitModel, startMode=startMode,
            registerCTs=registerCTs, registrationMetric=registrationMetric, outputDoseRate=outputDoseRate,
            outputAbsorbedDose=outputAbsorbedDose, outputTable=outputTable, outputDVHTable=outputDVHTable,
            outputDVHChart=outputDVHChart, outputTimePointDoseRates=outputTimePointDoseRates)
        return self.run(request, waitForCompletion, timeoutSeconds, onProgress)

    def requiredPackages(self, request=None):
        torchHow = self.torchInstallHint()
        if request is not None and request.method == "cnn":
            torchHow = "the CNN method (and the VDK convolution) run in PyTorch: " + torchHow
        needs = {"torch": torchHow, "matplotlib": 'slicer.util.pip_install("matplotlib")'}
        if request is not None and request.integrate:
            needs["icrp107_database"] = 'slicer.util.pip_install("icrp107-database")'
        return needs

    def childEnvironment(self):
        from DoseCNNLib.slicer_glue.commands import child_environment

        return child_environment()

    def childCommand(self, request, inputs, outputFolder):
        from DoseCNNLib.slicer_glue import commands

        options = request.options()
        common = dict(python=sys.executable, labels=inputs.get("labels"), weights=request.weightsFile,
                      kernel_cache=self.kernelCache, method=options["method"], device=options["device"])
        if not request.integrate:
            return commands.run_command(inputs["spect"], inputs["ct"], outputFolder, activity_mbq=options["activity_mbq"],
                                        bq_per_count=options["bq_per_count"], **common)
        return commands.integrate_command(
            inputs["manifest"], outputFolder, reference_ct=inputs["ct"], names=inputs.get("names"), fit=options["fit"],
            start=options["start"], register=options["register"],
            registration_metric=options["registration_metric"], **common)

    # --- inputs -------------------------------------------------------------------------------------------------
    def exportInputs(self, request, folder):
        """Write the input nodes as NRRD files (and the time-point manifest) for the child; never modifies them.
        Returns the paths used and what the results need (labels, names, colours, times)."""
        from DoseCNNLib.slicer_glue import commands
        from ImagingBasics.imageio import write_volume
        from ImagingBasics.slicer_nodes import volume_from_node

        ct = volume_from_node(request.inputCT, "CT")
        inputs = {"ct": os.path.join(folder, "ct.nrrd"), "grid": ct}
        write_volume(ct, inputs["ct"])
        if not request.integrate:
            inputs["spect"] = os.path.join(folder, "spect.nrrd")
            write_volume(volume_from_node(request.inputSPECT, "SPECT"), inputs["spect"])
        else:
            inputs.update(commands.export_time_points(request.timePoints, request.inputCT, folder, request.byActivity,
                                                      request.bqPerCount))
        labels = self.labelMap(request, ct)
        if labels is not None:
            volume, names, colours = labels
            inputs["labels"] = os.path.join(folder, "labels.nrrd")
            write_volume(volume, inputs["labels"])
            inputs.update(labelVolume=volume, names=names, colours=colours)
        return inputs

    def labelMap(self, request, ct):
        """(label map on the CT grid, {value: name}, {value: RGB}) from the segmentation or label map, or None."""
        from DoseCNNLib.slicer_glue.results import labels_on_grid
        from ImagingBasics.slicer_nodes import label_map_from_segments, volume_from_node
        from SlicerModuleBase.nodes import segmentMasks

        if request.inputSegmentation is not None:
            segments = segmentMasks(request.inputSegmentation, request.inputCT)
            array, names = label_map_from_segments([(sid, name, mask) for sid, name, _, mask in segments])
            return ct.with_array(array), names, {index + 1: rgb for index, (_, _, rgb, _) in enumerate(segments)}
        if request.inputLabelmap is not None:
            labels = labels_on_grid(volume_from_node(request.inputLabelmap, "label map"), ct)
            values = sorted(int(v) for v in set(labels.array.ravel().tolist()) if v > 0)
            return labels, {v: f"label {v}" for v in values}, {}
        return None

    # --- outputs ------------------------------------------------------------------------------------------------
    def importResults(self, outDir, request, inputs):
        """The output nodes (given or new) from the child's files: dose maps (PET colours, shown over the CT), the
        per-segment table, the DVH table and chart."""
        from DoseCNNLib.slicer_glue import commands, results
        from ImagingBasics.imageio import read_volume
        from ImagingBasics.slicer_nodes import volume_from_node

        name, grid = request.inputCT.GetName(), inputs["grid"]
        labels, names, colours = inputs.get("labelVolume"), inputs.get("names") or {}, inputs.get("colours") or {}
        reference = None
        if request.inputReference is not None:
            reference = results.on_grid(volume_from_node(request.inputReference, "reference map"), grid, "reference map")
        outputs = {}
        if not request.integrate:
            dose = read_volume(os.path.join(outDir, "dose_rate.nrrd"))
            shown = outputs["outputDoseRate"] = self.showDoseMap(request.outputDoseRate, name + " dose rate", dose)
            peak, unit = f"maximum dose rate {float(dose.array.max()):.3g} mGy/s", "mGy/s"
            if labels is not None:
                rows = results.dose_rate_rows(dose, labels, names,
                                              results.read_rows_by_label(os.path.join(outDir, "table.csv")), reference)
                columns, title = results.dose_rate_columns(reference is not None), " dose rate per segment"
        else:
            times = inputs["times"]
            dose = read_volume(os.path.join(outDir, "absorbed_dose.nrrd"))
            rates = [read_volume(os.path.join(outDir, commands.dose_rate_map_name(i))) for i in range(len(times))]
            shown = outputs["outputAbsorbedDose"] = self.showDoseMap(request.outputAbsorbedDose, name + " absorbed dose",
                                                                     dose)
            outputs["outputTimePointDoseRates"] = self.showTimePointDoseRates(request, name, times, rates)
            peak, unit = f"maximum absorbed dose {float(dose.array.max()):.3g} Gy", "Gy"
            if labels is not None:
                rows = results.absorbed_dose_rows(dose, rates, labels, names,
                                                  results.read_rows_by_label(os.path.join(outDir, "organs.csv")),
                                                  reference)
                columns, title = results.absorbed_dose_columns(times, reference is not None), " absorbed dose per segment"
        if labels is not None:
            outputs["outputTable"] = self.fillTable(request.outputTable, name + title, rows, columns)
            outputs.update(self.showDVH(request, name, dose, labels, names, colours, unit))
        self.summary = peak + (f"; {len(names)} segments in the table" if labels is not None else "")
        slicer.util.setSliceViewerLayers(background=request.inputCT, foreground=shown, foregroundOpacity=0.5)
        return outputs

    def showDoseMap(self, node, name, volume):
        """A dose map in ``node`` (a new one when None) with the PET colour map and a window 0..99.9th percentile."""
        from DoseCNNLib.slicer_glue.results import DOSE_COLOUR_NODE_ID, display_window
        from SlicerModuleBase.nodes import showVolume

        return showVolume(node, name, volume, DOSE_COLOUR_NODE_ID, display_window(volume.array))

    def showTimePointDoseRates(self, request, name, times, rates):
        """One dose-rate node per time point (the nodes of an earlier run are reused, extra ones removed)."""
        from DoseCNNLib.slicer_glue.commands import time_label

        old = [node for node in request.outputTimePointDoseRates or [] if node is not None]
        nodes = []
        for index, (hours, rate) in enumerate(zip(times, rates)):
            title = f"{name} dose rate {time_label(hours)}"
            node = self.showDoseMap(old[index] if index < len(old) else None, title, rate)
            node.SetName(title)
            nodes.append(node)
        for node in old[len(nodes):]:
            slicer.mrmlScene.RemoveNode(node)
        return nodes

    def fillTable(self, table, title, rows, columns):
        from ImagingBasics.slicer_nodes import fill_typed_table

        table = table or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", title)
        fill_typed_table(table, rows, columns)
        return table

    def showDVH(self, request, name, dose, labels, names, colours, unit):
        """The cumulative DVHs as a table (dose, then one volume-% column per segment) and a plot chart."""
        from DoseCNNLib.slicer_glue.results import dvh_table
        from SlicerModuleBase.nodes import showCurves

        columns, rows, series = dvh_table(dose, labels, names, unit)
        table = self.fillTable(request.outputDVHTable, name + " DVH", rows, columns)
        curves = [(key, segmentName, colours.get(value)) for key, segmentName, value in series]
        titles = ("Cumulative DVH", ("Absorbed dose" if unit == "Gy" else "Dose rate") + f" ({unit})", "Volume (%)")
        chart = showCurves(request.outputDVHChart, name + " DVH", table, "dose", curves, "DoseCNN.DVH", titles)
        return {"outputDVHTable": table, "outputDVHChart": chart}


class DoseCNNTest(ScriptedLoadableModuleTest):
    """Self-test: a small synthetic torso (1.96 x 1.96 x 3 mm voxels: bundled kernels) built in the scene, one time
    point and two time points through the Logic's keywords and the child process (VDK), output nodes checked (no
    network access)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_OneTimePoint()
        self.setUp()
        self.test_TwoTimePoints()

    def _case(self):
        from DoseCNNLib.slicer_glue.selftest import small_case

        self.delayDisplay("Building a small synthetic torso")
        case = small_case()
        ct = addVolume(case.ct, "torso CT")
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
        spect = addVolume(case.activity_bq(24.0), "torso SPECT 24 h")
        arguments = dict(inputCT=ct, inputSPECT=spect, inputSegmentation=segmentation,
                         activityMBq=case.total_activity_mbq(24.0), method="vdk", device="cpu")
        self.assertIsNone(logic.inputProblem(**arguments))
        self.delayDisplay("Dose rate (child process)")
        outputs = logic.process(**arguments, timeoutSeconds=600)
        dose = slicer.util.arrayFromVolume(outputs["outputDoseRate"])
        self.assertEqual(dose.shape, case.ct.shape)
        self.assertTrue(np.isfinite(dose).all() and dose.min() >= 0.0 and dose.max() > 0.0)
        table = outputs["outputTable"].GetTable()
        self.assertEqual(table.GetNumberOfRows(), 4)
        names = [table.GetColumnByName("name").GetValue(i) for i in range(4)]
        self.assertEqual(names, ["liver", "right kidney", "left kidney", "spleen"])
        kidney = table.GetColumnByName("mean_dose_rate_mgy_s").GetValue(1)
        liver = table.GetColumnByName("mean_dose_rate_mgy_s").GetValue(0)
        self.assertGreater(kidney, liver)  # cortex uptake 0.5 vs liver 0.18 MBq/mL
        self.assertEqual(outputs["outputDVHChart"].GetNumberOfPlotSeriesNodes(), 4)
        self.delayDisplay("Test passed")

    def test_TwoTimePoints(self):
        import numpy as np

        from DoseCNNLib.slicer_glue.request import TimePoint

        logic = DoseCNNLogic()
        case, ct, segmentation = self._case()
        points = [TimePoint(spect=addVolume(case.activity_bq(hours), f"torso SPECT {hours:g} h"), hours=hours,
                            activityMBq=case.total_activity_mbq(hours)) for hours in (24.0, 96.0)]
        arguments = dict(inputCT=ct, timePoints=points, inputSegmentation=segmentation, method="vdk", device="cpu")
        self.assertIsNone(logic.inputProblem(**arguments))
        self.delayDisplay("Absorbed dose (child process)")
        outputs = logic.process(**arguments, timeoutSeconds=600)
        absorbed = slicer.util.arrayFromVolume(outputs["outputAbsorbedDose"])
        self.assertEqual(absorbed.shape, case.ct.shape)
        self.assertTrue(np.isfinite(absorbed).all() and absorbed.max() > 0.0)
        self.assertEqual(len(outputs["outputTimePointDoseRates"]), 2)
        table = outputs["outputTable"].GetTable()
        halfLife = table.GetColumnByName("effective_half_life_h").GetValue(0)
        self.assertAlmostEqual(halfLife, 70.0, delta=3.0)  # the liver's made-up effective half-life
        self.delayDisplay("Test passed")
