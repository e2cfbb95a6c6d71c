"""CTPerfusionMapping without the GUI, inside Slicer (a batch of one case or a manifest of cases).

    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --ct CT.nrrd [--spect SPECT.nrrd]
           [--lobes LOBES.nrrd] [--weights W.pt] [--device auto|cpu|cuda|mps] [--threshold 0.66] --out DIR
    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --manifest CASES.csv --out DIR

Arguments: CTPerfusionMappingLib/slicer_glue/batch.py (the options, their ranges and checks are the module's and the
command line's: CTPerfusionMappingLib/options.py). Each case runs through ``CTPerfusionMappingLogic.process`` and
writes perfusion.nrrd, functional.seg.nrrd and regions.csv (the results table; Slicer's table writer adds
regions.schema.csv with the column titles, units and types) into the case's output folder. Slicer exits with status 0
(all cases done), 1 (some failed; see the log) or 2 (bad arguments, one ``error:`` line, before anything is loaded).
On Linux without a display, prefix the call with xvfb-run -a.
"""

import os
import sys

# The packages: an installed extension keeps them all in the module folder (two folders up); a source checkout keeps
# CTPerfusionMappingLib there and the shared ImagingBasics and SlicerModuleBase one folder above it.
_MODULE_FOLDER = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _folder in (_MODULE_FOLDER, os.path.dirname(_MODULE_FOLDER)):
    if _folder not in sys.path and any(os.path.isdir(os.path.join(_folder, package))
                                       for package in ("CTPerfusionMappingLib", "SlicerModuleBase")):
        sys.path.append(_folder)

from SlicerModuleBase.batch import exitSlicer, runBatch, saveNode


def runCase(logic, request, case):
    """One case through the Logic's keywords; its outputs saved into the case's folder."""
    import slicer

    from CTPerfusionMappingLib.options import logic_keywords

    slicer.mrmlScene.Clear()
    labels = case.lobes or case.lungs
    outputs = logic.process(
        inputCT=slicer.util.loadVolume(case.ct),  # raises on an unreadable file
        inputSPECT=slicer.util.loadVolume(case.spect) if case.spect else None,
        inputLabelmap=slicer.util.loadLabelVolume(labels) if labels else None,
        weightsFile=request.weights, **logic_keywords(request.options()),
        onProgress=lambda fraction, step: print(f"{case.case_id}: {100 * fraction:3.0f}% {step}", flush=True))
    os.makedirs(case.out, exist_ok=True)
    saveNode(outputs["outputPerfusion"], os.path.join(case.out, "perfusion.nrrd"))
    saveNode(outputs["outputFunctional"], os.path.join(case.out, "functional.seg.nrrd"))
    saveNode(outputs["outputTable"], os.path.join(case.out, "regions.csv"))
    print(f"{case.case_id}: {logic.summary}; results in {case.out}", flush=True)


def main(argv):
    """Exit status of the batch run of ``argv`` (its arguments are checked before Slicer is touched)."""
    from CTPerfusionMappingLib.slicer_glue.batch import parse_batch_arguments

    return runBatch(argv, parse_batch_arguments, "CTPerfusionMapping", runCase)


if __name__ == "__main__":
    exitSlicer(main(sys.argv[1:]))
