"""CTPerfusionMapping: a lung perfusion map from a chest CT (ARNN), scored against a SPECT when one is given.

Thin Slicer glue over the tested core (CTPerfusionMappingLib): the Logic exports the input nodes to files, runs the
``ctpm run`` pipeline in a PythonSlicer child process (the GUI stays responsive and Cancel works; batch scripts and the
self-test wait for it), and imports the results as new nodes. Node <-> image conversion is in
CTPerfusionMappingLib/slicer_nodes.py; the child-process protocol in CTPerfusionMappingLib/process.py.
"""

import logging
import os
import shutil
import sys
import tempfile
from typing import Annotated, Optional

import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CTPerfusionMappingLib.slicer_glue import batch as slicer_batch  # the choices of the GUI and the batch script (no torch)

SEGMENTATION_SOURCES = list(slicer_batch.SEGMENTATION_SOURCES)
DEVICES = list(slicer_batch.DEVICES)
REGISTRATION_METHODS = list(slicer_batch.REGISTRATION_METHODS)
MC_DROPOUT_PASSES = 10


class CTPerfusionMapping(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT Perfusion Mapping"
        self.parent.categories = ["Radiotherapy"]
        self.parent.dependencies = []
        self.parent.contributors = ["CTPerfusionMapping / DoseCNN developers"]
        self.parent.helpText = (
            "Synthesize a lung perfusion map (what a Tc-99m MAA SPECT would show) from a chest CT with a 3D attention "
            "residual network (Ren et al. 2021/2022). With a SPECT, register it to the CT and report per-lobe perfusion "
            "and the agreement of the maps (Spearman R, SSIM, Dice of high/low functional volumes). "
            "<b>Research software, not for clinical use</b>; the bundled model is trained on synthetic data only.")
        self.parent.acknowledgementText = (
            "Methods after Ren et al. (attention residual network; transfer learning to lung cancer patients).")


@parameterNodeWrapper
class CTPerfusionMappingParameterNode:
    inputCT: vtkMRMLScalarVolumeNode
    inputSPECT: Optional[vtkMRMLScalarVolumeNode]
    inputSegmentation: Optional[vtkMRMLSegmentationNode]
    inputLabelmap: Optional[vtkMRMLLabelMapVolumeNode]
    registerSPECT: bool = True
    registrationMethod: Annotated[str, Choice(REGISTRATION_METHODS)] = "Automatic"
    segmentationSource: Annotated[str, Choice(SEGMENTATION_SOURCES)] = "Automatic"
    useBundledModel: bool = True
    weightsFile: str = ""
    device: Annotated[str, Choice(DEVICES)] = "auto"
    threshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.66
    splitAtPercentile: bool = False
    highPercentile: Annotated[float, WithinRange(1.0, 99.0)] = 50.0
    uncertainty: bool = False
    outputPerfusion: Optional[vtkMRMLScalarVolumeNode]
    outputFunctional: Optional[vtkMRMLSegmentationNode]
    outputTable: Optional[vtkMRMLTableNode]


class CTPerfusionMappingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._probe = None

    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTPerfusionMapping.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTPerfusionMappingLogic()
        self.ui.deviceLabel.text = self.logic.describeDevices()
        self._probe = None
        if self.logic.missingPackages().get("torch") is None:
            self._startDeviceProbe()
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsChanged)
        self.initializeParameterNode()

    def _startDeviceProbe(self):
        """Ask a child process what torch can use (importing torch into Slicer itself is avoided)."""
        import qt

        from CTPerfusionMappingLib.slicer_glue.commands import child_environment
        from ImagingBasics.process import PipelineProcess

        lines = []
        self._probe = PipelineProcess(self.logic.deviceProbeCommand(), env=child_environment(), on_text=lines.append)
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
            self._checkCanApply()

    def onWeightsChanged(self, path):
        if self._parameterNode:
            self._parameterNode.weightsFile = path

    def _checkCanApply(self, caller=None, event=None):
        problem = self.logic.inputProblem(self._parameterNode) if self._parameterNode else "no parameters"
        running = self._job is not None
        self.ui.applyButton.enabled = problem is None and not running
        self.ui.applyButton.toolTip = problem or "Compute the perfusion map"
        if self._parameterNode:
            self.ui.weightsPathLineEdit.enabled = not self._parameterNode.useBundledModel
            self.ui.percentileSliderWidget.enabled = self._parameterNode.splitAtPercentile
            self.ui.thresholdSliderWidget.enabled = not self._parameterNode.splitAtPercentile
        if not running:
            self.ui.statusLabel.text = problem or "Ready"

    def onApplyButton(self):
        with slicer.util.tryWithErrorDisplay("Failed to start the perfusion mapping.", waitCursor=True):
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
            self.ui.statusLabel.text = job.process.step.capitalize() + "..."
            return
        self._finishJob(job)

    def _finishJob(self, job=None):
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        if job is not None:
            with slicer.util.tryWithErrorDisplay("Perfusion mapping failed.", waitCursor=True):
                try:
                    self.logic.finish(job, self._parameterNode)
                    self.ui.statusLabel.text = "Done: " + self.logic.summary
                except Exception:
                    self.ui.statusLabel.text = "Failed"
                    raise
        self._checkCanApply()


class PerfusionJob:
    """A running child process with the files it works on (made by :meth:`CTPerfusionMappingLogic.start`)."""

    def __init__(self, process, workdir, withSPECT):
        self.process = process
        self.workdir = workdir
        self.withSPECT = withSPECT

    def cancel(self):
        self.process.cancel()
        shutil.rmtree(self.workdir, ignore_errors=True)


class CTPerfusionMappingLogic(ScriptedLoadableModuleLogic):
    """Usable without the GUI: ``process(parameterNode)`` blocks; ``start`` + ``finish`` let a GUI poll."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.summary = ""

    def getParameterNode(self):
        return CTPerfusionMappingParameterNode(super().getParameterNode())

    # --- checks -------------------------------------------------------------------------------------------------
    def describeDevices(self):
        """What the child will compute on (torch is looked up without importing it into Slicer)."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return ("PyTorch is not installed: install the PyTorch extension (Extension Manager), then "
                    "PyTorchUtils installs torch; the HU-only baseline needs no torch")
        return "PyTorch found; device 'auto' uses a CUDA GPU when there is one, else the CPU"

    def deviceProbeCommand(self):
        from ImagingBasics.process import device_probe_command

        return device_probe_command(sys.executable)

    def deviceText(self, lines, errorText=""):
        from ImagingBasics.process import device_text

        return device_text(lines, errorText)

    def missingPackages(self):
        """Python packages the pipeline needs that this Slicer lacks, each with how to install it."""
        import importlib.util

        if importlib.util.find_spec("PyTorchUtils") is not None:
            torchHow = "the PyTorch extension is installed: run PyTorchUtils.PyTorchUtilsLogic().torch in the Python console"
        else:
            torchHow = "install the PyTorch extension from the Extension Manager, restart, then let it install torch"
        needs = {"torch": torchHow, "skimage": 'slicer.util.pip_install("scikit-image")',
                 "scipy": 'slicer.util.pip_install("scipy")'}
        return {name: how for name, how in needs.items() if importlib.util.find_spec(name) is None}

    def inputProblem(self, p):
        """Why Apply cannot run yet, or None."""
        if not p.inputCT:
            return "Select a CT volume"
        if p.inputSPECT and p.inputSPECT == p.inputCT:
            return "The SPECT and the CT must be different volumes"
        if p.segmentationSource == "Given segmentation" and not (p.inputSegmentation or p.inputLabelmap):
            return "Select a lung/lobe segmentation or label map, or another segmentation source"
        if not p.useBundledModel and not p.weightsFile:
            return "Choose a model weights file, or use the bundled model"
        if not p.useBundledModel and not os.path.isfile(p.weightsFile):
            return f"Model weights file not found: {p.weightsFile}"
        return None

    # --- running ------------------------------------------------------------------------------------------------
    def start(self, p, onProgress=None):
        """Export the inputs and start the pipeline child; returns a PerfusionJob (poll ``job.process``)."""
        from CTPerfusionMappingLib.slicer_glue.commands import child_environment, run_command
        from ImagingBasics.errors import UserError
        from ImagingBasics.process import PipelineProcess

        problem = self.inputProblem(p)
        if problem:
            raise UserError(problem)
        missing = self.missingPackages()
        if missing:
            raise UserError("missing Python packages: " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
        workdir = tempfile.mkdtemp(prefix="ctpm-", dir=slicer.app.temporaryPath)
        try:
            files = self.exportInputs(p, workdir)
            command = run_command(files["ct"], os.path.join(workdir, "out"), python=sys.executable,
                                  spect=files.get("spect"), lungs=files.get("lungs"), lobes=files.get("lobes"),
                                  weights=None if p.useBundledModel else p.weightsFile, device=p.device,
                                  register=p.registerSPECT and not files.get("spectRegistered"), threshold=p.threshold,
                                  mc_dropout=MC_DROPOUT_PASSES if p.uncertainty else 0,
                                  labels_source=files.get("labelsSource", "auto"),
                                  high_percentile=p.highPercentile if p.splitAtPercentile else None)
            logging.info("CTPerfusionMapping: " + " ".join(command))
            process = PipelineProcess(command, env=child_environment(), on_progress=onProgress).start()
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return PerfusionJob(process, workdir, bool(files.get("spect")))

    def finish(self, job, p):
        """After the child ended: import its results into (new) output nodes; raises with the child's error."""
        try:
            out = job.process.check()
            self.importResults(out, p, job.withSPECT)
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
        """Write the input nodes as NRRD files for the child; never modifies them. Returns the paths used."""
        from ImagingBasics.imageio import write_volume
        from ImagingBasics.slicer_nodes import volume_from_node

        ct = volume_from_node(p.inputCT, "CT")
        files = {"ct": os.path.join(folder, "ct.nrrd")}
        write_volume(ct, files["ct"])
        if p.inputSPECT:
            files["spect"] = os.path.join(folder, "spect.nrrd")
            spect = None
            if p.registerSPECT and self.useBRAINSFit(p.registrationMethod):
                spect = self.registerWithBRAINSFit(p.inputCT, p.inputSPECT)
                files["spectRegistered"] = True  # on the CT grid already: the child does not register again
            write_volume(spect or volume_from_node(p.inputSPECT, "SPECT"), files["spect"])
        labels = self.lungLabels(p, ct)
        if labels is not None:
            kind, volume, labelsSource = labels
            files[kind] = os.path.join(folder, kind + ".nrrd")
            write_volume(volume, files[kind])
            files["labelsSource"] = labelsSource
        return files

    def useBRAINSFit(self, method):
        available = hasattr(slicer.modules, "brainsfit") and hasattr(slicer.modules, "brainsresample")
        if method == "BRAINSFit" and not available:
            raise RuntimeError("BRAINSFit is not available in this Slicer; choose the built-in registration")
        return method == "BRAINSFit" or (method == "Automatic" and available)

    def runCLI(self, module, parameters, what):
        """slicer.cli.runSync, which does not raise: its status is checked here."""
        cli = slicer.cli.runSync(module, None, parameters)
        failed = cli.GetStatus() & cli.ErrorsMask
        errorText = cli.GetErrorText()
        slicer.mrmlScene.RemoveNode(cli)
        if failed:
            raise RuntimeError(f"{what} failed: {errorText}")

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

    def lungLabels(self, p, ct):
        """("lobes" | "lungs", Volume, label convention) from the chosen source, or None for the built-in method."""
        source = p.segmentationSource
        if source == "Built-in":
            return None  # the child segments the lungs itself
        if source == "Given segmentation" or (source == "Automatic" and (p.inputSegmentation or p.inputLabelmap)):
            return self.givenLabels(p, ct)
        if source in ("Automatic", "TotalSegmentator") and hasattr(slicer.modules, "totalsegmentator"):
            return self.totalSegmentatorLobes(p.inputCT, ct)
        if source == "TotalSegmentator":
            raise RuntimeError("TotalSegmentator is not installed: install it from the Extension Manager, "
                               "or choose another segmentation source")
        if source in ("Automatic", "Chest Imaging Platform") and hasattr(slicer.modules, "generatepartiallunglabelmap"):
            return self.cipLungs(p.inputCT, ct)
        if source == "Chest Imaging Platform":
            raise RuntimeError("The Chest Imaging Platform is not installed: install Chest_Imaging_Platform from the "
                               "Extension Manager, or choose another segmentation source")
        return None  # built-in segmentation in the child

    def givenLabels(self, p, ct):
        from CTPerfusionMappingLib.slicer_glue.segments import labels_from_segments
        from ImagingBasics.slicer_nodes import volume_from_node

        if p.inputSegmentation:
            seg = p.inputSegmentation
            segments = []
            segmentation = seg.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                segmentId = segmentation.GetNthSegmentID(index)
                name = segmentation.GetSegment(segmentId).GetName()
                segments.append((segmentId, name, slicer.util.arrayFromSegmentBinaryLabelmap(seg, segmentId, p.inputCT)))
            kind, array = labels_from_segments(segments)
            return kind, ct.with_array(array), "cip" if kind == "lobes" else "lungmask_r231"
        labelmap = volume_from_node(p.inputLabelmap, "label map")
        return "lobes", labelmap, "auto"  # the child recognises CIP, TotalSegmentator and lungmask label values

    def totalSegmentatorLobes(self, ctNode, ct):
        import TotalSegmentator

        from CTPerfusionMappingLib.slicer_glue.segments import labels_from_segments

        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator lungs (temporary)")
        try:
            # keywords only: the positional parameters after the first two differ between TotalSegmentator versions
            TotalSegmentator.TotalSegmentatorLogic().process(inputVolume=ctNode, outputSegmentation=seg, task="total")
            segmentation = seg.GetSegmentation()
            segments = []
            for index in range(segmentation.GetNumberOfSegments()):
                segmentId = segmentation.GetNthSegmentID(index)
                if segmentId.startswith("lung_"):
                    name = segmentation.GetSegment(segmentId).GetName()
                    segments.append((segmentId, name, slicer.util.arrayFromSegmentBinaryLabelmap(seg, segmentId, ctNode)))
            kind, array = labels_from_segments(segments)
            return kind, ct.with_array(array), "cip" if kind == "lobes" else "lungmask_r231"
        finally:
            slicer.mrmlScene.RemoveNode(seg)

    def cipLungs(self, ctNode, ct):
        """Lung thirds from the Chest Imaging Platform's generatepartiallunglabelmap (CIP region values)."""
        from ImagingBasics.imageio import read_volume

        folder = tempfile.mkdtemp(prefix="ctpm-cip-", dir=slicer.app.temporaryPath)
        try:
            ctFile = os.path.join(folder, "ct.nrrd")
            if not slicer.util.saveNode(ctNode, ctFile):
                raise RuntimeError("could not save the CT for the Chest Imaging Platform")
            maskFile = os.path.join(folder, "lungs.nrrd")
            cli = slicer.cli.runSync(slicer.modules.generatepartiallunglabelmap, None,
                                     {"ctFileName": ctFile, "outputLungMaskFileName": maskFile})
            failed = cli.GetStatus() & cli.ErrorsMask
            errorText = cli.GetErrorText()
            slicer.mrmlScene.RemoveNode(cli)
            if failed:
                raise RuntimeError("Chest Imaging Platform lung segmentation failed: " + errorText)
            return "lobes", read_volume(maskFile), "cip"  # lung thirds 9-14 (airway type in the high byte)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # --- outputs ------------------------------------------------------------------------------------------------
    def importResults(self, outDir, p, withSPECT):
        """New (or the chosen) output nodes from the child's files; shows the perfusion map over the CT."""
        import csv

        from CTPerfusionMappingLib.slicer_glue.segments import FUNCTIONAL_SEGMENTS, region_segments
        from ImagingBasics.imageio import read_volume
        from ImagingBasics.slicer_nodes import fill_table_node, update_node_from_volume

        name = p.inputCT.GetName()
        perfusion = p.outputPerfusion or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name + " perfusion")
        update_node_from_volume(perfusion, read_volume(os.path.join(outDir, "perfusion.nrrd")))
        perfusion.CreateDefaultDisplayNodes()
        display = perfusion.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        p.outputPerfusion = perfusion

        segmentation = p.outputFunctional or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                                name + " functional volumes")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(p.inputCT)
        segmentation.GetSegmentation().RemoveAllSegments()
        functional = read_volume(os.path.join(outDir, "functional.nrrd")).array
        regions = read_volume(os.path.join(outDir, "lobes.nrrd")).array
        present = [int(v) for v in sorted(set(regions.ravel().tolist())) if v]
        segments = [(nm, rgb, functional == value) for value, (nm, rgb) in FUNCTIONAL_SEGMENTS.items()]
        segments += [(nm, rgb, regions == value) for value, (nm, rgb) in region_segments(present).items()]
        for segmentName, rgb, mask in segments:
            segmentId = segmentation.GetSegmentation().AddEmptySegment(segmentName.replace(" ", "_"), segmentName, rgb)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype("uint8"), segmentation, segmentId, p.inputCT)
        segmentation.CreateDefaultDisplayNodes()
        p.outputFunctional = segmentation

        table = p.outputTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name + " lung regions")
        with open(os.path.join(outDir, "lobes.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        fill_table_node(table, rows, withSPECT)
        p.outputTable = table

        whole = next(r for r in rows if r["name"] == "both lungs")
        self.summary = f"lungs {float(whole['volume_ml']):.0f} mL"
        if withSPECT and whole.get("spearman"):
            self.summary += f", Spearman R vs SPECT {float(whole['spearman']):.3f}"
        slicer.util.setSliceViewerLayers(background=p.inputCT, foreground=perfusion, foregroundOpacity=0.5)


class CTPerfusionMappingTest(ScriptedLoadableModuleTest):
    """Self-test: a small synthetic phantom built in the scene, the whole pipeline with the HU baseline and with a tiny
    random network, outputs checked (no network access)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PhantomWithSPECT()

    def _addVolume(self, volume, name):
        from ImagingBasics.volume import ijk_to_ras_matrix

        return slicer.util.addVolumeFromArray(volume.array, ijk_to_ras_matrix(volume), name)

    def test_PhantomWithSPECT(self):
        import numpy as np

        from CTPerfusionMappingLib.network import NetworkConfig, build_model
        from CTPerfusionMappingLib.synthetic.cohort import generate_case
        from CTPerfusionMappingLib.weights import save_weights

        logic = CTPerfusionMappingLogic()
        self.assertEqual(logic.missingPackages(), {}, "install these packages first")
        self.delayDisplay("Generating a small synthetic SPECT/CT phantom")
        case = generate_case(1, "small", pathology_probabilities={"tumour": 1.0})
        ct = self._addVolume(case.ct, "phantom CT")
        spect = self._addVolume(case.spect, "phantom SPECT")
        folder = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
        weights = os.path.join(folder, "tiny.pt")
        tiny = NetworkConfig(base_channels=2, max_channels=4)
        save_weights(build_model(tiny), tiny, weights, metadata={"note": "random weights for the self-test"})

        p = logic.getParameterNode()
        p.inputCT = ct
        p.inputSPECT = spect
        p.segmentationSource = "Built-in"
        p.useBundledModel = False
        p.weightsFile = weights
        p.device = "cpu"
        self.assertIsNone(logic.inputProblem(p))
        self.delayDisplay("Running the pipeline (child process)")
        logic.process(p, timeoutSeconds=600)

        perfusion = slicer.util.arrayFromVolume(p.outputPerfusion)
        self.assertEqual(perfusion.shape, slicer.util.arrayFromVolume(ct).shape)
        self.assertTrue(np.isfinite(perfusion).all() and perfusion.min() >= 0.0 and perfusion.max() <= 1.0)
        m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        ct.GetIJKToRASMatrix(m1)
        p.outputPerfusion.GetIJKToRASMatrix(m2)
        self.assertTrue(all(abs(m1.GetElement(r, c) - m2.GetElement(r, c)) < 1e-6 for r in range(4) for c in range(4)))
        names = [p.outputFunctional.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(p.outputFunctional.GetSegmentation().GetNumberOfSegments())]
        self.assertIn("high function", names)
        self.assertIn("low function", names)
        table = p.outputTable.GetTable()
        self.assertEqual(table.GetColumnByName("name").GetValue(table.GetNumberOfRows() - 1), "both lungs")
        self.assertIsNotNone(table.GetColumnByName("spearman"))
        self.assertEqual(slicer.util.arrayFromVolume(ct).dtype, case.ct.array.dtype)  # input untouched
        self.delayDisplay("Test passed")
