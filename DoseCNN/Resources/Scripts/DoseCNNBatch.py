"""DoseCNN without the GUI, inside Slicer: the dose rate of one SPECT/CT, or the absorbed dose of a time-point manifest.

    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --spect SPECT.nrrd --ct CT.nrrd
           --activity-mbq 5000 [--labels LABELS.nrrd | --labels ORGANS.seg.nrrd] [--reference MC.nrrd]
           [--method vdk|cnn] [--weights W.pt] [--device auto|cpu|cuda] --out DIR
    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --manifest timepoints.csv
           [--reference-ct CT.nrrd] [--labels L] [--fit mono|bi|trapezoid] [--start constant|zero] [--no-register]
           [--registration-metric meansquares|mattes] [--method vdk|cnn] --out DIR

Arguments: DoseCNNLib/slicer_batch.py. It writes into DIR: dose_rate.nrrd (one time point) or absorbed_dose.nrrd and
dose_rate_<T>h.nrrd per time point; with labels segments.csv (the results table) and dvh.csv. Slicer exits with status
0 (done), 1 (failed; see the log) or 2 (bad arguments). On Linux without a display, prefix the call with xvfb-run -a.
"""

import os
import sys
import traceback


def _exit(code):
    import slicer

    slicer.util.exit(code)  # ends Slicer's event loop with this status
    sys.exit(code)


def _save(node, path):
    import slicer

    if not slicer.util.saveNode(node, path):  # returns False instead of raising
        raise RuntimeError(f"could not write {path}")


def _labels(request):
    """(segmentation, label map) nodes of --labels: a .seg.nrrd segmentation or a label map."""
    import slicer

    if not request.labels:
        return None, None
    if request.labels_are_segmentation:
        return slicer.util.loadSegmentation(request.labels), None
    return None, slicer.util.loadLabelVolume(request.labels)


def run(logic, request):
    import slicer

    import DoseCNN  # the module file: its parameter pack and choices
    from DoseCNNLib.slicer_glue import commands

    def label(choices, value):  # the GUI label of a command-line value
        return next(text for text, v in choices.items() if v == value)

    slicer.mrmlScene.Clear()
    p = logic.getParameterNode()
    loaded = {}

    def volume(path):  # a file used twice (e.g. one CT for every time point) is loaded once
        path = os.path.abspath(path)
        if path not in loaded:
            loaded[path] = slicer.util.loadVolume(path)  # raises on an unreadable file
        return loaded[path]

    p.inputCT = volume(request.ct)
    p.inputSegmentation, p.inputLabelmap = _labels(request)
    p.inputReference = volume(request.reference) if request.reference else None
    p.method = label(commands.METHODS, request.method)
    p.useBundledModel = request.weights is None
    p.weightsFile = request.weights or ""
    p.device = request.device
    p.integrate = request.integrate
    p.calibration = DoseCNN.CALIBRATIONS[0 if request.by_activity else 1]
    if request.integrate:
        p.bqPerCount = request.time_points[0].bq_per_count or 0.0  # one factor for all rows (checked by the parser)
        p.timePoints = [DoseCNN.DoseTimePoint(spect=volume(tp.spect), ct=volume(tp.ct), hours=tp.time_h,
                                              activityMBq=tp.activity_mbq or 0.0) for tp in request.time_points]
        p.fitModel = label(commands.FIT_MODELS, request.fit)
        p.startMode = label(commands.START_MODES, request.start)
        p.registerCTs = request.register
        p.registrationMetric = label(commands.REGISTRATION_METRICS, request.registration_metric)
    else:
        p.inputSPECT = volume(request.spect)
        p.activityMBq = request.activity_mbq or 0.0
        p.bqPerCount = request.bq_per_count or 0.0
    problem = logic.inputProblem(p)
    if problem:
        raise RuntimeError(problem)
    logic.process(p, onProgress=lambda fraction, step: print(f"{100 * fraction:3.0f}% {step}", flush=True))
    os.makedirs(request.out, exist_ok=True)
    if request.integrate:
        _save(p.outputAbsorbedDose, os.path.join(request.out, "absorbed_dose.nrrd"))
        for tp, node in zip(sorted(request.time_points, key=lambda t: t.time_h), p.outputTimePointDoseRates):
            _save(node, os.path.join(request.out, f"dose_rate_{commands.time_label(tp.time_h).replace(' ', '')}.nrrd"))
    else:
        _save(p.outputDoseRate, os.path.join(request.out, "dose_rate.nrrd"))
    if p.outputTable is not None:
        _save(p.outputTable, os.path.join(request.out, "segments.csv"))
        _save(p.outputDVHTable, os.path.join(request.out, "dvh.csv"))
    print(f"{logic.summary}; results in {request.out}", flush=True)


def main(argv):
    import slicer

    from DoseCNNLib.slicer_glue.batch import parse_batch_arguments
    from ImagingBasics.errors import UserError

    try:
        request = parse_batch_arguments(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logic = slicer.util.getModuleLogic("DoseCNN")
    try:
        run(logic, request)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not isinstance(exc, UserError):
            traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
