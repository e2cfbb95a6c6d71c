"""The Widget base of both Slicer modules: the parameter node, Apply and Cancel, the progress of the child process and
the device line.

The module's Widget names its .ui file and parameter node class, maps the parameter node onto the keywords of its
Logic's ``process`` (:meth:`PipelineWidget.logicArguments`, the only place where the GUI's state becomes a run) and
enables its own widgets (:meth:`PipelineWidget.updateModuleWidgets`). Everything else is here: Apply starts the Logic's
``process(..., waitForCompletion=False)``; a QTimer polls the child (progress bar and status line); Cancel stops it;
when it ends, the Logic imports the results and the output nodes go back into the parameter node (same names).

The .ui must have: applyButton, cancelButton, progressBar, statusLabel, deviceLabel.
"""

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class PipelineWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """What both modules' Widget share; the module sets the class attributes and defines the hooks below."""

    #: the .ui file, relative to the module's Resources folder
    uiFile = ""
    #: the parameterNodeWrapper class of the module
    parameterNodeClass = None
    #: tool tip of the Apply button when it can run; titles of the error dialogs
    applyToolTip = "Run"
    startFailureText = "Failed to start."
    failureText = "The run failed."
    #: ctkPathLineEdit widgets bound by hand to str parameters ({widget name: parameter name})
    pathParameters = {}

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._outcome = ""  # how the last run ended ("Done: ...", "Cancelled", "Failed"), shown until the next one
        self._timer = None
        self._probe = None
        self._probeTimer = None

    # --- the module's hooks ---------------------------------------------------------------------------------------
    def createLogic(self):
        raise NotImplementedError

    @staticmethod
    def logicArguments(parameterNode):
        """The keywords of the Logic's ``process`` from the parameter node (inputs, options and output nodes)."""
        raise NotImplementedError

    def setupModuleWidgets(self):
        """Connect the module's own widgets (after the .ui is loaded, before the parameter node is set)."""

    def onParameterNodeSet(self, parameterNode):
        """Show a new parameter node (None: none) in the widgets bound by hand."""

    def updateModuleWidgets(self, parameterNode):
        """Enable or disable the module's widgets for the parameter node's state."""

    # --- setup and the parameter node -----------------------------------------------------------------------------
    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(self.uiFile))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.createLogic()
        self.ui.deviceLabel.text = self.logic.describeDevices()
        if "torch" not in self.logic.missingPackages():
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
        for widgetName, parameter in self.pathParameters.items():
            getattr(self.ui, widgetName).connect("currentPathChanged(QString)",
                                                 lambda path, parameter=parameter: self._setPath(parameter, path))
        self.setupModuleWidgets()
        self.initializeParameterNode()

    def _startDeviceProbe(self):
        """Ask a child process what torch can use (torch is never imported into Slicer itself)."""
        import qt

        from ImagingBasics.process import PipelineProcess

        lines = []
        self._probe = PipelineProcess(self.logic.deviceProbeCommand(), env=self.logic.childEnvironment(),
                                      on_text=lines.append).start()
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
        """The module's parameter node; the first scalar volume of the scene that is not a label map as the CT when none
        is chosen (label map nodes are scalar volume nodes too)."""
        self.setParameterNode(self.parameterNodeClass(self.logic.getParameterNode()))
        if not self._parameterNode.inputCT:
            scene = slicer.mrmlScene
            volumes = (scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                       for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")))
            first = next((node for node in volumes if not node.IsA("vtkMRMLLabelMapVolumeNode")), None)
            if first:
                self._parameterNode.inputCT = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            for widgetName, parameter in self.pathParameters.items():
                getattr(self.ui, widgetName).currentPath = getattr(self._parameterNode, parameter)
        self.onParameterNodeSet(self._parameterNode)
        if self._parameterNode:
            self._checkCanApply()

    def _setPath(self, parameter, path):
        if self._parameterNode:
            setattr(self._parameterNode, parameter, path)

    def _checkCanApply(self, caller=None, event=None):
        p = self._parameterNode
        problem = self.logic.inputProblem(**self.logicArguments(p)) if p else "no parameters"
        running = self._job is not None
        self.ui.applyButton.enabled = problem is None and not running
        self.ui.applyButton.toolTip = problem or self.applyToolTip
        if p:
            self.updateModuleWidgets(p)
        if not running:
            self.ui.statusLabel.text = problem or self._outcome or "Ready"

    # --- running --------------------------------------------------------------------------------------------------
    def onApplyButton(self):
        with slicer.util.tryWithErrorDisplay(self.startFailureText, waitCursor=True):
            self._outcome = ""
            self._job = self.logic.process(**self.logicArguments(self._parameterNode), waitForCompletion=False)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.cancelButton.show()
            self.ui.applyButton.enabled = False
            self.ui.statusLabel.text = "Starting..."
            self._timer.start()

    def onCancelButton(self):
        if self._job is not None:
            self._job.cancel()
            self._outcome = "Cancelled"
            self._finishJob()

    def _poll(self):
        job = self._job
        if job is None:
            return
        if job.poll():
            self.ui.progressBar.value = int(round(100 * job.process.progress))
            step = job.process.step
            self.ui.statusLabel.text = (step[:1].upper() + step[1:] + "...") if step else "Working..."
            return
        self._finishJob(job)

    def _finishJob(self, job=None):
        """Stop polling; with a finished ``job``, import its results and put the output nodes into the parameter node."""
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        try:
            if job is not None:
                with slicer.util.tryWithErrorDisplay(self.failureText, waitCursor=True):
                    try:
                        outputs = self.logic.finish(job)
                        self._outcome = "Done: " + self.logic.summary
                        if self._parameterNode:
                            for name, node in outputs.items():
                                setattr(self._parameterNode, name, node)
                    except Exception:
                        self._outcome = "Failed"
                        raise  # into the error dialog, which raises it again (into Slicer's Python console)
        finally:
            self._checkCanApply()  # Apply enabled again and the outcome shown, also after a failure
