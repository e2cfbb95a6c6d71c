"""One definition per option, the same answer on every surface (issue 14, item 4).

The option definitions (ImagingBasics/options.py; CTPerfusionMappingLib/options.py, DoseCNNLib/options.py) hold each
option's type, default, range or choices, unit and help. For every option of every set, and values inside, at and
outside its bounds (and an invalid choice), these surfaces must accept and refuse the same values:

* the command lines (``ctpm run``, ``ctpm batch``, ``ctpm evaluate``, ``dosecnn run``, ``dosecnn integrate``), through
  their real ``main``: a refused value exits with status 2 and one ``error:`` line naming the flag, before any file is
  read (the commands are given inputs that do not exist, so an accepted value ends in "missing-input ... not found");
* the Slicer batch scripts: their parsers (one-line UserError) and, for refused values, the scripts' ``main(argv)`` in
  Slicer (a real MRML scene, Testing/slicer_real.py: status 2, one ``error:`` line, no traceback, Slicer untouched);
* the Slicer modules: the parameter node's validators (``WithinRange``/``Choice`` of the module file, on the module's
  parameter node in a real scene; the wrapper is this project's stand-in with Slicer's validation semantics) and the
  Logic's check of its keywords. Slicer's WithinRange is inclusive: at an exclusive bound (0 MBq, the GUI's "not
  entered yet") the node accepts and the Logic refuses, and nowhere else do they differ;

and the child's command line (``OptionSet.to_argv``, the module's ``run_command``/``integrate_command``) reads back
through the command-line parser to the same values.
"""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path

import pytest
from tiny_images import write_tiny_ct

import CTPerfusionMappingLib.options as ctpm_options
import DoseCNNLib.options as dose_options
from CTPerfusionMappingLib.cli import build_parser as ctpm_parser
from CTPerfusionMappingLib.cli import main as ctpm
from CTPerfusionMappingLib.slicer_glue import batch as ctpm_batch
from CTPerfusionMappingLib.slicer_glue import commands as ctpm_commands
from DoseCNNLib.cli import build_parser as dosecnn_parser
from DoseCNNLib.cli import main as dosecnn
from DoseCNNLib.slicer_glue import batch as dose_batch
from DoseCNNLib.slicer_glue import commands as dose_commands
from ImagingBasics.errors import UserError
from ImagingBasics.options import Option, OptionSet

ROOT = Path(__file__).resolve().parents[1]
MISSING = "missing-input"


def probes(option: Option) -> list:
    """Values inside, at and outside the option's bounds, or its choices and one invalid choice."""
    if option.kind is bool:
        return [True, False]
    if option.choices:
        return list(option.choices) + ["not-a-choice"]
    if option.kind is str:
        return [option.default, "Y-90"]  # free text (a nuclide: the decay data check it when they are read)
    low, high = option.minimum, option.maximum
    if option.kind is int:
        return [low, (low + high) // 2, high, low - 1, high + 1]
    step = (high - low) * 1e-3
    return [low, low + step, (low + high) / 2, high - step, high, low - step, high + step, -1e40, 1e40, math.nan]


def expected(option: Option, value) -> bool:
    """What the definition says (the surfaces are compared with it, so that agreement cannot be vacuous)."""
    if option.kind is bool or (option.kind is str and not option.choices):
        return True
    if option.choices:
        return value in option.choices
    return option.within(float(value))


def device_missing(option: Option, value, argv) -> bool:
    """A ``--device`` this machine does not have: the commands that compute with torch refuse it up front (a
    clinician learns it before any work), those that do not (``ctpm`` with ``--baseline``) never ask."""
    import torch

    if option.name != "device" or "--baseline" in argv:
        return False
    return (value == "cuda" and not torch.cuda.is_available()) or (
        value == "mps" and not torch.backends.mps.is_available())


def at_exclusive_bound(option: Option, value) -> bool:
    return (option.exclusive_minimum and value == option.minimum) or (option.exclusive_maximum and value == option.maximum)


def cases(*option_sets: OptionSet):
    """(option, value) of every option of the sets (each option once) and each of its probes."""
    options = {option.name: option for option_set in option_sets for option in option_set}
    return [(option, value) for option in options.values() for value in probes(option)]


def _argv(option: Option, value) -> list:
    """The arguments that give ``value`` as a user types them (``--flag=-1e+40``: argparse reads ``-1e+40`` alone as a
    flag)."""
    if option.kind is bool:
        return [option.flag] if value != option.default else []
    return [f"{option.flag}={repr(float(value)) if option.kind is float else value}"]


def _ids(case):
    option, value = case
    return f"{option.flag}={value}"


# --- the definitions ------------------------------------------------------------------------------------------------
def test_the_sets_are_what_the_pipelines_take():
    from CTPerfusionMappingLib.pipeline import RunOptions
    from DoseCNNLib.dosimetry.integrate import run_integrate
    from DoseCNNLib.dosimetry.pipeline import dose_rate_map

    defaults = RunOptions()
    for option in ctpm_options.RUN:  # RunOptions takes its defaults from the definitions
        assert getattr(defaults, option.name) == option.default, option.name
    assert ctpm_options.RUN["threshold"].default == ctpm_options.HIGH_FUNCTION_THRESHOLD == 0.66
    for function, option_set in ((dose_rate_map, dose_options.RUN), (run_integrate, dose_options.INTEGRATE)):
        assert set(option_set.names) <= set(inspect.signature(function).parameters), function.__name__
    for option_set in (ctpm_options.MODULE, dose_options.MODULE):
        for option in option_set:
            assert option.kind is bool or option.choices or None not in option.bounds, (
                f"{option.flag}: the GUI needs both bounds of a number")


def test_messages_name_the_flag_and_the_range():
    threshold, activity = ctpm_options.THRESHOLD, dose_options.ACTIVITY_MBQ
    with pytest.raises(UserError, match=r"^--threshold must be from 0.05 to 0.95, got 0.99$"):
        threshold.check(0.99)
    with pytest.raises(UserError, match=r"^--activity-mbq must be positive and at most 100000 MBq, got 1e\+40$"):
        activity.check(1e40)
    with pytest.raises(UserError, match=r"^--eval-spacing must be from 0 to 20 mm, got -1$"):
        ctpm_options.EVAL_SPACING.check(-1.0)
    with pytest.raises(UserError, match=r"^--device: invalid choice 'tpu' \(choose from auto, cpu, cuda, mps\)$"):
        ctpm_options.DEVICE.check("tpu")
    with pytest.raises(UserError, match=r"^--mc-dropout must be a whole number, got 2.5$"):
        ctpm_options.MC_DROPOUT.check(2.5)
    assert ctpm_options.MC_DROPOUT.check(3.0) == 3 and isinstance(ctpm_options.MC_DROPOUT.check(3.0), int)
    with pytest.raises(UserError, match="exclude each other"):
        dose_options.RUN.check({"activity_mbq": 5.0, "bq_per_count": 2.0})
    with pytest.raises(UserError, match="^activityMBq must be positive"):  # named as the caller names it
        dose_options.MODULE.check({"activity_mbq": 0.0}, names={"activity_mbq": "activityMBq"})
    with pytest.raises(UserError, match="from 1 to 99"):
        Option("p", "--p", float, 100.0, help="a default outside its own range is a definition error", minimum=1.0,
               maximum=99.0)
    assert "(from 0.05 to 0.95; default 0.66)" in threshold.help_text()


# --- the command lines ------------------------------------------------------------------------------------------------
def _cli_accepts(run, argv, option, capsys) -> bool:
    """Run a command with ``argv``: refused (one error line naming the flag) or accepted (it then fails on the missing
    input: the option check came first)."""
    code = run(argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in captured.err, (argv, captured.err)
    value = argv[-1].partition("=")[2]
    if device_missing(option, value, argv):
        assert f"device '{value}' was requested but" in errors[0] and "use 'cpu' or 'auto'" in errors[0], errors[0]
        return True  # a valid choice, refused by this machine only
    if errors[0].startswith(f"error: {option.flag}"):
        assert (", ".join(option.choices) if option.choices else option.range_text()) in errors[0], errors[0]
        return False
    assert MISSING in errors[0] and "not found" in errors[0], errors[0]
    return True


def _ctpm_commands(tmp: Path):
    missing = str(tmp / f"{MISSING}.nrrd")
    yield ctpm_options.RUN, ["run", "--ct", missing, "--out", str(tmp / "run"), "--baseline", "--quiet"]
    yield ctpm_options.RUN, ["batch", str(tmp / f"{MISSING}.csv"), "--out", str(tmp / "batch"), "--baseline", "--quiet"]
    yield ctpm_options.EVALUATE, ["evaluate", "--perfusion", missing, "--spect", missing, "--ct", missing, "--out",
                                  str(tmp / "evaluate")]


@pytest.mark.parametrize("case", cases(ctpm_options.RUN), ids=_ids)
def test_ctpm_commands(case, tmp_path, capsys):
    option, value = case
    for option_set, prefix in _ctpm_commands(tmp_path):
        if option.name in option_set:
            assert _cli_accepts(ctpm, prefix + _argv(option, value), option, capsys) == expected(option, value)
    assert not any(tmp_path.iterdir()), "a command wrote before its options were checked"


@pytest.mark.parametrize("case", cases(dose_options.RUN, dose_options.INTEGRATE), ids=_ids)
def test_dosecnn_commands(case, tmp_path, capsys):
    option, value = case
    missing = str(tmp_path / f"{MISSING}.nrrd")
    if option.name in dose_options.RUN:
        calibration = [] if option.name in ("activity_mbq", "bq_per_count") else ["--activity-mbq", "5"]
        argv = ["run", "--spect", missing, "--ct", missing, "--out", str(tmp_path / "run")] + calibration
        assert _cli_accepts(dosecnn, argv + _argv(option, value), option, capsys) == expected(option, value)
    if option.name in dose_options.INTEGRATE:
        argv = ["integrate", str(tmp_path / f"{MISSING}.csv"), "--out", str(tmp_path / "integrate")]
        assert _cli_accepts(dosecnn, argv + _argv(option, value), option, capsys) == expected(option, value)
    assert not any(tmp_path.iterdir())


# --- the batch scripts -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name in ("ct.nrrd", "spect.nrrd"):
        write_tiny_ct(folder / name)
    return folder


BATCH = {"CTPerfusionMapping": (ctpm_options.MODULE, ctpm_batch.parse_batch_arguments,
                                lambda d: ["--ct", str(d / "ct.nrrd")]),
         "DoseCNN": (dose_options.MODULE, dose_batch.parse_batch_arguments,
                     lambda d: ["--spect", str(d / "spect.nrrd"), "--ct", str(d / "ct.nrrd")])}
#: keyword of the Logic's process (and parameter node field) -> option, per module
MODULES = {"CTPerfusionMapping": ctpm_options.MODULE_KEYWORDS, "DoseCNN": dose_options.MODULE_KEYWORDS}


def _batch_argv(module_name, option, value, images, out) -> list:
    calibration = ["--activity-mbq", "5"] if module_name == "DoseCNN" and option.name not in (
        "activity_mbq", "bq_per_count") else []
    return BATCH[module_name][2](images) + ["--out", str(out)] + calibration + _argv(option, value)


def _batch_accepts(module_name, option, value, images, tmp_path) -> bool:
    """The batch script's parser: accepted, or refused with one line naming the flag."""
    try:
        BATCH[module_name][1](_batch_argv(module_name, option, value, images, tmp_path / "out"))
    except UserError as exc:
        assert str(exc).startswith(option.flag) and "\n" not in str(exc), str(exc)
        return False
    return True


@pytest.mark.parametrize("case", cases(ctpm_options.MODULE), ids=_ids)
def test_ctpm_batch_script(case, images, tmp_path):
    option, value = case
    assert _batch_accepts("CTPerfusionMapping", option, value, images, tmp_path) == expected(option, value)


@pytest.mark.parametrize("case", cases(dose_options.MODULE), ids=_ids)
def test_dose_batch_script(case, images, tmp_path):
    option, value = case
    assert _batch_accepts("DoseCNN", option, value, images, tmp_path) == expected(option, value)


def _refused(module_name):
    """(module, option, value) of every value the module's option definitions refuse."""
    return [(module_name, option, value) for option, value in cases(BATCH[module_name][0])
            if not expected(option, value)]


def _script_exits_2(real_slicer, module_name, argv, capsys) -> str:
    """The batch script's ``main(argv)`` in Slicer (a real scene, the module loaded): exit status 2 with one
    ``error:`` line and no traceback, before Slicer is touched (no node, no Logic). Returns the line."""
    real_slicer.module(module_name)
    script = real_slicer.batch_script(module_name)
    nodes = real_slicer.node_ids()
    capsys.readouterr()
    assert script.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and not captured.out, captured.err
    assert "Traceback" not in captured.err
    assert real_slicer.node_ids() == nodes and real_slicer.module_manager.module(module_name)._widget is None
    return captured.err.strip()


@pytest.mark.parametrize("module_name, option, value", _refused("CTPerfusionMapping") + _refused("DoseCNN"),
                         ids=lambda x: getattr(x, "flag", str(x)))
def test_every_batch_option_the_parameter_node_refuses_exits_2(module_name, option, value, real_slicer, images,
                                                                tmp_path, capsys):
    """A value out of the parameter node's range (its real validators on the module's node in the scene) is refused
    by the batch script with exit 2, one line, no traceback, before Slicer is touched; so is the 0 at an exclusive
    bound, which the node holds as "not entered yet"."""
    mod = real_slicer.module(module_name)
    keyword = next(k for k, o in MODULES[module_name].items() if o is option)
    node = getattr(mod, f"{module_name}ParameterNode")(getattr(mod, f"{module_name}Logic")().getParameterNode())
    assert _node_accepts(node, keyword, option, value) == at_exclusive_bound(option, value), (keyword, value)
    line = _script_exits_2(real_slicer, module_name, _batch_argv(module_name, option, value, images,
                                                                 tmp_path / "out"), capsys)
    assert line.startswith(f"error: {option.flag}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module_name, argv, message", [
    ("CTPerfusionMapping", ["--threshold", "0.99"], "--threshold must be from 0.05 to 0.95, got 0.99"),
    ("CTPerfusionMapping", ["--high-percentile", "99.5"], "--high-percentile must be from 1 to 99, got 99.5"),
    ("DoseCNN", ["--activity-mbq", "2e6"], "--activity-mbq must be positive and at most 100000 MBq, got 2e+06"),
])
def test_the_values_the_gui_refused_are_refused_by_the_batch_scripts(module_name, argv, message, real_slicer, images,
                                                                      tmp_path, capsys):
    inputs = BATCH[module_name][2](images)
    assert _script_exits_2(real_slicer, module_name, inputs + ["--out", str(tmp_path / "out")] + argv,
                           capsys) == f"error: {message}"
    assert not (tmp_path / "out").exists()


# --- the Slicer modules ----------------------------------------------------------------------------------------------
@pytest.fixture(params=sorted(MODULES))
def module(request, real_slicer):
    name = request.param
    return name, real_slicer.module(name)


def _node_accepts(parameter_node, keyword, option, value) -> bool:
    """The parameter node's validators (the GUI shows a choice by its label)."""
    if option.choices and value in option.choices:
        value = option.label_of(value)
    try:
        setattr(parameter_node, keyword, value)
    except ValueError:
        return False
    return True


def _logic_keywords(real_slicer, name: str) -> dict:
    scene = real_slicer.scene
    ct, other = (scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", n) for n in ("CT", "other"))
    if name == "CTPerfusionMapping":
        return dict(inputCT=ct, inputLabelmap=other)  # labels given: "Given segmentation" is complete
    return dict(inputCT=ct, inputSPECT=other, activityMBq=5.0)


def test_the_parameter_nodes_and_logics_accept_what_the_definitions_accept(module, real_slicer):
    name, mod = module
    node_class = getattr(mod, f"{name}ParameterNode")
    logic = getattr(mod, f"{name}Logic")()
    keywords = inspect.signature(logic.process).parameters
    base = _logic_keywords(real_slicer, name)
    for keyword, option in MODULES[name].items():
        annotation = node_class.__annotations__[keyword]
        validators = [m for m in getattr(annotation, "__metadata__", ()) if hasattr(m, "validate")]
        if option.choices:
            assert [v.choices for v in validators] == [option.choice_labels], keyword
        elif option.kind is not bool:
            assert [(v.minimum, v.maximum) for v in validators] == [option.bounds], keyword
        assert keywords[keyword].default == option.default, f"process({keyword}=...) defaults to the definition's"
        for value in probes(option):
            arguments = dict(base, **{keyword: value})
            if keyword == "bqPerCount":
                arguments["activityMBq"] = None
            logic_ok = logic.inputProblem(**arguments) is None
            node_ok = _node_accepts(node_class(logic.getParameterNode()), keyword, option, value)
            assert logic_ok == expected(option, value), (keyword, value, logic.inputProblem(**arguments))
            assert node_ok == (logic_ok or at_exclusive_bound(option, value)), (keyword, value)


# --- the child's command line ----------------------------------------------------------------------------------------
def _accepted(*option_sets: OptionSet):
    return [(option, value) for option, value in cases(*option_sets) if expected(option, value)]


def _read_back(parser: argparse.ArgumentParser, prefix: list, option_set: OptionSet, argv: list) -> dict:
    return option_set.from_arguments(parser.parse_args(prefix + argv))


@pytest.mark.parametrize("case", _accepted(ctpm_options.RUN), ids=_ids)
def test_ctpm_child_command_line_reads_back(case):
    option, value = case
    command = ctpm_commands.run_command("ct.nrrd", "out", **{option.name: value})
    values = _read_back(ctpm_parser(), [], ctpm_options.RUN, command[3:])
    assert values == dict(ctpm_options.RUN.defaults(), **{option.name: value})


@pytest.mark.parametrize("case", _accepted(dose_options.RUN, dose_options.INTEGRATE), ids=_ids)
def test_dosecnn_child_command_lines_read_back(case):
    option, value = case
    if option.name in dose_options.RUN:  # exactly one calibration: the probed one, else an activity
        calibration = {} if option.name in ("activity_mbq", "bq_per_count") else {"activity_mbq": 5.0}
        command = dose_commands.run_command("s.nrrd", "ct.nrrd", "out", **calibration, **{option.name: value})
        values = _read_back(dosecnn_parser(), [], dose_options.RUN, command[3:])
        assert values == dict(dose_options.RUN.defaults(), **calibration, **{option.name: value})
    if option.name in dose_options.INTEGRATE:
        command = dose_commands.integrate_command("tp.csv", "out", **{option.name: value})
        values = _read_back(dosecnn_parser(), [], dose_options.INTEGRATE, command[3:])
        assert values == dict(dose_options.INTEGRATE.defaults(), **{option.name: value})


def test_to_argv_refuses_what_the_parser_would_refuse():
    with pytest.raises(UserError, match="--threshold must be from 0.05 to 0.95"):
        ctpm_commands.run_command("ct.nrrd", "out", threshold=0.99)
    with pytest.raises(TypeError, match="unknown options"):
        ctpm_commands.run_command("ct.nrrd", "out", mc_dropout=3)  # the option's name is mc_dropout_passes
