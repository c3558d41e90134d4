"""`evse`: every user-facing command of evse-agent.

    evse demo                         one full charging session on the simulated board
    evse sim --scenario FILE          the real agent on the simulated board, scripted
    evse run --board FILE             the agent on a real board (long-running)
    evse meter read|watch|probe|serve|models   energy meters over Modbus
    evse bundle --board FILE --out DIR   what a MicroPython board runs; evse flash copies it
    evse diagram                      the controller's state tables as Mermaid
"""
import argparse
import json
import os
import sys

from tools import meter_cli

SCENARIO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "simulator", "scenarios")
EXIT_OK, EXIT_EXPECTATION_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# in the state folder; a dot file, which FileStorage.names() leaves out
STATE_LOCK = ".evse.lock"
# flags that mean nothing without OCPP: given with --no-ocpp, one of them is a mistake
OCPP_ONLY_FLAGS = (("csms", "--csms"), ("id", "--id"), ("auth_key", "--auth-key"),
                   ("ca", "--ca"), ("lenient", "--lenient"))


class BadInput(Exception):
    """A one-line error about what the command was given (exit 2, nothing has run)."""


def _scenario_path(name):
    """A scenario by path, or by name from the bundled simulator/scenarios/."""
    if os.path.isdir(name):
        raise BadInput("--scenario %s: a folder, not a scenario file" % name)
    if os.path.exists(name):
        return name
    bundled = os.path.join(SCENARIO_DIR, name if name.endswith(".scn") else name + ".scn")
    if os.path.exists(bundled):
        return bundled
    raise FileNotFoundError("%s: no such scenario (bundled: %s)" % (
        name, ", ".join(sorted(f[:-4] for f in os.listdir(SCENARIO_DIR) if f.endswith(".scn")))))


def _load(args):
    """Board and steps, or a clear error naming file:line; nothing runs on bad input."""
    from simulator import scenario as scenario_mod
    from tools import boardfile
    board = boardfile.load(boardfile.find(args.board))
    path = _scenario_path(args.scenario)
    try:
        steps = scenario_mod.parse_file(path)
    except OSError as error:            # unreadable: no permission, a special file
        raise BadInput("--scenario %s: %s" % (path, error.strerror or error)) from None
    scenario_mod.check(steps, board, ocpp=not args.no_ocpp)
    return board, steps


def _warn_if_checks_nothing(args, steps):
    """An empty scenario passes: say so, since exit 0 is what a test script reads."""
    from simulator.timeline import CHECKS
    if not steps:
        problem = "no steps"
    elif not any(step.verb in CHECKS for step in steps):
        problem = "no expectations (expect, wait_for): exit 0 means only that nothing failed"
    else:
        return
    print("evse sim: warning: %s: %s" % (args.scenario, problem), file=sys.stderr)


def _lock_state(state_dir):
    """An exclusive lock on the state folder, held while the returned file stays open: two
    processes on one journal would each take the other's live transaction for one cut by a
    power loss. The lock goes with the process (kill -9 included), so none is ever stale."""
    import fcntl
    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise BadInput("--state %s: not a folder" % state_dir)
    try:
        os.makedirs(state_dir, exist_ok=True)
        lock = open(os.path.join(state_dir, STATE_LOCK), "a+")
    except OSError as error:
        raise BadInput("--state %s: %s" % (state_dir, error.strerror or error)) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise BadInput("state %s is in use by another evse process (pid %s)"
                       % (state_dir, holder)) from None
    lock.truncate(0)
    lock.write("%d\n" % os.getpid())
    lock.flush()
    return lock


def cmd_sim(args):
    from simulator import scenario as scenario_mod
    from simulator.runner import OcppOptions, simulate
    from simulator.timeline import Timeline
    from tools import boardfile
    if args.help_scenario:
        print(scenario_mod.describe())
        return EXIT_OK
    try:
        board, steps = _load(args)
        problem = _ocpp_option_problem(args, board)
        if problem is None and not args.no_ocpp and args.ocpp != "1.6":
            problem = "OCPP %s is not implemented yet (1.6 is)" % args.ocpp
        if problem:
            raise BadInput(problem)
        state_lock = _lock_state(args.state) if args.state else None   # held for the run
    except (boardfile.BoardError, scenario_mod.ScenarioError, FileNotFoundError,
            BadInput) as error:
        print("evse sim: %s" % error, file=sys.stderr)
        return EXIT_BAD_INPUT
    _warn_if_checks_nothing(args, steps)
    ocpp = None
    if not args.no_ocpp:
        ocpp = OcppOptions(url=args.csms, charge_point_id=args.id, version=args.ocpp,
                           auth_key=args.auth_key, cafile=args.ca, lenient=args.lenient,
                           state_dir=args.state, end_transactions=True)
    # an outside CSMS lives in real time: virtual time would race ahead of its answers
    realtime = args.realtime or (args.csms is not None and not args.virtual)
    timeline = Timeline(realtime=realtime, quiet=args.json)
    try:
        ok, simulation = simulate(board, steps, realtime=realtime, timeline=timeline,
                                  ocpp=ocpp)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_EXPECTATION_FAILED
    finally:
        if state_lock is not None:
            state_lock.close()
    if simulation.terminated and simulation.steps_not_run:
        # every scenario has an end, so SIGTERM always cut it short: its verdict is unknown
        print("evse sim: stopped by SIGTERM: %d of %d steps not run" % (
            simulation.steps_not_run, len(steps)), file=sys.stderr)
    if args.json:
        held = [e for e in simulation.expectations if e.held]
        json.dump({"ok": ok, "board": board["name"], "scenario": args.scenario,
                   "expectations": len(simulation.expectations), "held": len(held),
                   "failed": len(simulation.expectations) - len(held),
                   "failed_steps": simulation.failed_steps,
                   "terminated": simulation.terminated,
                   "steps_not_run": simulation.steps_not_run,
                   "timeline": timeline.rows}, sys.stdout, indent=1)
        print()
    else:
        if simulation.failed_steps:
            print("%d step%s failed" % (len(simulation.failed_steps),
                                        "s" if len(simulation.failed_steps) > 1 else ""))
        print("simulated %s in %.2f s of wall time" % (
            timeline.stamp(simulation.now_ms()) if not realtime else "run",
            simulation.wall_seconds))
    return EXIT_OK if ok else EXIT_EXPECTATION_FAILED


def _ocpp_option_problem(args, board):
    """A clear error for OCPP options that could never work, before anything runs (the
    flags as given, before `evse run` fills them in from the board file)."""
    from agent.charger import station_identity
    from agent.config import ACCEPTED, Config
    from agent.transport import identity_problem
    if args.no_ocpp:
        given = [flag for name, flag in OCPP_ONLY_FLAGS if getattr(args, name)]
        return "--no-ocpp contradicts %s (OCPP settings)" % ", ".join(given) if given else None
    if args.csms is not None:
        problem = _csms_url_problem(args.csms)
        if problem:
            return "--csms %s: %s" % (args.csms, problem)
    if args.ca:
        problem = _ca_problem(args.ca)
        if problem:
            return "--ca %s: %s" % (args.ca, problem)
    if args.auth_key is not None and \
            Config().change("AuthorizationKey", args.auth_key) != ACCEPTED:
        return ("--auth-key: an AuthorizationKey is 32-40 hex digits (16-20 bytes, "
                "OCPP 1.6 security whitepaper)")
    identity = station_identity(board, args.id)
    problem = identity_problem(identity)
    if problem:
        return "%s %s: %s" % ("--id" if args.id else "charge point id (from the board file)",
                              identity, problem)
    return None


def _csms_url_problem(text):
    from urllib.parse import urlsplit
    try:
        url = urlsplit(text.replace("{id}", "ID"))
        port = url.port
    except ValueError as error:     # a port out of range, an unclosed [IPv6 literal
        return "not a valid URL (%s)" % error
    if url.scheme not in ("ws", "wss") or not url.hostname:
        return "expected ws://HOST[:PORT]/PATH or wss://..."
    if port == 0:
        return "port 0 cannot be connected to (expected 1-65535)"
    if url.fragment:
        return "a WebSocket URL has no #fragment (RFC 6455 section 3)"
    return None


def _ca_problem(path):
    """Why `path` cannot be the CA of a wss:// connection (profile 2), or None: found now
    rather than in a connection attempt retried forever."""
    import ssl
    if os.path.isdir(path):
        return "a folder: expected a CA certificate file (PEM)"
    if not os.path.isfile(path):
        return "no such file"
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as error:
        return "not a PEM CA certificate (%s)" % (error.reason or error)
    except OSError as error:
        return error.strerror or str(error)
    return None


def cmd_demo(args):
    args.scenario = "normal-session"
    args.help_scenario = False
    args.json = False
    args.realtime = False
    args.virtual = True
    args.no_ocpp = False
    args.csms = args.id = args.auth_key = args.ca = args.state = None
    args.ocpp, args.lenient = "1.6", False
    return cmd_sim(args)


def cmd_run(args):
    from tools import boardfile
    from tools.run import RunOptions, runs_elsewhere, serve
    try:
        board = boardfile.load(boardfile.find(args.board))
    except boardfile.BoardError as error:
        print("evse run: %s" % error, file=sys.stderr)
        return EXIT_BAD_INPUT
    if runs_elsewhere(board):
        print("evse run: %s: %s" % (board["path"], runs_elsewhere(board)), file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = _ocpp_option_problem(args, board) if args.no_ocpp else None
    ocpp = board["ocpp"]
    args.csms = args.csms or ocpp["csms"]
    args.auth_key = args.auth_key or ocpp["auth_key"]
    args.ca = args.ca or ocpp["ca"]
    args.state = args.state or board["storage"]["dir"]
    if not args.no_ocpp:
        problem = _ocpp_option_problem(args, board) or (
            None if args.csms else "no CSMS: set [ocpp] csms in the board file or --csms URL "
            "(or --no-ocpp)") or (
            None if args.state else "no place for persistent state (transactions, config): "
            "set [storage] dir in the board file or --state DIR")
    try:
        if problem:
            raise BadInput(problem)
        state_lock = _lock_state(args.state) if args.state else None   # held while serving
    except BadInput as error:
        print("evse run: %s" % error, file=sys.stderr)
        return EXIT_BAD_INPUT
    options = RunOptions(csms=args.csms, charge_point_id=args.id, auth_key=args.auth_key,
                         cafile=args.ca, state_dir=args.state, lenient=args.lenient,
                         ocpp=not args.no_ocpp)
    try:
        return serve(board, options)
    except (OSError, RuntimeError) as error:
        # the board is not what its file says (no such PWM chip, GPIO busy, ...)
        print("evse run: %s: %s" % (board["path"], error), file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if state_lock is not None:
            state_lock.close()


ROMFS_HELP = ("the modules in one ROMFS image (romfs.img): on firmware with a ROMFS "
              "partition their bytecode runs from flash, not from RAM")


def cmd_bundle(args):
    from tools import boardfile
    from tools.bundle import BundleError, bundle, flash
    try:
        board = boardfile.load(boardfile.find(args.board))
        if args.command == "flash":
            flash(board, args.port, dry_run=args.dry_run, out=args.out, romfs=args.romfs)
            return EXIT_OK
        manifest = bundle(board, args.out, romfs=args.romfs)
    except (boardfile.BoardError, BundleError) as error:
        print("evse %s: %s" % (args.command, error), file=sys.stderr)
        return EXIT_BAD_INPUT
    print("bundle for %s in %s: %d files, %d bytes (%d of compiled modules)" % (
        board["name"], args.out, len(manifest["files"]), manifest["total_bytes"],
        manifest["mpy_bytes"]))
    if board["hal"] == "unix":
        print("run it: micropython %s [CSMS URL]" % os.path.join(args.out, "main.py"))
    return EXIT_OK


def cmd_diagram(args):
    from agent.evse import CP_MACHINE, SESSION_MACHINE
    machines = {"cp": CP_MACHINE, "session": SESSION_MACHINE}
    chosen = machines if args.table == "all" else {args.table: machines[args.table]}
    for name, machine in chosen.items():
        if args.markdown:
            print("### %s layer\n\n```mermaid" % name)
        else:
            print("%%%% %s layer" % name)   # a Mermaid comment line
        print(machine.mermaid())
        if args.markdown:
            print("```\n")
    return EXIT_OK


def _ocpp_arguments(group, csms, state):
    """The OCPP flags `evse sim` and `evse run` share."""
    group.add_argument("--csms", metavar="URL", help=csms)
    group.add_argument("--id", metavar="ID", help="charge point id (default: the board's "
                       "[ocpp] id, else its station serial)")
    group.add_argument("--auth-key", metavar="KEY",
                       help="AuthorizationKey for HTTP Basic auth (security profile 1)")
    group.add_argument("--ca", metavar="FILE",
                       help="CA certificate file for wss:// (security profile 2); with ws:// "
                       "it is kept for a later SecurityProfile raise by the CSMS")
    group.add_argument("--lenient", action="store_true",
                       help="log schema violations from the CSMS instead of rejecting them")
    group.add_argument("--state", metavar="DIR", help=state)
    group.add_argument("--no-ocpp", action="store_true",
                       help="no OCPP at all: local authorization from the board file")


def parser():
    top = argparse.ArgumentParser(
        prog="evse", description="evse-agent: the software inside an EV charger, and its "
        "simulator. Start with `evse demo`.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")

    sim = commands.add_parser(
        "sim", help="run the agent on the simulated board through a scenario",
        description="Run the real agent on the simulated board (pilot electrics, EV, "
        "contactor, RCD, meter) through a scenario file, in virtual time unless --realtime. "
        "Prints a timeline; exits 0 only if every `expect` held (1 if not, or if SIGTERM "
        "stopped the run before the scenario's end; 2 on bad input).",
        epilog="Scenario format: evse sim --help-scenario. Bundled scenarios: %s" % (
            ", ".join(sorted(f[:-4] for f in os.listdir(SCENARIO_DIR) if f.endswith(".scn")))
            if os.path.isdir(SCENARIO_DIR) else "none"))
    sim.add_argument("--board", default="sim", metavar="FILE",
                     help="board file or bundled board name (default: sim)")
    sim.add_argument("--scenario", default="normal-session", metavar="FILE",
                     help="scenario file or bundled name (default: normal-session)")
    sim.add_argument("--realtime", action="store_true",
                     help="run in wall-clock time (timestamps in UTC) instead of virtual time")
    sim.add_argument("--json", action="store_true",
                     help="print one JSON object (timeline rows, expectation counts)")
    sim.add_argument("--help-scenario", action="store_true",
                     help="describe the scenario verbs and subjects, then exit")
    ocpp = sim.add_argument_group("OCPP (default: the bundled local CSMS on 127.0.0.1)")
    _ocpp_arguments(ocpp, csms="an outside CSMS: a base URL to which /ID is appended, or a "
                    "template holding {id} (runs in real time unless --virtual)",
                    state="keep persistent state (config, availability, journal) in DIR to "
                    "stop and resume a simulated charger, one evse process at a time; "
                    "default: fresh each run")
    ocpp.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="1.6",
                      help="protocol version (default 1.6)")
    ocpp.add_argument("--virtual", action="store_true",
                      help="virtual time even with --csms (only for a CSMS that answers fast)")
    sim.set_defaults(func=cmd_sim)

    demo = commands.add_parser(
        "demo", help="one full charging session on the simulated board",
        description="Plug in, authorize, charge, unplug: the real agent on the simulated "
        "board in virtual time, with a readable timeline.")
    demo.add_argument("--board", default="sim", metavar="FILE", help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)

    run = commands.add_parser(
        "run", help="run the agent on a real board (long-running)",
        description="Run the agent on the board its file describes (hal = \"linux\": sysfs "
        "PWM, GPIO and IIO ADC), connected to the CSMS from the board's [ocpp] table. "
        "Runs until SIGTERM or Ctrl-C, which end transactions (reason Reboot), open the "
        "contactors and exit 0. Exit 2 on a bad board file or missing hardware.",
        epilog="Example boards: boards/rpi-pilot-hat.toml. Flags override the board file.")
    run.add_argument("--board", required=True, metavar="FILE",
                     help="board file or bundled board name")
    _ocpp_arguments(run, csms="CSMS base URL (/ID appended) or template with {id} (default: "
                    "the board's [ocpp] csms)",
                    state="persistent state folder (default: the board's [storage] dir)")
    run.set_defaults(func=cmd_run)

    bundle_parser = commands.add_parser(
        "bundle", help="build what a MicroPython board runs (compiled modules, board.json)",
        description="Compile the portable agent and the board's drivers with mpy-cross, "
        "write the board file as board.json, a main.py and a manifest (sizes, SHA-256). "
        "For boards/unix.toml: `micropython DIR/main.py [CSMS URL]` runs it. Exit 2 on a bad "
        "board file (the error names the key).")
    bundle_parser.add_argument("--board", required=True, metavar="FILE")
    bundle_parser.add_argument("--out", required=True, metavar="DIR")
    bundle_parser.add_argument("--romfs", action="store_true", help=ROMFS_HELP)
    bundle_parser.set_defaults(func=cmd_bundle)

    flash_parser = commands.add_parser(
        "flash", help="bundle and copy to a MicroPython board with mpremote",
        description="Bundle, then copy to the board through mpremote only the files whose "
        "SHA-256 differs, verify every file by hash, reset the board.")
    flash_parser.add_argument("--board", required=True, metavar="FILE")
    flash_parser.add_argument("--port", required=True, metavar="PORT",
                              help="serial port of the board (as mpremote takes it)")
    flash_parser.add_argument("--dry-run", action="store_true",
                              help="print the mpremote commands, change nothing")
    flash_parser.add_argument("--out", metavar="DIR", help="keep the bundle in DIR")
    flash_parser.add_argument("--romfs", action="store_true", help=ROMFS_HELP + "; deployed "
                              "with `mpremote romfs deploy`")
    flash_parser.set_defaults(func=cmd_bundle)

    diagram = commands.add_parser(
        "diagram", help="print the controller's state tables as Mermaid",
        description="Print the IEC 61851 controller's tables (CP layer, session layer) as "
        "Mermaid stateDiagram-v2, straight from the tables the agent runs.")
    diagram.add_argument("--table", choices=("cp", "session", "all"), default="all")
    diagram.add_argument("--markdown", action="store_true",
                         help="wrap each diagram in a ```mermaid block")
    diagram.set_defaults(func=cmd_diagram)

    meter_cli.add_parser(commands)
    top.commands = commands         # main() names the command whose flags were wrong
    return top


def main(argv=None):
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:
        # argparse would blame the top-level parser and show its usage, not the command's
        command = top.commands.choices.get(args.command, top)
        command.error("unrecognized arguments: %s" % " ".join(unknown))
    if not getattr(args, "func", None):
        top.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`evse sim | head`): stop quietly like any Unix tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
