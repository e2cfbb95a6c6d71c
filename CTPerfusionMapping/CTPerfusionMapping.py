"""CTPerfusionMapping: a lung perfusion map from a chest CT (ARNN), scored against a SPECT when one is given.

Thin Slicer glue over the tested core (CTPerfusionMappingLib) and the module base both modules share
(SlicerModuleBase). ``CTPerfusionMappingLogic().process(inputCT=..., inputSPECT=..., threshold=..., device=...)``
exports the input nodes to files, runs ``ctpm run`` in a PythonSlicer child process (the GUI stays responsive and
Cancel works; batch scripts and the self-test wait for it) and fills the output nodes. The options, their defaults
and ranges are CTPerfusionMappingLib/options.py's, the definitions of the command line and the batch script too.
With a planned dose (``inputDose``, Gy; optionally minus a GTV/PTV) the results are evaluated as ``ctpm plan`` does
(the same function, CTPerfusionMappingLib/slicer_glue/plan.py): function-weighted DVH table and chart, plan metrics.
"""

import os
import shutil
import sys
import tempfile
from typing import Annotated, Optional

# A source checkout keeps the shared packages (ImagingBasics, SlicerModuleBase) one folder above this module's folder
# (an installed extension keeps them beside this file).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_CHECKOUT, "SlicerModuleBase")) and _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)

import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from CTPerfusionMappingLib.options import (  # the option definitions (no torch)
    DEVICE,
    HIGH_PERCENTILE,
    MC_DROPOUT_PASSES,
    REGISTER,
    REGISTRATION_METHOD,
    SEGMENTATION_SOURCE,
    THRESHOLD,
    UNCERTAINTY,
)
from CTPerfusionMappingLib.slicer_glue.request import BIN_WIDTH, HIGH_FUNCTION_THRESHOLD, PerfusionRequest
from SlicerModuleBase.logic import PipelineLogic
from SlicerModuleBase.nodes import addVolume
from SlicerModuleBase.widget import PipelineWidget


class CTPerfusionMapping(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT Perfusion Mapping"
        self.parent.categories = ["Radiotherapy"]
        self.parent.dependencies = []
        self.parent.contributors = ["CTPerfusionMapping / DoseCNN developers"]
        self.parent.helpText = (
            "Synthesize a lung perfusion map (what a Tc-99m MAA SPECT would show) from a chest CT with a 3D attention "
            "residual network (Ren 2021 IJROBP; Ren 2022 Front Oncol). With a SPECT, register it to the CT and report "
            "per-lobe perfusion and the agreement of the maps (Spearman R, SSIM, Dice of high/low functional volumes). "
            "<b>Research software, not for clinical use</b>; the bundled model is trained on synthetic data only.")
        self.parent.acknowledgementText = (
            "Methods after Ren 2021 IJROBP (attention residual network), Ren 2021 Front Oncol (framework) and "
            "Ren 2022 Front Oncol (transfer learning to lung cancer patients); references in docs/REFERENCES.md.")


@parameterNodeWrapper
class CTPerfusionMappingParameterNode:
    """The GUI's state (CTPerfusionMappingWidget.logicArguments maps it onto the Logic's keywords); the ranges and
    choices are the option definitions'."""

    inputCT: vtkMRMLScalarVolumeNode
    inputSPECT: Optional[vtkMRMLScalarVolumeNode]
    inputSegmentation: Optional[vtkMRMLSegmentationNode]
    inputLabelmap: Optional[vtkMRMLLabelMapVolumeNode]
    registerSPECT: bool = REGISTER.default
    registrationMethod: Annotated[str, Choice(REGISTRATION_METHOD.choice_labels)] = REGISTRATION_METHOD.default
    segmentationSource: Annotated[str, Choice(SEGMENTATION_SOURCE.choice_labels)] = SEGMENTATION_SOURCE.default
    useBundledModel: bool = True
    weightsFile: str = ""
    device: Annotated[str, Choice(DEVICE.choice_labels)] = DEVICE.default
    threshold: Annotated[float, WithinRange(*THRESHOLD.bounds)] = THRESHOLD.default
    splitAtPercentile: bool = False
    highPercentile: Annotated[float, WithinRange(*HIGH_PERCENTILE.bounds)] = 50.0  # the better-perfused half
    uncertainty: bool = UNCERTAINTY.default
    outputPerfusion: Optional[vtkMRMLScalarVolumeNode]
    outputFunctional: Optional[vtkMRMLSegmentationNode]
    outputTable: Optional[vtkMRMLTableNode]
    inputDose: Optional[vtkMRMLScalarVolumeNode]
    inputExclusionSegmentation: Optional[vtkMRMLSegmentationNode]
    exclusionSegmentID: str = ""
    inputExclusionLabelmap: Optional[vtkMRMLLabelMapVolumeNode]
    weightHighFunctionOnly: bool = False
    highFunctionThreshold: Annotated[float, WithinRange(*HIGH_FUNCTION_THRESHOLD.bounds)] = THRESHOLD.default
    dvhBinWidthGy: Annotated[float, WithinRange(*BIN_WIDTH.bounds)] = BIN_WIDTH.default
    outputDVHTable: Optional[vtkMRMLTableNode]
    outputDVHChart: Optional[vtkMRMLPlotChartNode]
    outputPlanMetrics: Optional[vtkMRMLTableNode]


class CTPerfusionMappingWidget(PipelineWidget):
    uiFile = "UI/CTPerfusionMapping.ui"
    parameterNodeClass = CTPerfusionMappingParameterNode
    applyToolTip = "Compute the perfusion map"
    startFailureText = "Failed to start the perfusion mapping."
    failureText = "Perfusion mapping failed."
    pathParameters = {"weightsPathLineEdit": "weightsFile"}

    def createLogic(self):
        return CTPerfusionMappingLogic()

    @staticmethod
    def logicArguments(p):
        return dict(inputCT=p.inputCT, inputSPECT=p.inputSPECT, inputSegmentation=p.inputSegmentation,
                    inputLabelmap=p.inputLabelmap, weightsFile=None if p.useBundledModel else p.weightsFile,
                    device=p.device, registerSPECT=p.registerSPECT, registrationMethod=p.registrationMethod,
                    segmentationSource=p.segmentationSource, threshold=p.threshold,
                    highPercentile=p.highPercentile if p.splitAtPercentile else None, uncertainty=p.uncertainty,
                    outputPerfusion=p.outputPerfusion, outputFunctional=p.outputFunctional, outputTable=p.outputTable,
                    inputDose=p.inputDose, inputExclusionSegmentation=p.inputExclusionSegmentation,
                    exclusionSegmentID=p.exclusionSegmentID or None, inputExclusionLabelmap=p.inputExclusionLabelmap,
                    highFunctionThreshold=p.highFunctionThreshold if p.weightHighFunctionOnly else None,
                    dvhBinWidthGy=p.dvhBinWidthGy, outputDVHTable=p.outputDVHTable, outputDVHChart=p.outputDVHChart,
                    outputPlanMetrics=p.outputPlanMetrics)

    def setupModuleWidgets(self):
        # the segment of the exclusion segmentation: a segment selector (no parameter node connector) bound by hand
        selector = self.ui.exclusionSegmentSelector
        selector.setMRMLScene(slicer.mrmlScene)
        selector.connect("currentSegmentChanged(QString)", self._setExclusionSegment)

    def _setExclusionSegment(self, segmentId):
        if self._parameterNode and self._parameterNode.exclusionSegmentID != segmentId:
            self._parameterNode.exclusionSegmentID = segmentId or ""

    def updateModuleWidgets(self, p):
        self.ui.weightsPathLineEdit.enabled = not p.useBundledModel
        self.ui.percentileSliderWidget.enabled = p.splitAtPercentile
        self.ui.thresholdSliderWidget.enabled = not p.splitAtPercentile
        self.ui.highFunctionThresholdSliderWidget.enabled = p.weightHighFunctionOnly
        selector = self.ui.exclusionSegmentSelector
        selector.enabled = p.inputExclusionSegmentation is not None
        if selector.currentNode() is not p.inputExclusionSegmentation:
            selector.setCurrentNode(p.inputExclusionSegmentation)
        if p.exclusionSegmentID and selector.currentSegmentID() != p.exclusionSegmentID:
            selector.setCurrentSegmentID(p.exclusionSegmentID)


class CTPerfusionMappingLogic(PipelineLogic):
    """``process`` runs the pipeline on nodes (from the GUI, a script or the batch script)."""

    requestClass = PerfusionRequest
    temporaryPrefix = "ctpm-"
    noTorchText = ("PyTorch is not installed: install the PyTorch extension (Extension Manager), then PyTorchUtils "
                   "installs torch")

    def process(self, inputCT, inputSPECT=None, inputSegmentation=None, inputLabelmap=None, weightsFile=None,
                device=DEVICE.default, registerSPECT=REGISTER.default, registrationMethod=REGISTRATION_METHOD.default,
                segmentationSource=SEGMENTATION_SOURCE.default, threshold=THRESHOLD.default,
                highPercentile=HIGH_PERCENTILE.default, uncertainty=UNCERTAINTY.default, outputPerfusion=None,
                outputFunctional=None, outputTable=None, inputDose=None, inputExclusionSegmentation=None,
                exclusionSegmentID=None, inputExclusionLabelmap=None, highFunctionThreshold=HIGH_FUNCTION_THRESHOLD.default,
                dvhBinWidthGy=BIN_WIDTH.default, outputDVHTable=None, outputDVHChart=None, outputPlanMetrics=None,
                waitForCompletion=True, timeoutSeconds=None, onProgress=None):
        """The perfusion map of ``inputCT`` (HU), scored against ``inputSPECT`` when given.

        Lungs and lobes: ``segmentationSource`` (a given ``inputSegmentation`` or ``inputLabelmap``, TotalSegmentator,
        the Chest Imaging Platform or the built-in segmentation). ``weightsFile`` None: the bundled model.
        ``threshold`` (fraction of the maximum) or ``highPercentile`` split the functional volumes; ``uncertainty``
        adds the Monte Carlo dropout standard deviation. Returns ``{"outputPerfusion", "outputFunctional",
        "outputTable"}``: the given output nodes filled, or new ones; with ``waitForCompletion=False`` the running
        job instead (poll it, then :meth:`finish` it). ``onProgress(fraction, step)``: the child's progress.

        With ``inputDose`` (Gy, any grid covering the lungs) also ``"outputDVHTable"``, ``"outputDVHChart"`` and
        ``"outputPlanMetrics"``: the plan evaluated against the perfusion map as ``ctpm plan`` does, each structure
        minus the segment ``exclusionSegmentID`` of ``inputExclusionSegmentation`` and ``inputExclusionLabelmap``;
        ``highFunctionThreshold`` (None: weights are the normalised perfusion) and ``dvhBinWidthGy`` as ``ctpm plan``.
        """
        fields = PerfusionRequest.__dataclass_fields__  # every keyword but the three of the run itself
        request = PerfusionRequest(**{key: value for key, value in locals().items() if key in fields})
        return self.run(request, waitForCompletion, timeoutSeconds, onProgress)

    def requiredPackages(self, request=None):
        return {"torch": self.torchInstallHint(), "skimage": 'slicer.util.pip_install("scikit-image")',
                "scipy": 'slicer.util.pip_install("scipy")'}

    def childEnvironment(self):
        from CTPerfusionMappingLib.slicer_glue.commands import child_environment

        return child_environment()

    def childCommand(self, request, files, outputFolder):
        from CTPerfusionMappingLib.slicer_glue.commands import run_command

        options = request.options()
        return run_command(files["ct"], outputFolder, python=sys.executable, spect=files.get("spect"),
                           lungs=files.get("lungs"), lobes=files.get("lobes"), weights=request.weightsFile,
                           device=options["device"], register=options["register"] and not files.get("spectRegistered"),
                           threshold=options["threshold"], high_percentile=options["high_percentile"],
                           mc_dropout_passes=MC_DROPOUT_PASSES if options["uncertainty"] else 0,
                           labels_source=files.get("labelsSource", "auto"), patient_position=files.get("patientPosition"))

    # --- inputs -------------------------------------------------------------------------------------------------
    def exportInputs(self, request, folder):
        """Write the input nodes as NRRD files for the child; never modifies them. Returns the paths used."""
        from ImagingBasics.imageio import write_volume
        from ImagingBasics.slicer_nodes import dicom_patient_position, volume_from_node

        ct = volume_from_node(request.inputCT, "CT")
        files = {"ct": os.path.join(folder, "ct.nrrd")}
        write_volume(ct, files["ct"])
        files["patientPosition"] = dicom_patient_position(request.inputCT, getattr(slicer, "dicomDatabase", None))
        if request.inputSPECT:
            files["spect"] = os.path.join(folder, "spect.nrrd")
            spect = None
            if request.registerSPECT and self.useBRAINSFit(request.registrationMethod):
                spect = self.registerWithBRAINSFit(request.inputCT, request.inputSPECT)
                files["spectRegistered"] = True  # on the CT grid already: the child does not register again
            write_volume(spect or volume_from_node(request.inputSPECT, "SPECT"), files["spect"])
        labels = self.lungLabels(request, ct, files["ct"], folder)
        if labels is not None:
            kind, volume, labelsSource = labels
            files[kind] = os.path.join(folder, kind + ".nrrd")
            write_volume(volume, files[kind])
            files["labelsSource"] = labelsSource
        if request.inputDose is not None:  # the dose and the exclusions, checked before the child starts
            from CTPerfusionMappingLib.slicer_glue.plan import plan_inputs

            files.update(plan_inputs(request, ct, slicer.util.arrayFromSegmentBinaryLabelmap))
        return files

    def useBRAINSFit(self, method):
        available = hasattr(slicer.modules, "brainsfit") and hasattr(slicer.modules, "brainsresample")
        if method == "BRAINSFit" and not available:
            raise RuntimeError("BRAINSFit is not available in this Slicer; choose the built-in registration")
        return method == "BRAINSFit" or (method == "Automatic" and available)

    def registerWithBRAINSFit(self, ctNode, spectNode):
        """The SPECT registered to the CT (rigid, Mattes MI) and resampled onto the CT grid, as a core Volume."""
        from ImagingBasics.slicer_nodes import volume_from_node

        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "SPECT to CT (temporary)")
        resampled = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "SPECT on CT (temporary)")
        try:
            self.runCLI(slicer.modules.brainsfit, {
                "fixedVolume": ctNode, "movingVolume": spectNode, "linearTransform": transform, "useRigid": True,
                "costMetric": "MMI", "initializeTransformMode": "useMomentsAlign", "samplingPercentage": 0.05},
                "BRAINSFit registration")
            self.runCLI(slicer.modules.brainsresample, {
                "inputVolume": spectNode, "referenceVolume": ctNode, "outputVolume": resampled,
                "warpTransform": transform, "interpolationMode": "Linear"}, "BRAINSResample")
            return volume_from_node(resampled, "registered SPECT")
        finally:
            slicer.mrmlScene.RemoveNode(transform)
            slicer.mrmlScene.RemoveNode(resampled)

    def lungLabels(self, request, ct, ctFile, folder):
        """("lobes" | "lungs", Volume, label convention) from the chosen source, or None for the built-in method."""
        source = request.segmentationSource
        given = request.inputSegmentation is not None or request.inputLabelmap is not None
        if source == "Built-in":
            return None  # the child segments the lungs itself
        if source == "Given segmentation" or (source == "Automatic" and given):
            return self.givenLabels(request, ct)
        if source in ("Automatic", "TotalSegmentator") and hasattr(slicer.modules, "totalsegmentator"):
            return self.totalSegmentatorLobes(request.inputCT, ct)
        if source == "TotalSegmentator":
            raise RuntimeError("TotalSegmentator is not installed: install it from the Extension Manager, "
                               "or choose another segmentation source")
        if source in ("Automatic", "Chest Imaging Platform") and hasattr(slicer.modules, "generatepartiallunglabelmap"):
            return self.cipLungs(ctFile, folder)
        if source == "Chest Imaging Platform":
            raise RuntimeError("The Chest Imaging Platform is not installed: install Chest_Imaging_Platform from the "
                               "Extension Manager, or choose another segmentation source")
        return None  # built-in segmentation in the child

    def segmentLabels(self, segmentationNode, ctNode, ct, idPrefix=""):
        """Lobe or lung labels from a segmentation's segments (named as TotalSegmentator, lungmask or RUL...LLL)."""
        from CTPerfusionMappingLib.slicer_glue.segments import labels_from_segments
        from SlicerModuleBase.nodes import segmentMasks

        segments = [(sid, name, mask) for sid, name, _, mask in segmentMasks(segmentationNode, ctNode, idPrefix)]
        kind, array = labels_from_segments(segments)
        return kind, ct.with_array(array), "cip" if kind == "lobes" else "lungmask_r231"

    def givenLabels(self, request, ct):
        from ImagingBasics.slicer_nodes import volume_from_node

        if request.inputSegmentation is not None:
            return self.segmentLabels(request.inputSegmentation, request.inputCT, ct)
        labelmap = volume_from_node(request.inputLabelmap, "label map")
        return "lobes", labelmap, "auto"  # the child recognises CIP, TotalSegmentator and lungmask label values

    def totalSegmentatorLobes(self, ctNode, ct):
        import TotalSegmentator

        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator lungs (temporary)")
        try:
            # keywords only: the positional parameters after the first two differ between TotalSegmentator versions
            TotalSegmentator.TotalSegmentatorLogic().process(inputVolume=ctNode, outputSegmentation=seg, task="total")
            return self.segmentLabels(seg, ctNode, ct, idPrefix="lung_")
        finally:
            slicer.mrmlScene.RemoveNode(seg)

    def cipLungs(self, ctFile, folder):
        """Lung thirds from the Chest Imaging Platform's generatepartiallunglabelmap (CIP region values)."""
        from ImagingBasics.imageio import read_volume

        maskFile = os.path.join(folder, "cip_lungs.nrrd")
        self.runCLI(slicer.modules.generatepartiallunglabelmap, {"ctFileName": ctFile, "outputLungMaskFileName": maskFile},
                    "Chest Imaging Platform lung segmentation")
        return "lobes", read_volume(maskFile), "cip"  # lung thirds 9-14 (airway type in the high byte)

    # --- outputs ------------------------------------------------------------------------------------------------
    def importResults(self, outDir, request, files):
        """The output nodes (given or new) from the child's files; shows the perfusion map over the CT."""
        import csv

        from CTPerfusionMappingLib.plausibility import status_summary
        from CTPerfusionMappingLib.slicer_glue.segments import (
            FUNCTIONAL_SEGMENTS,
            PERFUSION_COLOUR_NODE_ID,
            region_segments,
        )
        from ImagingBasics.imageio import read_volume
        from ImagingBasics.slicer_nodes import fill_table_node
        from SlicerModuleBase.nodes import showVolume

        name, ctNode, withSPECT = request.inputCT.GetName(), request.inputCT, bool(files.get("spect"))
        plan = None
        if files.get("dose") is not None:  # evaluated first: a dose refused leaves every output node untouched
            from CTPerfusionMappingLib.slicer_glue.plan import evaluate_dose

            plan = evaluate_dose(outDir, files["dose"], request.inputDose.GetName(), files["exclusions"],
                                 **request.planOptions())
        perfusion = showVolume(request.outputPerfusion, name + " perfusion",
                               read_volume(os.path.join(outDir, "perfusion.nrrd")), PERFUSION_COLOUR_NODE_ID, (0.0, 1.0))

        # The masks are placed through the perfusion node: the CT's grid in world coordinates, with no parent
        # transform. Through the CT node, updateSegmentBinaryLabelmapFromArray would apply the CT's transform twice.
        segmentation = request.outputFunctional or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                                      name + " functional volumes")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(perfusion)
        segmentation.GetSegmentation().RemoveAllSegments()
        functional = read_volume(os.path.join(outDir, "functional.nrrd")).array
        regions = read_volume(os.path.join(outDir, "lobes.nrrd")).array
        present = [int(v) for v in sorted(set(regions.ravel().tolist())) if v]
        segments = [(nm, rgb, functional == value) for value, (nm, rgb) in FUNCTIONAL_SEGMENTS.items()]
        segments += [(nm, rgb, regions == value) for value, (nm, rgb) in region_segments(present).items()]
        for segmentName, rgb, mask in segments:
            segmentId = segmentation.GetSegmentation().AddEmptySegment(segmentName.replace(" ", "_"), segmentName, rgb)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype("uint8"), segmentation, segmentId, perfusion)
        segmentation.CreateDefaultDisplayNodes()

        table = request.outputTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name + " lung regions")
        with open(os.path.join(outDir, "lobes.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        fill_table_node(table, rows, withSPECT)

        whole = next(r for r in rows if r["name"] == "both lungs")
        spearman = f", Spearman R vs SPECT {float(whole['spearman']):.3f}" if withSPECT and whole.get("spearman") else ""
        self.summary = f"lungs {float(whole['volume_ml']):.0f} mL{spearman}{status_summary(os.path.join(outDir, 'metrics.json'))}"
        slicer.util.setSliceViewerLayers(background=ctNode, foreground=perfusion, foregroundOpacity=0.5)
        outputs = {"outputPerfusion": perfusion, "outputFunctional": segmentation, "outputTable": table}
        if plan is not None:
            outputs.update(self.showPlan(request, name, plan))
        return outputs

    def showPlan(self, request, name, plan):
        """The plan's DVH table and chart (anatomical dashed, function-weighted solid) and metrics table; its warnings
        join the run's."""
        from CTPerfusionMappingLib.slicer_glue.plan import dvh_table, metrics_table, summary_text
        from ImagingBasics.quality import warning_dicts
        from ImagingBasics.slicer_nodes import fill_typed_table
        from SlicerModuleBase.nodes import showCurves

        title = f"{name} plan {plan.plans[0].name}"
        columns, rows, series = dvh_table(plan)
        dvh = request.outputDVHTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", title + " DVH")
        fill_typed_table(dvh, rows, columns)
        chart = showCurves(request.outputDVHChart, title + " DVH", dvh, "dose_gy", series, "CTPerfusionMapping.DVH",
                           (f"DVH of {plan.plans[0].name}: volume (dashed) and function (solid)", "Dose (Gy)",
                            "Volume or function receiving at least the dose (%)"))
        metrics = request.outputPlanMetrics or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", title + " metrics")
        columns, rows = metrics_table(plan)
        fill_typed_table(metrics, rows, columns)
        self.summary += summary_text(plan)
        self.importWarnings += warning_dicts(plan.warnings)
        return {"outputDVHTable": dvh, "outputDVHChart": chart, "outputPlanMetrics": metrics}


class CTPerfusionMappingTest(ScriptedLoadableModuleTest):
    """Self-test: a small synthetic phantom built in the scene, the whole pipeline with a tiny random network and a
    uniform planned dose through the Logic's keywords, outputs checked (no network access)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PhantomWithSPECT()

    def test_PhantomWithSPECT(self):
        import numpy as np

        from CTPerfusionMappingLib.network import NetworkConfig, build_model
        from CTPerfusionMappingLib.synthetic.cohort import generate_case
        from CTPerfusionMappingLib.weights import save_weights

        logic = CTPerfusionMappingLogic()
        self.assertEqual(logic.missingPackages(), {}, "install these packages first")
        self.delayDisplay("Generating a small synthetic SPECT/CT phantom")
        case = generate_case(1, "small", pathology_probabilities={"tumour": 1.0})
        ct = addVolume(case.ct, "phantom CT")
        spect = addVolume(case.spect, "phantom SPECT")
        folder = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
        weights = os.path.join(folder, "tiny.pt")
        tiny = NetworkConfig(base_channels=2, max_channels=4)
        save_weights(build_model(tiny), tiny, weights, metadata={"note": "random weights for the self-test"})

        dose = addVolume(case.ct.with_array(np.full(case.ct.shape, 10.0, np.float32)), "phantom dose (Gy)")
        arguments = dict(inputCT=ct, inputSPECT=spect, segmentationSource="Built-in", weightsFile=weights, device="cpu",
                         inputDose=dose)
        self.assertIsNone(logic.inputProblem(**arguments))
        self.delayDisplay("Running the pipeline (child process)")
        outputs = logic.process(**arguments, timeoutSeconds=600)
        shutil.rmtree(folder, ignore_errors=True)

        perfusion = slicer.util.arrayFromVolume(outputs["outputPerfusion"])
        self.assertEqual(perfusion.shape, slicer.util.arrayFromVolume(ct).shape)
        self.assertTrue(np.isfinite(perfusion).all() and perfusion.min() >= 0.0 and perfusion.max() <= 1.0)
        m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        ct.GetIJKToRASMatrix(m1)
        outputs["outputPerfusion"].GetIJKToRASMatrix(m2)
        self.assertTrue(all(abs(m1.GetElement(r, c) - m2.GetElement(r, c)) < 1e-6 for r in range(4) for c in range(4)))
        functional = outputs["outputFunctional"].GetSegmentation()
        names = [functional.GetNthSegment(i).GetName() for i in range(functional.GetNumberOfSegments())]
        self.assertIn("high function", names)
        self.assertIn("low function", names)
        table = outputs["outputTable"].GetTable()
        self.assertEqual(table.GetColumnByName("name").GetValue(table.GetNumberOfRows() - 1), "both lungs")
        self.assertIsNotNone(table.GetColumnByName("spearman"))
        plan = outputs["outputPlanMetrics"].GetTable()  # a uniform dose: MLD = fMLD = 10 Gy in both lungs (row 3)
        self.assertAlmostEqual(plan.GetColumnByName("fmld_gy").GetValue(2), 10.0, places=4)
        self.assertEqual(slicer.util.arrayFromVolume(ct).dtype, case.ct.array.dtype)  # input untouched
        self.delayDisplay("Test passed")
