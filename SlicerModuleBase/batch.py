"""The runner of both Slicer batch scripts (``Slicer --no-splash --no-main-window --python-script <Module>Batch.py``).

:func:`runBatch` parses the script's arguments with the core's batch parser BEFORE it touches Slicer: a bad argument
(a value out of its range, a missing file, a CT that is not a CT) prints one ``error:`` line and gives exit status 2,
as the command lines do. Then it runs each case with the module's Logic; a failing case prints its error and does not
stop the others. Exit status: 0 when every case is done, 1 when some failed, 2 for bad arguments. Slicer is imported
inside the functions only, so that the argument handling runs (and is tested) without it.
"""

import sys
import traceback


def runBatch(argv, parseArguments, moduleName, runCase):
    """Run a batch script: ``parseArguments(argv)`` -> a request with ``cases`` (each with a ``case_id``), then
    ``runCase(logic, request, case)`` for each case with the Logic of ``moduleName``. Returns the exit status."""
    from ImagingBasics.errors import UserError

    try:
        request = parseArguments(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import slicer

    logic = slicer.util.getModuleLogic(moduleName)
    cases = list(request.cases)
    failed = []
    for case in cases:
        try:
            runCase(logic, request, case)
        except Exception as exc:  # one failed case does not stop the batch
            failed.append(case.case_id)
            print(f"error: case {case.case_id}: {exc}" if len(cases) > 1 else f"error: {exc}", file=sys.stderr)
            if not isinstance(exc, UserError):
                traceback.print_exc()
    print(f"{len(cases) - len(failed)} of {len(cases)} cases done" + (f"; failed: {', '.join(failed)}" if failed else ""),
          flush=True)
    return 1 if failed else 0


def saveNode(node, path):
    """``slicer.util.saveNode``, which returns False instead of raising: a RuntimeError naming the file."""
    import slicer

    if not slicer.util.saveNode(node, path):
        raise RuntimeError(f"could not write {path}")


def exitSlicer(code):
    """End Slicer's event loop with this exit status."""
    import slicer

    slicer.util.exit(code)
    sys.exit(code)
