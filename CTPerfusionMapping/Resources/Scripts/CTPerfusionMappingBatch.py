"""CTPerfusionMapping without the GUI, inside Slicer (a batch of one case or a manifest of cases).

    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --ct CT.nrrd [--spect SPECT.nrrd]
           [--lobes LOBES.nrrd] [--weights W.pt] [--device auto|cpu|cuda] --out DIR
    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --manifest CASES.csv --out DIR

Arguments: CTPerfusionMappingLib/slicer_batch.py. Per case it writes perfusion.nrrd, functional.seg.nrrd and
regions.csv (the results table) into the case's output folder, and exits Slicer with status 0 (all cases done),
1 (some failed; see the log) or 2 (bad arguments). On Linux without a display, prefix the call with xvfb-run -a.
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


def run_case(logic, request, case):
    import slicer

    slicer.mrmlScene.Clear()
    p = logic.getParameterNode()
    p.inputCT = slicer.util.loadVolume(case.ct)  # raises on an unreadable file
    p.inputSPECT = slicer.util.loadVolume(case.spect) if case.spect else None
    labels = case.lobes or case.lungs
    p.inputLabelmap = slicer.util.loadLabelVolume(labels) if labels else None
    p.segmentationSource = request.segmentation_source
    p.registerSPECT = request.register
    p.registrationMethod = request.registration_method
    p.useBundledModel = request.weights is None
    p.weightsFile = request.weights or ""
    p.device = request.device
    p.threshold = request.threshold
    p.splitAtPercentile = request.high_percentile is not None
    p.highPercentile = request.high_percentile or 50.0
    p.uncertainty = request.uncertainty
    problem = logic.inputProblem(p)
    if problem:
        raise RuntimeError(problem)
    logic.process(p, onProgress=lambda fraction, step: print(f"{case.case_id}: {100 * fraction:3.0f}% {step}", flush=True))
    os.makedirs(case.out, exist_ok=True)
    _save(p.outputPerfusion, os.path.join(case.out, "perfusion.nrrd"))
    _save(p.outputFunctional, os.path.join(case.out, "functional.seg.nrrd"))
    _save(p.outputTable, os.path.join(case.out, "regions.csv"))
    print(f"{case.case_id}: {logic.summary}; results in {case.out}", flush=True)


def main(argv):
    import slicer

    from CTPerfusionMappingLib.slicer_glue.batch import parse_batch_arguments
    from ImagingBasics.errors import UserError

    try:
        request = parse_batch_arguments(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logic = slicer.util.getModuleLogic("CTPerfusionMapping")
    failed = []
    for case in request.cases:
        try:
            run_case(logic, request, case)
        except Exception as exc:  # one failed case does not stop the batch
            failed.append(case.case_id)
            print(f"error: case {case.case_id}: {exc}", file=sys.stderr)
            if not isinstance(exc, UserError):
                traceback.print_exc()
    print(f"{len(request.cases) - len(failed)} of {len(request.cases)} cases done" +
          (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
