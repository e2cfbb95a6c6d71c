"""DoseCNN without the GUI, inside Slicer: the dose rate of one SPECT/CT, or the absorbed dose of a time-point manifest.

    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --spect SPECT.nrrd --ct CT.nrrd
           --activity-mbq 5000 [--labels LABELS.nrrd | --labels ORGANS.seg.nrrd] [--reference MC.nrrd]
           [--method vdk|cnn] [--weights W.pt] [--device auto|cpu|cuda|mps] --out DIR
    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --manifest timepoints.csv
           [--reference-ct CT.nrrd] [--labels L] [--fit mono|bi|trapezoid] [--start constant|zero] [--no-register]
           [--registration-metric meansquares|mattes] [--method vdk|cnn] --out DIR

Arguments: DoseCNNLib/slicer_glue/batch.py (the options, their ranges and checks are the module's and the command
line's: DoseCNNLib/options.py). The run goes through ``DoseCNNLogic.process`` and writes into DIR: dose_rate.nrrd (one
time point) or absorbed_dose.nrrd and dose_rate_<T>h.nrrd per time point; with labels segments.csv (the results table)
and dvh.csv, each with its .schema.csv (column titles, units and types, as Slicer writes tables). Slicer exits with
status 0 (done), 1 (failed; see the log) or 2 (bad arguments, one ``error:`` line, before anything is loaded). On Linux
without a display, prefix the call with xvfb-run -a.
"""

import os
import sys

# The packages: an installed extension keeps them all in the module folder (two folders up); a source checkout keeps
# DoseCNNLib there and the shared ImagingBasics and SlicerModuleBase one folder above it.
_MODULE_FOLDER = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _folder in (_MODULE_FOLDER, os.path.dirname(_MODULE_FOLDER)):
    if _folder not in sys.path and any(os.path.isdir(os.path.join(_folder, package))
                                       for package in ("DoseCNNLib", "SlicerModuleBase")):
        sys.path.append(_folder)

from SlicerModuleBase.batch import exitSlicer, runBatch, saveNode


def _labels(request):
    """(segmentation, label map) nodes of --labels: a .seg.nrrd segmentation or a label map."""
    import slicer

    if not request.labels:
        return None, None
    if request.labels_are_segmentation:
        return slicer.util.loadSegmentation(request.labels), None
    return None, slicer.util.loadLabelVolume(request.labels)


def runCase(logic, request, case):
    """The run through the Logic's keywords; its outputs saved into --out."""
    import slicer

    from DoseCNNLib.options import logic_keywords
    from DoseCNNLib.slicer_glue.commands import time_label
    from DoseCNNLib.slicer_glue.request import TimePoint

    slicer.mrmlScene.Clear()
    loaded = {}

    def volume(path):  # a file used twice (e.g. one CT for every time point) is loaded once
        path = os.path.abspath(path)
        if path not in loaded:
            loaded[path] = slicer.util.loadVolume(path)  # raises on an unreadable file
        return loaded[path]

    inputCT = volume(request.ct)
    segmentation, labelmap = _labels(request)
    timePoints = None
    if request.integrate:
        timePoints = [TimePoint(spect=volume(tp.spect), ct=volume(tp.ct), hours=tp.time_h,
                                activityMBq=tp.activity_mbq or 0.0) for tp in request.time_points]
    outputs = logic.process(
        inputCT=inputCT, inputSPECT=None if request.integrate else volume(request.spect), timePoints=timePoints,
        inputSegmentation=segmentation, inputLabelmap=labelmap,
        inputReference=volume(request.reference) if request.reference else None, weightsFile=request.weights,
        **logic_keywords(request.options()),
        onProgress=lambda fraction, step: print(f"{100 * fraction:3.0f}% {step}", flush=True))
    os.makedirs(request.out, exist_ok=True)
    if request.integrate:
        saveNode(outputs["outputAbsorbedDose"], os.path.join(request.out, "absorbed_dose.nrrd"))
        for tp, node in zip(sorted(request.time_points, key=lambda t: t.time_h), outputs["outputTimePointDoseRates"]):
            saveNode(node, os.path.join(request.out, f"dose_rate_{time_label(tp.time_h).replace(' ', '')}.nrrd"))
    else:
        saveNode(outputs["outputDoseRate"], os.path.join(request.out, "dose_rate.nrrd"))
    if "outputTable" in outputs:
        saveNode(outputs["outputTable"], os.path.join(request.out, "segments.csv"))
        saveNode(outputs["outputDVHTable"], os.path.join(request.out, "dvh.csv"))
    print(f"{logic.summary}; results in {request.out}", flush=True)


def main(argv):
    """Exit status of the batch run of ``argv`` (its arguments are checked before Slicer is touched)."""
    from DoseCNNLib.slicer_glue.batch import parse_batch_arguments

    return runBatch(argv, parse_batch_arguments, "DoseCNN", runCase)


if __name__ == "__main__":
    exitSlicer(main(sys.argv[1:]))
